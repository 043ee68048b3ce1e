//! `oar run`: the manager loop.
//!
//! Each `[[runners]]` entry gets `request_concurrency` workers. A worker first takes a global
//! slot (`concurrent`) and a runner slot (`limit`), then asks GitLab for a job, so Oar never
//! takes a job it cannot start at once. Jobs run as tasks tracked until they end.
//!
//! Stopping: the first SIGTERM, SIGINT or SIGQUIT *drains* — no new job requests, `/health/ready`
//! turns 503, running jobs go on up to `shutdown_timeout`; then they are interrupted and
//! reported failed. A second signal interrupts them at once.

use crate::http::Readiness;
use crate::job::{self, JobEnv};
use crate::metrics::Metrics;
use crate::slots::Slots;
use anyhow::Context;
use oar_config::{Config, ExposeSecret, RunnerConfig};
use oar_gitlab::{
    ApiObserver, Client, ClientConfig, JobRequest, JobRequestOutcome, Token, VersionInfo,
};
use oar_job::report::ReporterConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything `run` needs besides the config file.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Path of config.toml.
    pub config_path: PathBuf,
    /// Base of relative builds/cache dirs.
    pub working_dir: PathBuf,
    /// Version string.
    pub version: String,
    /// Revision string.
    pub revision: String,
    /// How often the config file is checked for changes.
    pub reload_interval: Duration,
}

struct Observer {
    metrics: Metrics,
    runner: String,
    system_id: String,
}

impl ApiObserver for Observer {
    fn observe(&self, endpoint: &'static str, status: u16) {
        self.metrics
            .api_request(&self.runner, &self.system_id, endpoint, status);
    }
}

/// Builds the GitLab client of a runner.
pub fn client_for(runner: &RunnerConfig, version: &str) -> anyhow::Result<Client> {
    Client::new(&ClientConfig {
        url: runner.url.as_str().to_string(),
        tls_ca_file: runner.tls_ca_file.clone(),
        tls_cert_file: runner.tls_cert_file.clone(),
        tls_key_file: runner.tls_key_file.clone(),
        version: version.to_string(),
    })
    .with_context(|| format!("runner {:?}: cannot set up the GitLab client", runner.name))
}

/// An error with all its causes (`a: b: c`), so that a log line says why, e.g. which
/// certificate problem made a request to GitLab fail.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The `info` object for a runner.
pub fn info_for(runner: &RunnerConfig, version: &str, revision: &str) -> VersionInfo {
    let shell = match runner.shell {
        Some(oar_config::Shell::Sh) => "sh",
        _ => "bash",
    };
    oar_gitlab::info::version_info(version, revision, runner.executor.as_str(), shell)
}

/// Shared state of the manager.
struct Shared {
    opts: ManagerOptions,
    metrics: Metrics,
    readiness: Readiness,
    system_id: String,
    global: Arc<Slots>,
    runner_slots: Mutex<HashMap<String, Arc<Slots>>>,
    jobs: TaskTracker,
    drain: CancellationToken,
    interrupt: CancellationToken,
    iam: crate::cache::IamProviders,
    /// The config file's stamp as the reload last dealt with it (accepted or refused).
    stamp: Mutex<Stamp>,
}

impl Shared {
    fn config_stamp(&self) -> Stamp {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_config_stamp(&self, stamp: Stamp) {
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
    }

    fn slots_for(&self, runner: &RunnerConfig) -> Arc<Slots> {
        let cap = runner.limit.map_or(usize::MAX, |l| l as usize);
        let mut map = self.runner_slots.lock().unwrap_or_else(|p| p.into_inner());
        let slots = map
            .entry(runner.token.expose_secret().to_string())
            .or_insert_with(|| Slots::new(cap));
        slots.set_capacity(cap);
        Arc::clone(slots)
    }
}

/// The stamp of the config file ([`modified`]).
type Stamp = Option<(SystemTime, u64, u64)>;

/// Starts the workers of every runner; they stop when `stop` fires.
fn start_workers(
    shared: &Arc<Shared>,
    config: &Config,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    shared.global.set_capacity(config.concurrent as usize);
    shared.metrics.set_concurrent(config.concurrent);
    for runner in &config.runners {
        let client = client_for(runner, &shared.opts.version)?.with_observer(Arc::new(Observer {
            metrics: shared.metrics.clone(),
            runner: runner.name.clone(),
            system_id: shared.system_id.clone(),
        }));
        let env = JobEnv {
            login_shell: true,
            client,
            info: info_for(runner, &shared.opts.version, &shared.opts.revision),
            system_id: shared.system_id.clone(),
            working_dir: shared.opts.working_dir.clone(),
            metrics: shared.metrics.clone(),
            reporter: ReporterConfig::default(),
            iam: shared.iam.clone(),
            kube: None,
        };
        shared
            .metrics
            .set_limit(&runner.name, &shared.system_id, runner.limit.unwrap_or(0));
        shared.metrics.set_request_concurrency(
            &runner.name,
            &shared.system_id,
            runner.request_concurrency,
        );
        let runner = Arc::new(runner.clone());
        let (shared, check_interval, stop) =
            (Arc::clone(shared), config.check_interval, stop.clone());
        if runner.executor == oar_config::Executor::Kubernetes {
            // Connecting is async and may have to wait for the API server; the runner's workers
            // start once its pod watch is up and the pods of a previous manager are adopted.
            tokio::spawn(async move {
                let Some(env) = connect_kube(&shared, env, &runner, &stop).await else {
                    return;
                };
                spawn_workers(&shared, env, runner, check_interval, &stop);
            });
        } else {
            spawn_workers(&shared, env, runner, check_interval, &stop);
        }
    }
    Ok(())
}

fn spawn_workers(
    shared: &Arc<Shared>,
    env: JobEnv,
    runner: Arc<RunnerConfig>,
    check_interval: Duration,
    stop: &CancellationToken,
) {
    let last_update = Arc::new(Mutex::new(String::new()));
    for _ in 0..runner.request_concurrency.max(1) {
        let worker = Worker {
            shared: Arc::clone(shared),
            env: env.clone(),
            runner: Arc::clone(&runner),
            check_interval,
            last_update: Arc::clone(&last_update),
            stop: stop.clone(),
        };
        tokio::spawn(worker.run());
    }
}

/// Connects a Kubernetes runner (retrying while the API server is unreachable) and adopts the
/// job pods a previous manager left: each holds a slot until its pod ends.
async fn connect_kube(
    shared: &Arc<Shared>,
    mut env: JobEnv,
    runner: &Arc<RunnerConfig>,
    stop: &CancellationToken,
) -> Option<JobEnv> {
    let exec = loop {
        // The watch lives until the manager starts draining: running job pods are left to
        // finish on their own and are adopted by the next manager.
        match crate::kube_job::connect(runner, shared.drain.clone()).await {
            Ok(e) => break e,
            Err(e) => {
                tracing::error!(runner = %runner.name, error = %format!("{e:#}"), "cannot reach Kubernetes; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    };
    env.kube = Some(Arc::clone(&exec));
    let runner_slots = shared.slots_for(runner);
    for pod in crate::kube_job::adoptable(&exec) {
        // More pods than slots (a lower `concurrent` than the previous manager's): the next
        // waits until one ends. Draining leaves the rest to the next manager.
        let (global, local) = tokio::select! {
            slots = async { (shared.global.acquire().await, runner_slots.acquire().await) } => slots,
            _ = shared.drain.cancelled() => return None,
        };
        let (env, exec, runner) = (env.clone(), Arc::clone(&exec), Arc::clone(runner));
        shared.jobs.spawn(async move {
            crate::kube_job::adopt(&env, &exec, &runner, pod).await;
            drop((global, local));
        });
    }
    Some(env)
}

struct Worker {
    shared: Arc<Shared>,
    env: JobEnv,
    runner: Arc<RunnerConfig>,
    check_interval: Duration,
    last_update: Arc<Mutex<String>>,
    stop: CancellationToken,
}

impl Worker {
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    async fn run(self) {
        let runner_slots = self.shared.slots_for(&self.runner);
        let mut failures = 0u32;
        loop {
            // The file changed since this worker's config was read (an edit, or `oar
            // unregister` in the chart's preStop removing this runner): no request goes out
            // with the old config, since a request would make GitLab register this runner
            // manager again. The reload replaces the workers, or keeps them when it refuses the
            // new file.
            if modified(&self.shared.opts.config_path) != self.shared.config_stamp() {
                if !self.pause(self.shared.opts.reload_interval).await {
                    return;
                }
                continue;
            }
            let global = tokio::select! {
                g = self.shared.global.acquire() => g,
                _ = self.stop.cancelled() => return,
            };
            let local = tokio::select! {
                l = runner_slots.acquire() => l,
                _ = self.stop.cancelled() => return,
            };
            let req = JobRequest {
                token: Token::new(self.runner.token.expose_secret()),
                system_id: self.shared.system_id.clone(),
                last_update: self
                    .last_update
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_default(),
                info: self.env.info.clone(),
            };
            // Dropping a request in flight is safe: GitLab re-queues a job nobody acknowledged.
            let result = tokio::select! {
                r = self.env.client.request_job(&req) => r,
                _ = self.stop.cancelled() => return,
            };
            match result {
                Ok(res) => {
                    failures = 0;
                    self.shared
                        .readiness
                        .set_ready(!self.shared.drain.is_cancelled());
                    if let (Some(v), Ok(mut l)) = (res.last_update, self.last_update.lock()) {
                        *l = v;
                    }
                    match res.outcome {
                        JobRequestOutcome::Job(job) => {
                            let (env, runner) = (self.env.clone(), Arc::clone(&self.runner));
                            let interrupt = self.shared.interrupt.clone();
                            self.shared.jobs.spawn(async move {
                                let slot = global.id();
                                job::run(&env, &runner, *job, slot, interrupt).await;
                                drop((global, local));
                            });
                        }
                        JobRequestOutcome::Malformed { id, token, reason } => {
                            tracing::error!(job_id = ?id, %reason, "GitLab sent a job payload Oar cannot read");
                            if let (Some(id), Some(token)) = (id, token) {
                                let env = self.env.clone();
                                self.shared.jobs.spawn(async move {
                                    job::fail_malformed(&env, id, token, &reason).await;
                                    drop((global, local));
                                });
                            }
                        }
                        JobRequestOutcome::NoJob => {
                            drop((global, local));
                            if !self.pause(self.check_interval).await {
                                return;
                            }
                        }
                    }
                }
                Err(e) => {
                    drop((global, local));
                    failures += 1;
                    tracing::warn!(runner = %self.runner.name, error = %error_chain(&e), "job request failed");
                    let wait = if failures >= self.runner.unhealthy_requests_limit.max(1) {
                        tracing::error!(
                            runner = %self.runner.name,
                            pause_s = self.runner.unhealthy_interval.as_secs(),
                            "runner is unhealthy; pausing job requests"
                        );
                        failures = 0;
                        self.runner.unhealthy_interval
                    } else {
                        self.check_interval
                    };
                    if !self.pause(wait).await {
                        return;
                    }
                }
            }
        }
    }
}

/// What tells a changed config file: modification time, size and inode. The time alone is
/// not enough: the kernel stamps files with a coarse clock, so an edit written in place (a
/// truncate, then the write) can keep the time of the truncate the runner may already have
/// read, while the size differs; an editor that saves by renaming changes the inode.
fn modified(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs_err::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    let loaded = oar_config::load(path).map_err(anyhow::Error::new)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

/// Runs the manager until it is stopped by signals, or by `stop` (tests).
pub async fn run(
    opts: ManagerOptions,
    metrics: Metrics,
    readiness: Readiness,
    system_id: String,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Stamped before the first read: an edit made while the runner starts is picked up (at
    // worst the same file is read twice), never missed.
    let mut stamp = modified(&opts.config_path);
    let config = load(&opts.config_path)?;
    if config.runners.is_empty() {
        anyhow::bail!(
            "{} has no [[runners]]; run oar register first",
            opts.config_path.display()
        );
    }
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        metrics,
        readiness: readiness.clone(),
        system_id,
        global: Slots::new(config.concurrent as usize),
        runner_slots: Mutex::new(HashMap::new()),
        iam: crate::cache::IamProviders::default(),
        jobs: TaskTracker::new(),
        drain: CancellationToken::new(),
        interrupt: CancellationToken::new(),
        stamp: Mutex::new(stamp),
    });
    let mut workers = CancellationToken::new();
    start_workers(&shared, &config, &workers)?;
    tracing::info!(
        runners = config.runners.len(),
        concurrent = config.concurrent,
        config = %opts.config_path.display(),
        "Oar is running"
    );
    let mut shutdown_timeout = config.shutdown_timeout;
    let mut reload = tokio::time::interval(opts.reload_interval);
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signals = crate::signals::Signals::new()?;
    let mut signals = signals;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = reload.tick() => {
                let now = modified(&opts.config_path);
                if now != stamp {
                    stamp = now;
                    // However the reload ends, the workers go on (see Worker::run) with the
                    // config it leaves.
                    shared.set_config_stamp(now);
                    match load(&opts.config_path) {
                        Ok(new) => {
                            let fresh = CancellationToken::new();
                            match start_workers(&shared, &new, &fresh) {
                                Ok(()) => {
                                    workers.cancel();
                                    workers = fresh;
                                    shutdown_timeout = new.shutdown_timeout;
                                    tracing::info!("configuration reloaded");
                                }
                                Err(e) => {
                                    fresh.cancel();
                                    tracing::error!(error = %format!("{e:#}"), "new configuration refused; keeping the old one");
                                }
                            }
                        }
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "new configuration refused; keeping the old one"),
                    }
                }
            }
            sig = signals.next() => {
                tracing::info!(signal = sig, running = shared.jobs.len(), "stopping: no new jobs; waiting for running jobs");
                break;
            }
            _ = &mut stop => {
                tracing::info!(running = shared.jobs.len(), "stopping: no new jobs; waiting for running jobs");
                break;
            }
        }
    }
    shared.drain.cancel();
    readiness.set_ready(false);
    workers.cancel();
    shared.jobs.close();
    tokio::select! {
        _ = shared.jobs.wait() => {}
        _ = tokio::time::sleep(shutdown_timeout) => {
            tracing::warn!(running = shared.jobs.len(), "shutdown_timeout reached; interrupting running jobs");
        }
        sig = signals.next() => {
            tracing::warn!(signal = sig, running = shared.jobs.len(), "second signal; interrupting running jobs");
        }
    }
    shared.interrupt.cancel();
    // Interrupted jobs still report their end to GitLab; that is bounded by the reporter.
    shared.jobs.wait().await;
    Ok(())
}
