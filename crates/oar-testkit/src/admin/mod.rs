//! The admin API under `/_fake/` (routes and JSON shapes in the crate's README): drives a
//! [`FakeGitlab`] from outside a Rust test, e.g. through the `fake-gitlab` binary.
//!
//! One implementation, two front doors: every handler upgrades its weak handle and calls the
//! same public [`FakeGitlab`] methods an in-process test calls. The handlers only translate
//! JSON into those calls and their results back into JSON; bad input is answered with a 4xx
//! and `{"error": "..."}` naming the field, never a panic.
//!
//! The server dispatches `/_fake/...` here before its recording and fault injection (see
//! `server.rs`), so admin calls neither show up in [`FakeGitlab::requests`] nor use up faults,
//! and no GitLab route (or its token checks) ever sees them.

mod jobs;
mod projects;
mod runners;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::PathRejection;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::handle::{FakeGitlab, WeakGitlab};
use crate::util;

/// Largest admin request body (a project's files are inline in the JSON).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The admin router; its paths carry the `/_fake` prefix.
pub(crate) fn router(gitlab: WeakGitlab) -> Router {
    Router::new()
        .route("/_fake/projects", post(projects::create))
        .route("/_fake/projects/{*rest}", post(projects::nested))
        .route("/_fake/jobs", get(jobs::list).post(jobs::enqueue))
        .route("/_fake/jobs/{id}", get(jobs::show))
        .route("/_fake/jobs/{id}/wait", get(jobs::wait))
        .route("/_fake/jobs/{id}/cancel", post(jobs::cancel))
        .route("/_fake/jobs/{id}/abort", post(jobs::abort))
        .route(
            "/_fake/jobs/{id}/artifacts/{artifact_type}",
            get(jobs::artifact),
        )
        .route("/_fake/runners", get(runners::list).post(runners::create))
        .route(
            "/_fake/registration-tokens",
            post(runners::registration_token),
        )
        .route(
            "/_fake/faults",
            get(runners::faults)
                .post(runners::inject)
                .delete(runners::clear_faults),
        )
        .route("/_fake/requests", get(runners::requests))
        .route("/_fake/violations", get(runners::violations))
        .route("/_fake/settings", put(runners::settings))
        .route("/_fake/id_tokens/rotate", post(rotate_id_token_key))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::disable())
        .with_state(gitlab)
}

/// An admin call's failure: answered with `status` and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    message: String,
}

impl AdminError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        AdminError {
            status,
            message: message.into(),
        }
    }

    /// `400`: the request was wrong; `message` names the field.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// `404`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// `500`: something on the server side failed (git, the file system).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        util::json_response(self.status, &json!({ "error": self.message }))
    }
}

/// What every handler returns.
pub(crate) type Reply = Result<Response, AdminError>;

/// A JSON answer.
pub(crate) fn reply<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let value = serde_json::to_value(body)
        .map_err(|e| AdminError::internal(format!("serializing the answer: {e}")))?;
    Ok(util::json_response(status, &value))
}

/// The handle behind a weak one; `503` once the server is going away.
pub(crate) fn upgrade(gitlab: &WeakGitlab) -> Result<FakeGitlab, AdminError> {
    gitlab
        .upgrade()
        .ok_or_else(|| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "server is stopping"))
}

/// Read the body and parse it as `T`; an empty body is `{}` (for routes whose fields are all
/// optional). The error names the field (`variables[0].masked: invalid type ...`).
pub(crate) async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, AdminError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_BODY} bytes"),
        )
    })?;
    parse_json(&bytes)
}

fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, AdminError> {
    let bytes: &[u8] = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => bytes,
        // serde would take an array for a struct, field by field.
        Some(_) => {
            return Err(AdminError::bad_request(
                "invalid JSON body: the body must be a JSON object",
            ));
        }
    };
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(v)| v)
        .map_err(|rejection| {
            // The source is serde_path_to_error's error: `path: message`, or just the message
            // for the top level (an unknown field names itself).
            let detail = std::error::Error::source(&rejection)
                .map_or_else(|| rejection.body_text(), ToString::to_string);
            AdminError::bad_request(format!("invalid JSON body: {detail}"))
        })
}

/// A job id from the path.
pub(crate) fn path_id(
    id: Result<axum::extract::Path<String>, PathRejection>,
) -> Result<i64, AdminError> {
    let axum::extract::Path(raw) = id.map_err(|e| AdminError::bad_request(format!("id: {e}")))?;
    raw.parse()
        .map_err(|_| AdminError::bad_request(format!("id: {raw:?} is not a job id")))
}

/// Run blocking work (git) off the async workers.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, AdminError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AdminError::internal(format!("worker failed: {e}")))
}

/// `POST /_fake/id_tokens/rotate`: the next key signs ID tokens ([`FakeGitlab::rotate_id_token_key`]).
async fn rotate_id_token_key(
    axum::extract::State(gitlab): axum::extract::State<WeakGitlab>,
) -> Result<StatusCode, AdminError> {
    upgrade(&gitlab)?.rotate_id_token_key();
    Ok(StatusCode::NO_CONTENT)
}

async fn no_route(method: Method, uri: Uri) -> AdminError {
    AdminError::not_found(format!(
        "no admin route {method} {}; the routes are listed in the oar-testkit README",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> AdminError {
    AdminError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        flag: bool,
    }

    fn error_of(body: &str) -> String {
        match parse_json::<Sample>(&Bytes::from(body.to_owned())) {
            Ok(v) => panic!("{body} parsed: {v:?}"),
            Err(e) => {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.message
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(error_of(r#"{"name": "x", "nmae": 1}"#).contains("unknown field `nmae`"));
        assert!(error_of(r#"{"name": 5}"#).contains("name: invalid type"));
        let nested = error_of(r#"{"name": "x", "items": [{"flag": true}, {"flag": "yes"}]}"#);
        assert!(nested.contains("items[1].flag: invalid type"), "{nested}");
        assert!(error_of("{}").contains("missing field `name`"));
        assert!(error_of("{not json").starts_with("invalid JSON body"));
        assert!(error_of("[1]").contains("must be a JSON object"));
        assert!(error_of("  \"x\"").contains("must be a JSON object"));
    }
}
