//! `oar-helper agent`: drives a whole job from inside its pod, with the job's token. The
//! manager only created the pod; from here on the job talks to GitLab itself (trace, state,
//! artifacts, caches) and says how it ended in the container's termination message.

use crate::podrunner::PodRunner;
use anyhow::{Context, Result};
use clap::Args;
use oar_gitlab::{Client, ClientConfig};
use oar_job::agent::{AgentPayload, TerminationMessage};
use oar_job::podstep::Layout;
use oar_job::report::{Reporter, ReporterConfig};
use oar_job::{
    ArtifactStore, Driver, FailureReason, JobContext, JobControl, JobFiles, JobOutcome, TraceLog,
    TraceLogOptions,
};
use oar_shell::{Shell, ShellRunner};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The job payload written by the manager (mounted from the job's Secret).
    #[arg(long, default_value = "/oar/secret/payload.json")]
    payload: PathBuf,
    /// The scripts volume shared with the build container.
    #[arg(long, env = "OAR_SCRIPTS_DIR", default_value = "/oar/scripts")]
    scripts_dir: PathBuf,
    /// The logs volume shared with the build container.
    #[arg(long, env = "OAR_LOGS_DIR", default_value = "/oar/logs")]
    logs_dir: PathBuf,
    /// Where the final word for the manager goes.
    #[arg(long, default_value = "/dev/termination-log")]
    termination_log: PathBuf,
    /// How long to wait for the build container to start (image pull included).
    #[arg(long, default_value_t = 600)]
    ready_timeout_secs: u64,
}

/// Writes PEM text to a private file for the API client (which reads files).
fn pem_file(dir: &std::path::Path, name: &str, text: Option<&str>) -> Result<Option<PathBuf>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}

fn terminate(path: &std::path::Path, outcome: &JobOutcome, delivered: bool) {
    let text = TerminationMessage::for_outcome(outcome, delivered).to_json();
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

pub(crate) async fn run(a: AgentArgs, stop: CancellationToken) -> Result<()> {
    let bytes = tokio::fs::read(&a.payload)
        .await
        .with_context(|| format!("cannot read the job payload {}", a.payload.display()))?;
    let payload = AgentPayload::from_json(&bytes).map_err(anyhow::Error::msg)?;
    let tls_dir = tempfile::tempdir().context("cannot create a private directory")?;
    let settings = payload.settings.clone();
    let client = Client::new(&ClientConfig {
        url: payload.gitlab_url.clone(),
        tls_ca_file: pem_file(tls_dir.path(), "ca.pem", settings.tls_ca_pem.as_deref())?,
        tls_cert_file: pem_file(tls_dir.path(), "cert.pem", settings.tls_cert_pem.as_deref())?,
        tls_key_file: pem_file(
            tls_dir.path(),
            "key.pem",
            settings
                .tls_key_pem
                .as_ref()
                .map(secrecy::ExposeSecret::expose_secret),
        )?,
        version: payload.info.version.clone(),
    })
    .context("cannot set up the GitLab client")?;
    let job = payload.job;
    let log = TraceLog::new(TraceLogOptions::for_job(
        &job,
        settings.output_limit_bytes,
        &[],
    ));
    for w in &payload.warnings {
        log.write(format!("\x1b[0;33mWARNING: {w}\x1b[0;m\n").as_bytes());
    }
    let reporter = Reporter::new(
        client.clone(),
        job.id,
        job.token.clone(),
        payload.info.clone(),
        job.features.failure_reasons.clone(),
        ReporterConfig::default(),
    )
    .with_debug_trace(payload.debug_trace)
    .with_deadline(oar_job::report::job_deadline(
        &job,
        tokio::time::Instant::now(),
    ));
    let control = JobControl {
        shutdown: stop.child_token(),
        ..JobControl::default()
    };
    // In a pod, SIGTERM means the pod is going away: say so in the job log.
    let stop_note = {
        let (log, stop) = (log.clone(), stop.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            log.write(
                b"\x1b[0;33mWARNING: The job pod is being stopped (SIGTERM: it was deleted or \
                  evicted, or ran past its activeDeadlineSeconds): the job ends here\x1b[0;m\n",
            );
        })
    };
    let done = CancellationToken::new();
    let streamer = {
        let (reporter, log, control, done) =
            (reporter.clone(), log.clone(), control.clone(), done.clone());
        tokio::spawn(async move { reporter.stream(log, control, done).await })
    };
    let files = JobFiles {
        artifacts: ArtifactStore::Gitlab(client.clone()),
        cache_urls: payload.cache_urls,
        cache_max_upload_size: payload.cache_max_upload_size,
    };
    let layout = Layout::new(&a.scripts_dir, &a.logs_dir);
    let runner = PodRunner::new(
        layout,
        ShellRunner::new(Shell::from_config("bash").unwrap_or(Shell::Sh)),
        Duration::from_secs(a.ready_timeout_secs),
    );
    let outcome = match JobContext::new(job, settings) {
        Err(e) => {
            log.write(format!("\x1b[31;1mERROR: {e}\x1b[0;m\n").as_bytes());
            JobOutcome::failed(FailureReason::RunnerConfigurationError, None, e.to_string())
        }
        Ok(ctx) => {
            Driver::new(&ctx, &runner, &log, control.clone(), &(), &files)
                .run()
                .await
        }
    };
    stop_note.abort();
    runner.finish().await;
    done.cancel();
    let state = streamer.await.unwrap_or_default();
    let delivered = reporter.finish(&log, &outcome, state).await;
    terminate(&a.termination_log, &outcome, delivered);
    Ok(())
}
