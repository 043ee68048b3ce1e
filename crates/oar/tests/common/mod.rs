//! Shared fixture of the end-to-end tests: a FakeGitlab, a temp dir with config.toml, and the
//! real `oar` binary.

#![allow(dead_code)]

pub mod kube;
pub mod kube_run;

use oar_testkit::{FakeGitlab, JobSnapshot, TlsOptions};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The runner token every fixture registers.
pub const RUNNER_TOKEN: &str = "glrt-oarTestToken0123456789";

/// How long any single job may take in these tests.
pub const JOB_WAIT: Duration = Duration::from_secs(60);

pub struct Fixture {
    pub gl: FakeGitlab,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let gl = FakeGitlab::start().await.expect("fake gitlab starts");
        Self::with(gl)
    }

    /// A fixture whose FakeGitlab serves HTTPS (see [`FakeGitlab::start_tls`]).
    pub async fn new_tls(options: TlsOptions) -> Fixture {
        let gl = FakeGitlab::start_tls(options)
            .await
            .expect("fake gitlab starts");
        Self::with(gl)
    }

    fn with(gl: FakeGitlab) -> Fixture {
        gl.add_runner(RUNNER_TOKEN);
        gl.set_trace_update_interval(1);
        Fixture {
            gl,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.dir.path().join("builds")
    }

    /// Writes config.toml with one shell runner; `globals` and `runner_extra` are raw TOML.
    pub fn write_config(&self, globals: &str, runner_extra: &str) {
        let text = format!(
            "{globals}\ncheck_interval = 1\n\n[[runners]]\n  name = \"e2e\"\n  url = \"{url}\"\n  token = \"{RUNNER_TOKEN}\"\n  executor = \"shell\"\n  builds_dir = \"{builds}\"\n  cache_dir = \"{cache}\"\n{runner_extra}\n",
            url = self.gl.url(),
            builds = self.builds_dir().display(),
            cache = self.dir.path().join("cache").display(),
        );
        std::fs::write(self.config_path(), text).expect("write config");
    }

    /// `runner_extra` TOML lines pointing the runner at the HTTPS FakeGitlab's CA and, with
    /// `client_cert`, at its client certificate and key.
    pub fn tls_config(&self, client_cert: bool) -> String {
        let path = |p: Option<&std::path::Path>| {
            p.expect("FakeGitlab serves HTTPS with these files")
                .display()
                .to_string()
        };
        let mut text = format!("  tls-ca-file = \"{}\"\n", path(self.gl.ca_pem_path()));
        if client_cert {
            text.push_str(&format!(
                "  tls-cert-file = \"{}\"\n  tls-key-file = \"{}\"\n",
                path(self.gl.client_cert_pem_path()),
                path(self.gl.client_key_pem_path())
            ));
        }
        text
    }

    pub fn oar(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_oar"));
        c.current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            // A CA bundle set in the environment would win over the jobs' git settings.
            .env_remove("GIT_SSL_CAINFO")
            .env_remove("GIT_SSL_CAPATH")
            .env_remove("GIT_SSL_CERT")
            .env_remove("GIT_SSL_KEY")
            // These are `oar register`'s defaults for --tls-*-file; tests pass what they mean.
            .env_remove("CI_SERVER_TLS_CA_FILE")
            .env_remove("CI_SERVER_TLS_CERT_FILE")
            .env_remove("CI_SERVER_TLS_KEY_FILE")
            .kill_on_drop(true);
        c
    }

    /// `oar run` in the background.
    pub fn spawn_run(&self, extra: &[&str]) -> Child {
        let mut c = self.oar();
        c.arg("run")
            .arg("-c")
            .arg(self.config_path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c.spawn().expect("oar run starts")
    }

    /// `oar run-single` until `max_builds` jobs ran.
    pub async fn run_single(&self, max_builds: u32) -> std::process::Output {
        let out = self
            .oar()
            .arg("run-single")
            .args(["-c"])
            .arg(self.config_path())
            .args([
                "--max-builds",
                &max_builds.to_string(),
                "--wait-timeout",
                "60",
            ])
            .output();
        tokio::time::timeout(Duration::from_secs(180), out)
            .await
            .expect("run-single ends")
            .expect("runs")
    }

    pub async fn finished(&self, id: i64) -> JobSnapshot {
        self.gl
            .wait_job_finished(id, JOB_WAIT)
            .await
            .expect("job finishes")
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, sig).expect("signal sent");
}

/// `GET path` on `addr` (HTTP/1.1, one connection): the status and the whole answer.
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, buf)
}
