//! Errors of the job driver.

/// Why a job could not be run as asked.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The payload asks for something invalid.
    #[error("invalid job: {field}: {reason}")]
    Payload {
        /// The field or variable.
        field: String,
        /// Why.
        reason: String,
    },
    /// The executor failed (not the user's script).
    #[error("executor: {0}")]
    Executor(String),
    /// The runner's configuration cannot be used for the job (e.g. an unreadable TLS file).
    #[error("runner configuration: {0}")]
    Config(String),
}
