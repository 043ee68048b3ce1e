//! The job driver: runs a job's stages in GitLab Runner's order through a [`StageRunner`] and
//! decides the outcome.
//!
//! Lifecycle, as a state machine written out:
//! 1. *prepare*: header, executor preparation (`prepare_executor`), `prepare_script`;
//! 2. *sources*: `get_sources` (retried `GET_SOURCES_ATTEMPTS` times), `restore_cache`,
//!    `download_artifacts` — a failure here skips the user steps;
//! 3. *steps*: each `step_*` in order, stopping at the first failure, under the job deadline;
//!    a graceful cancel or the deadline stops the running step;
//! 4. *after*: `after_script` (own timeout), with `CI_JOB_STATUS` set;
//! 5. *upload*: cache and artifacts for success or failure;
//! 6. *cleanup*: `cleanup_file_variables`, then the executor's cleanup — always.
//!
//! A hard abort (job canceled in GitLab, 403) stops the running stage and skips 2–5.

use crate::context::{DEFAULT_AFTER_SCRIPT_TIMEOUT, JobContext};
use crate::files::{self, JobFiles};
use crate::outcome::{FailureReason, JobOutcome};
use crate::runner::{JobControl, StageExit, StageRunner};
use crate::scripts;
use crate::shell::{CYAN, GREEN, RED, RESET, YELLOW};
use crate::stage::{Stage, StageScript};
use crate::tracelog::TraceLog;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Observes stage timings (metrics).
pub trait StageObserver: Send + Sync {
    /// A stage finished after `elapsed`.
    fn stage_finished(&self, stage: &str, elapsed: Duration);
}

/// No-op observer.
impl StageObserver for () {
    fn stage_finished(&self, _: &str, _: Duration) {}
}

/// How one stage ended, from the driver's view.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StageResult {
    Ok,
    Failed(i32),
    TimedOut,
    Canceled,
    Aborted,
    Interrupted,
    System(String),
    /// A file stage (artifacts) failed: a script failure with this message.
    FileStage(String),
}

/// Runs a job to its end. Never panics on a payload; every failure becomes an outcome.
pub struct Driver<'a, R: StageRunner> {
    ctx: &'a JobContext,
    runner: &'a R,
    log: &'a TraceLog,
    control: JobControl,
    observer: &'a dyn StageObserver,
    files: &'a JobFiles,
    deadline: Instant,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Formats a duration the way Go prints it (`1h0m0s`, `5m0s`, `30s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

impl<'a, R: StageRunner> Driver<'a, R> {
    /// A driver for one job.
    pub fn new(
        ctx: &'a JobContext,
        runner: &'a R,
        log: &'a TraceLog,
        control: JobControl,
        observer: &'a dyn StageObserver,
        files: &'a JobFiles,
    ) -> Self {
        let deadline = Instant::now() + ctx.timeout;
        Driver {
            ctx,
            runner,
            log,
            control,
            observer,
            files,
            deadline,
        }
    }

    fn line(&self, text: &str) {
        self.log.write(format!("{text}\n").as_bytes());
    }

    fn colored(&self, color: &str, text: &str) {
        self.line(&format!("{color}{text}{RESET}"));
    }

    fn section_start(&self, name: &str, description: &str) {
        if self.ctx.job.features.trace_sections {
            self.log
                .write(format!("section_start:{}:{name}\r\x1b[0K", now_unix()).as_bytes());
        }
        self.colored(CYAN, description);
    }

    fn section_end(&self, name: &str) {
        if self.ctx.job.features.trace_sections {
            self.log
                .write(format!("section_end:{}:{name}\r\x1b[0K", now_unix()).as_bytes());
        }
    }

    /// Runs the job and returns its outcome. The log gets every line a user should see.
    pub async fn run(&self) -> JobOutcome {
        let s = &self.ctx.settings;
        self.line(&format!(
            "Running with gitlab-runner {} (Oar {}; {})",
            s.version, s.version, s.revision
        ));
        self.line(&format!(
            "  on {} {}, system ID: {}",
            s.runner_name, s.short_token, s.system_id
        ));
        let outcome = self.run_stages().await;
        self.line("");
        match &outcome.failure {
            None => self.colored(GREEN, &outcome.message),
            Some(_) => self.colored(RED, &format!("ERROR: Job failed: {}", outcome.message)),
        }
        outcome
    }

    async fn run_stages(&self) -> JobOutcome {
        let ctx = self.ctx;
        let log = self.log.clone();
        let say = move |line: &str| log.write(format!("{line}\n").as_bytes());
        self.section_start(
            "prepare_executor",
            &format!("Preparing the \"{}\" executor", ctx.settings.executor),
        );
        let prepared = self.runner.prepare(ctx, self.log).await;
        self.section_end("prepare_executor");
        if let Err(e) = prepared {
            self.runner.cleanup(ctx).await;
            return JobOutcome::failed(FailureReason::RunnerSystemFailure, None, e.to_string());
        }

        let mut result = self
            .run_stage(scripts::prepare(ctx), self.deadline, true)
            .await;
        if result == StageResult::Ok {
            result = self
                .with_attempts("GET_SOURCES_ATTEMPTS", || scripts::get_sources(ctx))
                .await;
        }
        if result == StageResult::Ok
            && ctx
                .job
                .cache
                .iter()
                .any(|c| !c.paths.is_empty() || c.untracked)
        {
            result = self
                .run_builtin(Stage::RestoreCache, self.deadline, true, async {
                    files::restore_caches_for_job(ctx, self.files, &say).await;
                    Ok(())
                })
                .await;
        }
        if result == StageResult::Ok
            && ctx
                .job
                .dependencies
                .iter()
                .any(|d| d.artifacts_file.is_some())
        {
            result = self
                .with_builtin_attempts(
                    "ARTIFACT_DOWNLOAD_ATTEMPTS",
                    Stage::DownloadArtifacts,
                    || files::download_artifacts_for_job(ctx, self.files, &say),
                )
                .await;
        }
        if result == StageResult::Ok {
            let script_deadline = match ctx.duration_var("RUNNER_SCRIPT_TIMEOUT") {
                Some(d) => (Instant::now() + d).min(self.deadline),
                None => self.deadline,
            };
            for step in ctx.job.steps.iter().filter(|s| s.name != "after_script") {
                result = self
                    .run_stage(
                        scripts::step(ctx, &step.name, &step.script),
                        script_deadline,
                        true,
                    )
                    .await;
                if result != StageResult::Ok {
                    break;
                }
            }
        }
        let mut outcome = self.outcome_of(&result);

        let after = ctx
            .job
            .steps
            .iter()
            .find(|s| s.name == "after_script" && !s.script.is_empty());
        if let Some(after) = after.filter(|_| !outcome.aborted) {
            {
                let timeout = ctx
                    .duration_var("RUNNER_AFTER_SCRIPT_TIMEOUT")
                    .unwrap_or(DEFAULT_AFTER_SCRIPT_TIMEOUT);
                let script = scripts::after_script(ctx, &after.script, outcome.ci_job_status());
                let r = self
                    .run_stage(script, Instant::now() + timeout, false)
                    .await;
                match r {
                    StageResult::Ok => {}
                    StageResult::Aborted => outcome = self.outcome_of(&r),
                    other => {
                        if ctx.vars.bool("AFTER_SCRIPT_IGNORE_ERRORS") == Some(false)
                            && outcome.failure.is_none()
                        {
                            outcome = self.outcome_of(&other);
                        } else {
                            self.colored(
                                YELLOW,
                                "WARNING: after_script failed, but job will continue unaffected",
                            );
                        }
                    }
                }
            }
        }
        if !outcome.aborted {
            let ok = outcome.failure.is_none();
            let wants_cache = files::resolve_caches(ctx)
                .into_iter()
                .flatten()
                .any(|c| c.when.applies(ok));
            if wants_cache {
                let stage = if ok {
                    Stage::ArchiveCache
                } else {
                    Stage::ArchiveCacheOnFailure
                };
                self.run_builtin(stage, Instant::now() + ctx.timeout, false, async {
                    files::save_caches_for_job(ctx, self.files, ok, &say).await;
                    Ok(())
                })
                .await;
            }
            let wants_artifacts = ctx
                .job
                .artifacts
                .iter()
                .any(|a| files::artifact_when_matches(&a.when, ok));
            if wants_artifacts {
                let stage = if ok {
                    Stage::UploadArtifactsOnSuccess
                } else {
                    Stage::UploadArtifactsOnFailure
                };
                let r = self
                    .run_builtin(stage, Instant::now() + ctx.timeout, false, async {
                        files::upload_artifacts_for_job(ctx, self.files, ok, &say).await
                    })
                    .await;
                match r {
                    StageResult::Ok => {}
                    StageResult::Aborted => outcome = self.outcome_of(&r),
                    other if ok => outcome = self.outcome_of(&other),
                    _ => {}
                }
            }
        }
        let cleanup = scripts::cleanup(ctx);
        let _ = self
            .run_stage(cleanup, Instant::now() + Duration::from_secs(300), false)
            .await;
        self.runner.cleanup(ctx).await;
        outcome
    }

    /// Runs a predefined stage up to `<var>` times (1–10, default 1).
    async fn with_attempts(&self, var: &str, make: impl Fn() -> StageScript) -> StageResult {
        let attempts = self.attempts(var);
        let mut result = StageResult::Ok;
        for attempt in 1..=attempts {
            result = self.run_stage(make(), self.deadline, true).await;
            if !matches!(result, StageResult::Failed(_)) || attempt == attempts {
                break;
            }
            self.colored(
                YELLOW,
                &format!("WARNING: stage failed, retrying ({attempt}/{attempts})..."),
            );
        }
        result
    }

    /// Runs an in-process stage up to `<var>` times (1–10, default 1).
    async fn with_builtin_attempts<F, Fut>(&self, var: &str, stage: Stage, make: F) -> StageResult
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let attempts = self.attempts(var);
        let mut result = StageResult::Ok;
        for attempt in 1..=attempts {
            result = self
                .run_builtin(stage.clone(), self.deadline, true, make())
                .await;
            if !matches!(result, StageResult::FileStage(_)) || attempt == attempts {
                break;
            }
            self.colored(
                YELLOW,
                &format!("WARNING: stage failed, retrying ({attempt}/{attempts})..."),
            );
        }
        result
    }

    fn attempts(&self, var: &str) -> u32 {
        self.ctx
            .var(var)
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10).contains(n))
            .unwrap_or(1)
    }

    /// Runs a stage done in-process (artifacts, caches) with the same section, deadline,
    /// cancel and abort handling as script stages. Dropping the future stops the work.
    async fn run_builtin<Fut>(
        &self,
        stage: Stage,
        deadline: Instant,
        cancelable: bool,
        work: Fut,
    ) -> StageResult
    where
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if self.control.aborted.is_cancelled() {
            return StageResult::Aborted;
        }
        if self.control.shutdown.is_cancelled() {
            return StageResult::Interrupted;
        }
        if cancelable && self.control.canceling.is_cancelled() {
            return StageResult::Canceled;
        }
        let name = stage.name();
        self.section_start(&name, &stage.description());
        let started = Instant::now();
        let result = {
            let run = work;
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => match r {
                    Ok(()) => StageResult::Ok,
                    Err(e) => StageResult::FileStage(e),
                },
                _ = tokio::time::sleep_until(deadline) => StageResult::TimedOut,
                _ = self.control.canceling.cancelled(), if cancelable => StageResult::Canceled,
                _ = self.control.aborted.cancelled() => StageResult::Aborted,
                _ = self.control.shutdown.cancelled() => StageResult::Interrupted,
            }
        };
        self.observer.stage_finished(&name, started.elapsed());
        self.section_end(&name);
        result
    }

    fn outcome_of(&self, r: &StageResult) -> JobOutcome {
        match r {
            StageResult::Ok => JobOutcome::success(),
            StageResult::Failed(code) => JobOutcome::failed(
                FailureReason::ScriptFailure,
                Some(*code),
                format!("exit status {code}"),
            ),
            StageResult::TimedOut => JobOutcome::failed(
                FailureReason::JobExecutionTimeout,
                None,
                format!(
                    "execution took longer than {} seconds",
                    go_duration(self.ctx.timeout)
                ),
            ),
            StageResult::Canceled => {
                JobOutcome::failed(FailureReason::JobCanceled, None, "canceled")
            }
            StageResult::Aborted => JobOutcome {
                aborted: true,
                ..JobOutcome::failed(
                    FailureReason::JobCanceled,
                    None,
                    "aborted: the job was canceled in GitLab",
                )
            },
            StageResult::Interrupted => JobOutcome::failed(
                FailureReason::RunnerSystemFailure,
                None,
                "the runner was stopped while the job ran",
            ),
            StageResult::System(msg) => {
                JobOutcome::failed(FailureReason::RunnerSystemFailure, None, msg.clone())
            }
            StageResult::FileStage(msg) => {
                JobOutcome::failed(FailureReason::ScriptFailure, None, msg.clone())
            }
        }
    }

    /// Runs one stage under `deadline`. `cancelable`: a graceful cancel stops it (not for
    /// after_script and the upload stages, which must still run then).
    async fn run_stage(
        &self,
        script: StageScript,
        deadline: Instant,
        cancelable: bool,
    ) -> StageResult {
        if self.control.aborted.is_cancelled() {
            return StageResult::Aborted;
        }
        if self.control.shutdown.is_cancelled() && script.stage != Stage::CleanupFileVariables {
            return StageResult::Interrupted;
        }
        if cancelable && self.control.canceling.is_cancelled() {
            return StageResult::Canceled;
        }
        let name = script.stage.name();
        self.section_start(&name, &script.stage.description());
        if matches!(script.stage, Stage::Step(_) | Stage::AfterScript) {
            self.log.expedite();
        }
        let started = Instant::now();
        let token = CancellationToken::new();
        let run = self.runner.run(&script, self.ctx, self.log, token.clone());
        tokio::pin!(run);
        let mut why: Option<StageResult> = None;
        let exit = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep_until(deadline), if why.is_none() => {
                    why = Some(StageResult::TimedOut);
                    token.cancel();
                }
                _ = self.control.canceling.cancelled(), if why.is_none() && cancelable => {
                    why = Some(StageResult::Canceled);
                    token.cancel();
                }
                _ = self.control.aborted.cancelled(), if why.is_none() => {
                    why = Some(StageResult::Aborted);
                    token.cancel();
                }
                _ = self.control.shutdown.cancelled(), if why.is_none() => {
                    why = Some(StageResult::Interrupted);
                    token.cancel();
                }
            }
        };
        self.observer.stage_finished(&name, started.elapsed());
        self.section_end(&name);
        match (why, exit) {
            (Some(w), _) => w,
            (None, Ok(StageExit::Code(0))) => StageResult::Ok,
            (None, Ok(StageExit::Code(c))) => StageResult::Failed(c),
            (None, Ok(StageExit::Stopped)) => {
                StageResult::System(format!("stage {name} was stopped"))
            }
            (None, Err(e)) => StageResult::System(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(7)), "7s");
    }
}
