//! What the manager hands to the job pod's helper agent: the job, the runner-side settings and
//! the pre-signed cache URLs, as one JSON document stored in the job's Secret. Never the runner
//! token or storage keys: only what this one job may use.

use crate::context::JobSettings;
use crate::files::CacheUrls;
use oar_gitlab::{JobResponse, VersionInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the payload format; the agent refuses others with a clear error.
pub const PAYLOAD_VERSION: u32 = 1;

/// The key of the payload in the job's Secret (and the file name where it is mounted).
pub const PAYLOAD_KEY: &str = "payload.json";

/// The payload document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentPayload {
    /// [`PAYLOAD_VERSION`].
    pub version: u32,
    /// GitLab's URL (as configured for the runner).
    pub gitlab_url: String,
    /// The runner's `info` (sent with job updates).
    pub info: VersionInfo,
    /// The job as GitLab sent it.
    pub job: JobResponse,
    /// Runner-side settings (builds dir, hooks, feature flags, TLS PEMs, ...).
    pub settings: JobSettings,
    /// Distributed cache URLs per key.
    #[serde(default)]
    pub cache_urls: BTreeMap<String, CacheUrls>,
    /// `[runners.cache] MaxUploadedArchiveSize`.
    #[serde(default)]
    pub cache_max_upload_size: Option<u64>,
    /// Whether `CI_DEBUG_TRACE` is in effect (the runner allows it and the job asks).
    #[serde(default)]
    pub debug_trace: bool,
    /// Warnings the manager found while preparing the job (pod builder, cache), for the
    /// job log: the agent prints them first, since only it writes the trace.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What the helper agent writes as its container's termination message, for the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationMessage {
    /// Always 1.
    pub oar: u32,
    /// `success`, `failed` or `canceled`.
    pub state: String,
    /// The failure reason sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Whether GitLab accepted the final state: when `false` the manager reports the job.
    pub delivered: bool,
}

impl AgentPayload {
    /// Reads a payload, naming what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let payload: AgentPayload = serde_json::from_slice(bytes)
            .map_err(|e| format!("the job payload is not readable: {e}"))?;
        if payload.version != PAYLOAD_VERSION {
            return Err(format!(
                "the job payload has version {}, this helper reads version {PAYLOAD_VERSION}: \
                 use the helper image of the same Oar release as the manager",
                payload.version
            ));
        }
        Ok(payload)
    }
}
