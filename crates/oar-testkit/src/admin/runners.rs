//! Runners, registration tokens, faults, request records, violations and settings.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminError, Reply, json_body, reply, upgrade};
use crate::handle::WeakGitlab;
use crate::types::{Endpoint, Fault, RequestRecord};
use crate::util;

/// Body of `POST /_fake/runners`: all optional; the server-side settings of the runner.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRunner {
    /// Authentication token; random `glrt-…` if absent.
    token: Option<String>,
    description: Option<String>,
    tag_list: Option<Vec<String>>,
    run_untagged: Option<bool>,
    locked: Option<bool>,
    access_level: Option<String>,
    paused: Option<bool>,
    maximum_timeout: Option<i64>,
}

/// Body of `POST /_fake/registration-tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewRegistrationToken {
    /// The token; random `GR1348941…` if absent.
    token: Option<String>,
}

/// Body of `PUT /_fake/settings`: knobs of [`crate::FakeGitlab`], each optional.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_update_interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    long_poll_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    final_update_accepted_times: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    final_update_backoff: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifacts_in_object_storage: Option<bool>,
    /// Lifetime of runner tokens created from now on; 0 = no expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_expiry_secs: Option<u64>,
}

/// A token given in JSON: non-empty, no whitespace or control characters.
fn check_token(field: &str, token: &str) -> Result<(), AdminError> {
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AdminError::bad_request(format!(
            "{field}: must be non-empty, without spaces or control characters"
        )));
    }
    Ok(())
}

/// `GET /_fake/runners`: every runner (deleted ones too) with its runner managers
/// (`system_ids`).
pub(super) async fn list(State(gitlab): State<WeakGitlab>) -> Reply {
    reply(StatusCode::OK, &upgrade(&gitlab)?.runners())
}

/// `POST /_fake/runners`: a runner "created in the UI".
pub(super) async fn create(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let req: NewRunner = json_body(body).await?;
    if let Some(t) = &req.token {
        check_token("token", t)?;
    }
    if let Some(level) = &req.access_level
        && !matches!(level.as_str(), "not_protected" | "ref_protected")
    {
        return Err(AdminError::bad_request(format!(
            "access_level: {level:?} is not not_protected or ref_protected"
        )));
    }
    if req.maximum_timeout.is_some_and(|t| t < 600) {
        return Err(AdminError::bad_request(
            "maximum_timeout: needs to be at least 600 seconds (10 minutes)",
        ));
    }
    let gitlab = upgrade(&gitlab)?;
    let id = match &req.token {
        Some(t) => {
            if gitlab.runners().iter().any(|r| !r.deleted && r.token == *t) {
                return Err(AdminError::new(
                    StatusCode::CONFLICT,
                    "token: a runner with this token exists",
                ));
            }
            gitlab.add_runner(t)
        }
        None => gitlab.create_runner().id,
    };
    gitlab.update_runner(id, |r| {
        if let Some(d) = req.description {
            r.description = d;
        }
        if let Some(tags) = req.tag_list {
            r.tag_list = tags;
        }
        if let Some(v) = req.run_untagged {
            r.run_untagged = v;
        }
        if let Some(v) = req.locked {
            r.locked = v;
        }
        if let Some(v) = req.access_level {
            r.access_level = v;
        }
        if let Some(v) = req.paused {
            r.paused = v;
        }
        if req.maximum_timeout.is_some() {
            r.maximum_timeout = req.maximum_timeout;
        }
    });
    let runner = gitlab
        .runner(id)
        .ok_or_else(|| AdminError::internal(format!("runner {id} vanished")))?;
    tracing::info!(runner = id, "added runner");
    reply(StatusCode::CREATED, &runner)
}

/// `POST /_fake/registration-tokens`.
pub(super) async fn registration_token(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let req: NewRegistrationToken = json_body(body).await?;
    let gitlab = upgrade(&gitlab)?;
    let token = match req.token {
        Some(t) => {
            check_token("token", &t)?;
            gitlab.add_registration_token(&t);
            t
        }
        None => gitlab.create_registration_token(),
    };
    reply(StatusCode::CREATED, &json!({ "token": token }))
}

/// `GET /_fake/faults`: the faults not used up yet.
pub(super) async fn faults(State(gitlab): State<WeakGitlab>) -> Reply {
    reply(StatusCode::OK, &upgrade(&gitlab)?.pending_faults())
}

/// `POST /_fake/faults`: inject a [`Fault`] (JSON shape in its documentation); answers the
/// pending faults.
pub(super) async fn inject(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let fault: Fault = json_body(body).await?;
    let gitlab = upgrade(&gitlab)?;
    tracing::info!(?fault, "injecting fault");
    gitlab.inject(fault);
    reply(StatusCode::CREATED, &gitlab.pending_faults())
}

/// `DELETE /_fake/faults`: drop every pending fault (`FakeGitlab::clear_faults`).
pub(super) async fn clear_faults(State(gitlab): State<WeakGitlab>) -> Reply {
    let gitlab = upgrade(&gitlab)?;
    gitlab.clear_faults();
    reply(StatusCode::OK, &gitlab.pending_faults())
}

/// An entry of `GET /_fake/requests`.
#[derive(Serialize)]
struct RequestView {
    method: String,
    path: String,
    query: Option<String>,
    endpoint: Option<Endpoint>,
    job_id: Option<i64>,
    status: Option<u16>,
    reset: bool,
    faulted: bool,
    /// Wall-clock arrival, `YYYY-MM-DDTHH:MM:SSZ`.
    received: String,
    elapsed_ms: u64,
}

impl From<RequestRecord> for RequestView {
    fn from(r: RequestRecord) -> Self {
        RequestView {
            received: util::iso8601(r.received),
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            method: r.method,
            path: r.path,
            query: r.query,
            endpoint: r.endpoint,
            job_id: r.job_id,
            status: r.status,
            reset: r.reset,
            faulted: r.faulted,
        }
    }
}

/// `GET /_fake/requests[?endpoint=NAME]`: the GitLab requests received, in order.
pub(super) async fn requests(State(gitlab): State<WeakGitlab>, RawQuery(query): RawQuery) -> Reply {
    let query = query.unwrap_or_default();
    for (key, _) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "endpoint" {
            return Err(AdminError::bad_request(format!(
                "{key}: unknown query parameter (want endpoint)"
            )));
        }
    }
    let gitlab = upgrade(&gitlab)?;
    let records = match util::query_param(Some(&query), "endpoint") {
        None => gitlab.requests(),
        Some(name) => {
            let endpoint: Endpoint =
                serde_json::from_value(Value::String(name.clone())).map_err(|_| {
                    AdminError::bad_request(format!(
                        "endpoint: {name:?} is not an endpoint (request_job, update_job, \
                         patch_trace, ...)"
                    ))
                })?;
            gitlab.requests_to(endpoint)
        }
    };
    let views: Vec<RequestView> = records.into_iter().map(RequestView::from).collect();
    reply(StatusCode::OK, &views)
}

/// `GET /_fake/violations`.
pub(super) async fn violations(State(gitlab): State<WeakGitlab>) -> Reply {
    reply(StatusCode::OK, &upgrade(&gitlab)?.violations())
}

/// `PUT /_fake/settings`: answers what was applied.
pub(super) async fn settings(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let s: Settings = json_body(body).await?;
    let gitlab = upgrade(&gitlab)?;
    if let Some(v) = s.trace_update_interval {
        gitlab.set_trace_update_interval(v);
    }
    if let Some(v) = s.long_poll_ms {
        gitlab.set_long_poll(Duration::from_millis(v));
    }
    if let Some(v) = s.final_update_accepted_times {
        gitlab.set_final_update_accepted_times(v);
    }
    if let Some(v) = s.final_update_backoff {
        gitlab.set_final_update_backoff(v);
    }
    if let Some(v) = s.artifacts_in_object_storage {
        gitlab.set_artifacts_in_object_storage(v);
    }
    if let Some(v) = s.token_expiry_secs {
        gitlab.set_token_expiry((v > 0).then(|| Duration::from_secs(v)));
    }
    reply(StatusCode::OK, &s)
}
