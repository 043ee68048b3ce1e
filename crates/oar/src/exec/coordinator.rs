//! The local coordinator of `oar exec`: the small "GitLab" that locally run jobs talk to.
//!
//! `oar exec` drives every job through the same `oar_job` driver Oar uses for GitLab, so the
//! driver needs a server that answers the job-token endpoints of the runner API
//! (`shared/docs/reference/gitlab-runner-api.md`):
//!
//! - `PATCH /api/v4/jobs/:id/trace` (§3): appends at the current length only (416 with the true
//!   `Range` otherwise); every appended chunk is also sent, in order, to the job's output
//!   channel so the CLI can stream it.
//! - `PUT /api/v4/jobs/:id` (§4): `running`/`pending` are keep-alives; `success`/`failed`
//!   record the job's [`FinalState`] (with whether the posted checksum and size match the
//!   trace the coordinator holds). After [`Coordinator::cancel`] every answer carries
//!   `Job-Status: canceling`, GitLab's graceful-cancel signal.
//! - `POST`/`GET /api/v4/jobs/:id/artifacts` (§5): uploads are streamed to
//!   `<state dir>/artifacts/<job id>/`; any registered job's token may download any job's
//!   archive (locally there is one pipeline).
//! - `/<project path>.git/...`: the repository over git smart HTTP, by running
//!   `git http-backend` as a CGI program behind `gitlab-ci-token:<job token>` basic auth,
//!   fetch only.
//!
//! Only tokens of registered jobs are accepted, and only while the job has not finished, as
//! GitLab does: no token is 401, a wrong one 403. Tokens are never logged and `Debug` redacts
//! them.
// Cancel, the watch's accessors and the bound address serve what `oar exec` does not do yet
// (Ctrl-C cancelling running jobs, the Kubernetes executor's pods).
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, put};
use base64::Engine;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

/// `X-GitLab-Trace-Update-Interval` sent to the jobs: locally the log should appear at once.
const TRACE_UPDATE_INTERVAL_SECS: u64 = 1;
/// Largest trace kept per job (GitLab's `ci_jobs_trace_size_limit` is 100 MiB); the driver
/// truncates its own log long before (4 MiB by default).
const TRACE_LIMIT: usize = 128 * 1024 * 1024;
/// Default of [`CoordinatorOptions::max_artifact_size`] (1 GiB).
pub(crate) const DEFAULT_MAX_ARTIFACT_SIZE: u64 = 1024 * 1024 * 1024;
/// Largest text field of an artifact upload form.
const MAX_FORM_FIELD: u64 = 64 * 1024;
/// Largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEAD: u64 = 64 * 1024;
/// Largest `git http-backend` stderr kept for the debug log.
const MAX_CGI_STDERR: u64 = 64 * 1024;
/// The user name GitLab expects with a job token in git URLs.
const GIT_USER: &str = "gitlab-ci-token";
/// Archive formats GitLab accepts (`Ci::JobArtifact.file_formats` plus the zstd ones).
const ARTIFACT_FORMATS: &[&str] = &["zip", "gzip", "raw", "zipzstd", "tarzstd"];

/// How to start a [`Coordinator`].
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorOptions {
    /// Where to listen: `127.0.0.1:0` for the shell executor, an address pods can reach for
    /// the Kubernetes executor.
    pub bind: SocketAddr,
    /// The host put into URLs ([`Coordinator::url`], [`Coordinator::repo_url`]); default the
    /// bound IP (`127.0.0.1` when bound to an unspecified address).
    pub advertise_host: Option<String>,
    /// The pipeline's `.oar/` directory; artifacts go to `artifacts/<job id>/` below it.
    pub state_dir: PathBuf,
    /// A bare repository or a repository's `.git` directory (a work tree with a `.git`
    /// directory is accepted too), served at `/<project_path>.git`; `None` serves no git.
    pub repo: Option<PathBuf>,
    /// `namespace/name` of the project: the repository's URL path without `.git`.
    pub project_path: String,
    /// Largest artifact upload in bytes; larger uploads are answered 413, as GitLab does over
    /// `max_artifacts_size`.
    pub max_artifact_size: u64,
}

impl CoordinatorOptions {
    /// Options for the shell executor: `127.0.0.1:0`, no repository, project `local/project`,
    /// artifacts up to [`DEFAULT_MAX_ARTIFACT_SIZE`].
    pub(crate) fn new(state_dir: impl Into<PathBuf>) -> Self {
        CoordinatorOptions {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise_host: None,
            state_dir: state_dir.into(),
            repo: None,
            project_path: "local/project".into(),
            max_artifact_size: DEFAULT_MAX_ARTIFACT_SIZE,
        }
    }
}

/// A job the coordinator will answer for.
#[derive(Clone)]
pub(crate) struct LocalJob {
    /// Job id, as in the job payload (`id`, `CI_JOB_ID`).
    pub id: i64,
    /// Job name, for logs.
    pub name: String,
    /// The job token (payload `token`, `CI_JOB_TOKEN`).
    pub token: String,
}

impl fmt::Debug for LocalJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalJob")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalStatus {
    /// The driver reported `success`.
    Success,
    /// The driver reported `failed`.
    Failed,
    /// The job was canceled ([`Coordinator::cancel`]) and the driver then reported its end.
    Canceled,
}

impl FinalStatus {
    /// GitLab's name of the state (`Job-Status` values).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FinalStatus::Success => "success",
            FinalStatus::Failed => "failed",
            FinalStatus::Canceled => "canceled",
        }
    }
}

/// The final `PUT /api/v4/jobs/:id` of a job, with its whole trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FinalState {
    /// How the job ended.
    pub state: FinalStatus,
    /// `failure_reason` as sent (`script_failure`, `job_canceled`, ...), if any.
    pub failure_reason: Option<String>,
    /// `exit_code` as sent (the driver omits 0).
    pub exit_code: Option<i32>,
    /// Every byte PATCHed to the trace, in order.
    pub trace: Vec<u8>,
    /// Whether `output.checksum` (`crc32:%08x`) and `output.bytesize` match `trace`.
    pub checksum_ok: bool,
}

/// An artifact a job uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredArtifact {
    /// `archive`, `dotenv`, `junit`, ...
    pub artifact_type: String,
    /// `zip`, `gzip`, `raw`, ...
    pub format: String,
    /// The file name the job sent in the multipart part.
    pub file_name: String,
    /// Where it is stored: `<state dir>/artifacts/<job id>/<name>` (`artifacts.zip` for the
    /// archive, the type as the name for reports, e.g. `dotenv.gz`).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Registered; may be running.
    Running,
    /// [`Coordinator::cancel`] was called; answers say `Job-Status: canceling`.
    Canceling,
    /// The final state was recorded; the token is no longer accepted.
    Finished(FinalStatus),
}

impl Phase {
    fn job_status(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Canceling => "canceling",
            Phase::Finished(s) => s.as_str(),
        }
    }
}

/// The coordinator's record of one job.
struct JobEntry {
    /// For logs.
    name: String,
    /// Compared with the token of each request.
    token: String,
    phase: Phase,
    /// Everything PATCHed so far.
    trace: Vec<u8>,
    /// Appended chunks for the CLI; dropped when the job finishes, closing the channel.
    output: Option<mpsc::UnboundedSender<Bytes>>,
    /// Carries the final state to every [`JobWatch`]; dropped once it has been sent or when
    /// the coordinator stops (so waiters never hang on a stopped coordinator).
    finished: Option<watch::Sender<Option<FinalState>>>,
    /// Uploaded artifacts by type.
    artifacts: HashMap<String, StoredArtifact>,
}

/// State shared by the handlers, the [`Coordinator`] and the [`JobWatch`]es.
struct Shared {
    /// Jobs by id. A std mutex: it is never held across an `.await`.
    jobs: Mutex<HashMap<i64, JobEntry>>,
    /// `<state dir>/artifacts`.
    artifacts_dir: PathBuf,
    max_artifact_size: u64,
    /// The repository served over git, with `git-http-backend`'s path.
    git: Option<GitRepo>,
    project_path: String,
    /// Makes the names of partial uploads unique.
    upload_seq: AtomicU64,
}

/// The repository served over git smart HTTP.
struct GitRepo {
    /// The git directory (`GIT_PROJECT_ROOT`).
    dir: PathBuf,
    /// `git-http-backend`.
    backend: PathBuf,
}

impl Shared {
    fn jobs(&self) -> MutexGuard<'_, HashMap<i64, JobEntry>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops every channel sender: output streams end, `finished()` waiters get an error.
    fn close(&self) {
        for job in self.jobs().values_mut() {
            job.output = None;
            job.finished = None;
        }
    }

    fn artifact(&self, id: i64, artifact_type: &str) -> Option<StoredArtifact> {
        self.jobs().get(&id)?.artifacts.get(artifact_type).cloned()
    }
}

/// The local coordinator: an HTTP server answering the runner API for registered jobs.
/// Dropping it stops the server (as [`Coordinator::shutdown`] does, without waiting).
pub(crate) struct Coordinator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// `http://host:port/`.
    base: url::Url,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("url", &self.base.as_str())
            .field("jobs", &self.shared.jobs().len())
            .finish_non_exhaustive()
    }
}

/// What `oar exec` holds for one registered job.
pub(crate) struct JobWatch {
    id: i64,
    output: Option<mpsc::UnboundedReceiver<Bytes>>,
    finished: watch::Receiver<Option<FinalState>>,
    shared: Weak<Shared>,
}

impl fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobWatch")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl JobWatch {
    /// The job id.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The job's output: every appended trace chunk, in order. The channel closes once the
    /// final state is recorded (or the coordinator stops), so reading it to the end after
    /// [`JobWatch::finished`] loses nothing. `None` after the first call.
    pub(crate) fn take_output(&mut self) -> Option<mpsc::UnboundedReceiver<Bytes>> {
        self.output.take()
    }

    /// Waits for the job's final `PUT` (may be called again; returns the same state). Fails
    /// when the coordinator stops first, or the job id was registered again.
    pub(crate) async fn finished(&self) -> anyhow::Result<FinalState> {
        let mut rx = self.finished.clone();
        let state = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| anyhow::anyhow!("the coordinator stopped before job {} ended", self.id))?;
        state
            .clone()
            .with_context(|| format!("no final state for job {}", self.id))
    }

    /// The stored artifact of `artifact_type` (`archive`, `dotenv`, ...), if uploaded.
    pub(crate) fn artifact(&self, artifact_type: &str) -> Option<StoredArtifact> {
        self.shared.upgrade()?.artifact(self.id, artifact_type)
    }

    /// Where the artifact of `artifact_type` is stored, if uploaded.
    pub(crate) fn artifact_path(&self, artifact_type: &str) -> Option<PathBuf> {
        self.artifact(artifact_type).map(|a| a.path)
    }
}

impl Coordinator {
    /// Binds `options.bind` and starts serving. Fails when the address cannot be bound, the
    /// state directory cannot be created, or a repository is given but is not a git
    /// directory or `git http-backend` cannot be found.
    pub(crate) async fn start(options: CoordinatorOptions) -> anyhow::Result<Coordinator> {
        if !valid_project_path(&options.project_path) {
            bail!(
                "invalid project path {:?} (want segments of letters, digits, '.', '_', '-')",
                options.project_path
            );
        }
        let git = match &options.repo {
            Some(repo) => Some(GitRepo {
                dir: git_dir(repo)?,
                backend: find_http_backend().await?,
            }),
            None => None,
        };
        let artifacts_dir = options.state_dir.join("artifacts");
        fs_err::tokio::create_dir_all(&artifacts_dir)
            .await
            .context("creating the artifacts directory")?;
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .with_context(|| format!("cannot listen on {}", options.bind))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        let host = match &options.advertise_host {
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            Some(h) => h.clone(),
            None if local_addr.ip().is_unspecified() => "127.0.0.1".into(),
            None => match local_addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
        };
        let base = url::Url::parse(&format!("http://{host}:{}/", local_addr.port()))
            .with_context(|| format!("invalid advertised host {host:?}"))?;
        let shared = Arc::new(Shared {
            jobs: Mutex::new(HashMap::new()),
            artifacts_dir,
            max_artifact_size: options.max_artifact_size,
            git,
            project_path: options.project_path,
            upload_seq: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let app = router(shared.clone());
        let server = tokio::spawn(
            // No Nagle: git's smart HTTP exchanges small writes, and with delayed ACKs every
            // request of a fetch would wait 40 ms.
            axum::serve(
                axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                app,
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
        );
        tracing::info!(address = %local_addr, url = %base, "local coordinator listening");
        Ok(Coordinator {
            shared,
            local_addr,
            base,
            stop,
            server: Some(server),
        })
    }

    /// The base URL the jobs use (`http://host:port/`): the payload's `CI_SERVER_URL` and the
    /// driver's GitLab URL.
    pub(crate) fn url(&self) -> String {
        self.base.to_string()
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The clone URL with credentials, as GitLab hands it in `git_info.repo_url`:
    /// `http://gitlab-ci-token:<token>@host:port/<project path>.git`.
    pub(crate) fn repo_url(&self, token: &str) -> String {
        let mut url = self.repo_url_without_credentials();
        // Neither fails on an http URL with a host.
        let _ = url.set_username(GIT_USER);
        let _ = url.set_password(Some(token));
        url.to_string()
    }

    /// The clone URL without credentials (`CI_REPOSITORY_URL` shown to people).
    fn repo_url_without_credentials(&self) -> url::Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}.git", self.shared.project_path));
        url
    }

    /// Accepts `job`'s token from now on and returns the handle to follow it. Registering an
    /// id again replaces the earlier job (whose watch then fails).
    pub(crate) fn register_job(&self, job: LocalJob) -> JobWatch {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (fin_tx, fin_rx) = watch::channel(None);
        let entry = JobEntry {
            name: job.name,
            token: job.token,
            phase: Phase::Running,
            trace: Vec::new(),
            output: Some(out_tx),
            finished: Some(fin_tx),
            artifacts: HashMap::new(),
        };
        if self.shared.jobs().insert(job.id, entry).is_some() {
            tracing::warn!(job_id = job.id, "job registered again, replacing it");
        }
        JobWatch {
            id: job.id,
            output: Some(out_rx),
            finished: fin_rx,
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Asks job `id` to stop the way GitLab does for a graceful cancel: its next trace and
    /// state answers say `Job-Status: canceling`; the final state is then
    /// [`FinalStatus::Canceled`]. Returns whether the job was running.
    pub(crate) fn cancel(&self, id: i64) -> bool {
        let mut jobs = self.shared.jobs();
        match jobs.get_mut(&id) {
            Some(job) if job.phase == Phase::Running => {
                job.phase = Phase::Canceling;
                tracing::info!(job_id = id, job = %job.name, "Job canceling.");
                true
            }
            _ => false,
        }
    }

    /// The stored artifact of `artifact_type` (`archive`, `dotenv`, ...) of job `id`.
    pub(crate) fn artifact(&self, id: i64, artifact_type: &str) -> Option<StoredArtifact> {
        self.shared.artifact(id, artifact_type)
    }

    /// Where the artifact of `artifact_type` of job `id` is stored, if uploaded.
    pub(crate) fn artifact_path(&self, id: i64, artifact_type: &str) -> Option<PathBuf> {
        self.artifact(id, artifact_type).map(|a| a.path)
    }

    /// Stops accepting connections and waits for open ones to finish. Unfinished jobs'
    /// watches then fail and their output channels close.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.shared.close();
        if let Some(server) = self.server.take() {
            server
                .await
                .context("the coordinator task failed")?
                .context("the coordinator server failed")?;
        }
        Ok(())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.close();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v4/jobs/{id}", put(update_job))
        .route("/api/v4/jobs/{id}/trace", patch(patch_trace))
        .route(
            "/api/v4/jobs/{id}/artifacts",
            get(download_artifacts).post(upload_artifacts),
        )
        .fallback(git_http)
        .with_state(shared)
}

// ---- helpers shared by the handlers -------------------------------------------------------

/// A GitLab-style error answer: `{"message": ...}`.
fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text }))).into_response()
}

fn forbidden() -> Response {
    message(StatusCode::FORBIDDEN, "403 Forbidden")
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "404 Not Found")
}

fn set_header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The job token of a request: the `JOB-TOKEN` header or the `token` query parameter.
fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    header_str(headers, "job-token")
        .map(str::to_owned)
        .or_else(|| query_param(query, "token"))
        .filter(|t| !t.is_empty())
}

fn parse_id(raw: &str) -> Option<i64> {
    raw.parse().ok().filter(|id| *id > 0)
}

/// Why a job-token request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// No token at all: 401.
    Unauthorized,
    /// An unknown token, another job's token or an unknown job: 403.
    Forbidden,
    /// The job has finished: 403 with its `Job-Status`.
    NotRunning(FinalStatus),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized => message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
            Denied::Forbidden => forbidden(),
            Denied::NotRunning(state) => {
                let mut resp = message(StatusCode::FORBIDDEN, "403 Forbidden - Job is not running");
                set_header(&mut resp, "job-status", state.as_str());
                resp
            }
        }
    }
}

/// Job `id` when `token` is its token and it has not finished.
fn own_job<'a>(
    jobs: &'a mut HashMap<i64, JobEntry>,
    id: i64,
    token: Option<&str>,
) -> Result<&'a mut JobEntry, Denied> {
    let token = token.ok_or(Denied::Unauthorized)?;
    let job = jobs
        .get_mut(&id)
        .filter(|j| j.token == token)
        .ok_or(Denied::Forbidden)?;
    if let Phase::Finished(state) = job.phase {
        return Err(Denied::NotRunning(state));
    }
    Ok(job)
}

/// Whether `token` belongs to a registered job that has not finished.
fn running_token(jobs: &HashMap<i64, JobEntry>, token: &str) -> bool {
    jobs.values()
        .any(|j| j.token == token && !matches!(j.phase, Phase::Finished(_)))
}

// ---- trace -----------------------------------------------------------------------------

/// The start of a `Content-Range: <start>-<end>` (the end is inclusive; GitLab ignores it and
/// counts the body, so do we).
fn range_start(raw: &str) -> Option<u64> {
    let (start, end) = raw.trim().split_once('-')?;
    end.trim().parse::<u64>().ok()?;
    start.trim().parse().ok()
}

/// `PATCH /api/v4/jobs/:id/trace`.
async fn patch_trace(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let token = request_token(&headers, query.as_deref());
    let mut jobs = shared.jobs();
    let job = match own_job(&mut jobs, id, token.as_deref()) {
        Ok(job) => job,
        Err(denied) => return denied.into_response(),
    };
    // Grape parses the body by its content type: GitLab refuses anything but text/plain.
    let essence = header_str(&headers, "content-type")
        .and_then(|ct| ct.split(';').next())
        .map(str::trim);
    if !essence.is_some_and(|e| e.eq_ignore_ascii_case("text/plain")) {
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - trace requires Content-Type: text/plain",
        );
    }
    let Some(raw) = header_str(&headers, "content-range") else {
        return message(StatusCode::BAD_REQUEST, "400 Missing header Content-Range");
    };
    let Some(start) = range_start(raw) else {
        return message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - invalid Content-Range",
        );
    };
    let len = job.trace.len();
    if start != len as u64 {
        tracing::debug!(job_id = id, start, len, "trace PATCH not at the end: 416");
        let mut resp = message(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "416 Range Not Satisfiable",
        );
        set_header(&mut resp, "range", &format!("0-{len}"));
        return resp;
    }
    if len.saturating_add(body.len()) > TRACE_LIMIT {
        tracing::warn!(job_id = id, job = %job.name, "job log exceeds the coordinator's limit");
        return message(
            StatusCode::FORBIDDEN,
            "403 Forbidden - the job log exceeds its size limit",
        );
    }
    if !body.is_empty() {
        job.trace.extend_from_slice(&body);
        if let Some(out) = &job.output {
            // The CLI may have stopped reading; the trace is kept all the same.
            let _ = out.send(body);
        }
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    set_header(&mut resp, "range", &format!("0-{}", job.trace.len()));
    set_header(&mut resp, "job-status", job.phase.job_status());
    set_header(
        &mut resp,
        "x-gitlab-trace-update-interval",
        &TRACE_UPDATE_INTERVAL_SECS.to_string(),
    );
    resp
}

// ---- state --------------------------------------------------------------------------------

/// `PUT /api/v4/jobs/:id` body (`oar_gitlab::types::UpdateJobRequest`), read permissively.
#[derive(serde::Deserialize)]
struct UpdateBody {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    exit_code: Option<i64>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    output: Option<UpdateOutput>,
}

#[derive(serde::Deserialize)]
struct UpdateOutput {
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    bytesize: Option<u64>,
}

/// `crc32:` and eight lower-case hex digits, as the driver computes it.
fn trace_checksum(trace: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(trace))
}

/// `PUT /api/v4/jobs/:id`.
async fn update_job(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let update: UpdateBody = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return message(StatusCode::BAD_REQUEST, &format!("400 Bad request - {e}"));
        }
    };
    let token = update
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| request_token(&headers, None));
    let mut jobs = shared.jobs();
    let job = match own_job(&mut jobs, id, token.as_deref()) {
        Ok(job) => job,
        Err(denied) => return denied.into_response(),
    };
    let status = match update.state.as_deref() {
        Some("running" | "pending") => None,
        Some("success") if job.phase == Phase::Canceling => Some(FinalStatus::Canceled),
        Some("failed") if job.phase == Phase::Canceling => Some(FinalStatus::Canceled),
        Some("success") => Some(FinalStatus::Success),
        Some("failed") => Some(FinalStatus::Failed),
        _ => {
            return message(
                StatusCode::BAD_REQUEST,
                "400 Bad request - state does not have a valid value",
            );
        }
    };
    if let Some(state) = status {
        finish(id, job, state, update);
    }
    let mut resp = (StatusCode::OK, "200").into_response();
    set_header(&mut resp, "job-status", job.phase.job_status());
    resp
}

/// Records the final state of `job` and wakes its watchers.
fn finish(id: i64, job: &mut JobEntry, state: FinalStatus, update: UpdateBody) {
    let (checksum, bytesize) = match update.output {
        Some(o) => (o.checksum.or(update.checksum), o.bytesize),
        None => (update.checksum, None),
    };
    // The driver omits a zero bytesize.
    let checksum_ok = checksum.as_deref() == Some(trace_checksum(&job.trace).as_str())
        && bytesize.unwrap_or(0) == job.trace.len() as u64;
    if !checksum_ok {
        tracing::warn!(
            job_id = id,
            job = %job.name,
            "the final checksum or size does not match the job log"
        );
    }
    let exit_code = update
        .exit_code
        .map(|c| i32::try_from(c).unwrap_or(if c < 0 { i32::MIN } else { i32::MAX }));
    let final_state = FinalState {
        state,
        failure_reason: update.failure_reason.filter(|r| !r.is_empty()),
        exit_code,
        trace: std::mem::take(&mut job.trace),
        checksum_ok,
    };
    tracing::info!(job_id = id, job = %job.name, state = state.as_str(), "Job finished.");
    job.phase = Phase::Finished(state);
    job.output = None;
    if let Some(tx) = job.finished.take() {
        tx.send_replace(Some(final_state));
    }
}

// ---- artifacts ------------------------------------------------------------------------------

/// An artifact type usable as a file name (GitLab validates against its enum; any plain word
/// is accepted here).
fn valid_artifact_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The stored file name: `artifacts.<ext>` for the archive, `<type>.<ext>` for reports.
fn artifact_file_name(artifact_type: &str, format: &str) -> String {
    let base = if artifact_type == "archive" {
        "artifacts"
    } else {
        artifact_type
    };
    match format {
        "zip" | "zipzstd" => format!("{base}.zip"),
        "gzip" => format!("{base}.gz"),
        "tarzstd" => format!("{base}.tar.zst"),
        _ => base.to_owned(),
    }
}

/// Why an upload was refused.
enum UploadError {
    TooLarge,
    BadRequest(String),
    Io(std::io::Error),
}

impl UploadError {
    fn into_response(self) -> Response {
        match self {
            UploadError::TooLarge => message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large",
            ),
            UploadError::BadRequest(m) => {
                message(StatusCode::BAD_REQUEST, &format!("400 Bad request - {m}"))
            }
            UploadError::Io(e) => {
                tracing::warn!(error = %e, "could not store an artifact");
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "500 Internal Server Error - could not store the artifact",
                )
            }
        }
    }
}

impl From<multer::Error> for UploadError {
    fn from(e: multer::Error) -> Self {
        match e {
            multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
                UploadError::TooLarge
            }
            e => UploadError::BadRequest(e.to_string()),
        }
    }
}

/// The multipart form of an upload, its `file` already on disk at `partial`.
#[derive(Default)]
struct UploadForm {
    /// The `file` part's file name and size, once read.
    file: Option<(String, u64)>,
    /// Other (text) fields: Grape merges them with the query parameters.
    fields: HashMap<String, String>,
}

/// Reads the multipart body, streaming the `file` part to `partial`.
async fn read_upload(
    headers: &HeaderMap,
    body: Body,
    partial: &Path,
    max: u64,
) -> Result<UploadForm, UploadError> {
    let content_type = header_str(headers, "content-type").unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| UploadError::BadRequest("multipart/form-data expected".into()))?;
    // The whole stream is bounded too, so text fields cannot grow without limit.
    let limit = multer::SizeLimit::new()
        .whole_stream(max.saturating_add(4 * MAX_FORM_FIELD))
        .per_field(max.max(MAX_FORM_FIELD));
    let constraints = multer::Constraints::new().size_limit(limit);
    let mut multipart =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut form = UploadForm::default();
    while let Some(mut field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            let text = field.text().await?;
            if text.len() as u64 > MAX_FORM_FIELD {
                return Err(UploadError::BadRequest(format!("field {name} is too long")));
            }
            form.fields.insert(name, text);
            continue;
        }
        let file_name = field.file_name().unwrap_or("artifacts").to_owned();
        let mut out = fs_err::tokio::File::create(partial)
            .await
            .map_err(UploadError::Io)?;
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await? {
            size = size.saturating_add(chunk.len() as u64);
            if size > max {
                return Err(UploadError::TooLarge);
            }
            out.write_all(&chunk).await.map_err(UploadError::Io)?;
        }
        out.flush().await.map_err(UploadError::Io)?;
        form.file = Some((file_name, size));
    }
    Ok(form)
}

/// `POST /api/v4/jobs/:id/artifacts`.
async fn upload_artifacts(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let token = request_token(&headers, query.as_deref());
    // Refuse before reading the archive.
    if let Err(denied) = own_job(&mut shared.jobs(), id, token.as_deref()) {
        return denied.into_response();
    }
    let declared = header_str(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_artifact_size.saturating_add(4 * MAX_FORM_FIELD)) {
        return UploadError::TooLarge.into_response();
    }
    let dir = shared.artifacts_dir.join(id.to_string());
    if let Err(e) = fs_err::tokio::create_dir_all(&dir).await {
        return UploadError::Io(e).into_response();
    }
    let seq = shared.upload_seq.fetch_add(1, Ordering::Relaxed);
    let partial = dir.join(format!(".upload-{seq}.partial"));
    let result = store_upload(&shared, id, &headers, query.as_deref(), body, &partial).await;
    if result.is_err() {
        // Best effort: the partial file may not exist.
        let _ = fs_err::tokio::remove_file(&partial).await;
    }
    match result {
        Ok(artifact) => {
            tracing::info!(
                job_id = id,
                artifact_type = %artifact.artifact_type,
                size = artifact.size,
                "artifact stored"
            );
            (StatusCode::CREATED, "201").into_response()
        }
        Err(resp) => resp,
    }
}

async fn store_upload(
    shared: &Shared,
    id: i64,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Body,
    partial: &Path,
) -> Result<StoredArtifact, Response> {
    let form = read_upload(headers, body, partial, shared.max_artifact_size)
        .await
        .map_err(UploadError::into_response)?;
    let param = |k: &str| query_param(query, k).or_else(|| form.fields.get(k).cloned());
    let Some((file_name, size)) = form.file.clone() else {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - file is missing",
        ));
    };
    let artifact_type = param("artifact_type")
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "archive".into());
    if !valid_artifact_type(&artifact_type) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - artifact_type does not have a valid value",
        ));
    }
    let format = param("artifact_format")
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "zip".into());
    if !ARTIFACT_FORMATS.contains(&format.as_str()) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - artifact_format does not have a valid value",
        ));
    }
    let path = partial.with_file_name(artifact_file_name(&artifact_type, &format));
    let artifact = StoredArtifact {
        artifact_type: artifact_type.clone(),
        format,
        file_name,
        path: path.clone(),
        size,
    };
    // Check again under the lock (the job may have finished meanwhile), and rename there so
    // two uploads of one type cannot both win.
    let token = form
        .fields
        .get("token")
        .cloned()
        .or_else(|| request_token(headers, query));
    let mut jobs = shared.jobs();
    let job = own_job(&mut jobs, id, token.as_deref()).map_err(Denied::into_response)?;
    if job.artifacts.contains_key(&artifact_type) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "400 Bad request - another artifact of the same type already exists",
        ));
    }
    // A rename in one directory: quick enough to do under the lock.
    fs_err::rename(partial, &path).map_err(|e| UploadError::Io(e).into_response())?;
    job.artifacts.insert(artifact_type, artifact.clone());
    Ok(artifact)
}

/// `GET /api/v4/jobs/:id/artifacts`: the archive of job `id`, for the token of any running
/// registered job.
async fn download_artifacts(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(id) = parse_id(&id) else {
        return not_found();
    };
    let token = request_token(&headers, query.as_deref())
        .or_else(|| query_param(query.as_deref(), "job_token"));
    let Some(token) = token else {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    };
    let archive = {
        let jobs = shared.jobs();
        if !running_token(&jobs, &token) {
            return forbidden();
        }
        let Some(job) = jobs.get(&id) else {
            return not_found();
        };
        job.artifacts.get("archive").cloned()
    };
    let Some(archive) = archive else {
        return not_found();
    };
    let file = match fs_err::tokio::File::open(&archive.path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(job_id = id, error = %e, "stored artifact is unreadable");
            return not_found();
        }
    };
    let content_type = if archive.format == "zip" {
        "application/zip"
    } else {
        "application/octet-stream"
    };
    let mut resp = Body::from_stream(ReaderStream::new(file)).into_response();
    set_header(&mut resp, "content-type", content_type);
    set_header(&mut resp, "content-length", &archive.size.to_string());
    let name = Path::new(&archive.file_name)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        .unwrap_or("artifacts.zip");
    set_header(
        &mut resp,
        "content-disposition",
        &format!("attachment; filename=\"{name}\""),
    );
    resp
}

// ---- git ----------------------------------------------------------------------------------

/// Segments of `[A-Za-z0-9._-]`, no `.`/`..`, not ending in `.git`.
fn valid_project_path(path: &str) -> bool {
    !path.ends_with(".git")
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// The git directory of `repo`: itself when it is one (bare or a `.git`), else its `.git`.
fn git_dir(repo: &Path) -> anyhow::Result<PathBuf> {
    let is_git_dir = |p: &Path| p.join("HEAD").is_file() && p.join("objects").is_dir();
    if is_git_dir(repo) {
        return Ok(repo.to_path_buf());
    }
    let dot_git = repo.join(".git");
    if is_git_dir(&dot_git) {
        return Ok(dot_git);
    }
    bail!("{} is not a git repository", repo.display())
}

/// `git-http-backend`, next to the `git` on `PATH`.
async fn find_http_backend() -> anyhow::Result<PathBuf> {
    let out = tokio::process::Command::new("git")
        .arg("--exec-path")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running git --exec-path (is git installed?)")?;
    if !out.status.success() {
        bail!("git --exec-path failed");
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let backend = Path::new(&dir).join("git-http-backend");
    if !backend.is_file() {
        bail!("git-http-backend not found in {dir}");
    }
    Ok(backend)
}

/// The password of `Authorization: Basic` for the user `gitlab-ci-token`.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let (scheme, encoded) = header_str(headers, "authorization")?
        .trim()
        .split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == GIT_USER).then(|| password.to_owned())
}

fn git_unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        "HTTP Basic: Access denied. Use gitlab-ci-token and the job token.\n",
    )
        .into_response();
    set_header(&mut resp, "www-authenticate", "Basic realm=\"Oar\"");
    resp
}

/// Fallback route: git smart HTTP (fetch only) at `/<project path>.git/...`, 404 elsewhere.
async fn git_http(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(git) = &shared.git else {
        return not_found();
    };
    let prefix = format!("/{}.git/", shared.project_path);
    let Some(rest) = parts.uri.path().strip_prefix(&prefix) else {
        return not_found();
    };
    let Some(password) = basic_password(&parts.headers) else {
        return git_unauthorized();
    };
    if !running_token(&shared.jobs(), &password) {
        return git_unauthorized();
    }
    let query = parts.uri.query().unwrap_or("");
    let service = query_param(Some(query), "service");
    let fetch = matches!(
        (&parts.method, rest, service.as_deref()),
        (&Method::GET, "info/refs", Some("git-upload-pack"))
            | (&Method::POST, "git-upload-pack", _)
    );
    if !fetch {
        let push = rest == "git-receive-pack" || service.as_deref() == Some("git-receive-pack");
        return if push {
            message(
                StatusCode::FORBIDDEN,
                "403 Forbidden - oar exec serves the repository read-only",
            )
        } else {
            not_found()
        };
    }
    let cgi = Cgi {
        method: parts.method.as_str(),
        path_info: format!("/{rest}"),
        query,
        headers: &parts.headers,
    };
    match run_http_backend(git, &cgi, body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "git http-backend failed");
            message(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway - git http-backend failed",
            )
        }
    }
}

/// One CGI request to `git http-backend`.
struct Cgi<'a> {
    method: &'a str,
    /// Relative to the git directory: `/info/refs` or `/git-upload-pack`.
    path_info: String,
    query: &'a str,
    headers: &'a HeaderMap,
}

/// Runs `git http-backend` with the request body streamed to its stdin and its output
/// streamed back as the response body (only the CGI headers are buffered).
async fn run_http_backend(git: &GitRepo, req: &Cgi<'_>, body: Body) -> anyhow::Result<Response> {
    let mut cmd = tokio::process::Command::new(&git.backend);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Fetch by sha (the driver may check out a commit no ref points at), partial clones,
        // never a push, and the user's own repository even when owned by another uid.
        .env("GIT_CONFIG_COUNT", "4")
        .env("GIT_CONFIG_KEY_0", "uploadpack.allowAnySHA1InWant")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "uploadpack.allowFilter")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GIT_CONFIG_KEY_2", "http.receivepack")
        .env("GIT_CONFIG_VALUE_2", "false")
        .env("GIT_CONFIG_KEY_3", "safe.directory")
        .env("GIT_CONFIG_VALUE_3", "*")
        .env("GIT_PROJECT_ROOT", &git.dir)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method)
        .env("PATH_INFO", &req.path_info)
        .env("QUERY_STRING", req.query)
        .env("REMOTE_USER", GIT_USER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Without CONTENT_LENGTH (a chunked request) http-backend reads to the end of its stdin.
    // HTTP_CONTENT_ENCODING=gzip makes it inflate the request itself.
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-length", "CONTENT_LENGTH"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = header_str(req.headers, name) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().context("spawning git http-backend")?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                // http-backend may stop reading early (it answers errors itself).
                Ok(data) => {
                    if stdin.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "git request body ended early");
                    break;
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut err = Vec::new();
        let mut limited = stderr.take(MAX_CGI_STDERR);
        let read = limited.read_to_end(&mut err);
        let (status, _) = tokio::join!(child.wait(), read);
        let failed = !status.as_ref().is_ok_and(std::process::ExitStatus::success);
        if failed || !err.is_empty() {
            tracing::debug!(
                status = ?status.ok(),
                stderr = %String::from_utf8_lossy(&err).trim(),
                "git http-backend"
            );
        }
    });
    let mut stdout = BufReader::new(stdout);
    let mut builder = axum::http::Response::builder();
    {
        let mut head = (&mut stdout).take(MAX_CGI_HEAD);
        loop {
            let mut line = Vec::new();
            if head.read_until(b'\n', &mut line).await? == 0 {
                bail!("git http-backend ended before the end of its headers");
            }
            let line = std::str::from_utf8(&line).context("CGI header is not UTF-8")?;
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').context("malformed CGI header")?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code: u16 = value
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .context("malformed CGI Status")?;
                builder = builder.status(code);
            } else {
                builder = builder.header(name.trim(), value);
            }
        }
    }
    builder
        .body(Body::from_stream(ReaderStream::new(stdout)))
        .context("building the git response")
}

#[cfg(test)]
mod tests {
    use super::*;

    use reqwest::StatusCode as Status;

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn start(dir: &Path) -> Coordinator {
        Coordinator::start(CoordinatorOptions::new(dir.join(".oar")))
            .await
            .expect("start coordinator")
    }

    fn job(id: i64, token: &str) -> LocalJob {
        LocalJob {
            id,
            name: format!("job-{id}"),
            token: token.into(),
        }
    }

    async fn patch(
        c: &reqwest::Client,
        co: &Coordinator,
        id: i64,
        token: &str,
        start: usize,
        data: &'static [u8],
    ) -> reqwest::Response {
        let end = (start + data.len()).saturating_sub(1);
        c.patch(format!(
            "{}api/v4/jobs/{id}/trace?debug_trace=false",
            co.url()
        ))
        .header("JOB-TOKEN", token)
        .header("Content-Type", "text/plain")
        .header("Content-Range", format!("{start}-{end}"))
        .body(data)
        .send()
        .await
        .expect("patch")
    }

    async fn put(
        c: &reqwest::Client,
        co: &Coordinator,
        id: i64,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let token = body["token"].as_str().unwrap_or_default().to_owned();
        c.put(format!("{}api/v4/jobs/{id}", co.url()))
            .header("JOB-TOKEN", token)
            .json(&body)
            .send()
            .await
            .expect("put")
    }

    fn hdr<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn trace_and_final_state() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let co = start(tmp.path()).await;
        let c = client();
        let mut watch = co.register_job(job(7, "glcbt-seven"));
        let mut output = watch.take_output().expect("output");
        assert!(watch.take_output().is_none());

        let r = put(
            &c,
            &co,
            7,
            serde_json::json!({"token": "glcbt-seven", "state": "running"}),
        )
        .await;
        assert_eq!(r.status(), Status::OK);
        assert_eq!(hdr(&r, "job-status"), "running");

        let r = patch(&c, &co, 7, "glcbt-seven", 0, b"hello ").await;
        assert_eq!(r.status(), Status::ACCEPTED);
        assert_eq!(hdr(&r, "range"), "0-6");
        assert_eq!(hdr(&r, "job-status"), "running");
        assert_eq!(hdr(&r, "x-gitlab-trace-update-interval"), "1");

        // A gap: 416 with the true length.
        let r = patch(&c, &co, 7, "glcbt-seven", 10, b"lost").await;
        assert_eq!(r.status(), Status::RANGE_NOT_SATISFIABLE);
        assert_eq!(hdr(&r, "range"), "0-6");
        // An overlap too.
        let r = patch(&c, &co, 7, "glcbt-seven", 0, b"again").await;
        assert_eq!(r.status(), Status::RANGE_NOT_SATISFIABLE);
        assert_eq!(hdr(&r, "range"), "0-6");

        let r = patch(&c, &co, 7, "glcbt-seven", 6, b"world\n").await;
        assert_eq!(r.status(), Status::ACCEPTED);
        assert_eq!(hdr(&r, "range"), "0-12");

        assert_eq!(output.recv().await.as_deref(), Some(&b"hello "[..]));
        assert_eq!(output.recv().await.as_deref(), Some(&b"world\n"[..]));

        let sum = format!("crc32:{:08x}", crc32fast::hash(b"hello world\n"));
        let r = put(
            &c,
            &co,
            7,
            serde_json::json!({
                "token": "glcbt-seven", "state": "success", "checksum": sum,
                "output": {"checksum": sum, "bytesize": 12},
                "info": {"name": "oar"},
            }),
        )
        .await;
        assert_eq!(r.status(), Status::OK);
        assert_eq!(hdr(&r, "job-status"), "success");

        let fin = watch.finished().await.expect("finished");
        assert_eq!(fin.state, FinalStatus::Success);
        assert!(fin.checksum_ok);
        assert_eq!(fin.trace, b"hello world\n");
        assert_eq!(fin.exit_code, None);
        assert_eq!(fin.failure_reason, None);
        // Again: the same state.
        assert_eq!(watch.finished().await.expect("finished again"), fin);
        // The output channel is closed after the last chunk.
        assert_eq!(output.recv().await, None);

        // The token is no longer accepted.
        let r = patch(&c, &co, 7, "glcbt-seven", 12, b"late").await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        assert_eq!(hdr(&r, "job-status"), "success");
        co.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn failure_bad_checksum_and_cancel() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let co = start(tmp.path()).await;
        let c = client();
        let failing = co.register_job(job(1, "tok-1"));
        let canceled = co.register_job(job(2, "tok-2"));

        let r = patch(&c, &co, 1, "tok-1", 0, b"oops\n").await;
        assert_eq!(r.status(), Status::ACCEPTED);
        let r = put(
            &c,
            &co,
            1,
            serde_json::json!({
                "token": "tok-1", "state": "failed", "failure_reason": "script_failure",
                "exit_code": 3, "output": {"checksum": "crc32:00000000", "bytesize": 5},
            }),
        )
        .await;
        assert_eq!(r.status(), Status::OK);
        let fin = failing.finished().await.expect("finished");
        assert_eq!(fin.state, FinalStatus::Failed);
        assert_eq!(fin.failure_reason.as_deref(), Some("script_failure"));
        assert_eq!(fin.exit_code, Some(3));
        assert!(!fin.checksum_ok);

        assert!(co.cancel(2));
        assert!(!co.cancel(1), "a finished job cannot be canceled");
        let r = patch(&c, &co, 2, "tok-2", 0, b"x").await;
        assert_eq!(r.status(), Status::ACCEPTED);
        assert_eq!(hdr(&r, "job-status"), "canceling");
        let r = put(
            &c,
            &co,
            2,
            serde_json::json!({"token": "tok-2", "state": "running"}),
        )
        .await;
        assert_eq!(hdr(&r, "job-status"), "canceling");
        let sum = format!("crc32:{:08x}", crc32fast::hash(b"x"));
        let r = put(
            &c,
            &co,
            2,
            serde_json::json!({
                "token": "tok-2", "state": "failed", "failure_reason": "job_canceled",
                "output": {"checksum": sum, "bytesize": 1},
            }),
        )
        .await;
        assert_eq!(hdr(&r, "job-status"), "canceled");
        let fin = canceled.finished().await.expect("finished");
        assert_eq!(fin.state, FinalStatus::Canceled);
        assert!(fin.checksum_ok);

        // Bad requests are answered, not panicked on.
        let r = c
            .put(format!("{}api/v4/jobs/abc", co.url()))
            .body("{}")
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), Status::NOT_FOUND);
        let r = c
            .put(format!("{}api/v4/jobs/2", co.url()))
            .body("not json")
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), Status::BAD_REQUEST);
        co.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn tokens_are_checked_and_redacted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let co = start(tmp.path()).await;
        let c = client();
        let watch = co.register_job(job(1, "secret-token-one"));
        co.register_job(job(2, "secret-token-two"));

        let r = patch(&c, &co, 1, "unknown", 0, b"x").await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        // Another job's token.
        let r = patch(&c, &co, 1, "secret-token-two", 0, b"x").await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        // An unregistered job.
        let r = patch(&c, &co, 99, "secret-token-one", 0, b"x").await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        // No token.
        let r = c
            .patch(format!("{}api/v4/jobs/1/trace", co.url()))
            .header("Content-Type", "text/plain")
            .header("Content-Range", "0-0")
            .body("x")
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), Status::UNAUTHORIZED);
        let r = put(
            &c,
            &co,
            1,
            serde_json::json!({"token": "unknown", "state": "success"}),
        )
        .await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        // Missing Content-Range, wrong content type.
        let r = c
            .patch(format!("{}api/v4/jobs/1/trace", co.url()))
            .header("JOB-TOKEN", "secret-token-one")
            .header("Content-Type", "text/plain")
            .body("x")
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), Status::BAD_REQUEST);
        let r = c
            .patch(format!("{}api/v4/jobs/1/trace", co.url()))
            .header("JOB-TOKEN", "secret-token-one")
            .header("Content-Range", "0-0")
            .body("x")
            .send()
            .await
            .expect("patch");
        assert_eq!(r.status(), Status::BAD_REQUEST);

        let shown = format!("{:?} {co:?} {watch:?}", job(1, "secret-token-one"));
        assert!(!shown.contains("secret-token"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        co.shutdown().await.expect("shutdown");
    }

    async fn upload(
        c: &reqwest::Client,
        co: &Coordinator,
        id: i64,
        token: &str,
        query: &str,
        name: &str,
        data: &'static [u8],
    ) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(data)
            .file_name(name.to_owned())
            .mime_str("application/octet-stream")
            .expect("mime");
        c.post(format!("{}api/v4/jobs/{id}/artifacts?{query}", co.url()))
            .header("JOB-TOKEN", token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .expect("upload")
    }

    #[tokio::test]
    async fn artifacts_upload_and_download() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut options = CoordinatorOptions::new(tmp.path().join(".oar"));
        options.max_artifact_size = 1024;
        let co = Coordinator::start(options).await.expect("start");
        let c = client();
        let build = co.register_job(job(10, "tok-build"));
        co.register_job(job(11, "tok-test"));

        let zip: &'static [u8] = b"PK\x03\x04 pretend zip";
        let q = "artifact_format=zip&artifact_type=archive&expire_in=1+week";
        let r = upload(&c, &co, 10, "tok-build", q, "build.zip", zip).await;
        assert_eq!(r.status(), Status::CREATED);
        let stored = tmp.path().join(".oar/artifacts/10/artifacts.zip");
        assert_eq!(std::fs::read(&stored).expect("stored"), zip);
        assert_eq!(co.artifact_path(10, "archive"), Some(stored.clone()));
        assert_eq!(build.artifact_path("archive"), Some(stored));

        // A dotenv report is kept too, named by its type.
        let q = "artifact_format=gzip&artifact_type=dotenv";
        let r = upload(&c, &co, 10, "tok-build", q, "dotenv.env.gz", b"gz").await;
        assert_eq!(r.status(), Status::CREATED);
        let dotenv = build.artifact("dotenv").expect("dotenv");
        assert_eq!(dotenv.path, tmp.path().join(".oar/artifacts/10/dotenv.gz"));
        assert_eq!((dotenv.format.as_str(), dotenv.size), ("gzip", 2));

        // A second archive, a bad type, a foreign token, too large.
        let q = "artifact_type=archive";
        let r = upload(&c, &co, 10, "tok-build", q, "a.zip", b"x").await;
        assert_eq!(r.status(), Status::BAD_REQUEST);
        let r = upload(&c, &co, 10, "tok-build", "artifact_type=../x", "a", b"x").await;
        assert_eq!(r.status(), Status::BAD_REQUEST);
        let r = upload(&c, &co, 10, "tok-test", "", "a.zip", b"x").await;
        assert_eq!(r.status(), Status::FORBIDDEN);
        let big: &'static [u8] = &[7u8; 2048];
        let r = upload(&c, &co, 11, "tok-test", "artifact_type=junit", "j.gz", big).await;
        assert_eq!(r.status(), Status::PAYLOAD_TOO_LARGE);
        assert!(co.artifact_path(11, "junit").is_none());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join(".oar/artifacts/11"))
            .expect("dir")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Another job's token downloads the archive.
        let r = c
            .get(format!(
                "{}api/v4/jobs/10/artifacts?direct_download=true",
                co.url()
            ))
            .header("JOB-TOKEN", "tok-test")
            .send()
            .await
            .expect("download");
        assert_eq!(r.status(), Status::OK);
        assert_eq!(hdr(&r, "content-type"), "application/zip");
        assert_eq!(r.bytes().await.expect("body").as_ref(), zip);
        // No archive, unknown token, no token.
        let get = |id: i64, token: Option<&'static str>| {
            let mut req = c.get(format!("{}api/v4/jobs/{id}/artifacts", co.url()));
            if let Some(t) = token {
                req = req.header("JOB-TOKEN", t);
            }
            req.send()
        };
        assert_eq!(
            get(11, Some("tok-build")).await.expect("get").status(),
            Status::NOT_FOUND
        );
        assert_eq!(
            get(10, Some("nope")).await.expect("get").status(),
            Status::FORBIDDEN
        );
        assert_eq!(
            get(10, None).await.expect("get").status(),
            Status::UNAUTHORIZED
        );
        co.shutdown().await.expect("shutdown");
    }

    /// Runs git hermetically; returns (success, stderr).
    async fn git(dir: &Path, args: &[&str]) -> (bool, String) {
        git_env(dir, args, &[]).await
    }

    async fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let out = tokio::process::Command::new("git")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("GIT_AUTHOR_NAME", "Oar Test")
            .env("GIT_AUTHOR_EMAIL", "test@oar.invalid")
            .env("GIT_COMMITTER_NAME", "Oar Test")
            .env("GIT_COMMITTER_EMAIL", "test@oar.invalid")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run git");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn git_ok(dir: &Path, args: &[&str]) {
        let (ok, err) = git(dir, args).await;
        assert!(ok, "git {args:?}: {err}");
    }

    #[tokio::test]
    async fn serves_the_repository_read_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        git_ok(&src, &["init", "--quiet", "--initial-branch=main"]).await;
        std::fs::write(src.join("README.md"), "hello\n").expect("write");
        std::fs::write(src.join("sub/file.txt"), "nested\n").expect("write");
        git_ok(&src, &["add", "-A"]).await;
        git_ok(&src, &["commit", "--quiet", "-m", "initial"]).await;
        // Many branches on distinct commits: the clone's wants exceed 1 KiB, which git sends
        // gzip-compressed.
        for i in 0..40 {
            git_ok(
                &src,
                &["commit", "--quiet", "--allow-empty", "-m", &format!("c{i}")],
            )
            .await;
            git_ok(&src, &["branch", &format!("b{i}")]).await;
        }
        git_ok(&src, &["checkout", "--quiet", "main"]).await;

        let mut options = CoordinatorOptions::new(tmp.path().join(".oar"));
        options.repo = Some(src.join(".git"));
        options.project_path = "group/project".into();
        let co = Coordinator::start(options).await.expect("start");
        co.register_job(job(5, "glcbt-clone"));
        let url = co.repo_url("glcbt-clone");
        assert_eq!(
            url,
            format!(
                "http://gitlab-ci-token:glcbt-clone@127.0.0.1:{}/group/project.git",
                co.local_addr().port()
            )
        );

        let (ok, err) = git_env(
            tmp.path(),
            &["clone", "--quiet", &url, "clone"],
            &[("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")],
        )
        .await;
        assert!(ok, "clone: {err}");
        assert!(
            err.to_ascii_lowercase().contains("content-encoding: gzip"),
            "the negotiation was not gzip-compressed: {err}"
        );
        let clone = tmp.path().join("clone");
        assert_eq!(
            std::fs::read_to_string(clone.join("README.md")).expect("readme"),
            "hello\n"
        );
        assert_eq!(
            std::fs::read_to_string(clone.join("sub/file.txt")).expect("file"),
            "nested\n"
        );
        git_ok(&clone, &["rev-parse", "--verify", "--quiet", "origin/b39"]).await;
        // Protocol v0 with a shallow fetch too.
        git_ok(
            tmp.path(),
            &[
                "-c",
                "protocol.version=0",
                "clone",
                "--quiet",
                "--depth=1",
                &url,
                "shallow",
            ],
        )
        .await;

        // Pushing is refused, nothing changes.
        git_ok(
            &clone,
            &["commit", "--quiet", "--allow-empty", "-m", "mine"],
        )
        .await;
        let (ok, err) = git(&clone, &["push", "origin", "HEAD:refs/heads/pushed"]).await;
        assert!(!ok, "push must fail");
        assert!(err.contains("403"), "{err}");
        let (exists, _) = git(
            &src,
            &["rev-parse", "--verify", "--quiet", "refs/heads/pushed"],
        )
        .await;
        assert!(!exists);

        // A wrong token, no repository at another path.
        let bad = co.repo_url("wrong");
        let (ok, err) = git(tmp.path(), &["clone", "--quiet", &bad, "bad"]).await;
        assert!(!ok, "clone with a wrong token must fail");
        assert!(
            !err.contains("wrong"),
            "git must not print the token back: {err}"
        );
        let other = url.replace("group/project.git", "group/other.git");
        let (ok, _) = git(tmp.path(), &["clone", "--quiet", &other, "other"]).await;
        assert!(!ok);
        co.shutdown().await.expect("shutdown");
    }

    /// The driver's own client (`oar-gitlab`) against the coordinator: what `oar exec` runs.
    #[tokio::test]
    async fn the_runner_client_speaks_to_it() {
        use oar_gitlab::{
            ArtifactUpload, Client, ClientConfig, JobOutput, PatchOutcome, Token, UpdateJobRequest,
            UpdateOutcome, VersionInfo,
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let co = start(tmp.path()).await;
        let client = Client::new(&ClientConfig {
            url: co.url(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            version: "test".into(),
        })
        .expect("client");
        let mut build = co.register_job(job(20, "glcbt-build"));
        let test = co.register_job(job(21, "glcbt-test"));
        let mut output = build.take_output().expect("output");
        let token = Token::new("glcbt-build");

        let (outcome, remote) = client
            .patch_trace(20, &token, 0, Bytes::from_static(b"step 1\n"), false)
            .await
            .expect("patch");
        assert_eq!(outcome, PatchOutcome::Sent { offset: 7 });
        assert_eq!(
            remote.update_interval,
            Some(std::time::Duration::from_secs(1))
        );
        let (outcome, _) = client
            .patch_trace(20, &token, 3, Bytes::from_static(b"x"), false)
            .await
            .expect("patch");
        assert_eq!(outcome, PatchOutcome::RangeMismatch { offset: 7 });
        assert!(co.cancel(20));
        let (outcome, remote) = client
            .patch_trace(20, &token, 7, Bytes::from_static(b"step 2\n"), false)
            .await
            .expect("patch");
        assert_eq!(outcome, PatchOutcome::Sent { offset: 14 });
        assert!(remote.is_canceling());

        let archive = tmp.path().join("upload.zip");
        std::fs::write(&archive, b"PK zip bytes").expect("write");
        client
            .upload_artifacts(&ArtifactUpload {
                job_id: 20,
                token: &token,
                file: &archive,
                file_name: "artifacts.zip",
                format: "zip",
                artifact_type: "archive",
                expire_in: "1 week",
                timeout: std::time::Duration::from_secs(30),
            })
            .await
            .expect("upload");
        let dest = tmp.path().join("download.zip");
        let n = client
            .download_artifacts(20, &Token::new("glcbt-test"), true, &dest)
            .await
            .expect("download");
        assert_eq!(n, 12);
        assert_eq!(std::fs::read(&dest).expect("read"), b"PK zip bytes");

        let sum = format!("crc32:{:08x}", crc32fast::hash(b"step 1\nstep 2\n"));
        let (outcome, remote) = client
            .update_job(
                20,
                &UpdateJobRequest {
                    info: VersionInfo::default(),
                    token: token.clone(),
                    state: "failed".into(),
                    failure_reason: "job_canceled".into(),
                    checksum: sum.clone(),
                    output: JobOutput {
                        checksum: sum,
                        bytesize: 14,
                    },
                    exit_code: 0,
                },
            )
            .await
            .expect("update");
        assert_eq!(outcome, UpdateOutcome::Ok);
        assert_eq!(remote.status.as_deref(), Some("canceled"));
        let fin = build.finished().await.expect("finished");
        assert_eq!(fin.state, FinalStatus::Canceled);
        assert!(fin.checksum_ok);
        assert_eq!(fin.failure_reason.as_deref(), Some("job_canceled"));
        assert_eq!(output.recv().await.as_deref(), Some(&b"step 1\n"[..]));
        assert_eq!(output.recv().await.as_deref(), Some(&b"step 2\n"[..]));
        assert_eq!(output.recv().await, None);
        // The finished job's token no longer works; the other job's still does.
        let (outcome, _) = client
            .patch_trace(20, &token, 14, Bytes::from_static(b"late"), false)
            .await
            .expect("patch");
        assert_eq!(outcome, PatchOutcome::Abort(403));
        drop(test);
        co.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn shutdown_ends_the_watches() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let co = start(tmp.path()).await;
        let c = client();
        let mut watch = co.register_job(job(3, "tok-3"));
        let mut output = watch.take_output().expect("output");
        let r = patch(&c, &co, 3, "tok-3", 0, b"partial").await;
        assert_eq!(r.status(), Status::ACCEPTED);
        co.shutdown().await.expect("shutdown");
        // What was sent is still delivered, then the channel ends.
        assert_eq!(output.recv().await.as_deref(), Some(&b"partial"[..]));
        assert_eq!(output.recv().await, None);
        assert!(watch.finished().await.is_err());
        assert!(watch.artifact_path("archive").is_none());
    }

    #[test]
    fn pure_helpers() {
        assert_eq!(range_start("0-1023"), Some(0));
        assert_eq!(range_start(" 5-9 "), Some(5));
        assert_eq!(range_start("bytes 0-1/2"), None);
        assert_eq!(range_start("abc"), None);
        assert!(valid_project_path("group/sub/pro-ject.x"));
        assert!(valid_project_path("project"));
        assert!(!valid_project_path("a/../b"));
        assert!(!valid_project_path("a//b"));
        assert!(!valid_project_path("a/b.git"));
        assert_eq!(artifact_file_name("archive", "zip"), "artifacts.zip");
        assert_eq!(artifact_file_name("dotenv", "gzip"), "dotenv.gz");
        assert_eq!(artifact_file_name("junit", "raw"), "junit");
        assert!(!valid_artifact_type("../x"));
        assert!(valid_artifact_type("cyclonedx"));
    }
}
