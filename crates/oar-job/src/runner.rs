//! The seam between the job driver and an executor.

use crate::context::JobContext;
use crate::error::JobError;
use crate::stage::StageScript;
use crate::tracelog::TraceLog;
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// How a stage's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageExit {
    /// Exited with this code.
    Code(i32),
    /// Stopped because `cancel` fired (terminated, then killed if it would not stop).
    Stopped,
}

/// Runs the stages of one job somewhere: local processes (shell executor) or the build
/// container of a pod (Kubernetes executor). The driver is the same for both.
pub trait StageRunner: Send + Sync {
    /// Prepares the environment (directories, ...). Failure is a system failure.
    fn prepare(
        &self,
        ctx: &JobContext,
        log: &TraceLog,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Runs one stage script, writing its output (stdout and stderr, in order) to `log`.
    /// When `cancel` fires, the stage's processes are terminated and `Stopped` is returned.
    fn run(
        &self,
        script: &StageScript,
        ctx: &JobContext,
        log: &TraceLog,
        cancel: CancellationToken,
    ) -> impl Future<Output = Result<StageExit, JobError>> + Send;

    /// Releases what `prepare` took. Called once, whatever happened.
    fn cleanup(&self, ctx: &JobContext) -> impl Future<Output = ()> + Send;
}

/// Remote control of a running job.
#[derive(Debug, Clone, Default)]
pub struct JobControl {
    /// Graceful cancel (`canceling`): stop the script, still run after_script and uploads.
    pub canceling: CancellationToken,
    /// Hard stop (`canceled` in GitLab, 403): stop everything now; GitLab finalised the job.
    pub aborted: CancellationToken,
    /// The runner is being stopped: stop the running stage, skip the rest, report a system
    /// failure.
    pub shutdown: CancellationToken,
}
