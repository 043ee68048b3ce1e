//! Fault injection: picking the next fault for a request and counting it down.

use std::time::Duration;

use serde::Deserialize;

use crate::state::State;
use crate::types::{Endpoint, Fault};

/// The JSON form of a [`Fault`] as it is read: one flat object (so that errors name the field,
/// which serde cannot do inside an internally tagged enum), checked per `kind` by `TryFrom`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultWire {
    kind: FaultKind,
    endpoint: Option<Endpoint>,
    status: Option<u16>,
    retry_after: Option<u64>,
    by_ms: Option<u64>,
    duration_ms: Option<u64>,
    job: Option<i64>,
    times: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    Status,
    RateLimited,
    Reset,
    Delay,
    Trace416,
    Outage,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Status => "status",
            FaultKind::RateLimited => "rate_limited",
            FaultKind::Reset => "reset",
            FaultKind::Delay => "delay",
            FaultKind::Trace416 => "trace416",
            FaultKind::Outage => "outage",
        }
    }

    /// The fields of this kind besides `kind` and `times`.
    fn fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Status => &["endpoint", "status"],
            FaultKind::RateLimited => &["endpoint", "retry_after"],
            FaultKind::Reset => &["endpoint"],
            FaultKind::Delay => &["endpoint", "by_ms"],
            FaultKind::Trace416 => &["job"],
            FaultKind::Outage => &["endpoint", "status", "duration_ms"],
        }
    }
}

impl TryFrom<FaultWire> for Fault {
    type Error = String;

    fn try_from(w: FaultWire) -> Result<Fault, String> {
        let kind = w.kind;
        let present = [
            ("endpoint", w.endpoint.is_some()),
            ("status", w.status.is_some()),
            ("retry_after", w.retry_after.is_some()),
            ("by_ms", w.by_ms.is_some()),
            ("duration_ms", w.duration_ms.is_some()),
            ("job", w.job.is_some()),
        ];
        if let Some((field, _)) = present
            .iter()
            .find(|(f, there)| *there && !kind.fields().contains(f))
        {
            return Err(format!(
                "{field}: not a field of a {} fault (it takes {}, times)",
                kind.name(),
                kind.fields().join(", ")
            ));
        }
        fn need<T>(kind: FaultKind, field: &str, v: Option<T>) -> Result<T, String> {
            v.ok_or_else(|| format!("{field}: missing, a {} fault needs it", kind.name()))
        }
        let times = w.times.unwrap_or(1);
        Ok(match kind {
            FaultKind::Status => {
                let status = need(kind, "status", w.status)?;
                if !(100..=599).contains(&status) {
                    return Err(format!("status: {status} is not an HTTP status code"));
                }
                Fault::Status {
                    endpoint: need(kind, "endpoint", w.endpoint)?,
                    status,
                    times,
                }
            }
            FaultKind::RateLimited => Fault::RateLimited {
                endpoint: need(kind, "endpoint", w.endpoint)?,
                retry_after: need(kind, "retry_after", w.retry_after)?,
                times,
            },
            FaultKind::Reset => Fault::Reset {
                endpoint: need(kind, "endpoint", w.endpoint)?,
                times,
            },
            FaultKind::Delay => Fault::Delay {
                endpoint: need(kind, "endpoint", w.endpoint)?,
                by: Duration::from_millis(need(kind, "by_ms", w.by_ms)?),
                times,
            },
            FaultKind::Trace416 => Fault::Trace416 {
                job: need(kind, "job", w.job)?,
                times,
            },
            FaultKind::Outage => {
                let status = need(kind, "status", w.status)?;
                if !(100..=599).contains(&status) {
                    return Err(format!("status: {status} is not an HTTP status code"));
                }
                Fault::Outage {
                    endpoint: need(kind, "endpoint", w.endpoint)?,
                    status,
                    duration: Duration::from_millis(need(kind, "duration_ms", w.duration_ms)?),
                    until: None,
                }
            }
        })
    }
}

/// What the dispatcher does instead of (or before) normal handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Status(u16),
    RateLimited(u64),
    Reset,
    Delay(Duration),
}

fn endpoint_of(f: &Fault) -> Option<Endpoint> {
    match f {
        Fault::Status { endpoint, .. }
        | Fault::RateLimited { endpoint, .. }
        | Fault::Reset { endpoint, .. }
        | Fault::Delay { endpoint, .. }
        | Fault::Outage { endpoint, .. } => Some(*endpoint),
        Fault::Trace416 { .. } => None,
    }
}

/// The count of a fault that ends after so many requests (not an [`Fault::Outage`]).
fn times_mut(f: &mut Fault) -> Option<&mut u32> {
    match f {
        Fault::Status { times, .. }
        | Fault::RateLimited { times, .. }
        | Fault::Reset { times, .. }
        | Fault::Delay { times, .. }
        | Fault::Trace416 { times, .. } => Some(times),
        Fault::Outage { .. } => None,
    }
}

/// Take the first pending fault for `endpoint` (in insertion order) and count it down.
pub(crate) fn take(state: &mut State, endpoint: Endpoint) -> Option<Action> {
    // Outages that are over are gone.
    let now = tokio::time::Instant::now();
    state
        .faults
        .retain(|f| !matches!(f, Fault::Outage { until: Some(u), .. } if *u <= now));
    let idx = state
        .faults
        .iter()
        .position(|f| endpoint_of(f) == Some(endpoint))?;
    let fault = &mut state.faults[idx];
    let action = match fault {
        Fault::Status { status, .. } => Action::Status(*status),
        Fault::RateLimited { retry_after, .. } => Action::RateLimited(*retry_after),
        Fault::Reset { .. } => Action::Reset,
        Fault::Delay { by, .. } => Action::Delay(*by),
        Fault::Outage { status, .. } => return Some(Action::Status(*status)),
        Fault::Trace416 { .. } => return None,
    };
    consume(state, idx);
    Some(action)
}

/// Whether a [`Fault::Trace416`] for `job` is pending; counts it down.
pub(crate) fn take_trace416(state: &mut State, job: i64) -> bool {
    let Some(idx) = state
        .faults
        .iter()
        .position(|f| matches!(f, Fault::Trace416 { job: j, .. } if *j == job))
    else {
        return false;
    };
    consume(state, idx);
    true
}

fn consume(state: &mut State, idx: usize) {
    let Some(times) = times_mut(&mut state.faults[idx]) else {
        return;
    };
    *times = times.saturating_sub(1);
    if *times == 0 {
        state.faults.remove(idx);
    }
}

/// Add a fault; faults with `times == 0` are ignored; an outage starts now.
pub(crate) fn add(state: &mut State, mut fault: Fault) {
    if let Fault::Outage {
        duration, until, ..
    } = &mut fault
    {
        *until = Some(tokio::time::Instant::now() + *duration);
    }
    if times_mut(&mut fault).is_none_or(|t| *t > 0) {
        state.faults.push(fault);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<Fault, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn json_round_trip() {
        let faults = [
            Fault::Status {
                endpoint: Endpoint::RequestJob,
                status: 503,
                times: 2,
            },
            Fault::RateLimited {
                endpoint: Endpoint::PatchTrace,
                retry_after: 3,
                times: 1,
            },
            Fault::Reset {
                endpoint: Endpoint::Git,
                times: 1,
            },
            Fault::Delay {
                endpoint: Endpoint::UpdateJob,
                by: Duration::from_millis(1500),
                times: 4,
            },
            Fault::Trace416 { job: 7, times: 1 },
        ];
        for f in faults {
            let json = serde_json::to_value(&f).expect("serializes");
            assert_eq!(parse(json.clone()), Ok(f), "{json}");
        }
        let outage = serde_json::json!({"kind": "outage", "endpoint": "update_job", "status": 502, "duration_ms": 120000});
        assert_eq!(
            parse(outage),
            Ok(Fault::Outage {
                endpoint: Endpoint::UpdateJob,
                status: 502,
                duration: Duration::from_secs(120),
                until: None,
            })
        );
        assert!(
            parse(serde_json::json!({"kind": "outage", "endpoint": "git", "status": 502}))
                .unwrap_err()
                .contains("duration_ms")
        );
        let delay = serde_json::json!({"kind": "delay", "endpoint": "git", "by_ms": 5});
        assert_eq!(
            parse(delay),
            Ok(Fault::Delay {
                endpoint: Endpoint::Git,
                by: Duration::from_millis(5),
                times: 1
            })
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        use serde_json::json;
        let err = |v| parse(v).expect_err("refused");
        assert!(err(json!({"kind": "reset"})).starts_with("endpoint: missing"));
        assert!(err(json!({"kind": "trace416", "job": 1, "status": 5})).starts_with("status: not"));
        assert!(
            err(json!({"kind": "status", "endpoint": "git", "status": 1000}))
                .starts_with("status:")
        );
        assert!(
            err(json!({"kind": "reset", "endpoint": "git", "by": 1}))
                .contains("unknown field `by`")
        );
    }
}
