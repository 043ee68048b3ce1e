//! Job request, two-phase ack, trace PATCH, final PUT, cancel and abort (reference §2–§4).

mod common;

use std::time::Duration;

use common::{
    RUNNER_TOKEN, WAIT, client, final_body, header, patch, put, request_job, running_job, take_job,
};
use oar_testkit::{Endpoint, FakeGitlab, JobSpec, JobState};
use serde_json::{Value, json};

fn var<'a>(payload: &'a Value, key: &str) -> &'a Value {
    payload["variables"]
        .as_array()
        .and_then(|vs| vs.iter().rev().find(|v| v["key"] == key))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn request_ack_patch_and_final_put() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    let runner_id = gl.add_runner(RUNNER_TOKEN);
    let sha = gl.create_repo("acme/widget", &[("README.md", "hi\n")])?;

    // No job: 204 + X-GitLab-Last-Update, echoed back: same value.
    let r = request_job(&c, &gl, RUNNER_TOKEN, &[]).await;
    assert_eq!(r.status(), 204);
    let last = header(&r, "x-gitlab-last-update").unwrap_or_default();
    assert_eq!(last.len(), 32);
    let again = c
        .post(format!("{}/api/v4/jobs/request", gl.url()))
        .json(&json!({"token": RUNNER_TOKEN, "last_update": last}))
        .send()
        .await?;
    assert_eq!(again.status(), 204);
    assert_eq!(header(&again, "x-gitlab-last-update"), Some(last));
    assert_eq!(request_job(&c, &gl, "glrt-wrong", &[]).await.status(), 403);

    let id = gl.enqueue_job(
        JobSpec::new("acme/widget")
            .name("unit")
            .before_script(["echo before"])
            .script(["echo main"])
            .after_script(["echo after"])
            .masked_variable("DEPLOY_TOKEN", "s3cr3t-Value-9876")
            .depth(5)
            .timeout(600),
    );
    let p = take_job(&c, &gl, &["variables", "two_phase_job_commit"]).await;
    let token = p["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(p["id"], json!(id));
    assert!(token.starts_with("glcbt-"));
    let port = gl.url().rsplit(':').next().unwrap_or_default().to_owned();
    assert_eq!(
        p["git_info"]["repo_url"],
        json!(format!(
            "http://gitlab-ci-token:{token}@127.0.0.1:{port}/acme/widget.git"
        ))
    );
    assert_eq!(p["git_info"]["sha"], json!(sha));
    assert_eq!(p["git_info"]["depth"], json!(5));
    assert_eq!(
        p["git_info"]["before_sha"],
        json!("0000000000000000000000000000000000000000")
    );
    let refspecs = p["git_info"]["refspecs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        refspecs[1],
        json!("+refs/heads/main:refs/remotes/origin/main")
    );
    assert_eq!(p["runner_info"]["timeout"], json!(600));
    assert_eq!(p["steps"][0]["script"], json!(["echo before", "echo main"]));
    assert_eq!(p["steps"][1]["when"], json!("always"));
    assert_eq!(p["features"]["trace_sections"], json!(true));
    assert!(
        p["features"]["failure_reasons"]
            .as_array()
            .is_some_and(|a| a.len() > 20)
    );
    assert_eq!(var(&p, "CI_JOB_TOKEN")["masked"], json!(true));
    assert_eq!(var(&p, "CI_SERVER_URL")["value"], json!(gl.url()));
    assert_eq!(
        var(&p, "CI_RUNNER_ID")["value"],
        json!(runner_id.to_string())
    );
    assert_eq!(
        var(&p, "CI_PROJECT_PATH_SLUG")["value"],
        json!("acme-widget")
    );
    assert_eq!(var(&p, "GIT_DEPTH")["value"], json!("5"));
    assert_eq!(var(&p, "DEPLOY_TOKEN")["masked"], json!(true));

    // Pending until acknowledged: trace refused, `pending` keep-alive ok, final state refused.
    let job = gl.job(id);
    assert_eq!(
        (job.state, job.acknowledged, job.runner_id),
        (JobState::Pending, false, Some(runner_id))
    );
    let r = patch(&c, &gl, id, &token, 0, b"early").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (403, Some("pending".into()))
    );
    assert_eq!(
        put(&c, &gl, id, &token, json!({"state": "pending"}))
            .await
            .status(),
        200
    );
    assert_eq!(
        put(&c, &gl, id, &token, final_body("success", b""))
            .await
            .status(),
        400
    );
    let r = put(&c, &gl, id, &token, json!({"state": "running"})).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (200, Some("running".into()))
    );
    assert_eq!(gl.job(id).state, JobState::Running);

    // Trace: append, gap → 416 with the true range, protocol errors → 400/403.
    let r = patch(&c, &gl, id, &token, 0, b"hello ").await;
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range").as_deref(), Some("0-6"));
    assert_eq!(header(&r, "job-status").as_deref(), Some("running"));
    assert_eq!(
        header(&r, "x-gitlab-trace-update-interval").as_deref(),
        Some("3")
    );
    let r = patch(&c, &gl, id, &token, 10, b"gap").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "range")),
        (416, Some("0-6".into()))
    );
    let r = patch(&c, &gl, id, &token, 2, b"overlap").await;
    assert_eq!(r.status(), 416);
    let r = patch(&c, &gl, id, "glcbt-wrong", 6, b"x").await;
    assert_eq!((r.status().as_u16(), header(&r, "job-status")), (403, None));
    let url = format!("{}/api/v4/jobs/{id}/trace", gl.url());
    let no_ct = c
        .patch(&url)
        .header("JOB-TOKEN", &token)
        .header("Content-Range", "6-6")
        .body("x")
        .send()
        .await?;
    assert_eq!(no_ct.status(), 400);
    let no_range = c
        .patch(&url)
        .header("JOB-TOKEN", &token)
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await?;
    assert_eq!(no_range.status(), 400);
    gl.set_trace_update_interval(1);
    let r = patch(&c, &gl, id, &token, 6, b"world\n").await;
    assert_eq!(
        header(&r, "x-gitlab-trace-update-interval").as_deref(),
        Some("1")
    );
    gl.wait_trace_contains(id, "hello world", WAIT).await?;

    // Keep-alive and final update.
    let r = put(&c, &gl, id, "glcbt-wrong", json!({"state": "running"})).await;
    assert_eq!(r.status(), 403);
    let no_token = c
        .put(format!("{}/api/v4/jobs/{id}", gl.url()))
        .json(&json!({"state": "running"}))
        .send()
        .await?;
    assert_eq!(no_token.status(), 400);
    let r = put(&c, &gl, id, &token, final_body("failed", b"hello world\n")).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (200, Some("failed".into()))
    );
    let done = gl.wait_job_finished(id, WAIT).await?;
    assert_eq!(done.state, JobState::Failed);
    assert!(done.checksum_matches);
    assert_eq!(done.failure_reason.as_deref(), Some("script_failure"));
    assert_eq!(done.exit_code, Some(2));
    assert_eq!(done.trace, b"hello world\n");
    assert_eq!(done.updates.len(), 3);
    assert!(gl.violations().is_empty(), "{:?}", gl.violations());

    // Finished: everything is 403 + Job-Status.
    let r = patch(&c, &gl, id, &token, 12, b"late").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (403, Some("failed".into()))
    );
    let r = put(&c, &gl, id, &token, json!({"state": "running"})).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (403, Some("failed".into()))
    );
    Ok(())
}

#[tokio::test]
async fn final_update_202_loop_and_violations() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    let (id, token) = running_job(&c, &gl, &[]).await;
    gl.set_final_update_accepted_times(2);
    gl.set_final_update_backoff(7);
    assert_eq!(patch(&c, &gl, id, &token, 0, b"log\n").await.status(), 202);
    for _ in 0..2 {
        let r = put(&c, &gl, id, &token, final_body("success", b"log\n")).await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            header(&r, "x-gitlab-trace-update-interval").as_deref(),
            Some("7")
        );
        assert_eq!(header(&r, "job-status").as_deref(), Some("running"));
        assert!(!gl.job(id).finished);
    }
    let r = put(&c, &gl, id, &token, final_body("success", b"wrong")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await?, "200");
    let done = gl.wait_job_finished(id, WAIT).await?;
    assert_eq!(done.state, JobState::Success);
    assert!(!done.checksum_matches);
    assert_eq!(gl.violations().len(), 2, "{:?}", gl.violations());
    Ok(())
}

#[tokio::test]
async fn graceful_cancel_and_abort() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    let (id, token) = running_job(&c, &gl, &["cancel_gracefully"]).await;
    gl.cancel_job(id);
    let r = put(&c, &gl, id, &token, json!({"state": "running"})).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (200, Some("canceling".into()))
    );
    let r = patch(&c, &gl, id, &token, 0, b"after_script\n").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (202, Some("canceling".into()))
    );
    let r = put(&c, &gl, id, &token, final_body("failed", b"after_script\n")).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (200, Some("canceled".into()))
    );
    assert_eq!(
        gl.wait_job_finished(id, WAIT).await?.state,
        JobState::Canceled
    );

    let id2 = gl.enqueue_job(JobSpec::new("acme/nogit").script(["sleep 100"]));
    let p = take_job(&c, &gl, &[]).await;
    let token2 = p["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        put(&c, &gl, id2, &token2, json!({"state": "running"}))
            .await
            .status(),
        200
    );
    gl.abort_job(id2);
    let r = patch(&c, &gl, id2, &token2, 0, b"x").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (403, Some("canceled".into()))
    );
    let r = put(&c, &gl, id2, &token2, final_body("failed", b"")).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "job-status")),
        (403, Some("canceled".into()))
    );
    let snap = gl.wait_job_state(id2, JobState::Canceled, WAIT).await?;
    assert!(snap.finished);

    // Without cancel_gracefully GitLab skips `canceling`.
    let id3 = gl.enqueue_job(JobSpec::new("acme/nogit"));
    let p = take_job(&c, &gl, &[]).await;
    let token3 = p["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        put(&c, &gl, id3, &token3, json!({"state": "running"}))
            .await
            .status(),
        200
    );
    gl.cancel_job(id3);
    assert_eq!(gl.job(id3).state, JobState::Canceled);
    Ok(())
}

#[tokio::test]
async fn long_polling_and_job_matching() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    gl.add_runner(RUNNER_TOKEN);
    let last = gl.queue_value();
    let poll = |last: String| {
        c.post(format!("{}/api/v4/jobs/request", gl.url()))
            .json(&json!({"token": RUNNER_TOKEN, "last_update": last, "info": common::info(&[])}))
            .send()
    };
    // Held, then released by a new job.
    gl.set_long_poll(Duration::from_secs(30));
    let held = tokio::spawn(poll(last.clone()));
    gl.wait_arrivals(Endpoint::RequestJob, 1, WAIT).await?;
    let id = gl.enqueue_job(JobSpec::new("acme/nogit"));
    let r = held.await??;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await?["id"], json!(id));
    // Held until the long-poll duration expires.
    gl.set_long_poll(Duration::from_millis(300));
    let last = gl.queue_value();
    let r = poll(last.clone()).await?;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "x-gitlab-last-update"), Some(last));
    assert!(gl.requests_to(Endpoint::RequestJob)[1].elapsed >= Duration::from_millis(300));

    // Tags: a tagged job goes only to a runner covering its tags.
    gl.set_long_poll(Duration::ZERO);
    let tagged = gl.enqueue_job(JobSpec::new("acme/nogit").tags(&["docker"]));
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 204);
    let other = gl.add_runner("glrt-docker-runner-000000000");
    gl.update_runner(other, |r| {
        r.tag_list = vec!["docker".into(), "linux".into()]
    });
    let r = request_job(&c, &gl, "glrt-docker-runner-000000000", &[]).await;
    assert_eq!(r.json::<Value>().await?["id"], json!(tagged));
    assert_eq!(gl.job(tagged).runner_id, Some(other));

    // Missing runner features: the job is dropped with runner_unsupported.
    let report = gl.enqueue_job(JobSpec::new("acme/nogit").artifacts(json!({
        "name": "junit.xml", "paths": ["report.xml"], "when": "always",
        "artifact_type": "junit", "artifact_format": "gzip",
    })));
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 204);
    let snap = gl.job(report);
    assert_eq!(
        (snap.state, snap.failure_reason.as_deref()),
        (JobState::Failed, Some("runner_unsupported"))
    );

    // Paused runners get nothing.
    let runner = gl.runners()[0].id;
    gl.update_runner(runner, |r| r.paused = true);
    gl.enqueue_job(JobSpec::new("acme/nogit"));
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 204);
    Ok(())
}

#[tokio::test]
async fn payload_mutation_and_raw_payload() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    gl.add_runner(RUNNER_TOKEN);
    let id = gl.enqueue_job(JobSpec::new("acme/nogit").mutate(|p| p["steps"] = Value::Null));
    let p = take_job(&c, &gl, &[]).await;
    assert!(p["steps"].is_null());
    // Without `two_phase_job_commit` the job runs as soon as it is handed out.
    assert_eq!(gl.job(id).state, JobState::Running);
    assert_eq!(gl.payload(id), Some(p));
    gl.enqueue_job(JobSpec::raw_payload(b"{\"id\": 1, \"token\": ".to_vec()));
    let r = request_job(&c, &gl, RUNNER_TOKEN, &[]).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.bytes().await?.as_ref(), b"{\"id\": 1, \"token\": ");
    Ok(())
}
