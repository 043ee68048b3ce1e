//! `/_fake/jobs...`: enqueue a job from a JSON spec (mapped onto [`JobSpec`]), list, show,
//! wait for, cancel and abort jobs, download their artifacts.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{AdminError, Reply, blocking, json_body, path_id, reply, upgrade};
use crate::git::valid_project_path;
use crate::handle::{FakeGitlab, WeakGitlab};
use crate::spec::JobSpec;
use crate::types::{JobSnapshot, JobState};
use crate::util;

/// Body of `POST /_fake/jobs`: every field but `project` is optional, with [`JobSpec`]'s
/// defaults. Unknown fields are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobRequest {
    project: String,
    name: Option<String>,
    stage: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    sha: Option<String>,
    #[serde(default)]
    script: Vec<String>,
    #[serde(default)]
    before_script: Vec<String>,
    #[serde(default)]
    after_script: Vec<String>,
    #[serde(default)]
    variables: Vec<Variable>,
    image: Option<ImageRef>,
    services: Option<Vec<ImageRef>>,
    artifacts: Option<Vec<Map<String, Value>>>,
    cache: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    dependencies: Vec<i64>,
    timeout: Option<u64>,
    protected: Option<bool>,
    #[serde(default)]
    tags: Vec<String>,
    token: Option<String>,
    depth: Option<u32>,
    allow_failure: Option<bool>,
    allow_git_fetch: Option<bool>,
    trace_sections: Option<bool>,
    pipeline_id: Option<i64>,
    #[serde(default)]
    hooks: Vec<Hook>,
    environment: Option<String>,
    /// `id_tokens:` of the job: variable name → `{"aud": ...}`.
    #[serde(default)]
    id_tokens: std::collections::BTreeMap<String, IdTokenRequest>,
}

/// One entry of `id_tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdTokenRequest {
    aud: String,
}

/// A job variable.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Variable {
    key: String,
    value: String,
    #[serde(default)]
    masked: bool,
    #[serde(default)]
    file: bool,
    #[serde(default)]
    raw: bool,
}

/// `image` or a `services` entry: a name, or the payload object.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected an image name (string) or an image object"
)]
enum ImageRef {
    Name(String),
    Object(Map<String, Value>),
}

/// A `hooks` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hook {
    name: String,
    script: Vec<String>,
}

/// GitLab's variable key rule: letters, digits and `_`.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The payload object of an image reference; `field` names it in errors.
fn image_object(image: ImageRef, field: &str) -> Result<Value, AdminError> {
    match image {
        ImageRef::Name(name) if !name.trim().is_empty() => Ok(json!({ "name": name })),
        ImageRef::Name(_) => Err(AdminError::bad_request(format!(
            "{field}: empty image name"
        ))),
        ImageRef::Object(map) => match map.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() => Ok(Value::Object(map)),
            _ => Err(AdminError::bad_request(format!(
                "{field}.name: an image object needs a non-empty string name"
            ))),
        },
    }
}

impl JobRequest {
    /// Validate and map onto the builder; dependencies must name existing jobs.
    fn into_spec(self, gitlab: &FakeGitlab) -> Result<JobSpec, AdminError> {
        if !valid_project_path(&self.project) {
            return Err(AdminError::bad_request(format!(
                "project: {:?} is not a project path (want namespace/name)",
                self.project
            )));
        }
        let mut spec = JobSpec::new(&self.project)
            .script(self.script)
            .before_script(self.before_script)
            .after_script(self.after_script);
        for (i, v) in self.variables.into_iter().enumerate() {
            if !valid_key(&v.key) {
                return Err(AdminError::bad_request(format!(
                    "variables[{i}].key: {:?} is not a variable name ([A-Za-z0-9_]+)",
                    v.key
                )));
            }
            spec = spec.variable_with_flags(&v.key, &v.value, v.masked, v.file, v.raw);
        }
        if let Some(name) = &self.name {
            spec = spec.name(name);
        }
        if let Some(stage) = &self.stage {
            spec = spec.stage(stage);
        }
        if let Some(r) = &self.git_ref {
            spec = spec.git_ref(r);
        }
        if let Some(sha) = &self.sha {
            spec = spec.sha(sha);
        }
        if let Some(image) = self.image {
            spec = spec.image(image_object(image, "image")?);
        }
        if let Some(services) = self.services {
            let objects = services
                .into_iter()
                .enumerate()
                .map(|(i, s)| image_object(s, &format!("services[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            spec = spec.services(Value::Array(objects));
        }
        if let Some(a) = self.artifacts {
            spec = spec.artifacts(Value::Array(a.into_iter().map(Value::Object).collect()));
        }
        if let Some(c) = self.cache {
            spec = spec.cache(Value::Array(c.into_iter().map(Value::Object).collect()));
        }
        if let Some(missing) = self
            .dependencies
            .iter()
            .find(|d| gitlab.try_job(**d).is_none())
        {
            return Err(AdminError::bad_request(format!(
                "dependencies: no job {missing}"
            )));
        }
        spec = spec.dependencies(&self.dependencies);
        match self.timeout {
            Some(0) => return Err(AdminError::bad_request("timeout: must be at least 1")),
            Some(t) => spec = spec.timeout(t),
            None => {}
        }
        if let Some(p) = self.protected {
            spec = spec.protected(p);
        }
        if let Some(env) = &self.environment {
            spec = spec.environment(env);
        }
        for (name, token) in &self.id_tokens {
            spec = spec.id_token(name, &token.aud);
        }
        let tags: Vec<&str> = self.tags.iter().map(String::as_str).collect();
        spec = spec.tags(&tags);
        if let Some(t) = &self.token {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(AdminError::bad_request(
                    "token: must be non-empty, without spaces or control characters",
                ));
            }
            spec = spec.token(t);
        }
        if let Some(d) = self.depth {
            spec = spec.depth(d);
        }
        if let Some(a) = self.allow_failure {
            spec = spec.allow_failure(a);
        }
        if let Some(a) = self.allow_git_fetch {
            spec = spec.allow_git_fetch(a);
        }
        if let Some(t) = self.trace_sections {
            spec = spec.trace_sections(t);
        }
        if let Some(p) = self.pipeline_id {
            spec = spec.pipeline(p);
        }
        for (i, h) in self.hooks.into_iter().enumerate() {
            if !matches!(
                h.name.as_str(),
                "pre_get_sources_script" | "post_get_sources_script"
            ) {
                return Err(AdminError::bad_request(format!(
                    "hooks[{i}].name: {:?} is not pre_get_sources_script or \
                     post_get_sources_script",
                    h.name
                )));
            }
            spec = spec.hook(&h.name, h.script);
        }
        Ok(spec)
    }
}

/// An artifact in [`JobView`] (the bytes are at `/_fake/jobs/{id}/artifacts/{type}`).
#[derive(Serialize)]
struct ArtifactView {
    filename: String,
    artifact_type: String,
    artifact_format: String,
    expire_in: Option<String>,
    accessibility: Option<String>,
    size: usize,
}

/// `GET /_fake/jobs/{id}`: everything a [`JobSnapshot`] holds, the trace as (lossy) UTF-8.
#[derive(Serialize)]
struct JobView {
    id: i64,
    project: String,
    name: String,
    stage: String,
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    pipeline_id: i64,
    state: JobState,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
    trace: String,
    trace_bytes: usize,
    checksum: Option<String>,
    bytesize: Option<u64>,
    checksum_matches: bool,
    runner_id: Option<i64>,
    token: String,
    acknowledged: bool,
    finished: bool,
    debug_trace: bool,
    artifacts: Vec<ArtifactView>,
    updates: Vec<Value>,
    payload: Option<Value>,
}

impl From<JobSnapshot> for JobView {
    fn from(s: JobSnapshot) -> Self {
        JobView {
            trace: s.trace_str(),
            trace_bytes: s.trace.len(),
            id: s.id,
            project: s.project,
            name: s.name,
            stage: s.stage,
            git_ref: s.git_ref,
            sha: s.sha,
            pipeline_id: s.pipeline_id,
            state: s.state,
            failure_reason: s.failure_reason,
            exit_code: s.exit_code,
            checksum: s.final_checksum,
            bytesize: s.final_bytesize,
            checksum_matches: s.checksum_matches,
            runner_id: s.runner_id,
            token: s.token,
            acknowledged: s.acknowledged,
            finished: s.finished,
            debug_trace: s.debug_trace,
            artifacts: s
                .artifacts
                .into_iter()
                .map(|a| ArtifactView {
                    size: a.data.len(),
                    filename: a.filename,
                    artifact_type: a.artifact_type,
                    artifact_format: a.artifact_format,
                    expire_in: a.expire_in,
                    accessibility: a.accessibility,
                })
                .collect(),
            updates: s.updates,
            payload: s.payload,
        }
    }
}

/// An entry of `GET /_fake/jobs`.
#[derive(Serialize)]
struct JobSummary {
    id: i64,
    project: String,
    name: String,
    stage: String,
    state: JobState,
    runner_id: Option<i64>,
    finished: bool,
}

fn job_of(gitlab: &FakeGitlab, id: i64) -> Result<JobSnapshot, AdminError> {
    gitlab
        .try_job(id)
        .ok_or_else(|| AdminError::not_found(format!("no job {id}")))
}

/// `POST /_fake/jobs`.
pub(super) async fn enqueue(State(gitlab): State<WeakGitlab>, body: Body) -> Reply {
    let req: JobRequest = json_body(body).await?;
    let gitlab = upgrade(&gitlab)?;
    let spec = req.into_spec(&gitlab)?;
    // Resolving the ref runs git.
    let handle = gitlab.clone();
    let id = blocking(move || handle.enqueue_job(spec)).await?;
    let token = job_of(&gitlab, id)?.token;
    tracing::info!(job = id, "enqueued job");
    reply(StatusCode::CREATED, &json!({ "id": id, "token": token }))
}

/// `GET /_fake/jobs`.
pub(super) async fn list(State(gitlab): State<WeakGitlab>) -> Reply {
    let jobs: Vec<JobSummary> = upgrade(&gitlab)?
        .jobs()
        .into_iter()
        .map(|s| JobSummary {
            id: s.id,
            project: s.project,
            name: s.name,
            stage: s.stage,
            state: s.state,
            runner_id: s.runner_id,
            finished: s.finished,
        })
        .collect();
    reply(StatusCode::OK, &jobs)
}

/// `GET /_fake/jobs/{id}`.
pub(super) async fn show(
    State(gitlab): State<WeakGitlab>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let id = path_id(id)?;
    let job = job_of(&upgrade(&gitlab)?, id)?;
    reply(StatusCode::OK, &JobView::from(job))
}

/// Longest wait accepted.
const MAX_WAIT_SECS: f64 = 3600.0;

fn parse_state(s: &str) -> Option<JobState> {
    [
        JobState::Pending,
        JobState::Running,
        JobState::Canceling,
        JobState::Canceled,
        JobState::Success,
        JobState::Failed,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

/// `GET /_fake/jobs/{id}/wait?timeout=SECS[&state=STATE]`: until the job finished (or is in
/// `state`); `408` with the job as it is on timeout.
pub(super) async fn wait(
    State(gitlab): State<WeakGitlab>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Reply {
    let id = path_id(id)?;
    let query = query.unwrap_or_default();
    for (key, _) in url::form_urlencoded::parse(query.as_bytes()) {
        if key != "timeout" && key != "state" {
            return Err(AdminError::bad_request(format!(
                "{key}: unknown query parameter (want timeout, state)"
            )));
        }
    }
    let timeout = match util::query_param(Some(&query), "timeout") {
        None => 60.0,
        Some(raw) => match raw.parse::<f64>() {
            Ok(t) if (0.0..=MAX_WAIT_SECS).contains(&t) => t,
            _ => {
                return Err(AdminError::bad_request(format!(
                    "timeout: {raw:?} is not a number of seconds between 0 and {MAX_WAIT_SECS}"
                )));
            }
        },
    };
    let state = match util::query_param(Some(&query), "state") {
        None => None,
        Some(raw) => Some(parse_state(&raw).ok_or_else(|| {
            AdminError::bad_request(format!(
                "state: {raw:?} is not a job state (pending, running, canceling, canceled, \
                 success, failed)"
            ))
        })?),
    };
    // This strong handle lives as long as the wait: a test dropping its last handle meanwhile
    // stops the server only when the wait ends.
    let gitlab = upgrade(&gitlab)?;
    job_of(&gitlab, id)?;
    let timeout = Duration::from_secs_f64(timeout);
    let waited = match state {
        None => gitlab.wait_job_finished(id, timeout).await,
        Some(st) => gitlab.wait_job_state(id, st, timeout).await,
    };
    match waited {
        Ok(job) => reply(StatusCode::OK, &JobView::from(job)),
        Err(e) => {
            let job = job_of(&gitlab, id)?;
            let body = json!({
                "error": format!("{e:#}"),
                "job": serde_json::to_value(JobView::from(job)).unwrap_or(Value::Null),
            });
            Ok(util::json_response(StatusCode::REQUEST_TIMEOUT, &body))
        }
    }
}

/// Does `act` to job `id` (which must exist) and answers the job as it is then.
fn act_on_job(
    gitlab: &WeakGitlab,
    id: Result<Path<String>, PathRejection>,
    act: impl FnOnce(&FakeGitlab, i64),
) -> Reply {
    let id = path_id(id)?;
    let gitlab = upgrade(gitlab)?;
    job_of(&gitlab, id)?;
    act(&gitlab, id);
    reply(StatusCode::OK, &JobView::from(job_of(&gitlab, id)?))
}

/// `POST /_fake/jobs/{id}/cancel`: [`FakeGitlab::cancel_job`] (graceful).
pub(super) async fn cancel(
    State(gitlab): State<WeakGitlab>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    act_on_job(&gitlab, id, FakeGitlab::cancel_job)
}

/// `POST /_fake/jobs/{id}/abort`: [`FakeGitlab::abort_job`] (hard cancel).
pub(super) async fn abort(
    State(gitlab): State<WeakGitlab>,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    act_on_job(&gitlab, id, FakeGitlab::abort_job)
}

/// `GET /_fake/jobs/{id}/artifacts/{artifact_type}`: the uploaded bytes.
pub(super) async fn artifact(
    State(gitlab): State<WeakGitlab>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> Reply {
    let Path((id, artifact_type)) =
        params.map_err(|e| AdminError::bad_request(format!("path: {e}")))?;
    let id = path_id(Ok(Path(id)))?;
    let job = job_of(&upgrade(&gitlab)?, id)?;
    let Some(a) = job
        .artifacts
        .into_iter()
        .find(|a| a.artifact_type == artifact_type)
    else {
        return Err(AdminError::not_found(format!(
            "job {id} has no {artifact_type} artifact"
        )));
    };
    let mut resp = (StatusCode::OK, a.data).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    util::set_header(
        &mut resp,
        "content-disposition",
        &format!("attachment; filename=\"{}\"", a.filename.replace('"', "")),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_keys() {
        assert_eq!(parse_state("success"), Some(JobState::Success));
        assert_eq!(parse_state("done"), None);
        assert!(valid_key("DEPLOY_TOKEN_2"));
        assert!(!valid_key("A-B"));
        assert!(!valid_key(""));
    }

    #[test]
    fn images() {
        let named = image_object(ImageRef::Name("alpine".into()), "image");
        assert_eq!(named.ok(), Some(json!({"name": "alpine"})));
        let mut map = Map::new();
        map.insert("entrypoint".into(), json!([""]));
        let err = image_object(ImageRef::Object(map), "services[1]");
        assert!(err.is_err_and(|e| e.message.starts_with("services[1].name")));
    }
}
