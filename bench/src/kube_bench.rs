//! `kube-bench`: the Kubernetes executor on the test cluster of `scripts/cluster up`. Starts an
//! in-process FakeGitlab and the real `oar run` (release build) in a fresh namespace, then
//! measures:
//!
//! - the manager's RSS and CPU idle and while N job pods run (default 50 and 200);
//! - for a handful of single jobs: the time from the build step starting to FakeGitlab
//!   receiving its first line, and from the pod's creation to the step's first line, beside a
//!   bare busybox pod's creation to its first line, measured the same way in the same run;
//! - the manager's Kubernetes API calls per job, from the API server's audit log.
//!
//! and prints a table with the issue's targets. Not a test: it exits 0 when a target is missed.
//! See `bench/README.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use oar_testkit::cluster::{BUSYBOX_IMAGE, HELPER_IMAGE, TestCluster, TestNamespace};
use oar_testkit::{Endpoint, FakeGitlab, JobSpec, JobState};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// The runner token FakeGitlab knows the manager by.
const RUNNER_TOKEN: &str = "glrt-oarKubeBench0123456789";
/// The manager's ServiceAccount in the bench namespace (the audit log names its calls).
const MANAGER_SA: &str = "oar-manager";
/// Label the manager puts on job pods (`oar_kube::pod::LABEL_JOB_ID`).
const LABEL_JOB_ID: &str = "oar.dev/job-id";
/// What the step (and the bare pod) prints first: the wall clock, `OARBENCH_T0=<s>.<fraction>`.
/// GNU date has `%N`; busybox's date has not, its `ts` prints microseconds.
const T0_LINE: &str =
    r#"t=$(date +%s.%N); case "$t" in *N*) t=$(echo | ts %.s);; esac; echo "OARBENCH_T0=$t""#;
const T0_MARK: &str = "OARBENCH_T0=";

/// The issue's targets.
const TARGET_RSS_IDLE_MB: f64 = 20.0;
const TARGET_RSS_LOADED_MB: f64 = 60.0;
const TARGET_LOADED_JOBS: usize = 200;
const TARGET_FIRST_BYTE: Duration = Duration::from_millis(100);
const TARGET_START_OVERHEAD: Duration = Duration::from_millis(500);

/// Oar's Kubernetes executor on the test cluster: manager RSS/CPU under load, first-byte
/// latency, job start overhead against a bare pod, API calls per job.
#[derive(Debug, Parser)]
#[command(name = "kube-bench")]
struct Args {
    /// The `oar` binary (default: `oar` beside this binary, i.e. `target/release/oar` when run
    /// with `cargo run --release`).
    #[arg(long)]
    oar_bin: Option<PathBuf>,
    /// Numbers of concurrently running job pods to measure the manager at (ascending).
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    loads: Vec<usize>,
    /// Single jobs (and as many bare pods) for the latency figures.
    #[arg(long, default_value_t = 5)]
    latency_runs: usize,
    /// Seconds of each CPU measurement window.
    #[arg(long, default_value_t = 30)]
    measure_secs: u64,
    /// Seconds to wait before each measurement window (after the pods are Running).
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Seconds a load may take to have all its pods Running; past it the count reached is
    /// measured and reported.
    #[arg(long, default_value_t = 600)]
    start_timeout_secs: u64,
    /// FakeGitlab's `X-GitLab-Trace-Update-Interval` (GitLab's default is 3).
    #[arg(long, default_value_t = 3)]
    trace_interval: u64,
    /// The manager's `check_interval` (GitLab Runner's default is 3).
    #[arg(long, default_value_t = 3)]
    check_interval: u64,
    /// The jobs' build image (and the bare pod's image).
    #[arg(long, default_value = BUSYBOX_IMAGE)]
    build_image: String,
    /// The helper image.
    #[arg(long, default_value = HELPER_IMAGE)]
    helper_image: String,
    /// Keep the manager's log here (default: a temporary file, removed at the end).
    #[arg(long)]
    manager_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    eprintln!(
        "[kube-bench {:02}:{:02}:{:02}] {}",
        now / 3600 % 24,
        now / 60 % 60,
        now % 60,
        msg.as_ref()
    );
}

async fn run(args: Args) -> Result<()> {
    let oar_bin = match &args.oar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory around this binary")?
            .join("oar"),
    };
    if !oar_bin.is_file() {
        bail!(
            "no oar binary at {}: run `cargo build --release -p oar` or pass --oar-bin",
            oar_bin.display()
        );
    }
    let mut loads = args.loads.clone();
    loads.sort_unstable();
    loads.dedup();
    let concurrent = loads.last().copied().unwrap_or(1).max(1);

    let Some(cluster) = TestCluster::from_env().await else {
        bail!("no test cluster (see the message above)");
    };
    let ns = cluster.namespace("oar-bench").await?;
    progress(format!("namespace {}", ns.name()));
    let result = bench(&args, &oar_bin, &loads, concurrent, &ns).await;
    progress("deleting the namespace");
    let pods: Api<Pod> = ns.api();
    let name = ns.name().to_owned();
    ns.delete().await?;
    wait_namespace_empty(&pods, &name).await;
    result
}

/// Waits (polling the list once a second, at most 5 min) until the deleted namespace has no
/// pods left, so the node is quiet again when the bench returns.
async fn wait_namespace_empty(pods: &Api<Pod>, name: &str) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    loop {
        match pods.list(&Default::default()).await {
            Ok(l) if l.items.is_empty() => break,
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Ok(l) if Instant::now() > deadline => {
                progress(format!(
                    "{} pods of {name} still terminating after 5 min; not waiting longer",
                    l.items.len()
                ));
                return;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress(format!(
        "namespace {name} emptied in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
}

// ---------------------------------------------------------------------------------------------
// Pods seen through a watch

/// What the bench's own watch saw of one pod, by the wall clock when each event arrived.
#[derive(Debug, Clone, Default)]
struct PodSeen {
    job_id: Option<i64>,
    /// First event (ADDED).
    added: Option<SystemTime>,
    /// First event with phase `Running`.
    running: Option<SystemTime>,
    /// DELETED event.
    gone: Option<SystemTime>,
    phase: String,
}

#[derive(Default)]
struct PodBook {
    pods: Mutex<BTreeMap<String, PodSeen>>,
}

/// One watch on the namespace's pods, feeding a [`PodBook`]; waiters wake on every change.
#[derive(Clone)]
struct PodWatch {
    book: Arc<PodBook>,
    changed: watch::Receiver<u64>,
}

impl PodWatch {
    fn start(api: Api<Pod>) -> PodWatch {
        let book = Arc::new(PodBook::default());
        let (tx, changed) = watch::channel(0u64);
        let task_book = Arc::clone(&book);
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(ev)) => {
                        let now = SystemTime::now();
                        let mut pods = task_book
                            .pods
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        match ev {
                            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                                note(&mut pods, &p, now, false);
                            }
                            watcher::Event::Delete(p) => note(&mut pods, &p, now, true),
                            watcher::Event::Init | watcher::Event::InitDone => {}
                        }
                        drop(pods);
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Ok(None) => break,
                    Err(e) => progress(format!("pod watch: {e} (retrying)")),
                }
            }
        });
        PodWatch { book, changed }
    }

    fn snapshot(&self) -> BTreeMap<String, PodSeen> {
        self.book
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `check` returns `Some` (re-checked after every watch event), at most
    /// `timeout`.
    async fn wait<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&BTreeMap<String, PodSeen>) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.changed.clone();
        let deadline = Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            {
                let pods = self
                    .book
                    .pods
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(t) = check(&pods) {
                    return Some(t);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// The pod of job `id`, once it is gone.
    async fn job_pod_gone(&self, id: i64, timeout: Duration) -> Option<PodSeen> {
        self.wait(timeout, |pods| {
            pods.values()
                .find(|p| p.job_id == Some(id) && p.gone.is_some())
                .cloned()
        })
        .await
    }
}

fn note(pods: &mut BTreeMap<String, PodSeen>, pod: &Pod, now: SystemTime, deleted: bool) {
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let seen = pods.entry(name).or_default();
    seen.added.get_or_insert(now);
    seen.job_id = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_JOB_ID))
        .and_then(|v| v.parse().ok());
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Running" {
        seen.running.get_or_insert(now);
    }
    seen.phase = phase;
    if deleted {
        seen.gone.get_or_insert(now);
    }
}

// ---------------------------------------------------------------------------------------------
// The manager process

/// A `/proc` sample of the manager.
#[derive(Debug, Clone, Copy)]
struct ProcSample {
    at: Instant,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// Anonymous part of the RSS (heap, stacks), without the mapped binary.
    anon_kib: u64,
    /// Open file descriptors (sockets: the API server, GitLab).
    fds: usize,
}

fn sample(pid: u32) -> Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the manager (pid {pid}) is gone"))?;
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("unexpected /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("unexpected /proc/<pid>/stat")
    };
    let cpu_ticks = num(11)? + num(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        at,
        cpu_ticks,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        anon_kib: field("RssAnon:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Manager {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Manager {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "the manager exited ({status}); last lines of {}:\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }
}

/// The manager's ServiceAccount rules: the core resources the executor touches (a superset of
/// `oar_kube::rbac::RULES`, so a narrower product Role never stops the bench).
fn manager_rules() -> Vec<PolicyRule> {
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![PolicyRule {
        api_groups: Some(s(&[""])),
        resources: Some(s(&[
            "pods",
            "pods/log",
            "pods/status",
            "secrets",
            "events",
            "configmaps",
        ])),
        verbs: s(&[
            "create",
            "get",
            "list",
            "watch",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ]),
        ..PolicyRule::default()
    }]
}

fn write_config(
    path: &Path,
    args: &Args,
    gl: &FakeGitlab,
    ns: &str,
    concurrent: usize,
) -> Result<()> {
    let text = format!(
        r#"concurrent = {concurrent}
check_interval = {check}

[[runners]]
  name = "kube-bench"
  url = "{url}"
  token = "{RUNNER_TOKEN}"
  executor = "kubernetes"
  builds_dir = "/builds"
  cache_dir = "/cache"
  [runners.feature_flags]
    FF_USE_ADVANCED_POD_SPEC_CONFIGURATION = true
  [runners.kubernetes]
    namespace = "{ns}"
    image = "{image}"
    helper_image = "{helper}"
    pull_policy = "never"
    poll_timeout = {poll}
    [[runners.kubernetes.pod_spec]]
      name = "host-network"
      patch_type = "merge"
      patch = '{{"hostNetwork": true}}'
"#,
        check = args.check_interval,
        url = gl.url(),
        image = args.build_image,
        helper = args.helper_image,
        poll = args.start_timeout_secs.max(180),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Timestamps

/// Parses the `OARBENCH_T0=` value: `<seconds>.<fraction>`.
fn parse_t0(value: &str) -> Option<SystemTime> {
    let value: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (secs, frac) = value.split_once('.').unwrap_or((&value, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut frac: String = frac.chars().take(9).collect();
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: u32 = frac.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The first `OARBENCH_T0=<digits>` in `text`: its time and the byte offset of its last digit.
fn find_t0(text: &[u8]) -> Option<(SystemTime, usize)> {
    let mark = T0_MARK.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..]
        .windows(mark.len())
        .position(|w| w == mark)
        .map(|i| i + from)
    {
        let start = i + mark.len();
        let len = text[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
        if len > 0 && text[start].is_ascii_digit() {
            let value = std::str::from_utf8(&text[start..start + len]).ok()?;
            return Some((parse_t0(value)?, start + len - 1));
        }
        from = start;
    }
    None
}

/// `later - earlier`, negative values as zero (clocks are the same host's).
fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// When FakeGitlab received the trace byte at `offset` of job `id`: the first accepted PATCH
/// whose `Content-Range` holds it.
fn received_at(gl: &FakeGitlab, id: i64, offset: usize) -> Option<SystemTime> {
    gl.requests_to(Endpoint::PatchTrace)
        .into_iter()
        .filter(|r| r.job_id == Some(id) && r.status == Some(202))
        .filter(|r| {
            r.header("content-range")
                .and_then(|v| v.trim().split_once('-'))
                .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse().ok()?)))
                .is_some_and(|(a, b): (usize, usize)| a <= offset && offset <= b)
        })
        .map(|r| r.received)
        .min()
}

/// Job `id`'s trace PATCHes: arrival relative to `t0` and `Content-Range`, for the log.
fn patch_timeline(gl: &FakeGitlab, id: i64, t0: SystemTime) -> String {
    gl.requests_to(Endpoint::PatchTrace)
        .into_iter()
        .filter(|r| r.job_id == Some(id))
        .map(|r| {
            let rel = match r.received.duration_since(t0) {
                Ok(d) => format!("+{}", ms(d)),
                Err(e) => format!("-{}", ms(e.duration())),
            };
            format!(
                "{rel} [{}]{}",
                r.header("content-range").unwrap_or("?"),
                match r.status {
                    Some(202) => String::new(),
                    other => format!(" {other:?}"),
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Figures

#[derive(Debug, Default)]
struct Latency {
    /// Step start to FakeGitlab receiving the step's first line.
    first_byte: Vec<Duration>,
    /// Job pod ADDED to the step's first line.
    job_start: Vec<Duration>,
    /// Job pod ADDED to phase Running.
    job_running: Vec<Duration>,
    /// Bare pod ADDED to its first line.
    bare_start: Vec<Duration>,
    /// Bare pod ADDED to phase Running.
    bare_running: Vec<Duration>,
}

#[derive(Debug)]
struct LoadRow {
    label: String,
    wanted: usize,
    running: usize,
    ramp: Option<Duration>,
    ramp_cpu_per_job: Option<Duration>,
    cpu_pct: f64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    anon_kib: u64,
    fds: usize,
    /// Pod ADDED to Running, for the pods of this step.
    pod_running: Vec<Duration>,
    /// Pod ADDED to the step's first line, for the pods of this step.
    job_start: Vec<Duration>,
}

type Calls = BTreeMap<(String, String), usize>;

fn diff_calls(after: &Calls, before: &Calls) -> Calls {
    after
        .iter()
        .filter_map(|(k, n)| {
            let d = n.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn stats(v: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut v = v.to_vec();
    v.sort_unstable();
    let (min, max) = (*v.first()?, *v.last()?);
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2
    } else {
        v[mid]
    };
    Some((median, min, max))
}

fn median(v: &[Duration]) -> Option<Duration> {
    stats(v).map(|(m, _, _)| m)
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

// ---------------------------------------------------------------------------------------------
// The benchmark

async fn bench(
    args: &Args,
    oar_bin: &Path,
    loads: &[usize],
    concurrent: usize,
    ns: &TestNamespace,
) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("kube-bench-").tempdir()?;
    let gl = FakeGitlab::start().await?;
    gl.add_runner(RUNNER_TOKEN);
    gl.set_trace_update_interval(args.trace_interval);

    let kubeconfig = dir.path().join("manager.kubeconfig");
    let manager_user = ns
        .service_account_kubeconfig(MANAGER_SA, manager_rules(), &kubeconfig)
        .await?;
    let config = dir.path().join("config.toml");
    write_config(&config, args, &gl, ns.name(), concurrent)?;

    let pods_api: Api<Pod> = ns.api();
    let pods = PodWatch::start(pods_api.clone());

    let log = args
        .manager_log
        .clone()
        .unwrap_or_else(|| dir.path().join("oar.log"));
    let log_file = std::fs::File::create(&log)
        .with_context(|| format!("creating the manager log {}", log.display()))?;
    let child = Command::new(oar_bin)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", oar_bin.display()))?;
    let pid = child.id().context("the manager has no pid")?;
    let mut manager = Manager {
        child,
        pid,
        log: log.clone(),
    };
    progress(format!(
        "manager {} (pid {pid}) started, concurrent = {concurrent}; log {}",
        oar_bin.display(),
        log.display()
    ));

    let outcome = measure(args, loads, ns, &gl, &pods, &mut manager, &manager_user).await;
    // SIGKILL: the job pods are deleted with the namespace, nobody needs their reports.
    let _ = manager.child.kill().await;
    if outcome.is_err() {
        eprintln!(
            "last lines of the manager's log {}:\n{}",
            manager.log.display(),
            manager.log_tail()
        );
    }
    if args.manager_log.is_none() {
        drop(dir);
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    loads: &[usize],
    ns: &TestNamespace,
    gl: &FakeGitlab,
    pods: &PodWatch,
    manager: &mut Manager,
    manager_user: &str,
) -> Result<()> {
    let ticks = clock_ticks();
    let measure = Duration::from_secs(args.measure_secs);
    let settle = Duration::from_secs(args.settle_secs);

    // Ready: the workers ask for jobs once the pod watch is up.
    let ready = Instant::now();
    gl.wait_arrivals(Endpoint::RequestJob, 1, Duration::from_secs(120))
        .await
        .context("the manager never asked FakeGitlab for a job")?;
    manager.check_alive()?;
    progress(format!(
        "manager ready (first job request after {})",
        ms(ready.elapsed())
    ));
    let startup = sample(manager.pid)?;

    // Idle.
    tokio::time::sleep(settle).await;
    let idle = window(manager, measure, ticks).await?;
    let mut rows = vec![LoadRow {
        label: "idle".into(),
        wanted: 0,
        running: 0,
        ramp: None,
        ramp_cpu_per_job: None,
        cpu_pct: idle.0,
        rss_kib: idle.1.rss_kib,
        hwm_kib: idle.1.hwm_kib,
        threads: idle.1.threads,
        anon_kib: idle.1.anon_kib,
        fds: idle.1.fds,
        pod_running: Vec::new(),
        job_start: Vec::new(),
    }];
    progress(format!(
        "idle: RSS {:.1} MB, CPU {:.2} %",
        mb(idle.1.rss_kib),
        idle.0
    ));

    // Single jobs beside bare pods.
    let calls_before = manager_calls(ns, manager_user).await?;
    let mut lat = Latency::default();
    let pods_api: Api<Pod> = ns.api();
    for i in 0..args.latency_runs {
        bare_pod(args, &pods_api, pods, i, &mut lat).await?;
        single_job(gl, args.trace_interval, pods, manager, i, &mut lat).await?;
    }
    let calls_after = manager_calls(ns, manager_user).await?;
    let single_calls = diff_calls(&calls_after, &calls_before);

    // Loads.
    let mut load_calls: Option<(usize, Calls)> = None;
    let mut enqueued = 0usize;
    for &n in loads {
        manager.check_alive()?;
        let before = manager_calls(ns, manager_user).await?;
        let s0 = sample(manager.pid)?;
        let new_jobs: Vec<i64> = (enqueued..n)
            .map(|k| {
                gl.enqueue_job(
                    JobSpec::new("bench/load")
                        .name(&format!("load-{k}"))
                        .variable("GIT_STRATEGY", "none")
                        .script([T0_LINE, "sleep 3600"]),
                )
            })
            .collect();
        let added = new_jobs.len();
        enqueued = n;
        progress(format!("load {n}: {added} more jobs enqueued"));
        let (running, ramp) = wait_running(pods, n, args.start_timeout_secs, manager).await?;
        let s1 = sample(manager.pid)?;
        let ramp_cpu_per_job = (added > 0).then(|| {
            Duration::from_secs_f64((s1.cpu_ticks - s0.cpu_ticks) as f64 / ticks / added as f64)
        });
        let after = manager_calls(ns, manager_user).await?;
        if added > 0 && running == n {
            load_calls = Some((added, diff_calls(&after, &before)));
        }
        tokio::time::sleep(settle).await;
        let (cpu_pct, end) = window(manager, measure, ticks).await?;
        // Start figures of this step's pods (their first lines are at FakeGitlab by now: the
        // settle and measure windows are longer than the trace interval).
        let seen = pods.snapshot();
        let mut pod_running = Vec::new();
        let mut job_start = Vec::new();
        for id in &new_jobs {
            let Some(p) = seen.values().find(|p| p.job_id == Some(*id)) else {
                continue;
            };
            let Some(added_at) = p.added else { continue };
            if let Some(r) = p.running {
                pod_running.push(since(r, added_at));
            }
            if let Some((t0, _)) = gl.try_job(*id).and_then(|j| find_t0(&j.trace)) {
                job_start.push(since(t0, added_at));
            }
        }
        progress(format!(
            "load {n}: {running} pods Running; RSS {:.1} MB, CPU {cpu_pct:.2} %",
            mb(end.rss_kib)
        ));
        rows.push(LoadRow {
            label: format!("{n} jobs"),
            wanted: n,
            running,
            ramp,
            ramp_cpu_per_job,
            cpu_pct,
            rss_kib: end.rss_kib,
            hwm_kib: end.hwm_kib,
            threads: end.threads,
            anon_kib: end.anon_kib,
            fds: end.fds,
            pod_running,
            job_start,
        });
    }
    manager.check_alive()?;
    let last = sample(manager.pid)?;

    print_report(
        args,
        &startup,
        &last,
        &rows,
        &lat,
        &single_calls,
        load_calls.as_ref(),
        manager_user,
    );
    Ok(())
}

/// The manager's API calls in the namespace so far, by verb and resource. Tries three times:
/// the audit log is read after a flush that fails while the API server restarts (other people's
/// fault tests on the same cluster).
async fn manager_calls(ns: &TestNamespace, user: &str) -> Result<Calls> {
    let mut tries = 0;
    loop {
        match ns.api_calls(Some(user)).await {
            Ok(c) => return Ok(c.by_verb_and_resource()),
            Err(e) if tries < 2 => {
                tries += 1;
                progress(format!("reading the audit log: {e}; trying again"));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Measures CPU over `len`: (percent of one core, the sample at the end).
async fn window(manager: &mut Manager, len: Duration, ticks: f64) -> Result<(f64, ProcSample)> {
    manager.check_alive()?;
    let a = sample(manager.pid)?;
    tokio::time::sleep(len).await;
    let b = sample(manager.pid)?;
    let secs = (b.at - a.at).as_secs_f64();
    let cpu = (b.cpu_ticks - a.cpu_ticks) as f64 / ticks / secs * 100.0;
    Ok((cpu, b))
}

/// Waits until `n` job pods are Running (and not gone); returns how many are and how long it
/// took (`None` when the timeout passed first).
async fn wait_running(
    pods: &PodWatch,
    n: usize,
    timeout_secs: u64,
    manager: &mut Manager,
) -> Result<(usize, Option<Duration>)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_secs);
    let count = |pods: &BTreeMap<String, PodSeen>| {
        pods.values()
            .filter(|p| p.job_id.is_some() && p.gone.is_none() && p.phase == "Running")
            .count()
    };
    loop {
        let step = Duration::from_secs(15).min(deadline.saturating_duration_since(Instant::now()));
        if pods
            .wait(step, |p| (count(p) >= n).then_some(()))
            .await
            .is_some()
        {
            let took = started.elapsed();
            progress(format!("{n} job pods Running after {}", ms(took)));
            return Ok((n, Some(took)));
        }
        manager.check_alive()?;
        let seen = pods.snapshot();
        let mut phases: BTreeMap<String, usize> = BTreeMap::new();
        for p in seen
            .values()
            .filter(|p| p.job_id.is_some() && p.gone.is_none())
        {
            *phases.entry(p.phase.clone()).or_default() += 1;
        }
        progress(format!(
            "waiting for {n} Running job pods ({:.0} s): {phases:?}",
            started.elapsed().as_secs_f64()
        ));
        if Instant::now() >= deadline {
            let c = count(&seen);
            progress(format!(
                "only {c} of {n} job pods Running after {timeout_secs} s: measuring at {c}"
            ));
            return Ok((c, None));
        }
    }
}

/// A bare busybox pod, host network like the job pods: ADDED to Running and to its first line.
async fn bare_pod(
    args: &Args,
    api: &Api<Pod>,
    pods: &PodWatch,
    i: usize,
    lat: &mut Latency,
) -> Result<()> {
    let name = format!("bare-{i}");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "hostNetwork": true,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "bare",
                "image": args.build_image,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("{T0_LINE}; sleep 1")],
            }],
        },
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    let done = pods
        .wait(Duration::from_secs(120), |p| {
            p.get(&name)
                .filter(|s| s.phase == "Succeeded" || s.phase == "Failed")
                .cloned()
        })
        .await
        .with_context(|| format!("bare pod {name} did not finish within 120 s"))?;
    if done.phase != "Succeeded" {
        bail!("bare pod {name} failed");
    }
    let logs = api.logs(&name, &LogParams::default()).await?;
    let (t0, _) = find_t0(logs.as_bytes())
        .with_context(|| format!("no {T0_MARK} in the log of {name}: {logs:?}"))?;
    let added = done.added.context("no ADDED time")?;
    lat.bare_start.push(since(t0, added));
    if let Some(r) = done.running {
        lat.bare_running.push(since(r, added));
    }
    api.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await?;
    pods.wait(Duration::from_secs(60), |p| {
        p.get(&name).and_then(|s| s.gone).map(drop)
    })
    .await
    .with_context(|| format!("bare pod {name} not gone within 60 s"))?;
    progress(format!(
        "bare pod {i}: ADDED -> first line {}",
        ms(since(t0, added))
    ));
    Ok(())
}

/// One job alone: its first line's trip to FakeGitlab, and its pod's start.
async fn single_job(
    gl: &FakeGitlab,
    trace_interval: u64,
    pods: &PodWatch,
    manager: &mut Manager,
    i: usize,
    lat: &mut Latency,
) -> Result<()> {
    let id = gl.enqueue_job(
        JobSpec::new("bench/latency")
            .name(&format!("latency-{i}"))
            .variable("GIT_STRATEGY", "none")
            // The job outlives a trace update interval: the first line must come through the
            // running stream, not the final flush at the job's end.
            .script([T0_LINE.to_owned(), format!("sleep {}", trace_interval + 2)]),
    );
    let job = match gl.wait_job_finished(id, Duration::from_secs(180)).await {
        Ok(j) => j,
        Err(e) => {
            manager.check_alive()?;
            return Err(e);
        }
    };
    if job.state != JobState::Success {
        bail!("job {id} ended {}:\n{}", job.state, job.trace_str());
    }
    let (t0, offset) =
        find_t0(&job.trace).with_context(|| format!("no {T0_MARK} in the trace of job {id}"))?;
    let got = received_at(gl, id, offset)
        .with_context(|| format!("no accepted trace PATCH of job {id} holds byte {offset}"))?;
    let pod = pods
        .job_pod_gone(id, Duration::from_secs(120))
        .await
        .with_context(|| format!("the pod of job {id} was not deleted within 120 s"))?;
    let added = pod.added.context("no ADDED time")?;
    lat.first_byte.push(since(got, t0));
    lat.job_start.push(since(t0, added));
    if let Some(r) = pod.running {
        lat.job_running.push(since(r, added));
    }
    progress(format!(
        "job {id}: ADDED -> first line {}, first line -> FakeGitlab {}; trace PATCHes (from the \
         first line, range): {}",
        ms(since(t0, added)),
        ms(since(got, t0)),
        patch_timeline(gl, id, t0)
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    args: &Args,
    startup: &ProcSample,
    last: &ProcSample,
    rows: &[LoadRow],
    lat: &Latency,
    single_calls: &Calls,
    load_calls: Option<&(usize, Calls)>,
    manager_user: &str,
) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## kube-bench\n\nbuild image {}, helper image {}, trace update interval {} s, \
         check_interval {} s, CPU windows {} s; MB = 10^6 bytes; CPU in % of one core.\n",
        args.build_image,
        args.helper_image,
        args.trace_interval,
        args.check_interval,
        args.measure_secs
    );

    let _ = writeln!(out, "### Manager (`oar run`) resources\n");
    let _ = writeln!(
        out,
        "| load | pods Running | time to all Running | manager CPU per job started | CPU (steady) | RSS (anonymous part) | peak RSS so far | threads | open fds | pod ADDED -> Running (median / max) | pod ADDED -> first script line (median / max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| at start | 0 | | | | {:.1} MB ({:.1}) | {:.1} MB | {} | {} | | |",
        mb(startup.rss_kib),
        mb(startup.anon_kib),
        mb(startup.hwm_kib),
        startup.threads,
        startup.fds
    );
    for r in rows {
        let pair = |v: &[Duration]| {
            stats(v).map_or_else(String::new, |(m, _, max)| {
                format!("{} / {}", ms(m), ms(max))
            })
        };
        let _ = writeln!(
            out,
            "| {} | {}{} | {} | {} | {:.2} % | {:.1} MB ({:.1}) | {:.1} MB | {} | {} | {} | {} |",
            r.label,
            r.running,
            if r.running < r.wanted {
                format!(" of {}", r.wanted)
            } else {
                String::new()
            },
            r.ramp.map_or_else(
                || if r.wanted == 0 {
                    String::new()
                } else {
                    "timed out".into()
                },
                ms
            ),
            r.ramp_cpu_per_job.map_or_else(String::new, ms),
            r.cpu_pct,
            mb(r.rss_kib),
            mb(r.anon_kib),
            mb(r.hwm_kib),
            r.threads,
            r.fds,
            pair(&r.pod_running),
            pair(&r.job_start),
        );
    }
    let _ = writeln!(
        out,
        "\nPeak RSS of the whole run (VmHWM): {:.1} MB.\n",
        mb(last.hwm_kib)
    );

    let _ = writeln!(
        out,
        "### Single jobs ({} runs, each beside a bare pod)\n",
        lat.first_byte.len()
    );
    let _ = writeln!(out, "| figure | median | min | max |");
    let _ = writeln!(out, "|---|---|---|---|");
    let line = |out: &mut String, name: &str, v: &[Duration]| {
        if let Some((m, lo, hi)) = stats(v) {
            let _ = writeln!(out, "| {name} | {} | {} | {} |", ms(m), ms(lo), ms(hi));
        } else {
            let _ = writeln!(out, "| {name} | n/a | | |");
        }
    };
    line(
        &mut out,
        "build step's first line -> received by FakeGitlab",
        &lat.first_byte,
    );
    line(
        &mut out,
        "oar job pod ADDED -> build step's first line",
        &lat.job_start,
    );
    line(
        &mut out,
        "bare pod ADDED -> its first line (cluster's pod start)",
        &lat.bare_start,
    );
    line(&mut out, "oar job pod ADDED -> Running", &lat.job_running);
    line(&mut out, "bare pod ADDED -> Running", &lat.bare_running);

    let _ = writeln!(
        out,
        "\n### Manager API calls per job (audit log, user {manager_user})\n"
    );
    let runs = lat.first_byte.len().max(1);
    let _ = writeln!(
        out,
        "| verb | resource | per single job (whole life, {runs} jobs) | per job of the last load (create -> Running{}) |",
        load_calls.map_or_else(String::new, |(n, _)| format!(", {n} jobs"))
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let mut keys: Vec<&(String, String)> = single_calls.keys().collect();
    if let Some((_, c)) = load_calls {
        keys.extend(c.keys());
    }
    keys.sort();
    keys.dedup();
    let per = |c: &Calls, k: &(String, String), n: usize| {
        c.get(k)
            .map_or_else(|| "0".into(), |v| format!("{:.2}", *v as f64 / n as f64))
    };
    for k in &keys {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            k.0,
            k.1,
            per(single_calls, k, runs),
            load_calls.map_or_else(|| "n/a".into(), |(n, c)| per(c, k, *n))
        );
    }
    let total = |c: &Calls| c.values().sum::<usize>();
    let _ = writeln!(
        out,
        "| **all** | | {:.2} | {} |",
        total(single_calls) as f64 / runs as f64,
        load_calls.map_or_else(
            || "n/a".into(),
            |(n, c)| format!("{:.2}", total(c) as f64 / *n as f64)
        )
    );

    // Targets.
    let _ = writeln!(out, "\n### Targets\n");
    let _ = writeln!(out, "| target | measured | result | measured / target |");
    let _ = writeln!(out, "|---|---|---|---|");
    let idle = rows.first();
    if let Some(idle) = idle {
        let v = mb(idle.rss_kib);
        let _ = writeln!(
            out,
            "| RSS idle < {TARGET_RSS_IDLE_MB} MB | {v:.1} MB | {} | {:.2} |",
            verdict(v < TARGET_RSS_IDLE_MB),
            v / TARGET_RSS_IDLE_MB
        );
    }
    match rows.iter().find(|r| r.wanted == TARGET_LOADED_JOBS) {
        Some(r) => {
            let v = mb(r.rss_kib);
            let note = if r.running < r.wanted {
                format!(" (only {} pods Running)", r.running)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| RSS at {TARGET_LOADED_JOBS} jobs < {TARGET_RSS_LOADED_MB} MB | {v:.1} MB{note} | {} | {:.2} |",
                verdict(v < TARGET_RSS_LOADED_MB && r.running == r.wanted),
                v / TARGET_RSS_LOADED_MB
            );
        }
        None => {
            let biggest = rows
                .iter()
                .filter(|r| r.wanted > 0)
                .max_by_key(|r| r.running);
            let measured = biggest.map_or_else(
                || "not measured".into(),
                |r| format!("{:.1} MB at {} jobs", mb(r.rss_kib), r.running),
            );
            let _ = writeln!(
                out,
                "| RSS at {TARGET_LOADED_JOBS} jobs < {TARGET_RSS_LOADED_MB} MB | {measured} | not measured at {TARGET_LOADED_JOBS} | |"
            );
        }
    }
    if let Some((m, _, max)) = stats(&lat.first_byte) {
        let _ = writeln!(
            out,
            "| first byte < {} after the step starts | median {}, max {} | {} | {:.1} (max) |",
            ms(TARGET_FIRST_BYTE),
            ms(m),
            ms(max),
            verdict(max < TARGET_FIRST_BYTE),
            max.as_secs_f64() / TARGET_FIRST_BYTE.as_secs_f64()
        );
    }
    if let (Some(job), Some(bare)) = (median(&lat.job_start), median(&lat.bare_start)) {
        let over = job.saturating_sub(bare);
        let _ = writeln!(
            out,
            "| job start within {} of the bare pod start | {} vs {} (+{}, {:.2}x the bare pod) | {} | {:.2} |",
            ms(TARGET_START_OVERHEAD),
            ms(job),
            ms(bare),
            ms(over),
            job.as_secs_f64() / bare.as_secs_f64().max(1e-9),
            verdict(over <= TARGET_START_OVERHEAD),
            over.as_secs_f64() / TARGET_START_OVERHEAD.as_secs_f64()
        );
    }
    print!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t0_values() {
        let t = parse_t0("1795878869.226325 ").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_795_878_869, 226_325_000)
        );
        let t = parse_t0("1795878869.123456789").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(),
            123_456_789
        );
        assert!(parse_t0("x").is_none());
    }

    #[test]
    fn t0_skips_the_echoed_command() {
        let trace = b"\x1b[32;1m$ echo \"OARBENCH_T0=$t\"\x1b[0;m\nOARBENCH_T0=12.5 \nrest";
        let (t, end) = find_t0(trace).unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(12_500)
        );
        assert_eq!(trace[end], b'5');
    }

    #[test]
    fn call_diffs() {
        let k = |v: &str| ("create".to_owned(), v.to_owned());
        let before: Calls = [(k("pods"), 2)].into();
        let after: Calls = [(k("pods"), 5), (k("secrets"), 3)].into();
        let d = diff_calls(&after, &before);
        assert_eq!(d.get(&k("pods")), Some(&3));
        assert_eq!(d.get(&k("secrets")), Some(&3));
    }
}
