//! Job request, state updates and trace patches.

use crate::client::{Client, unexpected};
use crate::error::Error;
use crate::types::{JobRequest, JobResponse, Token, UpdateJobRequest};
use bytes::Bytes;
use reqwest::{Method, Response};
use std::time::Duration;

/// Read timeout for `POST /jobs/request`: Workhorse may hold it ~50 s (long polling).
pub const REQUEST_JOB_TIMEOUT: Duration = Duration::from_secs(90);
/// Timeout of the other job calls.
pub const JOB_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest trace update interval a server can ask for.
pub const MAX_UPDATE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// What `POST /jobs/request` gave.
#[derive(Debug)]
pub enum JobRequestOutcome {
    /// A job was assigned.
    Job(Box<JobResponse>),
    /// A job was assigned but its payload could not be read. `id`/`token` are filled when the
    /// payload was JSON enough to find them, so the job can still be failed.
    Malformed {
        /// Job id, if found.
        id: Option<i64>,
        /// Job token, if found.
        token: Option<Token>,
        /// What was wrong.
        reason: String,
    },
    /// No job for now (`204`, `409`, final `503`).
    NoJob,
}

/// Answer to a job request, with the queue version to echo next time.
#[derive(Debug)]
pub struct JobRequestResult {
    /// The outcome.
    pub outcome: JobRequestOutcome,
    /// `X-GitLab-Last-Update`, if sent.
    pub last_update: Option<String>,
}

/// What GitLab said about the job in headers of a trace or update answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteJobState {
    /// `Job-Status` header.
    pub status: Option<String>,
    /// `X-GitLab-Trace-Update-Interval`, capped at 15 min.
    pub update_interval: Option<Duration>,
}

impl RemoteJobState {
    fn from(resp: &Response) -> Self {
        let h = resp.headers();
        let status = h
            .get("Job-Status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let update_interval = h
            .get("X-GitLab-Trace-Update-Interval")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s).min(MAX_UPDATE_INTERVAL));
        RemoteJobState {
            status,
            update_interval,
        }
    }

    /// GitLab asked for a graceful cancel (`canceling`).
    pub fn is_canceling(&self) -> bool {
        self.status.as_deref() == Some("canceling")
    }

    /// GitLab says the job is over for us (`canceled` or `failed`).
    pub fn is_aborted(&self) -> bool {
        matches!(self.status.as_deref(), Some("canceled" | "failed"))
    }
}

/// Outcome of `PUT /jobs/:id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Applied (`200`).
    Ok,
    /// Accepted, trace not yet persisted (`202`): send the same update again later.
    Accepted,
    /// The job is no longer ours (`401` for a revoked job token, `403`, `404`, `409`,
    /// `400`): stop.
    Abort(u16),
    /// Trace validation failed (`412`): resend the whole trace.
    TraceReset,
    /// Transient failure: try again later.
    Retry(u16),
}

/// Outcome of `PATCH /jobs/:id/trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Appended; the server now holds `offset` bytes.
    Sent {
        /// The new end offset.
        offset: u64,
    },
    /// The server's log has another length (`416`): continue from `offset`.
    RangeMismatch {
        /// The server's length.
        offset: u64,
    },
    /// The job is no longer running (`403`), is gone (`404`), or its token was revoked
    /// (`401`).
    Abort(u16),
    /// Transient failure: keep the data, try again.
    Retry(u16),
}

fn last_update(resp: &Response) -> Option<String> {
    resp.headers()
        .get("X-GitLab-Last-Update")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Parses a payload, or finds enough in it to fail the job.
pub fn parse_job_payload(body: &[u8]) -> JobRequestOutcome {
    match JobResponse::from_json(body) {
        Ok(job) => JobRequestOutcome::Job(Box::new(job)),
        Err(e) => {
            let value = serde_json::from_slice::<serde_json::Value>(body).ok();
            let id = value
                .as_ref()
                .and_then(|v| v.get("id"))
                .and_then(serde_json::Value::as_i64);
            let token = value
                .as_ref()
                .and_then(|v| v.get("token"))
                .and_then(serde_json::Value::as_str)
                .map(Token::new);
            JobRequestOutcome::Malformed {
                id,
                token,
                reason: e.to_string(),
            }
        }
    }
}

impl Client {
    /// Asks for a job (`POST /jobs/request`).
    pub async fn request_job(&self, req: &JobRequest) -> Result<JobRequestResult, Error> {
        const EP: &str = "request_job";
        let resp = self
            .send(EP, || {
                self.request(Method::POST, "jobs/request")
                    .timeout(REQUEST_JOB_TIMEOUT)
                    .header("RUNNER-TOKEN", req.token.expose())
                    .header("Accept", "application/json")
                    .json(req)
            })
            .await?;
        let last_update = last_update(&resp);
        let outcome = match resp.status().as_u16() {
            201 => {
                let json = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                let body = resp.bytes().await.map_err(|e| Error::Transport {
                    endpoint: EP,
                    source: e,
                })?;
                if json {
                    parse_job_payload(&body)
                } else {
                    match parse_job_payload(&body) {
                        JobRequestOutcome::Job(job) => JobRequestOutcome::Malformed {
                            id: Some(job.id),
                            token: Some(job.token.clone()),
                            reason: "job payload is not served as application/json".into(),
                        },
                        other => other,
                    }
                }
            }
            204 | 409 | 503 => JobRequestOutcome::NoJob,

            _ => return Err(unexpected(EP, resp).await),
        };
        Ok(JobRequestResult {
            outcome,
            last_update,
        })
    }

    /// Sends a job state (`PUT /jobs/:id`).
    pub async fn update_job(
        &self,
        job_id: i64,
        req: &UpdateJobRequest,
    ) -> Result<(UpdateOutcome, RemoteJobState), Error> {
        const EP: &str = "update_job";
        let path = format!("jobs/{job_id}");
        let resp = self
            .send(EP, || {
                self.request(Method::PUT, &path)
                    .timeout(JOB_CALL_TIMEOUT)
                    .header("JOB-TOKEN", req.token.expose())
                    .json(req)
            })
            .await?;
        let remote = RemoteJobState::from(&resp);
        let outcome = match resp.status().as_u16() {
            200 => UpdateOutcome::Ok,
            202 => UpdateOutcome::Accepted,
            412 => UpdateOutcome::TraceReset,
            // 401: the job token was revoked (the job was erased, or its pipeline deleted);
            // no retry can succeed.
            s @ (400 | 401 | 403 | 404 | 409) => UpdateOutcome::Abort(s),
            s => UpdateOutcome::Retry(s),
        };
        Ok((outcome, remote))
    }

    /// Appends `data` at `offset` to the job log (`PATCH /jobs/:id/trace`).
    pub async fn patch_trace(
        &self,
        job_id: i64,
        token: &Token,
        offset: u64,
        data: Bytes,
        debug_trace: bool,
    ) -> Result<(PatchOutcome, RemoteJobState), Error> {
        const EP: &str = "patch_trace";
        let path = format!("jobs/{job_id}/trace?debug_trace={debug_trace}");
        let end = offset + (data.len() as u64).saturating_sub(1);
        let range = format!("{offset}-{end}");
        let resp = self
            .send(EP, || {
                self.request(Method::PATCH, &path)
                    .timeout(JOB_CALL_TIMEOUT)
                    .header("JOB-TOKEN", token.expose())
                    .header("Content-Type", "text/plain")
                    .header("Content-Range", &range)
                    .body(data.clone())
            })
            .await?;
        let remote = RemoteJobState::from(&resp);
        let server_len = resp
            .headers()
            .get("Range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit('-').next())
            .and_then(|n| n.trim().parse::<u64>().ok());
        let outcome = match resp.status().as_u16() {
            202 | 200 => PatchOutcome::Sent {
                offset: offset + data.len() as u64,
            },
            416 => match server_len {
                Some(n) => PatchOutcome::RangeMismatch { offset: n },
                None => PatchOutcome::Retry(416),
            },
            s @ (401 | 403 | 404) => PatchOutcome::Abort(s),
            s => PatchOutcome::Retry(s),
        };
        Ok((outcome, remote))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_payload_keeps_id_and_token() {
        match parse_job_payload(br#"{"id": 7, "token": "glcbt-x", "steps": 5}"#) {
            JobRequestOutcome::Malformed { id, token, reason } => {
                assert_eq!(id, Some(7));
                assert_eq!(token.unwrap().expose(), "glcbt-x");
                assert!(
                    reason.contains("steps") || reason.contains("sequence"),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_job_payload(b"not json"),
            JobRequestOutcome::Malformed {
                id: None,
                token: None,
                ..
            }
        ));
    }

    #[test]
    fn nulls_read_as_defaults() {
        let body = br#"{"id": 1, "token": "t", "image": null, "services": null, "artifacts": null,
            "cache": null, "dependencies": null, "variables": [{"key": "A", "value": null}],
            "steps": [{"name": "script", "script": ["true"], "when": null}], "features": null}"#;
        let JobRequestOutcome::Job(job) = parse_job_payload(body) else {
            panic!()
        };
        assert_eq!(job.variables[0].value, "");
        assert!(job.services.is_empty() && job.image.is_none());
    }

    #[test]
    fn a_job_survives_a_round_trip_through_json() {
        // The manager hands the job to the pod's helper as JSON: nothing may be lost.
        let body = br#"{"id": 42, "token": "glcbt-secret", "allow_git_fetch": true,
            "job_info": {"id": 42, "name": "build", "stage": "test", "project_id": 7,
                         "project_name": "widget", "timeout": 600},
            "git_info": {"repo_url": "https://gitlab-ci-token:glcbt-secret@gitlab.example.com/acme/widget.git",
                         "ref": "main", "sha": "abc", "depth": 20, "refspecs": ["+refs/heads/*:refs/remotes/origin/*"]},
            "variables": [{"key": "A", "value": "1", "masked": true, "public": false, "file": true, "raw": true}],
            "steps": [{"name": "script", "script": ["echo hi"], "timeout": 600, "when": "on_success", "allow_failure": false}],
            "image": {"name": "alpine:3", "entrypoint": [""], "pull_policy": ["if-not-present"]},
            "services": [{"name": "postgres:16", "alias": "db"}],
            "artifacts": [{"name": "a", "paths": ["out/"], "exclude": ["x"], "when": "always", "expire_in": "1 day"}],
            "cache": [{"key": "k", "paths": ["v/"], "policy": "pull", "fallback_keys": ["f"]}],
            "dependencies": [{"id": 41, "name": "dep", "token": "glcbt-dep", "artifacts_file": {"filename": "a.zip", "size": 5}}],
            "features": {"trace_sections": true, "token_mask_prefixes": ["glpat-"], "failure_reasons": ["script_failure"]}}"#;
        let JobRequestOutcome::Job(job) = parse_job_payload(body) else {
            panic!()
        };
        let again = serde_json::to_vec(&*job).unwrap();
        let JobRequestOutcome::Job(back) = parse_job_payload(&again) else {
            panic!()
        };
        assert_eq!(format!("{job:?}"), format!("{back:?}"));
        assert_eq!(back.token.expose(), "glcbt-secret");
        assert_eq!(back.dependencies[0].token.expose(), "glcbt-dep");
        assert_eq!(back.cache[0].fallback_keys, vec!["f".to_string()]);
        assert_eq!(back.job_info.project_id, 7);
    }

    #[test]
    fn git_info_protected_is_read_and_survives_oar_copies() {
        let parse = |protected: &str| {
            let body =
                format!(r#"{{"id": 1, "token": "t", "git_info": {{"ref": "main"{protected}}}}}"#);
            match parse_job_payload(body.as_bytes()) {
                JobRequestOutcome::Job(job) => job.ref_protected,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(parse(r#", "protected": true"#), Some(true));
        assert_eq!(parse(r#", "protected": false"#), Some(false));
        assert_eq!(parse(r#", "protected": null"#), None);
        assert_eq!(parse(""), None);
        let job = JobResponse {
            ref_protected: Some(true),
            ..JobResponse::default()
        };
        let copy = serde_json::to_vec(&job).unwrap();
        assert_eq!(
            JobResponse::from_json(&copy).unwrap().ref_protected,
            Some(true)
        );
    }
}
