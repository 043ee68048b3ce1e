//! What the manager hands to the job pod's helper agent: the job, the runner-side settings and
//! the pre-signed cache URLs, as one JSON document stored in the job's Secret. Never the runner
//! token or storage keys: only what this one job may use.

use crate::context::JobSettings;
use crate::files::CacheUrls;
use crate::outcome::{FailureReason, JobOutcome};
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

/// The most a termination message can hold: the kubelet keeps 4096 bytes of
/// `/dev/termination-log`.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What the helper agent writes to `/dev/termination-log` before it exits
/// (`terminationMessagePolicy: File`), its last word to the manager, one JSON object:
///
/// ```json
/// {"oar":1,"state":"failed","failure_reason":"script_failure","exit_code":3,"delivered":true}
/// ```
///
/// The one definition of the format: the agent writes it, the manager's pod lifecycle
/// (`oar_kube::lifecycle`) reads it. Unknown fields are ignored, so a newer agent may say more.
/// It depends on serde only, so the agent shares it without linking the Kubernetes client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationMessage {
    /// The message format's version, [`TerminationMessage::VERSION`].
    pub oar: u32,
    /// The job's final state as the agent decided it.
    pub state: FinalState,
    /// GitLab's failure reason when `state` is `failed` (`script_failure`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The failed script's exit code, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether GitLab accepted the final state (`PUT /jobs/:id`). When `false` the manager
    /// sends it.
    #[serde(default)]
    pub delivered: bool,
}

/// A job's final state, as in GitLab's `PUT /jobs/:id` `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    /// The job succeeded.
    Success,
    /// The job failed (see [`TerminationMessage::failure_reason`]).
    Failed,
    /// The job was canceled in GitLab (a hard cancel): GitLab finalised it, nothing more to
    /// report.
    Canceled,
}

impl FinalState {
    /// GitLab's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Success => "success",
            FinalState::Failed => "failed",
            FinalState::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for FinalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TerminationMessage {
    /// The format version this code writes.
    pub const VERSION: u32 = 1;

    /// A message of the current version.
    pub fn new(state: FinalState, failure_reason: Option<String>, delivered: bool) -> Self {
        TerminationMessage {
            oar: Self::VERSION,
            state,
            failure_reason,
            exit_code: None,
            delivered,
        }
    }

    /// The message for a job that ended with `outcome`; `delivered`: GitLab accepted it.
    pub fn for_outcome(outcome: &JobOutcome, delivered: bool) -> Self {
        let state = if outcome.aborted {
            FinalState::Canceled
        } else if outcome.failure.is_none() {
            FinalState::Success
        } else {
            FinalState::Failed
        };
        TerminationMessage {
            exit_code: outcome.exit_code,
            ..Self::new(
                state,
                outcome.failure.map(|f| f.as_str().to_owned()),
                delivered,
            )
        }
    }

    /// The outcome this message describes (what the manager reports when it was not
    /// delivered).
    pub fn outcome(&self) -> JobOutcome {
        let failure = match self.state {
            FinalState::Success => None,
            FinalState::Failed | FinalState::Canceled => Some(
                self.failure_reason
                    .as_deref()
                    .and_then(FailureReason::from_wire)
                    .unwrap_or(FailureReason::UnknownFailure),
            ),
        };
        match failure {
            None => JobOutcome::success(),
            Some(reason) => JobOutcome {
                aborted: self.state == FinalState::Canceled,
                ..JobOutcome::failed(
                    reason,
                    self.exit_code,
                    format!("the job pod's helper ended the job: {}", reason.as_str()),
                )
            },
        }
    }

    /// Reads a termination message; `None` when it is not one (empty, truncated, another
    /// program's output).
    pub fn parse(text: &str) -> Option<TerminationMessage> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        serde_json::from_str::<TerminationMessage>(text)
            .ok()
            .filter(|m| m.oar >= 1)
    }

    /// The message as the agent writes it (one line of JSON, well under
    /// [`TERMINATION_MESSAGE_LIMIT`]).
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings, an enum and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_messages_round_trip_and_tolerate() {
        let m = TerminationMessage::new(FinalState::Failed, Some("script_failure".into()), true);
        assert_eq!(
            m.to_json(),
            r#"{"oar":1,"state":"failed","failure_reason":"script_failure","delivered":true}"#
        );
        assert_eq!(TerminationMessage::parse(&m.to_json()), Some(m));
        let newer = TerminationMessage::parse(
            "{\"oar\":2,\"state\":\"success\",\"delivered\":false,\"extra\":[1]}\n",
        )
        .unwrap();
        assert_eq!(newer.state, FinalState::Success);
        assert!(!newer.delivered);
        for bad in [
            "",
            "  ",
            "panic: oops",
            r#"{"oar":1,"state":"weird"}"#,
            r#"{"oar":0,"state":"success"}"#,
            r#"{"state":"success"}"#,
            r#"{"oar":1,"state":"succ"#,
        ] {
            assert_eq!(TerminationMessage::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn termination_messages_carry_the_outcome() {
        let failed = JobOutcome::failed(FailureReason::ScriptFailure, Some(3), "exit status 3");
        let m = TerminationMessage::for_outcome(&failed, false);
        assert_eq!(
            m.to_json(),
            r#"{"oar":1,"state":"failed","failure_reason":"script_failure","exit_code":3,"delivered":false}"#
        );
        let back = TerminationMessage::parse(&m.to_json()).unwrap().outcome();
        assert_eq!(back.failure, Some(FailureReason::ScriptFailure));
        assert_eq!(back.exit_code, Some(3));
        let ok = TerminationMessage::for_outcome(&JobOutcome::success(), true);
        assert_eq!(ok.state, FinalState::Success);
        assert_eq!(ok.outcome(), JobOutcome::success());
        let aborted = JobOutcome {
            aborted: true,
            ..JobOutcome::failed(FailureReason::JobCanceled, None, "aborted")
        };
        assert_eq!(
            TerminationMessage::for_outcome(&aborted, false).state,
            FinalState::Canceled
        );
        // A reason this version does not know.
        let odd = TerminationMessage::new(FinalState::Failed, Some("new_reason".into()), false);
        assert_eq!(odd.outcome().failure, Some(FailureReason::UnknownFailure));
    }
}
