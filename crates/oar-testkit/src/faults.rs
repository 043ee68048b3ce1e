//! Fault injection: picking the next fault for a request and counting it down.

use std::time::Duration;

use crate::state::State;
use crate::types::{Endpoint, Fault};

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
        | Fault::Delay { endpoint, .. } => Some(*endpoint),
        Fault::Trace416 { .. } => None,
    }
}

fn times_mut(f: &mut Fault) -> &mut u32 {
    match f {
        Fault::Status { times, .. }
        | Fault::RateLimited { times, .. }
        | Fault::Reset { times, .. }
        | Fault::Delay { times, .. }
        | Fault::Trace416 { times, .. } => times,
    }
}

/// Take the first pending fault for `endpoint` (in insertion order) and count it down.
pub(crate) fn take(state: &mut State, endpoint: Endpoint) -> Option<Action> {
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
    let times = times_mut(&mut state.faults[idx]);
    *times = times.saturating_sub(1);
    if *times == 0 {
        state.faults.remove(idx);
    }
}

/// Add a fault; faults with `times == 0` are ignored.
pub(crate) fn add(state: &mut State, mut fault: Fault) {
    if *times_mut(&mut fault) > 0 {
        state.faults.push(fault);
    }
}
