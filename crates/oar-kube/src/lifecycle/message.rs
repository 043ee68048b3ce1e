//! The helper's termination message: its last word to the manager.

use serde::{Deserialize, Serialize};

/// The most a termination message can hold: the kubelet keeps 4096 bytes of
/// `/dev/termination-log`.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What the helper agent writes to `/dev/termination-log` before it exits
/// (`terminationMessagePolicy: File`), one JSON object:
///
/// ```json
/// {"oar":1,"state":"failed","failure_reason":"script_failure","delivered":true}
/// ```
///
/// Unknown fields are ignored, so a newer agent may say more. This type depends on serde only,
/// so the agent can share it without linking the Kubernetes client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminationMessage {
    /// The message format's version, [`TerminationMessage::VERSION`].
    pub oar: u32,
    /// The job's final state as the agent decided it.
    pub state: FinalState,
    /// GitLab's failure reason when `state` is `failed` (`script_failure`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
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
    /// The job was canceled (from GitLab); nothing more to report.
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
            delivered,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tolerance() {
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
}
