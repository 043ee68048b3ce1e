//! Public value types: job states, endpoints, faults and the snapshots handed to tests.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

/// State of a job as GitLab reports it in `Job-Status`; serialized as that wire name
/// (`"pending"`, `"running"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue, or handed to a runner advertising `two_phase_job_commit` that has
    /// not acknowledged it yet (`PUT state=running`).
    Pending,
    /// Acknowledged by the runner (`PUT state=running`), or handed to a runner without
    /// `two_phase_job_commit`.
    Running,
    /// A graceful cancel was requested; the runner's final `PUT` turns it into `Canceled`.
    Canceling,
    /// Canceled (hard abort, or after a graceful cancel finished).
    Canceled,
    /// Finished successfully.
    Success,
    /// Finished with a failure (see `failure_reason`).
    Failed,
}

impl JobState {
    /// The wire name, as in GitLab's `Job-Status` header.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Canceling => "canceling",
            JobState::Canceled => "canceled",
            JobState::Success => "success",
            JobState::Failed => "failed",
        }
    }

    /// `running` or `canceling`: the states in which the job token authenticates job calls
    /// (GitLab's `EXECUTING_STATUSES`).
    pub fn is_executing(self) -> bool {
        matches!(self, JobState::Running | JobState::Canceling)
    }

    /// `success`, `failed` or `canceled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Success | JobState::Failed | JobState::Canceled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API endpoints the fake serves, used to target faults and to classify requests.
///
/// In JSON (the admin API) an endpoint is its snake_case name: `"register_runner"`,
/// `"verify_runner"`, `"unregister_runner"`, `"reset_runner_token"`, `"request_job"`,
/// `"update_job"`, `"patch_trace"`, `"upload_artifacts"`, `"download_artifacts"`, `"git"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /api/v4/runners` (legacy registration).
    RegisterRunner,
    /// `POST /api/v4/runners/verify`.
    VerifyRunner,
    /// `DELETE /api/v4/runners` and `DELETE /api/v4/runners/managers`.
    UnregisterRunner,
    /// `POST /api/v4/runners/reset_authentication_token`.
    ResetRunnerToken,
    /// `POST /api/v4/jobs/request`.
    RequestJob,
    /// `PUT /api/v4/jobs/:id`.
    UpdateJob,
    /// `PATCH /api/v4/jobs/:id/trace`.
    PatchTrace,
    /// `POST /api/v4/jobs/:id/artifacts`.
    UploadArtifacts,
    /// `GET /api/v4/jobs/:id/artifacts`.
    DownloadArtifacts,
    /// Git smart HTTP (`/<path>.git/...`).
    Git,
}

/// A fault injected before normal handling; each one is counted down per endpoint.
///
/// In JSON (the admin API) a fault is an object tagged by `kind`, with the variant's fields
/// (`times` defaults to 1, `Delay`'s duration is `by_ms` in milliseconds; unknown fields and
/// fields of another kind are refused, errors name the field):
///
/// ```json
/// {"kind": "status", "endpoint": "request_job", "status": 503, "times": 2}
/// {"kind": "rate_limited", "endpoint": "patch_trace", "retry_after": 1}
/// {"kind": "reset", "endpoint": "update_job"}
/// {"kind": "delay", "endpoint": "request_job", "by_ms": 1500}
/// {"kind": "trace416", "job": 1001}
/// {"kind": "outage", "endpoint": "update_job", "status": 502, "duration_ms": 120000}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "crate::faults::FaultWire"
)]
pub enum Fault {
    /// Answer `status` (with a JSON `{"message": ...}` body) `times` times.
    Status {
        /// Endpoint to hit.
        endpoint: Endpoint,
        /// HTTP status to answer.
        status: u16,
        /// How many requests are affected.
        times: u32,
    },
    /// Answer `429` with `Retry-After: <secs>` `times` times.
    RateLimited {
        /// Endpoint to hit.
        endpoint: Endpoint,
        /// Value of the `Retry-After` header, in seconds.
        retry_after: u64,
        /// How many requests are affected.
        times: u32,
    },
    /// Close the TCP connection (RST) without any response, `times` times.
    Reset {
        /// Endpoint to hit.
        endpoint: Endpoint,
        /// How many requests are affected.
        times: u32,
    },
    /// Hold the request for `by` before handling it normally, `times` times.
    Delay {
        /// Endpoint to hit.
        endpoint: Endpoint,
        /// How long to wait before handling.
        #[serde(rename = "by_ms", serialize_with = "crate::util::duration_ms")]
        by: Duration,
        /// How many requests are affected.
        times: u32,
    },
    /// Answer `status` to every request of `endpoint` for `duration` from when the fault is
    /// injected: GitLab down for a while (its own upgrade, a broken load balancer).
    Outage {
        /// Endpoint to hit.
        endpoint: Endpoint,
        /// HTTP status to answer.
        status: u16,
        /// How long the outage lasts.
        #[serde(rename = "duration_ms", serialize_with = "crate::util::duration_ms")]
        duration: Duration,
        /// When it ends (set when injected).
        #[serde(skip)]
        until: Option<Instant>,
    },
    /// Answer trace PATCHes of `job` with `416` and the true `Range`, even when the offset is
    /// right, `times` times.
    Trace416 {
        /// Job id.
        job: i64,
        /// How many PATCHes are affected.
        times: u32,
    },
}

/// One HTTP request the fake received.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Endpoint kind, `None` for unknown paths.
    pub endpoint: Option<Endpoint>,
    /// Job id for `/api/v4/jobs/:id...` paths.
    pub job_id: Option<i64>,
    /// Request headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Answered status; `None` while in flight, when reset, or when the client went away.
    pub status: Option<u16>,
    /// The connection was reset by a [`Fault::Reset`].
    pub reset: bool,
    /// The answer came from an injected [`Fault`] rather than normal handling.
    pub faulted: bool,
    /// When the request arrived.
    pub at: Instant,
    /// When the request arrived, by the wall clock (its head was read; the body follows): to
    /// set beside timestamps taken elsewhere, e.g. in a job pod on the same host.
    pub received: SystemTime,
    /// Time from arrival to the answer (zero while in flight).
    pub elapsed: Duration,
}

impl RequestRecord {
    /// First value of a request header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A runner known to the fake.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerRecord {
    /// Runner id.
    pub id: i64,
    /// Current authentication token.
    pub token: String,
    /// Description.
    pub description: String,
    /// Tags.
    pub tag_list: Vec<String>,
    /// Picks untagged jobs.
    pub run_untagged: bool,
    /// Locked to its project.
    pub locked: bool,
    /// `not_protected` or `ref_protected`.
    pub access_level: String,
    /// Paused runners get no jobs.
    pub paused: bool,
    /// Maximum job timeout in seconds.
    pub maximum_timeout: Option<i64>,
    /// Maintenance note.
    pub maintenance_note: Option<String>,
    /// Last `info` object the runner sent.
    pub info: Option<Value>,
    /// Its runner managers: every `system_id` seen in `verify` and `jobs/request`, in order of
    /// first contact, minus those removed by `DELETE /api/v4/runners/managers` (GitLab keeps
    /// one runner manager per (runner, system_id)).
    pub system_ids: Vec<String>,
    /// Unregistered (`DELETE /api/v4/runners`).
    pub deleted: bool,
    /// `token_expires_at` as handed out.
    pub token_expires_at: Option<String>,
    /// Created through legacy registration (`POST /api/v4/runners`) rather than in the UI.
    pub registered: bool,
}

impl RunnerRecord {
    /// Whether the runner's last `info.features` advertised `name` as `true`.
    pub fn feature(&self, name: &str) -> bool {
        self.info
            .as_ref()
            .and_then(|i| i.get("features"))
            .and_then(|f| f.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// An artifact uploaded for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// File name of the multipart `file` field.
    pub filename: String,
    /// `artifact_type` (default `archive`).
    pub artifact_type: String,
    /// `artifact_format` (default `zip`).
    pub artifact_format: String,
    /// `expire_in`, if sent.
    pub expire_in: Option<String>,
    /// `accessibility`, if sent.
    pub accessibility: Option<String>,
    /// The uploaded bytes.
    pub data: Vec<u8>,
}

/// A copy of a job's server-side state.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    /// Job id.
    pub id: i64,
    /// Project path (`namespace/name`).
    pub project: String,
    /// Job name.
    pub name: String,
    /// Stage name.
    pub stage: String,
    /// Branch or tag built.
    pub git_ref: String,
    /// Commit built.
    pub sha: String,
    /// Pipeline id.
    pub pipeline_id: i64,
    /// Current state.
    pub state: JobState,
    /// Failure reason as GitLab stored it (unknown reasons become `unknown_failure`).
    pub failure_reason: Option<String>,
    /// Exit code from the final update.
    pub exit_code: Option<i64>,
    /// Stored trace bytes.
    pub trace: Vec<u8>,
    /// `output.checksum` (or top-level `checksum`) of the final update.
    pub final_checksum: Option<String>,
    /// `output.bytesize` of the final update.
    pub final_bytesize: Option<u64>,
    /// The final checksum and bytesize equal the crc32 and length of the stored trace.
    pub checksum_matches: bool,
    /// Every authenticated `PUT` body, in order.
    pub updates: Vec<Value>,
    /// Uploaded artifacts.
    pub artifacts: Vec<StoredArtifact>,
    /// Runner the job was handed to.
    pub runner_id: Option<i64>,
    /// Job token.
    pub token: String,
    /// The runner sent `PUT state=running` (the two-phase-commit ack, or a keep-alive).
    pub acknowledged: bool,
    /// Finished: the final update was answered 200, or the server ended the job itself.
    pub finished: bool,
    /// The payload handed out in the `201` (absent for raw payloads or unassigned jobs).
    pub payload: Option<Value>,
    /// A trace PATCH at offset 0 carried `debug_trace=true`.
    pub debug_trace: bool,
}

impl JobSnapshot {
    /// The trace as (lossy) UTF-8.
    pub fn trace_str(&self) -> String {
        String::from_utf8_lossy(&self.trace).into_owned()
    }
}
