//! The fake's mutable state, behind one mutex, plus a change counter that waiters watch.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::spec::JobSpec;
use crate::types::{Fault, JobSnapshot, JobState, RequestRecord, RunnerRecord, StoredArtifact};
use crate::util;

/// Knobs tests turn.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `X-GitLab-Trace-Update-Interval` on PATCH answers.
    pub trace_update_interval: u64,
    /// How long `/jobs/request` is held while `last_update` is current.
    pub long_poll: Duration,
    /// Final PUTs answered 202 (per job) before the 200.
    pub final_update_accepted_times: u32,
    /// `X-GitLab-Trace-Update-Interval` on a 202 final-update answer.
    pub final_update_backoff: u64,
    /// Lifetime of new runner tokens (`token_expires_at`), `None` = never expires.
    pub token_expiry: Option<Duration>,
    /// Answer artifact downloads with a `302` to a pre-signed "object storage" URL on another
    /// host name (`localhost` instead of `127.0.0.1`), as GitLab with object storage does.
    pub artifacts_in_object_storage: bool,
    /// Pre-signed object-storage paths handed out: path → job id.
    pub storage_links: std::collections::HashMap<String, i64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            trace_update_interval: 3,
            long_poll: Duration::ZERO,
            final_update_accepted_times: 0,
            final_update_backoff: 1,
            token_expiry: None,
            artifacts_in_object_storage: false,
            storage_links: std::collections::HashMap::new(),
        }
    }
}

/// A GitLab project (with or without a repository).
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub id: i64,
    pub path: String,
    pub has_repo: bool,
}

/// A job as the server sees it.
pub(crate) struct Job {
    pub id: i64,
    pub token: String,
    pub pipeline_id: i64,
    pub sha: String,
    pub before_sha: String,
    pub git_ref: String,
    pub ref_type: &'static str,
    pub spec: JobSpec,
    pub state: JobState,
    pub runner_id: Option<i64>,
    pub acked: bool,
    pub finished: bool,
    pub trace: Vec<u8>,
    pub final_checksum: Option<String>,
    pub final_bytesize: Option<u64>,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub updates: Vec<Value>,
    pub artifacts: Vec<StoredArtifact>,
    pub accepted_final_updates: u32,
    pub payload: Option<Value>,
    pub debug_trace: bool,
    pub queued_at: Instant,
    pub started_at: Option<SystemTime>,
}

impl Job {
    pub fn snapshot(&self) -> JobSnapshot {
        let checksum_matches = match (&self.final_checksum, self.final_bytesize) {
            (Some(sum), Some(size)) => {
                *sum == util::crc32_checksum(&self.trace) && size == self.trace.len() as u64
            }
            _ => false,
        };
        JobSnapshot {
            id: self.id,
            project: self.spec.project_path.clone(),
            name: self.spec.name.clone(),
            stage: self.spec.stage.clone(),
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            pipeline_id: self.pipeline_id,
            state: self.state,
            failure_reason: self.failure_reason.clone(),
            exit_code: self.exit_code,
            trace: self.trace.clone(),
            final_checksum: self.final_checksum.clone(),
            final_bytesize: self.final_bytesize,
            checksum_matches,
            updates: self.updates.clone(),
            artifacts: self.artifacts.clone(),
            runner_id: self.runner_id,
            token: self.token.clone(),
            acknowledged: self.acked,
            finished: self.finished,
            payload: self.payload.clone(),
            debug_trace: self.debug_trace,
        }
    }

    /// Handed to a runner that has not sent `PUT state=running` yet.
    pub fn waiting_for_ack(&self) -> bool {
        self.state == JobState::Pending && self.runner_id.is_some() && !self.acked
    }

    /// End the job on the server side (abort, drop).
    pub fn end(&mut self, state: JobState, reason: Option<&str>) {
        self.state = state;
        self.finished = true;
        if let Some(r) = reason {
            self.failure_reason = Some(r.to_owned());
        }
    }
}

/// Everything behind the mutex.
pub(crate) struct State {
    pub settings: Settings,
    pub registration_tokens: HashSet<String>,
    pub runners: Vec<RunnerRecord>,
    pub projects: BTreeMap<String, Project>,
    pub jobs: BTreeMap<i64, Job>,
    pub faults: Vec<Fault>,
    pub requests: Vec<RequestRecord>,
    pub violations: Vec<String>,
    /// Why TLS handshakes failed (HTTPS mode), in order.
    pub tls_handshake_errors: Vec<String>,
    /// Connections closed by the client mid-handshake without a TLS alert.
    pub tls_abandoned_handshakes: u64,
    /// CI/CD job token allowlist: (target project, project whose job tokens may read it).
    pub job_token_allowlist: HashSet<(String, String)>,
    /// Current `X-GitLab-Last-Update` value; changes whenever the queue changes.
    pub queue_value: String,
    pub next_runner_id: i64,
    pub next_job_id: i64,
    pub next_project_id: i64,
    pub next_pipeline_id: i64,
    /// ID token signing and published keys.
    pub id_token_keys: crate::id_tokens::IdTokenKeys,
}

impl State {
    fn new() -> Self {
        State {
            settings: Settings::default(),
            registration_tokens: HashSet::new(),
            runners: Vec::new(),
            projects: BTreeMap::new(),
            jobs: BTreeMap::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            violations: Vec::new(),
            tls_handshake_errors: Vec::new(),
            tls_abandoned_handshakes: 0,
            job_token_allowlist: HashSet::new(),
            queue_value: util::random_hex(32),
            next_runner_id: 1,
            next_job_id: 1001,
            next_project_id: 17,
            next_pipeline_id: 901,
            id_token_keys: crate::id_tokens::IdTokenKeys::default(),
        }
    }

    /// Something a runner could pick changed: give `/jobs/request` a new queue value.
    pub fn bump_queue(&mut self) {
        self.queue_value = util::random_hex(32);
    }

    /// Runner whose current token is `token` (deleted runners don't authenticate).
    pub fn runner_by_token(&mut self, token: &str) -> Option<&mut RunnerRecord> {
        self.runners
            .iter_mut()
            .find(|r| !r.deleted && r.token == token)
    }

    pub fn runner(&self, id: i64) -> Option<&RunnerRecord> {
        self.runners.iter().find(|r| r.id == id)
    }

    /// The project at `path`, created (without repository) if unknown.
    pub fn project_entry(&mut self, path: &str) -> &mut Project {
        let next = &mut self.next_project_id;
        self.projects.entry(path.to_owned()).or_insert_with(|| {
            let id = *next;
            *next += 1;
            Project {
                id,
                path: path.to_owned(),
                has_repo: false,
            }
        })
    }

    pub fn violation(&mut self, msg: String) {
        tracing::warn!(%msg, "protocol violation");
        self.violations.push(msg);
    }

    /// `token_expires_at` for a token created now.
    pub fn token_expires_at(&self) -> Option<String> {
        self.settings
            .token_expiry
            .map(|d| util::iso8601(SystemTime::now() + d))
    }
}

/// Where a server keeps its files.
pub(crate) enum Root {
    /// A temp dir, removed when the server's state is dropped.
    Temp(tempfile::TempDir),
    /// A directory given by the caller, kept.
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &std::path::Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

/// State shared by the handle and every connection task.
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    /// `http://HOST:PORT` (`https://` in HTTPS mode).
    pub base_url: String,
    /// Host name or IP in URLs handed out (`127.0.0.1` unless told otherwise; IPv6 in
    /// brackets).
    pub host: String,
    /// Listening port.
    pub port: u16,
    /// The directory holding `repos`, `work`, `artifacts` and `tls`.
    pub root: PathBuf,
    /// Directory of bare repositories (`GIT_PROJECT_ROOT`).
    pub repos: PathBuf,
    /// Directory of work trees used to make commits.
    pub work: PathBuf,
    /// Directory of uploaded artifacts (`<job id>/<artifact type>/<file name>`), a copy of what
    /// the jobs hold, for inspection from outside.
    pub artifacts: PathBuf,
    /// `git-http-backend` executable.
    pub http_backend: PathBuf,
    /// Keeps a temp root alive as long as the server runs.
    _root: Root,
}

impl Shared {
    /// `scheme` is `http` or `https`; `host` goes into URLs as it is.
    pub fn new(port: u16, scheme: &str, host: String, root: Root, http_backend: PathBuf) -> Self {
        let (changed, _) = watch::channel(0);
        let dir = root.path().to_owned();
        Shared {
            state: Mutex::new(State::new()),
            changed,
            base_url: format!("{scheme}://{host}:{port}"),
            host,
            port,
            repos: dir.join("repos"),
            work: dir.join("work"),
            artifacts: dir.join("artifacts"),
            root: dir,
            http_backend,
            _root: root,
        }
    }

    /// Read the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&guard)
    }

    /// Change the state and wake every waiter.
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = {
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        };
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        out
    }

    /// Wait until `check` returns `Some`, re-checking after every state change.
    /// Returns `None` on timeout.
    pub async fn wait_until<R>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&State) -> Option<R>,
    ) -> Option<R> {
        let mut rx = self.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(r) = self.read(&mut check) {
                return Some(r);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}
