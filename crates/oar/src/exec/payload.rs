//! A planned job as the job payload GitLab would send for it (`POST /jobs/request`'s answer),
//! so that `oar exec` runs it through the same driver as a job from GitLab.

use oar_gitlab::Token;
use oar_gitlab::types::{
    Artifact, ArtifactsFile, Cache, Dependency, GitInfo, Image, JobFeatures, JobInfo, JobResponse,
    JobVariable, RunnerInfo, Step,
};
use oar_pipeline::model::{CacheKey, Image as PlannedImage, UploadWhen};
use oar_pipeline::{Plan, PlannedJob};

/// The timeout of a job that sets none (GitLab's project default).
const DEFAULT_TIMEOUT: u64 = 3600;

/// The pipeline-wide facts every payload shares.
#[derive(Debug, Clone)]
pub struct PipelineFacts {
    /// The coordinator's URL (`http://127.0.0.1:PORT/`).
    pub server_url: String,
    /// The checkout's predefined variables (`Checkout::predefined`).
    pub predefined: Vec<(String, String)>,
    /// The commit the jobs check out (the work tree's snapshot).
    pub sha: String,
    /// The ref the pipeline is for.
    pub ref_name: String,
    /// `branch` or `tag`.
    pub ref_type: String,
    /// The refspec that fetches [`PipelineFacts::sha`].
    pub refspec: String,
    /// `namespace/name`.
    pub project_path: String,
    /// The pipeline's id.
    pub pipeline_id: i64,
    /// Variables masked in the logs (`--masked-variable`).
    pub masked: std::collections::BTreeSet<String>,
    /// `cache:key:files` keys by their file lists ([`super::git::Checkout::files_digest`]).
    pub file_keys: std::collections::HashMap<Vec<String>, String>,
}

/// A job of the pipeline as the coordinator knows it: its id and token.
#[derive(Debug, Clone)]
pub struct JobIdentity {
    /// Job id.
    pub id: i64,
    /// Job token.
    pub token: String,
}

/// A finished job whose artifacts a later job may download.
#[derive(Debug, Clone)]
pub struct FinishedArtifacts {
    /// The archive's file name and size, when it uploaded one.
    pub archive: Option<(String, i64)>,
    /// The variables of its `artifacts:reports:dotenv`, in file order.
    pub dotenv: Vec<(String, String)>,
}

fn var(key: &str, value: impl Into<String>) -> JobVariable {
    JobVariable {
        key: key.to_string(),
        value: value.into(),
        public: true,
        ..JobVariable::default()
    }
}

fn image(i: &PlannedImage) -> Image {
    Image {
        name: i.name.clone(),
        alias: i.alias.clone().unwrap_or_default(),
        entrypoint: i.entrypoint.clone().unwrap_or_default(),
        command: i.command.clone().unwrap_or_default(),
        variables: i
            .variables
            .iter()
            .map(|v| JobVariable {
                raw: !v.expand,
                ..var(&v.name, v.value.clone())
            })
            .collect(),
        pull_policy: i.pull_policy.clone(),
    }
}

fn when(w: Option<UploadWhen>) -> String {
    match w.unwrap_or(UploadWhen::OnSuccess) {
        UploadWhen::OnSuccess => "on_success",
        UploadWhen::OnFailure => "on_failure",
        UploadWhen::Always => "always",
    }
    .to_string()
}

/// A string form of a serde enum (`pull-push`, `on_success`).
fn serde_name(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The payload of `plan.jobs[index]`. `ids` holds every planned job's identity (same
/// order as `plan.jobs`); `finished(i)` the artifacts of a finished job, `None` for a job that
/// did not run or failed without artifacts.
pub fn payload(
    plan: &Plan,
    index: usize,
    ids: &[JobIdentity],
    facts: &PipelineFacts,
    finished: impl Fn(usize) -> Option<FinishedArtifacts>,
    repo_url: String,
) -> Option<JobResponse> {
    let job: &PlannedJob = plan.jobs.get(index)?;
    let me = ids.get(index)?;
    let timeout = job.timeout.as_ref().map_or(DEFAULT_TIMEOUT, |t| t.seconds);
    let server = facts.server_url.trim_end_matches('/');
    let project_url = format!("{server}/{}", facts.project_path);
    let mut variables: Vec<JobVariable> = Vec::new();
    // Predefined first; the job's own variables come after, so they win where they overlap.
    for (k, v) in &facts.predefined {
        variables.push(var(k, v.clone()));
    }
    variables.extend([
        var("CI_JOB_ID", me.id.to_string()),
        var("CI_JOB_NAME", job.name.clone()),
        var("CI_JOB_NAME_SLUG", super::git::ref_slug(&job.name)),
        var("CI_JOB_STAGE", job.stage.clone()),
        var("CI_JOB_URL", format!("{project_url}/-/jobs/{}", me.id)),
        var("CI_JOB_TIMEOUT", timeout.to_string()),
        var("CI_NODE_TOTAL", job.node_total.to_string()),
        var("CI_SERVER_URL", server.to_string()),
        var("CI_API_V4_URL", format!("{server}/api/v4")),
        var("CI_PROJECT_URL", project_url.clone()),
        var(
            "CI_PIPELINE_URL",
            format!("{project_url}/-/pipelines/{}", facts.pipeline_id),
        ),
        var("CI_COMMIT_REF_PROTECTED", "false"),
        JobVariable {
            masked: true,
            public: false,
            ..var("CI_JOB_TOKEN", me.token.clone())
        },
        JobVariable {
            public: false,
            ..var("CI_REPOSITORY_URL", repo_url.clone())
        },
    ]);
    if let Some(i) = job.node_index {
        variables.push(var("CI_NODE_INDEX", i.to_string()));
    }
    if let Some(env) = &job.environment {
        variables.push(var("CI_ENVIRONMENT_NAME", env.name.clone()));
    }
    for v in &job.variables {
        variables.push(JobVariable {
            raw: !v.expand,
            ..var(&v.name, v.value.clone())
        });
    }
    // `reports:dotenv` of the jobs whose artifacts this one downloads: above the job's own
    // variables, below the user's (`--variable`), as GitLab ranks them. The last definition
    // of a name wins.
    let mut from_dotenv = false;
    for dep in plan.artifact_sources(index) {
        let Some(done) = plan.position(&dep.name).and_then(&finished) else {
            continue;
        };
        for (k, v) in done.dotenv {
            from_dotenv = true;
            variables.push(JobVariable {
                raw: true,
                ..var(&k, v)
            });
        }
    }
    if from_dotenv {
        for v in job
            .variables
            .iter()
            .filter(|v| v.source == oar_pipeline::VariableSource::User)
        {
            variables.push(JobVariable {
                raw: !v.expand,
                ..var(&v.name, v.value.clone())
            });
        }
    }

    for v in variables
        .iter_mut()
        .filter(|v| facts.masked.contains(&v.key))
    {
        v.masked = true;
        v.public = false;
    }

    let mut steps = vec![Step {
        name: "script".into(),
        script: job
            .before_script
            .iter()
            .chain(job.script.iter())
            .cloned()
            .collect(),
        timeout: i64::try_from(timeout).unwrap_or(i64::MAX),
        when: "on_success".into(),
        allow_failure: false,
    }];
    if !job.after_script.is_empty() {
        steps.push(Step {
            name: "after_script".into(),
            script: job.after_script.clone(),
            timeout: i64::try_from(timeout).unwrap_or(i64::MAX),
            when: "always".into(),
            allow_failure: true,
        });
    }

    let mut artifacts = Vec::new();
    if let Some(a) = &job.artifacts {
        if !a.paths.is_empty() || a.untracked {
            artifacts.push(Artifact {
                name: a.name.clone().unwrap_or_default(),
                untracked: a.untracked,
                paths: a.paths.clone(),
                exclude: a.exclude.clone(),
                when: when(a.when),
                artifact_type: "archive".into(),
                artifact_format: "zip".into(),
                expire_in: a.expire_in.clone().unwrap_or_default(),
            });
        }
        for (kind, paths) in &a.reports {
            artifacts.push(Artifact {
                paths: paths.clone(),
                when: "always".into(),
                artifact_type: kind.clone(),
                artifact_format: "gzip".into(),
                expire_in: a.expire_in.clone().unwrap_or_default(),
                ..Artifact::default()
            });
        }
    }

    let cache = job
        .caches
        .iter()
        .map(|c| Cache {
            key: match &c.key {
                CacheKey::Literal(k) => k.clone(),
                // GitLab's: from the files' last commits, after the prefix.
                CacheKey::Files { files, prefix } => {
                    let digest = facts.file_keys.get(files).map_or("default", String::as_str);
                    match prefix {
                        Some(p) => format!("{p}-{digest}"),
                        None => digest.to_string(),
                    }
                }
            },
            untracked: c.untracked,
            policy: serde_name(&c.policy),
            paths: c.paths.clone(),
            when: serde_name(&c.when),
            fallback_keys: c.fallback_keys.clone(),
        })
        .collect();

    let dependencies = plan
        .artifact_sources(index)
        .into_iter()
        .filter_map(|dep| {
            let i = plan.position(&dep.name)?;
            let done = finished(i)?;
            let id = ids.get(i)?;
            Some(Dependency {
                id: id.id,
                name: dep.name.clone(),
                token: Token::new(&me.token),
                artifacts_file: done
                    .archive
                    .map(|(filename, size)| ArtifactsFile { filename, size }),
            })
        })
        .collect();

    Some(JobResponse {
        id: me.id,
        token: Token::new(&me.token),
        allow_git_fetch: true,
        job_info: JobInfo {
            id: me.id,
            name: job.name.clone(),
            stage: job.stage.clone(),
            project_id: 1,
            project_name: facts
                .project_path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            pipeline_id: facts.pipeline_id,
            project_full_path: facts.project_path.clone(),
        },
        git_info: GitInfo {
            repo_url: Token::new(&repo_url),
            git_ref: facts.ref_name.clone(),
            sha: facts.sha.clone(),
            before_sha: "0000000000000000000000000000000000000000".into(),
            ref_type: facts.ref_type.clone(),
            refspecs: vec![facts.refspec.clone()],
            depth: 0,
            repo_object_format: "sha1".into(),
        },
        runner_info: RunnerInfo {
            timeout: i64::try_from(timeout).unwrap_or(i64::MAX),
        },
        variables,
        steps,
        image: job.image.as_ref().map(image),
        services: job.services.iter().map(image).collect(),
        artifacts,
        cache,
        dependencies,
        features: JobFeatures {
            trace_sections: true,
            ..JobFeatures::default()
        },
        ..JobResponse::default()
    })
}
