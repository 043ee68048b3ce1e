//! The Kubernetes executor, manager side: a job becomes a Secret (its payload) and a Pod whose
//! helper drives the job itself; the manager waits on the shared watch, reports only what the
//! pod could not (image pull failures, unschedulable, OOM, eviction...), and cleans up.

use crate::job::{JobEnv, settings};
use anyhow::Context;
use oar_config::{ExposeSecret, KubernetesConfig, RunnerConfig};
use oar_gitlab::JobResponse;
use oar_gitlab::id_token::{Expected, Verifier, VerifierConfig};
use oar_job::agent::{AgentPayload, PAYLOAD_VERSION};
use oar_job::report::Reporter;
use oar_job::{FailureReason, JobContext, JobControl, JobOutcome, TraceLog, TraceLogOptions};
use oar_kube::identity::{self, IdTokenCheck, IdTokens};
use oar_kube::lifecycle::{JobPod, JobPods, LifecycleOptions, PodEnd};
use oar_kube::pod::{PodInput, build_payload_secret, build_pod};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The default helper image: the one of this Oar release.
pub fn default_helper_image() -> String {
    format!(
        "registry.example.invalid/oar/oar-helper:v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// One runner's connection to its cluster and its shared pod watch.
pub struct KubeExecutor {
    pods: JobPods,
    namespace: String,
    /// Verifies the ID tokens of `require_id_token` identity rules; made from the runner's
    /// GitLab client at the first job that needs it, then shared (it caches GitLab's keys).
    verifier: std::sync::OnceLock<Verifier>,
    /// Bounds the job pods being built and created at once (see [`CREATING_AT_ONCE`]).
    creating: tokio::sync::Semaphore,
}

/// How many job pods the manager builds and creates at once. A burst of jobs (hundreds taken
/// within seconds) would otherwise hold every job's context, pod spec and payload in memory
/// together while the API server works through the creates, and the allocator keeps that
/// peak as the manager's size for good. Creates take milliseconds each, so jobs barely wait.
const CREATING_AT_ONCE: usize = 16;

async fn client_for(k: &KubernetesConfig) -> anyhow::Result<kube::Client> {
    let mut config = match &k.host {
        Some(host) => {
            let uri: ::http::Uri = host
                .parse()
                .with_context(|| format!("[runners.kubernetes] host {host:?} is not a URL"))?;
            let mut c = kube::Config::new(uri);
            if let Some(ca) = &k.ca_file {
                let pem = tokio::fs::read(ca)
                    .await
                    .with_context(|| format!("cannot read ca_file {}", ca.display()))?;
                let certs = pem_certs(&pem).with_context(|| format!("ca_file {}", ca.display()))?;
                c.root_cert = Some(certs);
            }
            c
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes connection: set [runners.kubernetes] host, KUBECONFIG, or run in a pod",
        )?,
    };
    if let Some(token) = &k.bearer_token {
        config.auth_info.token = Some(token.expose_secret().to_string().into());
    }
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// DER certificates from PEM text; an error names what is wrong, and a file without any
/// certificate is one too.
fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not PEM certificates: {e}"))?;
    anyhow::ensure!(!certs.is_empty(), "it holds no certificate");
    Ok(certs)
}

/// Connects a Kubernetes runner: the API client and one watch on its namespace.
pub async fn connect(
    runner: &RunnerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<KubeExecutor>> {
    let k = runner.kubernetes.clone().unwrap_or_default();
    let client = client_for(&k).await?;
    let namespace = k.namespace.clone().unwrap_or_else(|| "default".into());
    let options = LifecycleOptions {
        cleanup_grace_period_seconds: Some(
            k.cleanup_grace_period_seconds
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0),
        ),
        cleanup_timeout: k.cleanup_resources_timeout,
        ..LifecycleOptions::default()
    };
    // Jobs that may choose their namespace need the watch of all of them (and the manager a
    // ClusterRole); else one watch of the runner's namespace (and a Role there).
    let pods = if k.namespace_overwrite_allowed.is_some() {
        JobPods::start_cluster_wide(client, runner.short_token(), shutdown, options)
            .await
            .context(
                "cannot watch pods in all namespaces, as namespace_overwrite_allowed needs \
                 (the manager needs a ClusterRole: rbac.clusterWideAccess in the chart)",
            )?
    } else {
        // The runner's namespace and those of its identity rules.
        let mut namespaces = vec![namespace.clone()];
        for rule in &k.identity {
            if let Some(ns) = &rule.namespace
                && !namespaces.contains(ns)
            {
                namespaces.push(ns.clone());
            }
        }
        JobPods::start_with(client, &namespaces, runner.short_token(), shutdown, options)
            .await
            .with_context(|| format!("cannot watch pods in namespaces {namespaces:?}"))?
    };
    Ok(Arc::new(KubeExecutor {
        pods,
        namespace,
        verifier: std::sync::OnceLock::new(),
        creating: tokio::sync::Semaphore::new(CREATING_AT_ONCE),
    }))
}

fn random_suffix() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}

/// What the manager needs to report a job whose pod could not: the job's reporter, and how to
/// build the job's log. The log is built only when the manager has something to write, so a
/// job whose pod reports itself costs the manager no log (and no masker) while it runs.
struct JobReport {
    reporter: Reporter,
    log: TraceLogOptions,
}

impl JobReport {
    fn new(env: &JobEnv, runner: &RunnerConfig, job: &JobResponse) -> Self {
        JobReport {
            reporter: Reporter::new(
                env.client.clone(),
                job.id,
                job.token.clone(),
                env.info.clone(),
                job.features.failure_reasons.clone(),
                env.reporter.clone(),
            ),
            log: TraceLogOptions::for_job(
                job,
                usize::try_from(runner.output_limit_bytes()).unwrap_or(usize::MAX),
                &[runner.token.expose_secret()],
            ),
        }
    }

    /// Reports a failure the manager found (no pod, or a pod that could not report): the
    /// reason goes into the job log, after whatever the pod's helper streamed before it stopped.
    async fn failure(&self, reason: FailureReason, message: &str) -> JobOutcome {
        let outcome = JobOutcome::failed(reason, None, message.to_string());
        self.deliver(&format!("\x1b[31;1mERROR: {message}\x1b[0;m\n"), &outcome)
            .await;
        outcome
    }

    /// Reports the end of a pod whose helper did not deliver the job's final state
    /// ([`PodEnd::needs_report`]): the helper's own outcome when it finished (GitLab was
    /// unreachable from the pod), else the failure the pod could not report.
    async fn end(&self, end: &PodEnd) -> JobOutcome {
        match end {
            PodEnd::Finished(m) => {
                let outcome = m.outcome();
                let color = if outcome.failure.is_none() {
                    "\x1b[32;1m"
                } else {
                    "\x1b[31;1m"
                };
                self.deliver(&format!("{color}{}\x1b[0;m\n", end.log_line()), &outcome)
                    .await;
                outcome
            }
            _ => {
                let outcome = outcome_of(end);
                let reason = outcome
                    .failure
                    .unwrap_or(FailureReason::RunnerSystemFailure);
                self.failure(reason, &end.log_line()).await
            }
        }
    }

    /// Sends `line` after the job log GitLab holds, and the final state.
    async fn deliver(&self, line: &str, outcome: &JobOutcome) {
        let log = TraceLog::new(self.log.clone());
        log.write(line.as_bytes());
        if !self.reporter.append_and_finish(&log, outcome).await {
            tracing::warn!(
                state = outcome.state(),
                "GitLab did not take the job's final state from the runner"
            );
        }
    }
}

/// Runs one job in a pod. The job is acknowledged here; from the pod's start its helper owns
/// the trace and the final state.
pub async fn run(
    env: &JobEnv,
    exec: &KubeExecutor,
    runner: &RunnerConfig,
    job: JobResponse,
    slot: usize,
    shutdown: CancellationToken,
) -> Option<JobOutcome> {
    let job_id = job.id;
    let report = JobReport::new(env, runner, &job);
    let control = JobControl {
        shutdown: shutdown.child_token(),
        ..JobControl::default()
    };
    // The log is empty when the job is acknowledged.
    let empty = TraceLog::new(TraceLogOptions::default());
    if let Err(why) = report.reporter.acknowledge(&empty, &control).await {
        tracing::warn!(job_id, reason = %why, "dropping the job");
        return None;
    }
    drop(empty);
    env.metrics.job_started(&runner.name, &env.system_id);
    let started = tokio::time::Instant::now();
    // What building and creating the pod needs (the job, its variables, the pod spec and the
    // payload) lives on the heap only until the pod exists: hundreds of running jobs then
    // hold just their pod's name and their reporter.
    let created = {
        // Closed never: the semaphore lives as long as the executor.
        let _permit = exec.creating.acquire().await.ok();
        Box::pin(create_pod(env, exec, runner, job, slot)).await
    };
    let outcome = match created {
        Err((reason, message)) => Some(report.failure(reason, &message).await),
        Ok((pod, poll_timeout)) => finish_pod(exec, &pod, poll_timeout, &report).await,
    };
    let Some(outcome) = outcome else {
        // Not an end: the job goes on in its pod, which reports it.
        tracing::info!(
            job_id,
            "the runner is stopping: the job goes on in its pod; the next manager adopts it"
        );
        return None;
    };
    crate::job::finished(env, runner, job_id, started, &outcome, None);
    Some(outcome)
}

/// Builds the job's pod and payload Secret and creates them; the pod and the runner's
/// `poll_timeout`, or why the job cannot run (its failure reason and message).
async fn create_pod(
    env: &JobEnv,
    exec: &KubeExecutor,
    runner: &RunnerConfig,
    job: JobResponse,
    slot: usize,
) -> Result<(JobPod, Duration), (FailureReason, String)> {
    let system = |e: String| (FailureReason::RunnerSystemFailure, e);
    let config = |e: String| (FailureReason::RunnerConfigurationError, e);
    let k = runner.kubernetes.clone().unwrap_or_default();
    let mut s = settings(runner, env, slot, slot)
        .await
        .map_err(|e| system(e.to_string()))?;
    s.shared_builds_dir = false;
    s.builds_dir = runner
        .builds_dir
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/builds".into());
    s.cache_dir = runner
        .cache_dir
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/cache".into());
    let ctx = JobContext::new(job, s).map_err(|e| config(e.to_string()))?;
    let pod_name = format!(
        "runner-{}-project-{}-concurrent-{}-{}",
        runner.short_token().to_ascii_lowercase(),
        ctx.job.job_info.project_id,
        slot,
        random_suffix()
    );
    let id_tokens = verify_id_tokens(env, exec, &k, &ctx.job).await?;
    let patch_files = BTreeMap::new();
    let helper_image = default_helper_image();
    let built = build_pod(&PodInput {
        config: &k,
        feature_flags: &runner.feature_flags,
        patch_files: &patch_files,
        job: &ctx.job,
        vars: &ctx.vars,
        pod_name: &pod_name,
        namespace_default: &exec.namespace,
        runner_short_token: runner.short_token(),
        runner_name: &runner.name,
        builds_dir: &ctx.layout.builds_dir,
        project_dir: &ctx.layout.project_dir,
        timeout: ctx.timeout,
        default_helper_image: &helper_image,
        id_tokens: &id_tokens,
    })
    .map_err(|e| config(e.to_string()))?;
    let (cache_urls, mut warnings) = crate::cache::urls_for_job(&env.iam, runner, &ctx).await;
    warnings.extend(built.warnings.iter().cloned());
    let payload = AgentPayload {
        version: PAYLOAD_VERSION,
        gitlab_url: runner.url.as_str().to_string(),
        info: env.info.clone(),
        debug_trace: ctx.debug_trace(),
        job: ctx.job,
        settings: ctx.settings,
        cache_urls,
        cache_max_upload_size: runner
            .cache
            .as_ref()
            .and_then(|c| c.max_uploaded_archive_size),
        warnings,
    };
    let bytes = serde_json::to_vec(&payload)
        .map_err(|e| system(format!("cannot encode the job payload: {e}")))?;
    let job_id = payload.job.id;
    drop(payload);
    let labels = built.pod.metadata.labels.clone().unwrap_or_default();
    let secret = build_payload_secret(&pod_name, &built.namespace, labels, &bytes);
    drop(bytes);
    let pod = exec
        .pods
        .create(&built, secret)
        .await
        .map_err(|e| system(format!("cannot create the job pod: {e}")))?;
    tracing::info!(job_id, pod = %pod.display_name(), "job pod created");
    Ok((pod, k.poll_timeout))
}

/// Verifies the job's ID tokens that identity rules ask for (`require_id_token`). A token
/// that does not verify is not an error here: the rules that need it do not match, and a job
/// asking for their account is refused with the reason.
async fn verify_id_tokens(
    env: &JobEnv,
    exec: &KubeExecutor,
    k: &KubernetesConfig,
    job: &JobResponse,
) -> Result<IdTokens, (FailureReason, String)> {
    let mut out = IdTokens::new();
    let names = identity::id_token_variables(k);
    if names.is_empty() {
        return Ok(out);
    }
    let verifier = match exec.verifier.get() {
        Some(v) => v,
        None => {
            let s = &k.id_token;
            let config = VerifierConfig::for_client(
                &env.client,
                &s.audience,
                s.issuer.as_deref(),
                s.jwks_url.as_deref(),
            )
            .map_err(|e| {
                (
                    FailureReason::RunnerConfigurationError,
                    format!("[runners.kubernetes.id_token]: {e}"),
                )
            })?;
            exec.verifier
                .get_or_init(|| Verifier::new(&env.client, config))
        }
    };
    let expected = Expected {
        job_id: job.id,
        project_path: &job.job_info.project_full_path,
        git_ref: &job.git_info.git_ref,
        ref_protected: job.ref_protected,
        environment: identity::payload_environment(job),
    };
    for name in names {
        // GitLab sends each ID token as a variable; the last definition wins.
        let Some(token) = job
            .variables
            .iter()
            .rev()
            .find(|v| v.key == name)
            .map(|v| v.value.as_str())
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let check = match verifier.verify(token, &expected).await {
            Ok(v) => IdTokenCheck::Verified {
                environment: v.environment,
            },
            Err(e) => {
                tracing::info!(job_id = job.id, variable = name, reason = %e, "ID token refused");
                IdTokenCheck::Refused(e.to_string())
            }
        };
        out.insert(name.to_owned(), check);
    }
    Ok(out)
}

/// Waits for a job pod's end, reports what the pod could not, and deletes it. `None` when the
/// manager stops watching first (draining): the pod is left to finish on its own.
async fn finish_pod(
    exec: &KubeExecutor,
    pod: &JobPod,
    poll_timeout: Duration,
    report: &JobReport,
) -> Option<JobOutcome> {
    let end = exec.pods.wait(pod, poll_timeout).await;
    if matches!(end, PodEnd::Unwatched { .. }) {
        return None;
    }
    let outcome = if end.needs_report() {
        report.end(&end).await
    } else {
        outcome_of(&end)
    };
    exec.pods.cleanup(pod).await;
    Some(outcome)
}

fn outcome_of(end: &PodEnd) -> JobOutcome {
    if let PodEnd::Finished(m) = end {
        return m.outcome();
    }
    let reason = match end.failure_reason() {
        Some("image_pull_failure") => FailureReason::ImagePullFailure,
        Some("job_execution_timeout") => FailureReason::JobExecutionTimeout,
        Some("script_failure") => FailureReason::ScriptFailure,
        Some("job_canceled") => FailureReason::JobCanceled,
        _ => FailureReason::RunnerSystemFailure,
    };
    JobOutcome::failed(reason, None, end.log_line())
}

/// The job pods a previous manager left that have not been cleaned up yet.
pub fn adoptable(exec: &KubeExecutor) -> Vec<JobPod> {
    exec.pods.list().into_iter().map(|i| i.job_pod()).collect()
}

/// Follows a job pod a previous manager created until it ends, then cleans up. The pod's
/// helper reports the job itself. For a pod that ends without reporting (OOM, deleted, helper
/// killed), the manager reports the failure with the job's token, read from the pod's payload
/// Secret when the pod is adopted (a Secret goes with its pod, so it is read while it exists).
pub async fn adopt(env: &JobEnv, exec: &KubeExecutor, runner: &RunnerConfig, pod: JobPod) {
    let started = tokio::time::Instant::now();
    tracing::info!(pod = %pod.display_name(), job_id = pod.job_id(), "adopting a job pod left by a previous manager");
    // The payload (one `get` Secret) is only needed should the pod end without reporting.
    let reported = exec.pods.list().into_iter().any(|info| {
        info.uid == pod.uid() && info.end.as_ref().is_some_and(|end| !end.needs_report())
    });
    let mut payload = if reported {
        None
    } else {
        read_payload(exec, &pod).await
    };
    let poll_timeout = runner
        .kubernetes
        .as_ref()
        .map_or(Duration::from_secs(180), |k| k.poll_timeout);
    let end = exec.pods.wait(&pod, poll_timeout).await;
    if matches!(end, PodEnd::Unwatched { .. }) {
        tracing::info!(pod = %pod.display_name(), "leaving the adopted job pod to the next manager");
        return;
    }
    if end.needs_report() {
        if payload.is_none() {
            payload = read_payload(exec, &pod).await;
        }
        match payload {
            Some(payload) => report_adopted(env, runner, payload, &end).await,
            None => tracing::warn!(pod = %pod.display_name(), end = %end.log_line(),
                "an adopted job pod ended without reporting its job, and its payload Secret is gone: cannot report the job"),
        }
    }
    exec.pods.cleanup(&pod).await;
    tracing::info!(pod = %pod.display_name(), job_id = pod.job_id(), end = %end.log_line(),
        duration_s = started.elapsed().as_secs_f64(), "adopted job pod done");
}

/// The payload of an adopted pod's job, or `None` (logged) when it cannot be read.
async fn read_payload(exec: &KubeExecutor, pod: &JobPod) -> Option<AgentPayload> {
    match exec.pods.payload(pod).await {
        Ok(Some(bytes)) => match AgentPayload::from_json(&bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(pod = %pod.display_name(), error = %e, "cannot read an adopted job pod's payload");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(pod = %pod.display_name(), error = %e, "cannot read an adopted job pod's payload");
            None
        }
    }
}

/// Reports the end of an adopted pod's job that its helper did not deliver, as [`finish_pod`]
/// does for the pods this manager created.
async fn report_adopted(env: &JobEnv, runner: &RunnerConfig, payload: AgentPayload, end: &PodEnd) {
    let report = JobReport::new(env, runner, &payload.job);
    drop(payload);
    tracing::warn!(job_id = report.reporter.job_id(), end = %end.log_line(), "an adopted job pod ended without reporting its job; reporting it");
    report.end(end).await;
}

#[cfg(test)]
mod tests {
    use super::pem_certs;

    #[tokio::test]
    async fn a_ca_file_is_read_as_pem_and_a_bad_one_is_refused_clearly() {
        let gl = oar_testkit::FakeGitlab::start_tls(oar_testkit::TlsOptions::default())
            .await
            .unwrap();
        let pem = std::fs::read(gl.ca_pem_path().unwrap()).unwrap();
        let certs = pem_certs(&pem).unwrap();
        assert_eq!(certs.len(), 1);
        // DER: a SEQUENCE.
        assert_eq!(certs[0].first(), Some(&0x30));
        let mut two = pem.clone();
        two.extend_from_slice(&pem);
        assert_eq!(pem_certs(&two).unwrap().len(), 2);
        let none = pem_certs(b"just some text\n").unwrap_err().to_string();
        assert!(none.contains("no certificate"), "{none}");
        let broken = pem_certs(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap_err()
            .to_string();
        assert!(broken.contains("not PEM"), "{broken}");
    }
}
