//! The result of a job and how it is reported to GitLab.

/// Failure reasons the runner itself sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The user's script failed.
    ScriptFailure,
    /// The runner or executor failed.
    RunnerSystemFailure,
    /// The job ran out of time.
    JobExecutionTimeout,
    /// An image could not be pulled.
    ImagePullFailure,
    /// Unknown.
    UnknownFailure,
    /// The configuration refuses what the job asks.
    RunnerConfigurationError,
    /// Canceled by the user.
    JobCanceled,
}

impl FailureReason {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::JobCanceled => "job_canceled",
        }
    }

    /// The reason of a wire name this runner sends (`None` for others).
    pub fn from_wire(name: &str) -> Option<Self> {
        [
            FailureReason::ScriptFailure,
            FailureReason::RunnerSystemFailure,
            FailureReason::JobExecutionTimeout,
            FailureReason::ImagePullFailure,
            FailureReason::UnknownFailure,
            FailureReason::RunnerConfigurationError,
            FailureReason::JobCanceled,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }

    /// The reason to send, given what the server accepts: GitLab Runner's compatibility
    /// fallbacks, then `unknown_failure`. `script_failure`, `runner_system_failure` and
    /// `job_execution_timeout` are always accepted.
    pub fn for_server(self, supported: &[String]) -> &'static str {
        let always = [
            FailureReason::ScriptFailure,
            FailureReason::RunnerSystemFailure,
            FailureReason::JobExecutionTimeout,
        ];
        if always.contains(&self) || supported.iter().any(|s| s == self.as_str()) {
            return self.as_str();
        }
        match self {
            FailureReason::ImagePullFailure => "runner_system_failure",
            FailureReason::RunnerConfigurationError => "script_failure",
            _ => "unknown_failure",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    /// `None` on success.
    pub failure: Option<FailureReason>,
    /// Exit code of the failed script, if any.
    pub exit_code: Option<i32>,
    /// The human line printed at the end of the log.
    pub message: String,
    /// GitLab stopped the job (hard cancel / 403): the final update is best effort only.
    pub aborted: bool,
}

impl JobOutcome {
    /// A successful job.
    pub fn success() -> Self {
        JobOutcome {
            failure: None,
            exit_code: None,
            message: "Job succeeded".into(),
            aborted: false,
        }
    }

    /// A failed job.
    pub fn failed(
        reason: FailureReason,
        exit_code: Option<i32>,
        message: impl Into<String>,
    ) -> Self {
        JobOutcome {
            failure: Some(reason),
            exit_code,
            message: message.into(),
            aborted: false,
        }
    }

    /// `success` or `failed`.
    pub fn state(&self) -> &'static str {
        if self.failure.is_none() {
            "success"
        } else {
            "failed"
        }
    }

    /// The value of `CI_JOB_STATUS` in `after_script`.
    pub fn ci_job_status(&self) -> &'static str {
        match self.failure {
            None => "success",
            Some(FailureReason::JobCanceled) => "canceled",
            Some(FailureReason::JobExecutionTimeout) => "timedout",
            Some(_) => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_fall_back_as_gitlab_runner_does() {
        let none: Vec<String> = vec![];
        let with_pull = vec!["image_pull_failure".to_string()];
        assert_eq!(
            FailureReason::ScriptFailure.for_server(&none),
            "script_failure"
        );
        assert_eq!(
            FailureReason::ImagePullFailure.for_server(&none),
            "runner_system_failure"
        );
        assert_eq!(
            FailureReason::ImagePullFailure.for_server(&with_pull),
            "image_pull_failure"
        );
        assert_eq!(
            FailureReason::RunnerConfigurationError.for_server(&none),
            "script_failure"
        );
        assert_eq!(
            FailureReason::JobCanceled.for_server(&none),
            "unknown_failure"
        );
    }
}
