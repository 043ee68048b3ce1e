//! Runner-token endpoints: legacy registration, verify, unregister (runner and manager),
//! token reset (reference §1).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::state::{Shared, State as St};
use crate::types::RunnerRecord;
use crate::util::{self, bad_param, forbidden, json_object, opt_bool, opt_int, opt_str};

/// The runner token of a request: body `token` (what Rails reads), else the `RUNNER-TOKEN`
/// header. Neither is Grape's `400 token is missing`.
pub(crate) fn runner_token(
    map: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<String, Response> {
    if let Some(t) = opt_str(map, "token")? {
        return Ok(t);
    }
    util::header_str(headers, "runner-token")
        .map(str::to_owned)
        .ok_or_else(|| bad_param("token is missing"))
}

/// `system_id` if sent; Rails stores at most 64 characters.
pub(crate) fn system_id(map: &Map<String, Value>) -> Result<Option<String>, Response> {
    let id = opt_str(map, "system_id")?;
    match id {
        Some(s) if s.len() > 64 => Err(bad_param("system_id is too long")),
        other => Ok(other),
    }
}

/// Record what an authenticated runner sent (`info`, `system_id`), like Rails' heartbeat.
pub(crate) fn heartbeat(
    runner: &mut RunnerRecord,
    map: &Map<String, Value>,
    system_id: Option<String>,
) {
    if let Some(info) = map.get("info").filter(|i| i.is_object()) {
        runner.info = Some(info.clone());
    }
    if let Some(id) = system_id
        && !runner.system_ids.contains(&id)
    {
        runner.system_ids.push(id);
    }
}

fn details(r: &RunnerRecord) -> Value {
    json!({ "id": r.id, "token": r.token, "token_expires_at": r.token_expires_at })
}

fn tag_list(map: &Map<String, Value>) -> Result<Vec<String>, Response> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match map.get("tag_list") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(split(s)),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(bad_param("tag_list is invalid"));
                };
                out.extend(split(s));
            }
            Ok(out)
        }
        Some(_) => Err(bad_param("tag_list is invalid")),
    }
}

/// Build a runner from registration parameters (everything validated, nothing stored yet).
fn runner_from_params(map: &Map<String, Value>) -> Result<RunnerRecord, Response> {
    for (a, b) in [
        ("maintainer_note", "maintenance_note"),
        ("active", "paused"),
    ] {
        if map.contains_key(a) && map.contains_key(b) {
            return Err(bad_param(&format!("{a}, {b} are mutually exclusive")));
        }
    }
    let access_level = opt_str(map, "access_level")?.unwrap_or_else(|| "not_protected".into());
    if !matches!(access_level.as_str(), "not_protected" | "ref_protected") {
        return Err(bad_param("access_level does not have a valid value"));
    }
    let maximum_timeout = opt_int(map, "maximum_timeout")?;
    if maximum_timeout.is_some_and(|t| t < 600) {
        return Err(util::json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": {"maximum_timeout": ["needs to be at least 10 minutes"]}}),
        ));
    }
    let paused = match opt_bool(map, "paused")? {
        Some(p) => p,
        None => !opt_bool(map, "active")?.unwrap_or(true),
    };
    let note = match opt_str(map, "maintenance_note")? {
        Some(n) => Some(n),
        None => opt_str(map, "maintainer_note")?,
    };
    if let Some(info) = map.get("info")
        && !info.is_object()
        && !info.is_null()
    {
        return Err(bad_param("info is invalid"));
    }
    Ok(RunnerRecord {
        id: 0,
        token: String::new(),
        description: opt_str(map, "description")?.unwrap_or_default(),
        tag_list: tag_list(map)?,
        run_untagged: opt_bool(map, "run_untagged")?.unwrap_or(true),
        locked: opt_bool(map, "locked")?.unwrap_or(false),
        access_level,
        paused,
        maximum_timeout,
        maintenance_note: note,
        info: map.get("info").filter(|i| i.is_object()).cloned(),
        system_ids: Vec::new(),
        deleted: false,
        token_expires_at: None,
        registered: true,
    })
}

/// Insert a runner, giving it an id (and token/expiry if empty).
pub(crate) fn insert_runner(st: &mut St, mut runner: RunnerRecord) -> RunnerRecord {
    runner.id = st.next_runner_id;
    st.next_runner_id += 1;
    if runner.token.is_empty() {
        // GitLab prefixes only the tokens of runners created in the UI or the API with `glrt-`;
        // a runner that registered with a registration token gets a bare token.
        let prefix = if runner.registered { "" } else { "glrt-" };
        runner.token = util::random_token(prefix, 24);
    }
    runner.token_expires_at = st.token_expires_at();
    st.runners.push(runner.clone());
    st.bump_queue();
    runner
}

/// `POST /api/v4/runners`.
pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let map = match json_object(&headers, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let token = match opt_str(&map, "token") {
        Ok(Some(t)) => t,
        Ok(None) => return bad_param("token is missing"),
        Err(r) => return r,
    };
    let runner = match runner_from_params(&map) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let created = shared.write(|st| {
        st.registration_tokens
            .contains(&token)
            .then(|| insert_runner(st, runner))
    });
    match created {
        Some(r) => util::json_response(StatusCode::CREATED, &details(&r)),
        None => forbidden(),
    }
}

/// Authenticate a runner-token request: `Ok((map, token))` or the error answer.
fn authenticate(
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(Map<String, Value>, String), Response> {
    let map = json_object(headers, body)?;
    let token = runner_token(&map, headers)?;
    Ok((map, token))
}

/// `POST /api/v4/runners/verify`.
pub(crate) async fn verify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (map, token) = match authenticate(&body, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let sys = match system_id(&map) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let found = shared.write(|st| {
        st.runner_by_token(&token).map(|r| {
            heartbeat(r, &map, sys);
            details(r)
        })
    });
    match found {
        Some(d) => util::json_response(StatusCode::OK, &d),
        None => forbidden(),
    }
}

/// `DELETE /api/v4/runners`.
pub(crate) async fn unregister(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, token) = match authenticate(&body, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let done = shared.write(|st| {
        let found = st
            .runner_by_token(&token)
            .map(|r| r.deleted = true)
            .is_some();
        if found {
            st.bump_queue();
        }
        found
    });
    if done {
        StatusCode::NO_CONTENT.into_response()
    } else {
        forbidden()
    }
}

/// `DELETE /api/v4/runners/managers`.
pub(crate) async fn unregister_manager(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (map, token) = match authenticate(&body, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let sys = match system_id(&map) {
        Ok(Some(s)) => s,
        Ok(None) => return bad_param("system_id is missing"),
        Err(r) => return r,
    };
    shared.write(|st| match st.runner_by_token(&token) {
        None => forbidden(),
        Some(r) => match r.system_ids.iter().position(|s| *s == sys) {
            Some(i) => {
                r.system_ids.remove(i);
                StatusCode::NO_CONTENT.into_response()
            }
            None => util::message(StatusCode::NOT_FOUND, "404 Runner manager not found"),
        },
    })
}

/// `POST /api/v4/runners/reset_authentication_token`.
pub(crate) async fn reset_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, token) = match authenticate(&body, &headers) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let reset = shared.write(|st| {
        let expires = st.token_expires_at();
        st.runner_by_token(&token).map(|r| {
            r.token = util::random_token("glrt-", 24);
            r.token_expires_at = expires;
            json!({ "token": r.token, "token_expires_at": r.token_expires_at })
        })
    });
    match reset {
        Some(v) => util::json_response(StatusCode::CREATED, &v),
        None => forbidden(),
    }
}
