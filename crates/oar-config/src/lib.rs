//! GitLab Runner compatible `config.toml`: parse, validate, edit.
//!
//! - [`load`] / [`parse_str`] read a file into a validated [`Config`] plus [`ConfigWarning`]s.
//!   Every error and warning names the file, the line and the dotted key
//!   (`config.toml:14: unknown key runners[0].kubernetes.foo ignored`).
//! - The model follows GitLab Runner's key names and defaults (documented on each field), so
//!   an existing `config.toml` works unchanged. Settings of executors Oar does not have are
//!   accepted with a warning.
//! - [`ConfigDocument`] edits the file with `toml_edit`, keeping comments and formatting, and
//!   saves it atomically with mode 0600.
//!
//! Tokens and other credentials are [`secrecy::SecretString`]s: `Debug` never prints them.
//!
//! ```
//! use std::path::Path;
//!
//! let loaded = oar_config::parse_str(
//!     r#"
//! concurrent = 4
//!
//! [[runners]]
//!   name = "k8s"
//!   url = "https://gitlab.example.com/"
//!   token = "glrt-t1_abcdefghijkl"
//!   executor = "kubernetes"
//!   [runners.kubernetes]
//!     namespace = "ci"
//!     typo = true
//! "#,
//!     Path::new("config.toml"),
//! )?;
//! let runner = &loaded.config.runners[0];
//! assert_eq!(runner.short_token(), "abcdefghi");
//! assert_eq!(runner.kubernetes.as_ref().map(|k| k.effective_namespace()), Some("ci"));
//! assert_eq!(
//!     loaded.warnings[0].to_string(),
//!     "config.toml:11: unknown key runners[0].kubernetes.typo ignored"
//! );
//! # Ok::<(), oar_config::ConfigError>(())
//! ```

mod cache;
mod duration;
mod edit;
mod error;
mod fsutil;
#[doc(hidden)]
pub mod fuzz;
mod global;
pub mod kubernetes;
mod load;
mod locate;
mod path;
mod quantity;
mod runner;
mod serde_util;
mod token;
mod url;
mod validate;
mod warning;

pub use cache::{
    AzureConfig, CacheConfig, CacheType, GcsConfig, S3AuthType, S3Config, S3Encryption,
};
pub use edit::{ConfigDocument, NewKubernetes, NewRunner, RunnerSelector, RunnerSummary};
pub use error::{ConfigError, Location};
pub use fsutil::write_secret_file;
pub use global::{Config, LogFormat, LogLevel, SessionServer};
pub use kubernetes::KubernetesConfig;
pub use load::{Loaded, load, parse_str};
pub use path::{KeyPath, Segment};
pub use quantity::Quantity;
pub use runner::{DEFAULT_OUTPUT_LIMIT_KIB, Executor, RunnerConfig, Shell};
pub use token::short_token;
pub use url::{ServerUrl, ServerUrlError};
pub use validate::EnvVar;
pub use warning::{ConfigWarning, WarningKind};

/// Re-exported so callers can build and read secrets without naming the crate.
pub use secrecy::{ExposeSecret, SecretString};
