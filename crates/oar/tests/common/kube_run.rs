//! `oar run` (the long-running manager) against the test cluster, for the restart and fault
//! tests: its config, its own identity on the cluster (a ServiceAccount bound to exactly
//! [`oar_kube::rbac::RULES`], in a kubeconfig holding only that token, so the audit log tells
//! its calls apart), and the running process with its log captured line by line, so a test can
//! wait for a log line instead of sleeping.

use super::kube::kube_runner;
use super::{Fixture, RUNNER_TOKEN};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::ListParams;
use oar_testkit::cluster::TestNamespace;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;

/// Name of the manager's ServiceAccount (and Role, RoleBinding) in the test namespace.
pub const MANAGER_SA: &str = "oar-manager";

/// [`oar_kube::rbac::RULES`] as RBAC policy rules.
pub fn manager_rules() -> Vec<PolicyRule> {
    oar_kube::rbac::RULES
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(r.api_groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(r.resources.iter().map(|s| s.to_string()).collect()),
            verbs: r.verbs.iter().map(|s| s.to_string()).collect(),
            ..PolicyRule::default()
        })
        .collect()
}

/// Creates the manager's ServiceAccount with exactly [`oar_kube::rbac::RULES`] in `ns` and
/// writes a kubeconfig holding only its token to the fixture's temp dir: (its path, the user
/// name the audit log records for the manager).
pub async fn manager_kubeconfig(f: &Fixture, ns: &TestNamespace) -> (PathBuf, String) {
    let path = f.dir.path().join("manager.kubeconfig");
    let user = ns
        .service_account_kubeconfig(MANAGER_SA, manager_rules(), &path)
        .await
        .expect("the manager's ServiceAccount and kubeconfig");
    (path, user)
}

/// Writes config.toml: `globals` (raw TOML: `concurrent = 10`...) and one Kubernetes runner in
/// `ns` (see [`kube_runner`]).
pub fn write_run_config(f: &Fixture, globals: &str, ns: &str, kube_extra: &str) {
    let text = format!(
        "{globals}\ncheck_interval = 1\n\n[[runners]]\n  name = \"k8s-e2e\"\n  url = \"{}\"\n  token = \"{}\"\n{}",
        f.gl.url(),
        RUNNER_TOKEN,
        kube_runner(ns, kube_extra, "")
    );
    std::fs::write(f.config_path(), text).expect("write config");
}

/// The lines a process wrote to stderr, with the time each arrived.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<(Instant, String)>>,
}

/// A running `oar run`; its stderr is echoed to the test's (prefixed with a label) and kept.
/// Killed when dropped.
pub struct RunningOar {
    label: String,
    child: Child,
    /// When it was started.
    pub started: Instant,
    lines: Arc<Lines>,
    changed: watch::Receiver<u64>,
}

impl RunningOar {
    /// Starts `oar run -c config.toml` with `KUBECONFIG=kubeconfig`.
    pub fn spawn(f: &Fixture, kubeconfig: &std::path::Path, label: &str) -> RunningOar {
        let mut c = f.oar();
        c.env("KUBECONFIG", kubeconfig)
            .env("NO_COLOR", "1")
            .arg("run")
            .arg("-c")
            .arg(f.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = c.spawn().expect("oar run starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Lines::default());
        let (tx, changed) = watch::channel(0u64);
        let (task_lines, task_label) = (Arc::clone(&lines), label.to_owned());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[{task_label}] {line}");
                task_lines
                    .lines
                    .lock()
                    .unwrap()
                    .push((Instant::now(), line));
                tx.send_modify(|n| *n += 1);
            }
            // The sender goes with the task: waiters see the end of the log.
        });
        RunningOar {
            label: label.to_owned(),
            child,
            started,
            lines,
            changed,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        let lines = self.lines.lines.lock().unwrap();
        lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// The log lines so far that contain `needle`, with their arrival times.
    pub fn lines_with(&self, needle: &str) -> Vec<(Instant, String)> {
        let lines = self.lines.lines.lock().unwrap();
        lines
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until `n` log lines contain `needle`; returns them (with their arrival times).
    /// Panics after `timeout`, or when the log ends first.
    pub async fn wait_lines(
        &mut self,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            self.changed.borrow_and_update();
            let found = self.lines_with(needle);
            if found.len() >= n {
                return found;
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!(
                    "[{}] the log ended with {} of {n} lines containing {needle:?}",
                    self.label,
                    found.len()
                ),
                Err(_) => panic!(
                    "[{}] timed out after {timeout:?} with {} of {n} lines containing {needle:?}",
                    self.label,
                    found.len()
                ),
            }
        }
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("a pid"));
        nix::sys::signal::kill(pid, sig).expect("signal sent");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("oar run exit status"),
            Err(_) => panic!("[{}] oar run did not exit within {timeout:?}", self.label),
        }
    }

    /// SIGKILL, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// SIGTERM (drain): the exit status and how long the process took to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let at = Instant::now();
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(timeout).await;
        (status, at.elapsed())
    }
}

/// The job pods in `ns` now (every pod there is one: the namespace is the test's own).
pub async fn job_pods(ns: &TestNamespace) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
}

/// How many lines of `trace` are exactly `line`.
pub fn count_lines(trace: &str, line: &str) -> usize {
    trace
        .lines()
        .filter(|l| l.trim_end_matches('\r') == line)
        .count()
}
