//! `FakeGitlab`: the handle tests hold. Cheap to clone; the server stops when the last handle
//! is dropped or on [`FakeGitlab::shutdown`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults;
use crate::runners::insert_runner;
use crate::spec::JobSpec;
use crate::state::{Job, Root, Shared};
use crate::tls::{self, TlsOptions};
use crate::types::{
    Endpoint, Fault, JobSnapshot, JobState, RequestRecord, RunnerRecord, StoredArtifact,
};
use crate::{admin, git, server, util};

/// A stateful fake GitLab server, by default on `127.0.0.1:<random port>`.
#[derive(Clone)]
pub struct FakeGitlab {
    inner: Arc<Inner>,
}

/// A handle that does not keep the server alive: what the admin API's handlers hold, so that
/// the server (which holds them) still stops when the last [`FakeGitlab`] is dropped.
#[derive(Clone)]
pub(crate) struct WeakGitlab(Weak<Inner>);

impl WeakGitlab {
    /// The handle, unless the server is being dropped.
    pub(crate) fn upgrade(&self) -> Option<FakeGitlab> {
        self.0.upgrade().map(|inner| FakeGitlab { inner })
    }
}

struct Inner {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tls: Option<TlsPaths>,
}

/// PEM files of an HTTPS server.
struct TlsPaths {
    ca: PathBuf,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for FakeGitlab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitlab")
            .field("url", &self.url())
            .finish()
    }
}

/// How [`FakeGitlab::start_with`] starts a server. The default is what
/// [`FakeGitlab::start`] does: plain HTTP on `127.0.0.1:<free port>`, files in a temp dir, no
/// admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// Address to listen on; `None` is `127.0.0.1:0` (a free port, see
    /// [`FakeGitlab::url`]).
    pub addr: Option<SocketAddr>,
    /// Serve HTTPS (see [`FakeGitlab::start_tls`]); `None` is plain HTTP.
    pub tls: Option<TlsOptions>,
    /// Directory for the repositories (`repos/`, `work/`), copies of uploaded artifacts
    /// (`artifacts/`) and the TLS files (`tls/`): created if missing and kept when the server
    /// stops. Repositories already in it are served again (as projects with a repository).
    /// `None` is a temp dir removed when the server is dropped.
    pub state_dir: Option<PathBuf>,
    /// Host name or IP put into URLs ([`FakeGitlab::url`], `repo_url`, `CI_SERVER_HOST`, ...)
    /// and into the TLS server certificate. `None` is the listening IP, or `127.0.0.1` (`::1`)
    /// when listening on all interfaces.
    pub public_host: Option<String>,
    /// Serve the admin API under `/_fake/` (documented in the crate's README): JSON routes to
    /// create projects, enqueue and inspect jobs, add runners and inject faults from outside a
    /// Rust test. Its requests are neither recorded nor subject to faults.
    pub admin_api: bool,
}

/// The host to put into URLs for a server listening on `addr`.
fn url_host(public_host: Option<&str>, addr: SocketAddr) -> String {
    if let Some(h) = public_host {
        return h.to_owned();
    }
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

impl FakeGitlab {
    /// Bind `127.0.0.1:0` and start serving plain HTTP.
    pub async fn start() -> anyhow::Result<FakeGitlab> {
        Self::start_with(StartOptions::default()).await
    }

    /// Bind `addr` (port 0 picks a free one) and start serving plain HTTP.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<FakeGitlab> {
        Self::start_with(StartOptions {
            addr: Some(addr),
            ..StartOptions::default()
        })
        .await
    }

    /// Bind `127.0.0.1:0` and start serving HTTPS (the API and git smart HTTP) with a server
    /// certificate for `127.0.0.1` and `localhost` issued by a CA generated for this server;
    /// clients must trust [`ca_pem_path`](Self::ca_pem_path). With
    /// [`TlsOptions::require_client_cert`], handshakes without the client certificate at
    /// [`client_cert_pem_path`](Self::client_cert_pem_path) (or another one from the same
    /// client CA) fail; see [`tls_handshake_errors`](Self::tls_handshake_errors).
    pub async fn start_tls(options: TlsOptions) -> anyhow::Result<FakeGitlab> {
        Self::start_with(StartOptions {
            tls: Some(options),
            ..StartOptions::default()
        })
        .await
    }

    /// Start a server as `options` say.
    pub async fn start_with(options: StartOptions) -> anyhow::Result<FakeGitlab> {
        let addr = options
            .addr
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let host = url_host(options.public_host.as_deref(), local);
        let root = match &options.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the state directory {}", dir.display()))?;
                Root::Kept(std::path::absolute(dir)?)
            }
            None => Root::Temp(tempfile::Builder::new().prefix("fake-gitlab-").tempdir()?),
        };
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let http_backend = git::find_http_backend().await?;
        let shared = Arc::new(Shared::new(local.port(), scheme, host, root, http_backend));
        let material = match options.tls {
            Some(opts) => Some(tls::generate(&shared.root.join("tls"), opts, &shared.host)?),
            None => None,
        };
        for dir in [&shared.repos, &shared.work, &shared.artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let existing = git::existing_repos(&shared.repos);
        if !existing.is_empty() {
            tracing::info!(projects = ?existing, "serving the repositories of the state directory");
            shared.write(|st| {
                for path in &existing {
                    st.project_entry(path).has_repo = true;
                }
            });
        }
        let shutdown = CancellationToken::new();
        let (acceptor, tls) = match material {
            Some(m) => (
                Some(m.acceptor),
                Some(TlsPaths {
                    ca: m.ca_pem,
                    client_cert: m.client_cert_pem,
                    client_key: m.client_key_pem,
                }),
            ),
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            shared: shared.clone(),
            shutdown: shutdown.clone(),
            tls,
        });
        let admin = options
            .admin_api
            .then(|| admin::router(WeakGitlab(Arc::downgrade(&inner))));
        tokio::spawn(server::serve(listener, shared, shutdown, acceptor, admin));
        Ok(FakeGitlab { inner })
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` for [`start_tls`](Self::start_tls)
    /// (no trailing slash; another host with [`StartOptions::public_host`] or `addr`).
    pub fn url(&self) -> String {
        self.shared().base_url.clone()
    }

    /// The directory holding the server's files ([`StartOptions::state_dir`], or its temp dir).
    pub fn state_dir(&self) -> &Path {
        &self.shared().root
    }

    /// PEM of the CA that issued the HTTPS server's certificate; `None` for plain HTTP.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.inner.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// PEM of the client certificate the server accepts; `None` unless started with
    /// [`TlsOptions::require_client_cert`].
    pub fn client_cert_pem_path(&self) -> Option<&Path> {
        self.inner.tls.as_ref()?.client_cert.as_deref()
    }

    /// PEM (PKCS#8) of the client certificate's key; `None` unless started with
    /// [`TlsOptions::require_client_cert`].
    pub fn client_key_pem_path(&self) -> Option<&Path> {
        self.inner.tls.as_ref()?.client_key.as_deref()
    }

    /// Why TLS handshakes failed so far (rustls' messages, e.g. a client without certificate
    /// or one that does not trust the CA), in order. Empty for plain HTTP. A client that
    /// hangs up mid-handshake without sending an alert is not counted here but in
    /// [`tls_abandoned_handshakes`](Self::tls_abandoned_handshakes).
    pub fn tls_handshake_errors(&self) -> Vec<String> {
        self.shared().read(|st| st.tls_handshake_errors.clone())
    }

    /// How many connections the client closed during the TLS handshake without an alert.
    pub fn tls_abandoned_handshakes(&self) -> u64 {
        self.shared().read(|st| st.tls_abandoned_handshakes)
    }

    /// Wait until at least one TLS handshake failed; returns the first reason.
    pub async fn wait_tls_handshake_error(&self, timeout: Duration) -> anyhow::Result<String> {
        self.shared()
            .wait_until(timeout, |st| st.tls_handshake_errors.first().cloned())
            .await
            .with_context(|| format!("no TLS handshake failed within {timeout:?}"))
    }

    /// Stop accepting and close every connection.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    // ----- runners -----

    /// Let legacy `POST /api/v4/runners` accept `token`.
    pub fn add_registration_token(&self, token: &str) {
        self.shared()
            .write(|st| st.registration_tokens.insert(token.to_owned()));
    }

    /// A new random legacy registration token (`GR1348941…`) that `POST /api/v4/runners`
    /// accepts.
    pub fn create_registration_token(&self) -> String {
        let token = util::random_token("GR1348941", 20);
        self.add_registration_token(&token);
        token
    }

    /// A runner created in the UI with authentication token `token` (`glrt-…`); returns its id.
    /// Defaults: untagged jobs allowed, not locked, `not_protected`, not paused.
    pub fn add_runner(&self, token: &str) -> i64 {
        self.insert_ui_runner(token).id
    }

    /// A runner created in the UI with a random authentication token (`glrt-…`), defaults as
    /// in [`add_runner`](Self::add_runner).
    pub fn create_runner(&self) -> RunnerRecord {
        self.insert_ui_runner("")
    }

    /// An empty `token` gets a random one.
    fn insert_ui_runner(&self, token: &str) -> RunnerRecord {
        let runner = RunnerRecord {
            id: 0,
            token: token.to_owned(),
            description: String::new(),
            tag_list: Vec::new(),
            run_untagged: true,
            locked: false,
            access_level: "not_protected".into(),
            paused: false,
            maximum_timeout: None,
            maintenance_note: None,
            info: None,
            system_ids: Vec::new(),
            deleted: false,
            token_expires_at: None,
            registered: false,
        };
        self.shared().write(|st| insert_runner(st, runner))
    }

    /// Change a runner's server-side settings (tags, paused, maximum_timeout, …).
    pub fn update_runner(&self, id: i64, f: impl FnOnce(&mut RunnerRecord)) {
        self.shared().write(|st| {
            if let Some(r) = st.runners.iter_mut().find(|r| r.id == id) {
                f(r);
            }
            st.bump_queue();
        });
    }

    /// Every runner, including deleted ones.
    pub fn runners(&self) -> Vec<RunnerRecord> {
        self.shared().read(|st| st.runners.clone())
    }

    /// The runner with `id`.
    pub fn runner(&self, id: i64) -> Option<RunnerRecord> {
        self.shared().read(|st| st.runner(id).cloned())
    }

    /// Lifetime of runner tokens created from now on (`token_expires_at`); `None` = no expiry.
    pub fn set_token_expiry(&self, lifetime: Option<Duration>) {
        self.shared()
            .write(|st| st.settings.token_expiry = lifetime);
    }

    // ----- repositories -----

    /// Create project `path` (`namespace/name`) with a bare repository served over smart HTTP,
    /// holding one commit on `main` with `files`; returns the commit sha.
    pub fn create_repo(&self, path: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
        let sha = git::create_repo(self.shared(), path, files)?;
        self.shared()
            .write(|st| st.project_entry(path).has_repo = true);
        Ok(sha)
    }

    /// Another commit on `main`; returns its sha.
    pub fn commit(&self, path: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
        git::commit(self.shared(), path, files)
    }

    /// Commit a submodule at `path` in project `path`'s `main`, pointing at the head of
    /// `sub_project`; `url` goes to `.gitmodules` (e.g. `../sub.git`). Returns the new sha.
    pub fn add_submodule(
        &self,
        project: &str,
        path: &str,
        url: &str,
        sub_project: &str,
    ) -> anyhow::Result<String> {
        git::add_submodule(self.shared(), project, path, url, sub_project)
    }

    /// Add `source` to `target`'s CI/CD job token allowlist: jobs of `source` may then clone
    /// `target` with their job token (as submodules need). Otherwise they get a 404, as on
    /// GitLab.
    pub fn allow_job_token_access(&self, target: &str, source: &str) {
        self.shared().write(|st| {
            st.job_token_allowlist
                .insert((target.to_owned(), source.to_owned()));
        });
    }

    /// Create tag `tag` at the head of `main`; returns the sha.
    pub fn create_tag(&self, path: &str, tag: &str) -> anyhow::Result<String> {
        let sha = git::rev_parse(self.shared(), path, "refs/heads/main")
            .with_context(|| format!("no main branch in {path}"))?;
        git::update_ref(self.shared(), path, &format!("refs/tags/{tag}"), &sha)?;
        Ok(sha)
    }

    // ----- jobs -----

    /// Queue a job; returns its id.
    ///
    /// For a project with a repository the ref (default `main`) is resolved to its head (unless
    /// `sha` is given) and `refs/pipelines/<pipeline id>` is created, as GitLab's persistent
    /// pipeline ref. Projects without a repository work with `GIT_STRATEGY: none`.
    pub fn enqueue_job(&self, spec: JobSpec) -> i64 {
        self.enqueue_with(spec, |_| {})
    }

    /// Queue a job, adjusting it (under the lock) before anyone can see it.
    fn enqueue_with(&self, spec: JobSpec, adjust: impl FnOnce(&mut Job)) -> i64 {
        let shared = self.shared();
        let path = spec.project_path.clone();
        let git_ref = spec.git_ref.clone().unwrap_or_else(|| "main".into());
        let has_repo = shared.read(|st| st.projects.get(&path).is_some_and(|p| p.has_repo));
        let mut ref_type = "branch";
        let mut head = None;
        if has_repo {
            head = git::rev_parse(shared, &path, &format!("refs/heads/{git_ref}"));
            if head.is_none()
                && let Some(t) = git::rev_parse(shared, &path, &format!("refs/tags/{git_ref}"))
            {
                ref_type = "tag";
                head = Some(t);
            }
        }
        let sha = spec
            .sha
            .clone()
            .or(head)
            .unwrap_or_else(|| "5f2c1d0e9b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d".into());
        let before_sha = if has_repo {
            git::rev_parse(shared, &path, &format!("{sha}~1")).unwrap_or_else(|| ZERO_SHA.into())
        } else {
            ZERO_SHA.into()
        };
        let pipeline_id = spec.pipeline_id.unwrap_or_else(|| {
            shared.write(|st| {
                st.next_pipeline_id += 1;
                st.next_pipeline_id - 1
            })
        });
        if has_repo {
            let refname = format!("refs/pipelines/{pipeline_id}");
            if let Err(e) = git::update_ref(shared, &path, &refname, &sha) {
                tracing::warn!(error = %e, "could not create the pipeline ref");
            }
        }
        let token = spec
            .token
            .clone()
            .unwrap_or_else(|| util::random_token("glcbt-", 24));
        shared.write(|st| {
            st.project_entry(&path);
            let id = st.next_job_id;
            st.next_job_id += 1;
            let mut job = new_job(
                id,
                token,
                pipeline_id,
                sha,
                before_sha,
                git_ref,
                ref_type,
                spec,
            );
            adjust(&mut job);
            st.jobs.insert(id, job);
            st.bump_queue();
            id
        })
    }

    /// A finished (`success`) job of `project` holding an `archive` artifact, to be used in
    /// [`JobSpec::dependencies`]; returns its id.
    pub fn seed_artifact_job(
        &self,
        project: &str,
        name: &str,
        filename: &str,
        zip: Vec<u8>,
    ) -> i64 {
        let spec = JobSpec::new(project).name(name);
        self.enqueue_with(spec, |job| {
            job.artifacts.push(StoredArtifact {
                filename: filename.to_owned(),
                artifact_type: "archive".into(),
                artifact_format: "zip".into(),
                expire_in: None,
                accessibility: None,
                data: zip,
            });
            job.end(JobState::Success, None);
        })
    }

    /// Snapshot of job `id`.
    ///
    /// # Panics
    /// When no job has that id (a bug in the test).
    pub fn job(&self, id: i64) -> JobSnapshot {
        self.try_job(id)
            .unwrap_or_else(|| panic!("FakeGitlab: no job {id}"))
    }

    /// Snapshots of every job, by id.
    pub fn jobs(&self) -> Vec<JobSnapshot> {
        self.shared()
            .read(|st| st.jobs.values().map(Job::snapshot).collect())
    }

    /// Snapshot of job `id`, if it exists.
    pub fn try_job(&self, id: i64) -> Option<JobSnapshot> {
        self.shared().read(|st| st.jobs.get(&id).map(Job::snapshot))
    }

    /// Graceful cancel: `running` → `canceling` when the runner advertised `cancel_gracefully`
    /// (else straight to `canceled`, as GitLab does); a pending job → `canceled`.
    pub fn cancel_job(&self, id: i64) {
        self.shared().write(|st| {
            let graceful = st
                .jobs
                .get(&id)
                .and_then(|j| j.runner_id)
                .and_then(|r| st.runner(r))
                .is_some_and(|r| r.feature("cancel_gracefully"));
            if let Some(job) = st.jobs.get_mut(&id) {
                match job.state {
                    JobState::Running if graceful => job.state = JobState::Canceling,
                    JobState::Running | JobState::Pending => job.end(JobState::Canceled, None),
                    _ => {}
                }
            }
            st.bump_queue();
        });
    }

    /// Hard cancel: → `canceled` at once; PATCH/PUT then answer 403 + `Job-Status: canceled`.
    pub fn abort_job(&self, id: i64) {
        self.end_job(id, JobState::Canceled, None);
    }

    /// Server-side failure (e.g. `stuck_or_timeout_failure`): → `failed` at once.
    pub fn drop_job(&self, id: i64, failure_reason: &str) {
        self.end_job(id, JobState::Failed, Some(failure_reason));
    }

    fn end_job(&self, id: i64, state: JobState, reason: Option<&str>) {
        self.shared().write(|st| {
            if let Some(job) = st.jobs.get_mut(&id)
                && !job.state.is_terminal()
            {
                job.end(state, reason);
            }
            st.bump_queue();
        });
    }

    // ----- faults, records, knobs -----

    /// Inject a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared().write(|st| faults::add(st, fault));
    }

    /// Faults not used up yet.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.shared().read(|st| st.faults.clone())
    }

    /// Drops every fault not used up yet: requests are handled normally from now on.
    pub fn clear_faults(&self) {
        self.shared().write(|st| st.faults.clear());
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared().read(|st| st.requests.clone())
    }

    /// Requests to `endpoint`.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RequestRecord> {
        self.shared().read(|st| {
            st.requests
                .iter()
                .filter(|r| r.endpoint == Some(endpoint))
                .cloned()
                .collect()
        })
    }

    /// Things GitLab tolerates but the official runner never does (Content-Range end not
    /// inclusive, empty or >1 MiB PATCH, final update without or with a wrong checksum/bytesize,
    /// PUT without `JOB-TOKEN`). A correct runner leaves this empty.
    pub fn violations(&self) -> Vec<String> {
        self.shared().read(|st| st.violations.clone())
    }

    /// `X-GitLab-Trace-Update-Interval` on PATCH answers (default 3).
    pub fn set_trace_update_interval(&self, secs: u64) {
        self.shared()
            .write(|st| st.settings.trace_update_interval = secs);
    }

    /// Hold `/jobs/request` up to `d` while the runner's `last_update` is current (default 0:
    /// answer 204 at once).
    pub fn set_long_poll(&self, d: Duration) {
        self.shared().write(|st| st.settings.long_poll = d);
    }

    /// Serve artifact downloads through a `302` to a pre-signed URL on another host name, like
    /// GitLab with object storage. The storage endpoint records a violation when it receives a
    /// `JOB-TOKEN` header (the token must never leave GitLab's host).
    pub fn set_artifacts_in_object_storage(&self, on: bool) {
        self.shared()
            .write(|st| st.settings.artifacts_in_object_storage = on);
    }

    /// Answer 202 to the first `n` final PUTs (carrying a checksum) of each job before the 200.
    pub fn set_final_update_accepted_times(&self, n: u32) {
        self.shared()
            .write(|st| st.settings.final_update_accepted_times = n);
    }

    /// `X-GitLab-Trace-Update-Interval` on a 202 final-update answer (default 1).
    pub fn set_final_update_backoff(&self, secs: u64) {
        self.shared()
            .write(|st| st.settings.final_update_backoff = secs);
    }

    /// The current `X-GitLab-Last-Update` value.
    pub fn queue_value(&self) -> String {
        self.shared().read(|st| st.queue_value.clone())
    }

    /// Payload of job `id` as JSON, as it was (or would be) sent; `None` before assignment.
    pub fn payload(&self, id: i64) -> Option<Value> {
        self.shared()
            .read(|st| st.jobs.get(&id).and_then(|j| j.payload.clone()))
    }

    /// ID token signing moves to the next key, which `/oauth/discovery/keys` publishes beside
    /// the previous one (GitLab's key rotation). Tokens of jobs handed out from now on carry
    /// the new key's `kid`.
    pub fn rotate_id_token_key(&self) {
        self.shared().write(|st| st.id_token_keys.rotate());
    }

    /// GitLab's ID token claims for job `id` (enqueued) with audience `aud`, valid for an
    /// hour: edit them and [`sign_id_token`](Self::sign_id_token) to make a token GitLab would
    /// not have issued. `None` for an unknown job.
    pub fn id_token_claims(&self, id: i64, aud: &str) -> Option<Value> {
        let base = self.url();
        self.shared().read(|st| {
            let job = st.jobs.get(&id)?;
            let project = st.projects.get(&job.spec.project_path)?;
            Some(crate::id_tokens::claims(&base, job, project, aud, 3600))
        })
    }

    /// An RS256 JWT of `claims`, signed as `signer` says.
    pub fn sign_id_token(&self, claims: &Value, signer: crate::IdTokenSigner) -> String {
        self.shared()
            .read(|st| crate::id_tokens::sign(claims, &st.id_token_keys, signer))
    }
}

#[allow(clippy::too_many_arguments)]
fn new_job(
    id: i64,
    token: String,
    pipeline_id: i64,
    sha: String,
    before_sha: String,
    git_ref: String,
    ref_type: &'static str,
    spec: JobSpec,
) -> Job {
    Job {
        id,
        token,
        pipeline_id,
        sha,
        before_sha,
        git_ref,
        ref_type,
        spec,
        state: JobState::Pending,
        runner_id: None,
        acked: false,
        finished: false,
        trace: Vec::new(),
        final_checksum: None,
        final_bytesize: None,
        failure_reason: None,
        exit_code: None,
        updates: Vec::new(),
        artifacts: Vec::new(),
        accepted_final_updates: 0,
        payload: None,
        debug_trace: false,
        queued_at: Instant::now(),
        started_at: None::<SystemTime>,
    }
}
