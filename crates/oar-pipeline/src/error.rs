//! Errors of loading and planning a pipeline.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Where something was found: `.gitlab-ci.yml:7`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The repo-relative file.
    pub file: Arc<str>,
    /// 1-based line (0 when unknown).
    pub line: u32,
}

impl Location {
    /// A location in `file` at `line`.
    pub fn new(file: &str, line: u32) -> Self {
        Self {
            file: Arc::from(file),
            line,
        }
    }
}

impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// Everything that can make a pipeline invalid.
///
/// The messages follow GitLab's CI lint: `file:line: job "x": keyword "y": what was expected`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A pipeline file cannot be read.
    #[error("{location}: cannot read {path}")]
    Read {
        /// Where the file was asked for (the include, or the file itself).
        location: Location,
        /// The file that was asked for.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The text is not valid YAML.
    #[error("{location}: invalid YAML: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What the parser said.
        message: String,
    },

    /// An include that needs GitLab (remote, project, template, component).
    #[error(
        "{location}: include {kind} {what:?} is not available locally; copy the file into the repository and use include:local"
    )]
    NotLocal {
        /// Where the include is.
        location: Location,
        /// `remote`, `project`, `template`, `component`.
        kind: &'static str,
        /// What was asked for.
        what: String,
    },

    /// The configuration is invalid: a wrong type, an unknown keyword, a bad value, a cycle,
    /// a missing target.
    #[error("{location}: {}{}{message}", job_prefix(job.as_deref()), keyword_prefix(keyword.as_deref()))]
    Invalid {
        /// Where the offending value is.
        location: Location,
        /// The job it is about, if any.
        job: Option<String>,
        /// The keyword it is about, if any (dotted, e.g. `rules:if`).
        keyword: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn job_prefix(job: Option<&str>) -> String {
    job.map(|j| format!("job {j:?}: ")).unwrap_or_default()
}

fn keyword_prefix(keyword: Option<&str>) -> String {
    keyword
        .map(|k| format!("keyword {k:?}: "))
        .unwrap_or_default()
}

impl PipelineError {
    /// An [`PipelineError::Invalid`] error.
    pub(crate) fn invalid(
        location: &Location,
        job: Option<&str>,
        keyword: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            location: location.clone(),
            job: job.map(str::to_owned),
            keyword: keyword.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The location the error is about.
    pub fn location(&self) -> &Location {
        match self {
            Self::Read { location, .. }
            | Self::Syntax { location, .. }
            | Self::NotLocal { location, .. }
            | Self::Invalid { location, .. } => location,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
