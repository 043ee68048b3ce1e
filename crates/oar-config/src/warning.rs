//! Non-fatal findings of the loader.

use std::fmt;

use crate::error::Location;
use crate::path::KeyPath;

/// What kind of thing a [`ConfigWarning`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// A key GitLab Runner does not know either (probably a typo).
    UnknownKey,
    /// A table for an executor Oar does not have (`[runners.docker]`, ...).
    UnsupportedExecutorTable,
    /// A GitLab Runner setting that Oar accepts but does not implement.
    NotImplemented,
    /// A deprecated setting; the message names its replacement.
    Deprecated,
    /// A value GitLab Runner would ignore (with a log line); Oar ignores it too.
    IgnoredValue,
    /// A setting that is valid but probably not what was meant.
    Suspicious,
}

/// A warning about the config file: the key, its line and what Oar does about it.
///
/// Displays as `config.toml:14: unknown key runners[0].kubernetes.foo ignored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where the key is written.
    pub location: Location,
    /// The key the warning is about.
    pub key: KeyPath,
    /// The category.
    pub kind: WarningKind,
    /// The human-readable message (without the location).
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}
