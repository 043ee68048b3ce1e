//! Running one job taken from GitLab: acknowledge, drive, stream, report.

use crate::metrics::Metrics;
use oar_config::{ExposeSecret, RunnerConfig, SecretString};
use oar_gitlab::{Client, JobResponse, Token, VersionInfo};
use oar_job::JobError;
use oar_job::report::{Reporter, ReporterConfig};
use oar_job::{
    ArtifactStore, Driver, FailureReason, JobContext, JobControl, JobFiles, JobOutcome,
    JobSettings, StageObserver, TraceLog, TraceLogOptions,
};
use oar_shell::{Shell, ShellRunner};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the manager keeps per-process facts a job needs.
#[derive(Clone)]
pub struct JobEnv {
    /// GitLab client of this runner.
    pub client: Client,
    /// The runner's `info`.
    pub info: VersionInfo,
    /// This manager's system id.
    pub system_id: String,
    /// Directory relative paths are resolved against (`--working-directory`).
    pub working_dir: std::path::PathBuf,
    /// Metrics.
    pub metrics: Metrics,
    /// Streamer timings.
    pub reporter: ReporterConfig,
    /// IAM credentials for the distributed cache, shared by jobs.
    pub iam: crate::cache::IamProviders,
    /// The Kubernetes executor of this runner, once connected.
    pub kube: Option<std::sync::Arc<crate::kube_job::KubeExecutor>>,
    /// Whether the shell executor runs bash as a login shell (GitLab Runner does; `oar exec`
    /// does not: the developer's shell already set the environment up).
    pub login_shell: bool,
}

struct MetricsObserver {
    metrics: Metrics,
    runner: String,
}

impl StageObserver for MetricsObserver {
    fn stage_finished(&self, stage: &str, elapsed: Duration) {
        self.metrics.stage_finished(&self.runner, stage, elapsed);
    }
}

fn dir_or(configured: Option<&Path>, working: &Path, default: &str) -> String {
    let p = match configured {
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => working.join(p),
        None => working.join(default),
    };
    p.display().to_string()
}

/// Reads one of the runner's TLS files (`tls-ca-file` etc.) for a job; the error names the
/// setting and the file.
async fn read_tls_file(setting: &str, path: Option<&Path>) -> Result<Option<String>, JobError> {
    let Some(path) = path else {
        return Ok(None);
    };
    // PEM is ASCII; stray bytes in comments must not fail the job.
    tokio::fs::read(path)
        .await
        .map(|bytes| Some(String::from_utf8_lossy(&bytes).into_owned()))
        .map_err(|e| JobError::Config(format!("cannot read {setting} {}: {e}", path.display())))
}

/// Job settings from a runner's configuration. The runner's TLS files are read here: their
/// text becomes the job's `CI_SERVER_TLS_*` file variables, so that git trusts the same CA and
/// presents the same client certificate as the runner; a file that cannot be read fails the
/// job with an error naming it.
pub async fn settings(
    runner: &RunnerConfig,
    env: &JobEnv,
    slot: usize,
    project_slot: usize,
) -> Result<JobSettings, JobError> {
    let tls_ca_pem = read_tls_file("tls-ca-file", runner.tls_ca_file.as_deref()).await?;
    let (tls_cert_pem, tls_key_pem) = match (&runner.tls_cert_file, &runner.tls_key_file) {
        (Some(cert), Some(key)) => (
            read_tls_file("tls-cert-file", Some(cert)).await?,
            read_tls_file("tls-key-file", Some(key))
                .await?
                .map(SecretString::from),
        ),
        _ => (None, None),
    };
    Ok(JobSettings {
        runner_name: runner.name.clone(),
        short_token: runner.short_token().to_string(),
        system_id: env.system_id.clone(),
        version: env.info.version.clone(),
        revision: env.info.revision.clone(),
        executor: runner.executor.as_str().to_string(),
        builds_dir: dir_or(runner.effective_builds_dir(), &env.working_dir, "builds"),
        cache_dir: dir_or(runner.effective_cache_dir(), &env.working_dir, "cache"),
        shared_builds_dir: true,
        concurrent_id: slot,
        concurrent_project_id: project_slot,
        environment: runner
            .environment
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect(),
        pre_get_sources_script: runner.pre_get_sources_script.clone(),
        post_get_sources_script: runner.post_get_sources_script.clone(),
        pre_build_script: runner.pre_build_script.clone(),
        post_build_script: runner.post_build_script.clone(),
        clone_url: runner.clone_url.as_ref().map(|u| u.as_str().to_string()),
        output_limit_bytes: usize::try_from(runner.output_limit_bytes()).unwrap_or(usize::MAX),
        feature_flags: runner.feature_flags.clone(),
        custom_build_dir_enabled: runner.custom_build_dir_enabled.unwrap_or(false),
        debug_trace_disabled: runner.debug_trace_disabled,
        tls_ca_pem,
        tls_cert_pem,
        tls_key_pem,
    })
}

/// A job payload that could not be read: fail it in GitLab with the reason in its log.
pub async fn fail_malformed(env: &JobEnv, id: i64, token: Token, reason: &str) {
    let log = TraceLog::new(TraceLogOptions {
        limit_bytes: 4 * 1024 * 1024,
        phrases: vec![token.expose().to_string()],
        token_prefixes: vec![],
    });
    log.write(
        format!("\x1b[31;1mERROR: Oar cannot read this job's payload: {reason}\x1b[0;m\n")
            .as_bytes(),
    );
    let reporter = Reporter::new(
        env.client.clone(),
        id,
        token,
        env.info.clone(),
        vec![],
        env.reporter.clone(),
    );
    let outcome = JobOutcome::failed(FailureReason::RunnerSystemFailure, None, reason.to_string());
    let control = JobControl::default();
    if reporter.acknowledge(&log, &control).await.is_err() {
        return;
    }
    reporter.finish(&log, &outcome, Default::default()).await;
}

/// Runs a job to its end and reports it. `shutdown` fires when the runner must stop jobs.
pub async fn run(
    env: &JobEnv,
    runner: &RunnerConfig,
    job: JobResponse,
    slot: usize,
    shutdown: CancellationToken,
) -> Option<JobOutcome> {
    if runner.executor == oar_config::Executor::Kubernetes {
        return match &env.kube {
            // Boxed, like the shell path below: each job's task then holds only the future of
            // its own executor (a running Kubernetes job keeps no shell driver state).
            Some(exec) => {
                Box::pin(crate::kube_job::run(env, exec, runner, job, slot, shutdown)).await
            }
            None => {
                fail_malformed(
                    env,
                    job.id,
                    job.token,
                    "the Kubernetes executor is not connected",
                )
                .await;
                None
            }
        };
    }
    Box::pin(run_shell(env, runner, job, slot, shutdown)).await
}

/// Runs a job with the shell executor.
async fn run_shell(
    env: &JobEnv,
    runner: &RunnerConfig,
    job: JobResponse,
    slot: usize,
    shutdown: CancellationToken,
) -> Option<JobOutcome> {
    let started = Instant::now();
    let job_id = job.id;
    let log = TraceLog::new(TraceLogOptions::for_job(
        &job,
        usize::try_from(runner.output_limit_bytes()).unwrap_or(usize::MAX),
        &[runner.token.expose_secret()],
    ));
    let debug_trace = !runner.debug_trace_disabled
        && job
            .variables
            .iter()
            .any(|v| v.key == "CI_DEBUG_TRACE" && v.value == "true");
    let reporter = Reporter::new(
        env.client.clone(),
        job_id,
        job.token.clone(),
        env.info.clone(),
        job.features.failure_reasons.clone(),
        env.reporter.clone(),
    )
    .with_debug_trace(debug_trace)
    .with_deadline(oar_job::report::job_deadline(&job, started));
    let control = JobControl {
        shutdown: shutdown.child_token(),
        ..JobControl::default()
    };
    if let Err(why) = reporter.acknowledge(&log, &control).await {
        tracing::warn!(job_id, reason = %why, "dropping the job");
        return None;
    }
    tracing::info!(job_id, runner = %runner.name, project = job.job_info.project_id, "job started");
    env.metrics.job_started(&runner.name, &env.system_id);

    let done = CancellationToken::new();
    let streamer = {
        let (reporter, log, control, done) =
            (reporter.clone(), log.clone(), control.clone(), done.clone());
        tokio::spawn(async move { reporter.stream(log, control, done).await })
    };
    let outcome = match settings(runner, env, slot, slot)
        .await
        .and_then(|s| JobContext::new(job, s))
    {
        Err(e) => {
            log.write(format!("\x1b[31;1mERROR: {e}\x1b[0;m\n").as_bytes());
            JobOutcome::failed(FailureReason::RunnerConfigurationError, None, e.to_string())
        }
        Ok(ctx) => {
            let shell = match runner.shell {
                None | Some(oar_config::Shell::Bash) => "bash",
                Some(oar_config::Shell::Sh) => "sh",
                Some(oar_config::Shell::Pwsh) => "pwsh",
                Some(oar_config::Shell::Powershell) => "powershell",
            };
            match Shell::from_config(shell) {
                Err(e) => {
                    log.write(format!("\x1b[31;1mERROR: {e}\x1b[0;m\n").as_bytes());
                    JobOutcome::failed(FailureReason::RunnerConfigurationError, None, e.to_string())
                }
                Ok(shell) => {
                    let executor = ShellRunner::new(shell);
                    let executor = if env.login_shell {
                        executor
                    } else {
                        executor.without_login()
                    };
                    let observer = MetricsObserver {
                        metrics: env.metrics.clone(),
                        runner: runner.name.clone(),
                    };
                    let (cache_urls, warnings) =
                        crate::cache::urls_for_job(&env.iam, runner, &ctx).await;
                    for w in warnings {
                        log.write(format!("\x1b[0;33mWARNING: {w}\x1b[0;m\n").as_bytes());
                    }
                    let files = JobFiles {
                        artifacts: ArtifactStore::Gitlab(env.client.clone()),
                        cache_urls,
                        cache_max_upload_size: runner
                            .cache
                            .as_ref()
                            .and_then(|c| c.max_uploaded_archive_size),
                    };
                    Driver::new(&ctx, &executor, &log, control.clone(), &observer, &files)
                        .run()
                        .await
                }
            }
        }
    };
    done.cancel();
    let state = streamer.await.unwrap_or_default();
    let delivered = reporter.finish(&log, &outcome, state).await;
    finished(env, runner, job_id, started, &outcome, Some(delivered));
    Some(outcome)
}

/// Counts a finished job in the metrics and logs it, whatever the executor. `delivered`:
/// whether GitLab took the final state from this process (`None` when a job pod sent it).
pub(crate) fn finished(
    env: &JobEnv,
    runner: &RunnerConfig,
    job_id: i64,
    started: Instant,
    outcome: &JobOutcome,
    delivered: Option<bool>,
) {
    let reason = outcome.failure.map(|f| f.as_str());
    env.metrics
        .job_finished(&runner.name, &env.system_id, started.elapsed(), reason);
    tracing::info!(
        job_id,
        state = outcome.state(),
        failure_reason = reason.unwrap_or(""),
        duration_s = started.elapsed().as_secs_f64(),
        delivered,
        "job finished"
    );
}
