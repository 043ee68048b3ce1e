//! `PATCH /api/v4/jobs/:id/trace` (reference §3): token, content type and `Content-Range`
//! continuity; 416 with the true `Range` on a gap.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::faults;
use crate::state::{Shared, State as St};
use crate::util::{self, forbidden, message};

/// Largest PATCH the Go runner sends (`DefaultTracePatchLimit`).
const PATCH_LIMIT: usize = 1024 * 1024;

/// `start-end` with an inclusive end.
fn parse_range(raw: &str) -> Option<(u64, u64)> {
    let (a, b) = raw.trim().split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn range_response(status: StatusCode, len: usize) -> Response {
    let mut resp = if status == StatusCode::RANGE_NOT_SATISFIABLE {
        message(status, "416 Range Not Satisfiable")
    } else {
        status.into_response()
    };
    util::set_header(&mut resp, "range", &format!("0-{len}"));
    resp
}

/// Parsed request, before the state is touched.
struct Patch {
    id: i64,
    start: u64,
    end: u64,
    debug_trace: bool,
    data: Bytes,
}

/// `PATCH /api/v4/jobs/:id/trace`.
pub(crate) async fn patch(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match util::parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    // Grape parses the body by its content type: anything but text/plain is rejected.
    let content_type = util::header_str(&headers, "content-type").unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("text/plain") {
        return message(
            StatusCode::BAD_REQUEST,
            &format!(
                "400 Bad request - trace requires Content-Type: text/plain, got {content_type:?}"
            ),
        );
    }
    let token = util::query_param(query.as_deref(), "token")
        .or_else(|| util::header_str(&headers, "job-token").map(str::to_owned))
        .unwrap_or_default();
    let range = util::header_str(&headers, "content-range").map(str::to_owned);
    let debug_trace =
        util::query_param(query.as_deref(), "debug_trace").is_some_and(|v| v == "true");
    shared.write(|st| {
        // Authentication comes before the Content-Range check, as in Rails.
        if let Err(resp) = authenticate(st, id, &token) {
            return resp;
        }
        let Some(raw) = range else {
            return message(StatusCode::BAD_REQUEST, "400 Missing header Content-Range");
        };
        let Some((start, end)) = parse_range(&raw) else {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("400 Bad request - invalid Content-Range {raw:?}"),
            );
        };
        let p = Patch {
            id,
            start,
            end,
            debug_trace,
            data: body,
        };
        let interval = st.settings.trace_update_interval;
        append(st, &p, interval)
    })
}

/// Job exists, token matches, job is executing.
fn authenticate(st: &St, id: i64, token: &str) -> Result<(), Response> {
    let Some(job) = st.jobs.get(&id) else {
        return Err(forbidden());
    };
    if job.token != token {
        return Err(forbidden());
    }
    if !job.state.is_executing() {
        return Err(util::job_forbidden(job.state.as_str()));
    }
    Ok(())
}

fn append(st: &mut St, p: &Patch, interval: u64) -> Response {
    let len = p.data.len() as u64;
    let mut violations = Vec::new();
    if p.data.is_empty() {
        violations.push(format!("job {}: empty trace PATCH", p.id));
    } else if p.start.checked_add(len - 1) != Some(p.end) {
        violations.push(format!(
            "job {}: Content-Range {}-{} does not match {} body bytes (end is inclusive)",
            p.id, p.start, p.end, len
        ));
    }
    if p.data.len() > PATCH_LIMIT {
        violations.push(format!(
            "job {}: trace PATCH of {} bytes exceeds 1 MiB",
            p.id, len
        ));
    }
    for v in violations {
        st.violation(v);
    }
    let forced_416 = faults::take_trace416(st, p.id);
    let Some(job) = st.jobs.get_mut(&p.id) else {
        return forbidden();
    };
    let stored = job.trace.len();
    if forced_416 || p.start != stored as u64 {
        return range_response(StatusCode::RANGE_NOT_SATISFIABLE, stored);
    }
    if p.start == 0 && p.debug_trace {
        job.debug_trace = true;
    }
    job.trace.extend_from_slice(&p.data);
    let mut resp = range_response(StatusCode::ACCEPTED, job.trace.len());
    util::set_header(&mut resp, "job-status", job.state.as_str());
    util::set_header(
        &mut resp,
        "x-gitlab-trace-update-interval",
        &interval.to_string(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-1023"), Some((0, 1023)));
        assert_eq!(parse_range(" 5-9 "), Some((5, 9)));
        assert_eq!(parse_range("bytes 0-1/2"), None);
        assert_eq!(parse_range("-1"), None);
        assert_eq!(parse_range("abc"), None);
    }
}
