//! The validation step shared by every section: wire values in, domain values (or an
//! [`Issue`] naming the key) out, with warnings collected on the way.

use std::time::Duration;

use regex::Regex;

use crate::duration::parse_go_duration;
use crate::locate::Anchor;
use crate::path::KeyPath;
use crate::quantity::Quantity;
use crate::serde_util::RawDuration;
use crate::warning::WarningKind;

/// A validation failure; the loader adds file, line and column.
#[derive(Debug)]
pub(crate) struct Issue {
    pub(crate) path: KeyPath,
    pub(crate) kind: IssueKind,
}

#[derive(Debug)]
pub(crate) enum IssueKind {
    Value(String),
    Missing,
    Regex(regex::Error),
    Url(url::ParseError),
    UnsupportedExecutor { runner: String, executor: String },
}

impl Issue {
    pub(crate) fn value(path: &KeyPath, message: impl Into<String>) -> Self {
        Self {
            path: path.clone(),
            kind: IssueKind::Value(message.into()),
        }
    }

    pub(crate) fn missing(path: &KeyPath) -> Self {
        Self {
            path: path.clone(),
            kind: IssueKind::Missing,
        }
    }
}

/// A warning waiting for its line number.
#[derive(Debug)]
pub(crate) struct PendingWarning {
    pub(crate) path: KeyPath,
    pub(crate) kind: WarningKind,
    pub(crate) message: String,
    pub(crate) anchor: Anchor,
}

/// Collects warnings while validating.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub(crate) warnings: Vec<PendingWarning>,
}

impl Ctx {
    pub(crate) fn warn(&mut self, path: &KeyPath, kind: WarningKind, message: impl Into<String>) {
        self.warnings.push(PendingWarning {
            path: path.clone(),
            kind,
            message: message.into(),
            anchor: Anchor::Key,
        });
    }
}

/// Empty strings mean "unset" (GitLab Runner writes `namespace = ""` for unset keys).
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// An integer that must not be negative.
pub(crate) fn non_negative<T: TryFrom<i64>>(
    path: &KeyPath,
    value: Option<i64>,
) -> Result<Option<T>, Issue> {
    value
        .map(|v| {
            if v < 0 {
                return Err(Issue::value(
                    path,
                    format!("expected a non-negative integer, found {v}"),
                ));
            }
            T::try_from(v).map_err(|_| Issue::value(path, format!("{v} is too large")))
        })
        .transpose()
}

/// A non-negative number of seconds; zero or absent gives `default`.
pub(crate) fn seconds_or(
    path: &KeyPath,
    value: Option<i64>,
    default: Duration,
) -> Result<Duration, Issue> {
    Ok(match non_negative::<u64>(path, value)? {
        None | Some(0) => default,
        Some(secs) => Duration::from_secs(secs),
    })
}

/// A Go duration (string or nanoseconds).
pub(crate) fn go_duration(path: &KeyPath, value: &RawDuration) -> Result<Duration, Issue> {
    match value {
        RawDuration::Text(text) => parse_go_duration(text).map_err(|m| Issue::value(path, m)),
        RawDuration::Nanos(nanos) => u64::try_from(*nanos)
            .map(Duration::from_nanos)
            .map_err(|_| Issue::value(path, format!("negative duration {nanos}"))),
    }
}

/// An `*_overwrite_allowed` gate: empty disables the overwrite, anything else must compile.
pub(crate) fn regex_gate(path: &KeyPath, value: Option<String>) -> Result<Option<Regex>, Issue> {
    non_empty(value)
        .map(|pattern| {
            Regex::new(&pattern).map_err(|e| Issue {
                path: path.clone(),
                kind: IssueKind::Regex(e),
            })
        })
        .transpose()
}

/// A Kubernetes quantity; empty means unset.
pub(crate) fn quantity(path: &KeyPath, value: Option<String>) -> Result<Option<Quantity>, Issue> {
    non_empty(value)
        .map(|text| {
            Quantity::new(&text).ok_or_else(|| {
                Issue::value(
                    path,
                    format!(
                        "expected a Kubernetes quantity such as \"500m\" or \"2Gi\", found {text:?}"
                    ),
                )
            })
        })
        .transpose()
}

/// One of a fixed set of names; empty means unset.
pub(crate) fn one_of<T: Copy>(
    path: &KeyPath,
    value: Option<&str>,
    choices: &[(&str, T)],
    case_insensitive: bool,
) -> Result<Option<T>, Issue> {
    let Some(text) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let matches = |name: &str| {
        if case_insensitive {
            name.eq_ignore_ascii_case(text)
        } else {
            name == text
        }
    };
    if let Some((_, v)) = choices.iter().find(|(name, _)| matches(name)) {
        return Ok(Some(*v));
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    Err(Issue::value(
        path,
        format!("expected one of {}, found {text:?}", names.join(", ")),
    ))
}

/// Parses a `KEY=VALUE` list (`environment`).
pub(crate) fn env_list(path: &KeyPath, entries: Vec<String>) -> Result<Vec<EnvVar>, Issue> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(EnvVar {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(Issue::value(
                &path.index(i),
                format!("expected KEY=VALUE, found {entry:?}"),
            )),
        })
        .collect()
}

/// One `KEY=VALUE` entry of an `environment` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable name.
    pub key: String,
    /// The value (may be empty).
    pub value: String,
}
