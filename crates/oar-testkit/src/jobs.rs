//! `POST /api/v4/jobs/request` (reference §2) and `PUT /api/v4/jobs/:id` (§2.5, §4).

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::payload::{self, FAILURE_REASONS, Server};
use crate::runners::{heartbeat, runner_token, system_id};
use crate::state::{Job, Settings, Shared, State as St};
use crate::types::{JobState, RunnerRecord};
use crate::util::{self, bad_param, forbidden, json_object, opt_int, opt_str};

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}

fn no_job(queue_value: &str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    util::set_header(&mut resp, "x-gitlab-last-update", queue_value);
    resp
}

/// `POST /api/v4/jobs/request`.
pub(crate) async fn request(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let map = tri!(json_object(&headers, &body));
    let token = tri!(runner_token(&map, &headers));
    let system_id = tri!(system_id(&map));
    let last_update = tri!(opt_str(&map, "last_update"));
    let auth = shared.write(|st| {
        let long_poll = st.settings.long_poll;
        let current = st.queue_value.clone();
        let runner = st.runner_by_token(&token)?;
        heartbeat(runner, &map, system_id);
        Some((runner.id, runner.paused, long_poll, current))
    });
    let Some((runner_id, paused, long_poll, current)) = auth else {
        return forbidden();
    };
    if paused {
        return no_job(&current);
    }
    if last_update.as_deref() == Some(current.as_str()) {
        if long_poll.is_zero() {
            return no_job(&current);
        }
        // Workhorse long polling: hold the request until the queue changes.
        let changed = shared
            .wait_until(long_poll, |st| (st.queue_value != current).then_some(()))
            .await;
        if changed.is_none() {
            return no_job(&shared.read(|st| st.queue_value.clone()));
        }
    }
    let srv = Server {
        base_url: &shared.base_url,
        host: &shared.host,
        port: shared.port,
    };
    match shared.write(|st| assign(st, &srv, runner_id)) {
        Assigned::Job(body) => {
            let mut resp = (StatusCode::CREATED, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Assigned::None(queue_value) => no_job(&queue_value),
        Assigned::Forbidden => forbidden(),
    }
}

enum Assigned {
    Job(Vec<u8>),
    None(String),
    Forbidden,
}

/// Tags, untagged and protected-ref rules.
fn runner_can_pick(job: &Job, runner: &RunnerRecord) -> bool {
    let tags = &job.spec.tags;
    let tags_ok = if tags.is_empty() {
        runner.run_untagged
    } else {
        tags.iter().all(|t| runner.tag_list.contains(t))
    };
    let protected_ok = runner.access_level != "ref_protected" || job.spec.protected;
    tags_ok && protected_ok
}

/// A `dependencies[]` entry for job `dep`, downloaded with `token`.
fn dependency_entry(dep: &Job, token: &str) -> Value {
    let mut entry = json!({ "id": dep.id, "name": dep.spec.name, "token": token });
    if let Some(a) = dep.artifacts.iter().find(|a| a.artifact_type == "archive") {
        entry["artifacts_file"] = json!({ "filename": a.filename, "size": a.data.len() });
    }
    entry
}

/// Hand the first matching pending job to the runner (Rails `RegisterJobService`).
fn assign(st: &mut St, srv: &Server<'_>, runner_id: i64) -> Assigned {
    let Some(runner) = st.runner(runner_id).filter(|r| !r.deleted).cloned() else {
        return Assigned::Forbidden;
    };
    let candidates: Vec<i64> = st
        .jobs
        .values()
        .filter(|j| j.state == JobState::Pending && j.runner_id.is_none())
        .filter(|j| runner_can_pick(j, &runner))
        .map(|j| j.id)
        .collect();
    for id in candidates {
        let Some(job) = st.jobs.get_mut(&id) else {
            continue;
        };
        let missing: Vec<&str> = payload::required_features(job)
            .into_iter()
            .filter(|f| !runner.feature(f))
            .collect();
        if !missing.is_empty() {
            tracing::info!(job = id, ?missing, "dropping job: runner_unsupported");
            job.end(JobState::Failed, Some("runner_unsupported"));
            st.bump_queue();
            continue;
        }
        job.runner_id = Some(runner.id);
        job.started_at = Some(SystemTime::now());
        // Without two-phase commit GitLab runs the job as soon as it is handed out.
        if !runner.feature("two_phase_job_commit") {
            job.state = JobState::Running;
        }
        let body = match job.spec.raw.clone() {
            Some(raw) => raw,
            None => build_payload(st, srv, id, &runner),
        };
        st.bump_queue();
        return Assigned::Job(body);
    }
    Assigned::None(st.queue_value.clone())
}

fn build_payload(st: &mut St, srv: &Server<'_>, id: i64, runner: &RunnerRecord) -> Vec<u8> {
    let mut value = {
        let Some(job) = st.jobs.get(&id) else {
            return Vec::new();
        };
        let deps = job
            .spec
            .dependencies
            .iter()
            .filter_map(|d| st.jobs.get(d))
            .map(|d| dependency_entry(d, &job.token))
            .collect();
        let Some(project) = st.projects.get(&job.spec.project_path) else {
            return Vec::new();
        };
        payload::build(srv, job, project, runner, deps, &st.id_token_keys)
    };
    let Some(job) = st.jobs.get_mut(&id) else {
        return Vec::new();
    };
    if let Some(mutate) = job.spec.mutate.take() {
        mutate(&mut value);
    }
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    job.payload = Some(value);
    bytes
}

/// Parsed and type-checked `PUT` parameters.
struct UpdateParams {
    token: String,
    state: String,
    checksum: Option<String>,
    bytesize: Option<i64>,
    failure_reason: Option<String>,
    exit_code: Option<i64>,
    body: Value,
}

fn update_params(map: Map<String, Value>) -> Result<UpdateParams, Response> {
    let Some(token) = opt_str(&map, "token")? else {
        return Err(bad_param("token is missing"));
    };
    let output = match map.get("output") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad_param("output is invalid")),
    };
    let top_checksum = opt_str(&map, "checksum")?;
    Ok(UpdateParams {
        token,
        state: opt_str(&map, "state")?.unwrap_or_default(),
        checksum: opt_str(&output, "checksum")?.or(top_checksum),
        bytesize: opt_int(&output, "bytesize")?,
        failure_reason: opt_str(&map, "failure_reason")?,
        exit_code: opt_int(&map, "exit_code")?,
        body: Value::Object(map),
    })
}

/// `PUT /api/v4/jobs/:id`.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = tri!(util::parse_id(&id));
    let map = tri!(json_object(&headers, &body));
    let params = tri!(update_params(map));
    let has_header = util::header_str(&headers, "job-token").is_some();
    shared.write(|st| {
        if !has_header {
            st.violation(format!("job {id}: PUT without JOB-TOKEN header"));
        }
        update_locked(st, id, params)
    })
}

fn with_job_status(status: StatusCode, job: &Job) -> Response {
    let mut resp = util::status_body(status);
    util::set_header(&mut resp, "job-status", job.state.as_str());
    resp
}

fn update_locked(st: &mut St, id: i64, p: UpdateParams) -> Response {
    let settings = st.settings.clone();
    let Some(job) = st.jobs.get_mut(&id) else {
        return forbidden();
    };
    if job.token != p.token {
        return forbidden();
    }
    if job.waiting_for_ack() {
        // Two-phase commit (Rails `handle_runner_ack_workflow`).
        match p.state.as_str() {
            "pending" => {
                job.updates.push(p.body);
                return with_job_status(StatusCode::OK, job);
            }
            "running" => job.state = JobState::Running,
            _ => return with_job_status(StatusCode::BAD_REQUEST, job),
        }
    } else if !job.state.is_executing() {
        return util::job_forbidden(job.state.as_str());
    }
    job.updates.push(p.body.clone());
    match p.state.as_str() {
        "running" => {
            job.acked = true;
            with_job_status(StatusCode::OK, job)
        }
        "success" | "failed" => final_update(st, id, p, &settings),
        _ => with_job_status(StatusCode::BAD_REQUEST, job),
    }
}

fn final_update(st: &mut St, id: i64, p: UpdateParams, settings: &Settings) -> Response {
    let mut violations = Vec::new();
    let resp = {
        let Some(job) = st.jobs.get_mut(&id) else {
            return forbidden();
        };
        if p.checksum.is_some() && job.accepted_final_updates < settings.final_update_accepted_times
        {
            job.accepted_final_updates += 1;
            let mut resp = with_job_status(StatusCode::ACCEPTED, job);
            util::set_header(
                &mut resp,
                "x-gitlab-trace-update-interval",
                &settings.final_update_backoff.to_string(),
            );
            return resp;
        }
        let stored_sum = util::crc32_checksum(&job.trace);
        match &p.checksum {
            None => violations.push(format!("job {id}: final update without output.checksum")),
            Some(sum) if *sum != stored_sum => violations.push(format!(
                "job {id}: final checksum {sum} != {stored_sum} of the stored trace"
            )),
            Some(_) => {}
        }
        // The Go runner omits a zero bytesize (`omitempty`).
        let bytesize = p.bytesize.or(p.checksum.as_ref().map(|_| 0));
        if let Some(n) = bytesize
            && u64::try_from(n).ok() != Some(job.trace.len() as u64)
        {
            violations.push(format!(
                "job {id}: final bytesize {n} != {} stored",
                job.trace.len()
            ));
        }
        job.final_checksum = p.checksum;
        job.final_bytesize = bytesize.and_then(|n| u64::try_from(n).ok());
        job.finished = true;
        job.state = match (job.state, p.state.as_str()) {
            (JobState::Canceling, _) => JobState::Canceled,
            (_, "success") => JobState::Success,
            _ => JobState::Failed,
        };
        if job.state == JobState::Failed {
            let reason = p
                .failure_reason
                .filter(|r| FAILURE_REASONS.contains(&r.as_str()))
                .unwrap_or_else(|| "unknown_failure".into());
            job.failure_reason = Some(reason);
            job.exit_code = p.exit_code;
        }
        with_job_status(StatusCode::OK, job)
    };
    for v in violations {
        st.violation(v);
    }
    resp
}
