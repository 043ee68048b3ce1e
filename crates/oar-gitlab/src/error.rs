//! Errors of the runner API client.

/// What went wrong talking to GitLab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured GitLab URL cannot be used.
    #[error("invalid GitLab URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TLS file could not be read or parsed.
    #[error("cannot use TLS file {path}")]
    TlsFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (after retries).
    #[error("{endpoint}: no answer from GitLab")]
    Transport {
        /// API endpoint name.
        endpoint: &'static str,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// GitLab refused the token.
    #[error("{endpoint}: forbidden (check the token): {message}")]
    Forbidden {
        /// API endpoint name.
        endpoint: &'static str,
        /// Server message.
        message: String,
    },
    /// GitLab answered with an unexpected status.
    #[error("{endpoint}: unexpected status {status}: {message}")]
    Status {
        /// API endpoint name.
        endpoint: &'static str,
        /// HTTP status.
        status: u16,
        /// Server message.
        message: String,
    },
    /// The answer could not be decoded.
    #[error("{endpoint}: cannot decode GitLab's answer: {reason}")]
    Decode {
        /// API endpoint name.
        endpoint: &'static str,
        /// Why.
        reason: String,
    },
    /// A local file (artifact) could not be read or written.
    #[error("{path}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status carried by the error, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Forbidden { .. } => Some(403),
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
