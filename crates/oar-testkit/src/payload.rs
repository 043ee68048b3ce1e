//! The `201` job payload of `/jobs/request` (reference §2.3/§2.4), assembled when a runner
//! picks the job.

use serde_json::{Value, json};

use crate::id_tokens::{self, IdTokenKeys, IdTokenSigner};
use crate::state::{Job, Project};
use crate::types::RunnerRecord;
use crate::util;

/// Version this fake pretends to be.
pub(crate) const SERVER_VERSION: &str = "18.4.0";

/// Failure reasons the server accepts (`features.failure_reasons`).
pub(crate) const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "protected_environment_failure",
    "secrets_provider_not_found",
    "image_pull_failure",
];

/// Where the fake listens.
pub(crate) struct Server<'a> {
    pub base_url: &'a str,
    pub host: &'a str,
    pub port: u16,
}

fn var(key: &str, value: impl Into<String>) -> Value {
    json!({"key": key, "value": value.into(), "public": true, "masked": false})
}

fn secret(key: &str, value: &str, masked: bool) -> Value {
    json!({"key": key, "value": value, "public": false, "masked": masked})
}

/// Ruby's `Array#to_s` of the tags: `["linux", "rust"]`.
fn ruby_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Effective timeout: the job's, capped by the runner's `maximum_timeout`.
pub(crate) fn effective_timeout(job: &Job, runner: &RunnerRecord) -> u64 {
    let max = runner
        .maximum_timeout
        .and_then(|m| u64::try_from(m).ok())
        .filter(|m| *m > 0);
    max.map_or(job.spec.timeout, |m| m.min(job.spec.timeout))
}

/// `git_info.depth`: `GIT_DEPTH` if set, else the project default (20).
pub(crate) fn depth(job: &Job) -> u32 {
    job.spec.depth.unwrap_or(20)
}

fn refspecs(job: &Job) -> Vec<String> {
    let mut out = vec![format!("+{}:refs/pipelines/{}", job.sha, job.pipeline_id)];
    let r = &job.git_ref;
    match (depth(job), job.ref_type) {
        (0, _) => {
            out.push("+refs/heads/*:refs/remotes/origin/*".into());
            out.push("+refs/tags/*:refs/tags/*".into());
        }
        (_, "tag") => out.push(format!("+refs/tags/{r}:refs/tags/{r}")),
        _ => out.push(format!("+refs/heads/{r}:refs/remotes/origin/{r}")),
    }
    out
}

/// `http` or `https`, from the server's base URL.
fn scheme_of(base_url: &str) -> &str {
    base_url.split_once("://").map_or("http", |(s, _)| s)
}

/// Predefined `CI_*` variables, then the job's own.
fn variables(
    srv: &Server<'_>,
    job: &Job,
    project: &Project,
    runner: &RunnerRecord,
    repo_url: &str,
    keys: &IdTokenKeys,
) -> Vec<Value> {
    let p = &project.path;
    let (namespace, name) = p.rsplit_once('/').unwrap_or(("", p.as_str()));
    let root_namespace = namespace.split('/').next().unwrap_or("");
    let project_url = format!("{}/{p}", srv.base_url);
    let short_sha: String = job.sha.chars().take(8).collect();
    let started = job.started_at.map(util::iso8601).unwrap_or_default();
    let host = srv.host;
    let mut v = vec![
        var("CI_PIPELINE_ID", job.pipeline_id.to_string()),
        var(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", job.pipeline_id),
        ),
        var("CI_PIPELINE_SOURCE", "push"),
        var("CI_JOB_ID", job.id.to_string()),
        var("CI_JOB_URL", format!("{project_url}/-/jobs/{}", job.id)),
        secret("CI_JOB_TOKEN", &job.token, true),
        var("CI_JOB_STARTED_AT", started),
        var("CI_REGISTRY", format!("{host}:{}", srv.port)),
        var("CI_REGISTRY_USER", "gitlab-ci-token"),
        secret("CI_REGISTRY_PASSWORD", &job.token, true),
        secret("CI_REPOSITORY_URL", repo_url, false),
        var("CI_JOB_NAME", job.spec.name.clone()),
        var("CI_JOB_NAME_SLUG", util::slugify(&job.spec.name)),
        var("CI_JOB_STAGE", job.spec.stage.clone()),
        var("CI", "true"),
        var("GITLAB_CI", "true"),
        var("CI_SERVER_URL", srv.base_url),
        var("CI_SERVER_HOST", host),
        var("CI_SERVER_PORT", srv.port.to_string()),
        var("CI_SERVER_PROTOCOL", scheme_of(srv.base_url)),
        var("CI_SERVER_FQDN", format!("{host}:{}", srv.port)),
        var("CI_SERVER_NAME", "GitLab"),
        var("CI_SERVER_VERSION", SERVER_VERSION),
        var("CI_API_V4_URL", format!("{}/api/v4", srv.base_url)),
        var("CI_PROJECT_ID", project.id.to_string()),
        var("CI_PROJECT_NAME", name),
        var("CI_PROJECT_TITLE", name),
        var("CI_PROJECT_PATH", p.clone()),
        var("CI_PROJECT_PATH_SLUG", util::slugify(p)),
        var("CI_PROJECT_NAMESPACE", namespace),
        var("CI_PROJECT_ROOT_NAMESPACE", root_namespace),
        var("CI_PROJECT_URL", project_url.clone()),
        var("CI_PROJECT_VISIBILITY", "private"),
        var("CI_DEFAULT_BRANCH", "main"),
        var("CI_COMMIT_SHA", job.sha.clone()),
        var("CI_COMMIT_SHORT_SHA", short_sha),
        var("CI_COMMIT_BEFORE_SHA", job.before_sha.clone()),
        var("CI_COMMIT_REF_NAME", job.git_ref.clone()),
        var("CI_COMMIT_REF_SLUG", util::slugify(&job.git_ref)),
    ];
    if job.ref_type == "tag" {
        v.push(var("CI_COMMIT_TAG", job.git_ref.clone()));
    } else {
        v.push(var("CI_COMMIT_BRANCH", job.git_ref.clone()));
    }
    v.extend([
        var("CI_COMMIT_REF_PROTECTED", job.spec.protected.to_string()),
        var("CI_RUNNER_ID", runner.id.to_string()),
        var("CI_RUNNER_DESCRIPTION", runner.description.clone()),
        var("CI_RUNNER_TAGS", ruby_array(&runner.tag_list)),
        var("GITLAB_USER_ID", "1"),
        var("GITLAB_USER_LOGIN", "root"),
        var("GITLAB_USER_EMAIL", "root@example.com"),
    ]);
    if let Some(d) = job.spec.depth {
        v.push(var("GIT_DEPTH", d.to_string()));
    }
    if let Some(env) = &job.spec.environment {
        v.push(var("CI_ENVIRONMENT_NAME", env.clone()));
        v.push(var("CI_ENVIRONMENT_SLUG", util::slugify(env)));
        v.push(var("CI_ENVIRONMENT_TIER", "other"));
    }
    for (name, aud) in &job.spec.id_tokens {
        let claims = id_tokens::claims(srv.base_url, job, project, aud, job.spec.timeout);
        v.push(secret(
            name,
            &id_tokens::sign(&claims, keys, IdTokenSigner::Current),
            true,
        ));
    }
    v.extend(job.spec.variables.iter().cloned());
    v
}

fn steps(job: &Job, timeout: u64) -> Vec<Value> {
    let spec = &job.spec;
    let script: Vec<&String> = spec.before_script.iter().chain(&spec.script).collect();
    let mut out = vec![json!({
        "name": "script", "script": script, "timeout": timeout,
        "when": "on_success", "allow_failure": spec.allow_failure,
    })];
    if !spec.after_script.is_empty() {
        out.push(json!({
            "name": "after_script", "script": spec.after_script, "timeout": timeout,
            "when": "always", "allow_failure": true,
        }));
    }
    out
}

/// The full payload for `job` handed to `runner`; `dependencies` are prebuilt entries.
pub(crate) fn build(
    srv: &Server<'_>,
    job: &Job,
    project: &Project,
    runner: &RunnerRecord,
    dependencies: Vec<Value>,
    keys: &IdTokenKeys,
) -> Value {
    let scheme = scheme_of(srv.base_url);
    let host_port = srv
        .base_url
        .split_once("://")
        .map_or(srv.base_url, |(_, rest)| rest);
    let repo_url = format!(
        "{scheme}://gitlab-ci-token:{}@{host_port}/{}.git",
        job.token, project.path
    );
    let timeout = effective_timeout(job, runner);
    let name = project.path.rsplit('/').next().unwrap_or_default();
    let spec = &job.spec;
    json!({
        "id": job.id,
        "token": job.token,
        "allow_git_fetch": spec.allow_git_fetch,
        "job_info": {
            "id": job.id,
            "name": spec.name,
            "stage": spec.stage,
            "pipeline_id": job.pipeline_id,
            "project_id": project.id,
            "project_name": name,
            "project_full_path": project.path,
            "namespace_id": 5,
            "root_namespace_id": 5,
            "organization_id": 1,
            "instance_id": "oar-fake-gitlab",
            "instance_uuid": "4f1c2a9e-7b3d-4c55-9e21-0a8b6d3f1e77",
            "user_id": 1,
            "scoped_user_id": null,
            "time_in_queue_seconds": job.queued_at.elapsed().as_secs_f64(),
            "project_jobs_running_on_instance_runners_count": "+Inf",
            "queue_size": 0,
            "queue_depth": 0,
        },
        "git_info": {
            "repo_url": repo_url,
            "ref": job.git_ref,
            "sha": job.sha,
            "before_sha": job.before_sha,
            "ref_type": job.ref_type,
            "refspecs": refspecs(job),
            "depth": depth(job),
            "repo_object_format": "sha1",
            "protected": spec.protected,
        },
        "runner_info": {
            "timeout": timeout,
            "runner_session_url": null,
            "uuid": "0b7d5c3e-2f41-4a8e-9c6d-71e0f2a4b9c8",
        },
        "variables": variables(srv, job, project, runner, &repo_url, keys),
        "steps": steps(job, timeout),
        "hooks": spec.hooks,
        "image": spec.image,
        "services": spec.services.clone().unwrap_or_else(|| json!([])),
        "artifacts": spec.artifacts,
        "cache": spec.cache.clone().unwrap_or_else(|| json!([])),
        "credentials": [{
            "type": "registry",
            "url": format!("{}:{}", srv.host, srv.port),
            "username": "gitlab-ci-token",
            "password": job.token,
        }],
        "dependencies": dependencies,
        "features": {
            "trace_sections": spec.trace_sections,
            "token_mask_prefixes": ["glpat-", "glcbt-"],
            "failure_reasons": FAILURE_REASONS,
        },
    })
}

/// Runner features a job needs (Rails `Ci::Build::RUNNER_FEATURES`, the subset we model).
pub(crate) fn required_features(job: &Job) -> Vec<&'static str> {
    let spec = &job.spec;
    let mut out = Vec::new();
    let artifacts = spec.artifacts.as_ref().and_then(Value::as_array);
    let has = |items: Option<&Vec<Value>>, pred: &dyn Fn(&Value) -> bool| {
        items.is_some_and(|a| a.iter().any(pred))
    };
    if has(artifacts, &|a| {
        a.get("artifact_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "archive")
    }) {
        out.push("upload_multiple_artifacts");
    }
    if has(artifacts, &|a| {
        a.get("exclude")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
    }) {
        out.push("artifacts_exclude");
    }
    let caches = spec.cache.as_ref().and_then(Value::as_array);
    if has(caches, &|c| {
        c.get("fallback_keys")
            .and_then(Value::as_array)
            .is_some_and(|k| !k.is_empty())
    }) {
        out.push("fallback_cache_keys");
    }
    if job.git_ref.starts_with("refs/merge-requests/") {
        out.push("refspecs");
    }
    out
}
