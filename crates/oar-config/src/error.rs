//! Errors of loading, validating and editing `config.toml`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::path::KeyPath;

/// Where in which file something was found: `config.toml:7:12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as given to [`load`](crate::load) or [`parse_str`](crate::parse_str).
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column (in characters), when known.
    pub column: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong with a config file.
///
/// Parse and validation errors carry a [`Location`] and the dotted key they are about, and
/// their message says what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file does not exist (the CLI suggests `oar register`).
    #[error("config file {} does not exist", path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The config file exists but cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The text is not valid TOML.
    #[error("{location}: invalid TOML: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What the parser expected.
        message: String,
    },

    /// A value has the wrong TOML type.
    #[error("{location}: invalid type for {key}: expected {expected}, found {found}")]
    InvalidType {
        /// Where the value is.
        location: Location,
        /// The key holding the value.
        key: KeyPath,
        /// The expected form, e.g. "an integer".
        expected: String,
        /// What was found, e.g. "a string".
        found: String,
    },

    /// A value has the right type but is not acceptable.
    #[error("{location}: invalid value for {key}: {message}")]
    InvalidValue {
        /// Where the value is.
        location: Location,
        /// The key holding the value.
        key: KeyPath,
        /// What is wrong and what is expected.
        message: String,
    },

    /// A required key is absent.
    #[error("{location}: missing key {key}")]
    MissingKey {
        /// The table that should hold the key.
        location: Location,
        /// The missing key.
        key: KeyPath,
    },

    /// A regular expression (an `*_overwrite_allowed` gate) does not compile.
    #[error("{location}: invalid regular expression for {key}")]
    InvalidRegex {
        /// Where the value is.
        location: Location,
        /// The key holding the value.
        key: KeyPath,
        /// The compiler's complaint.
        #[source]
        source: regex::Error,
    },

    /// A URL does not parse.
    #[error("{location}: invalid URL for {key}")]
    InvalidUrl {
        /// Where the value is.
        location: Location,
        /// The key holding the value.
        key: KeyPath,
        /// The parser's complaint.
        #[source]
        source: url::ParseError,
    },

    /// A runner uses an executor Oar does not implement.
    #[error(
        "{location}: runner {runner:?} uses executor {executor:?} ({key}); \
         Oar supports: {}",
        crate::runner::Executor::SUPPORTED.join(", ")
    )]
    UnsupportedExecutor {
        /// Where the value is.
        location: Location,
        /// The `executor` key.
        key: KeyPath,
        /// The runner's name (or its index when unnamed).
        runner: String,
        /// The executor that was asked for.
        executor: String,
    },

    /// The config file (or a secret file) cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The document has a shape the editor cannot work with (e.g. `runners` is not an array of
    /// tables).
    #[error("{}: {message}", path.display())]
    Document {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// No runner matches the name or index given to an edit.
    #[error("{}: no runner {selector}", path.display())]
    RunnerNotFound {
        /// The file.
        path: PathBuf,
        /// The name or index that was asked for.
        selector: String,
    },

    /// Several runners share the name given to an edit.
    #[error("{}: {count} runners are named {name:?}; select one by index", path.display())]
    AmbiguousRunner {
        /// The file.
        path: PathBuf,
        /// The shared name.
        name: String,
        /// How many runners have it.
        count: usize,
    },
}

impl ConfigError {
    /// The location in the file, for parse and validation errors.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { location, .. }
            | ConfigError::InvalidType { location, .. }
            | ConfigError::InvalidValue { location, .. }
            | ConfigError::MissingKey { location, .. }
            | ConfigError::InvalidRegex { location, .. }
            | ConfigError::InvalidUrl { location, .. }
            | ConfigError::UnsupportedExecutor { location, .. } => Some(location),
            _ => None,
        }
    }

    /// The key the error is about, for validation errors.
    pub fn key(&self) -> Option<&KeyPath> {
        match self {
            ConfigError::InvalidType { key, .. }
            | ConfigError::InvalidValue { key, .. }
            | ConfigError::MissingKey { key, .. }
            | ConfigError::InvalidRegex { key, .. }
            | ConfigError::InvalidUrl { key, .. }
            | ConfigError::UnsupportedExecutor { key, .. } => Some(key),
            _ => None,
        }
    }
}
