//! Fault injection and artifacts (reference §0 retries, §5).

mod common;

use std::time::Duration;

use common::{RUNNER_TOKEN, client, header, patch, request_job, running_job, take_job};
use oar_testkit::{Endpoint, FakeGitlab, Fault, JobSpec};
use serde_json::json;

#[tokio::test]
async fn status_reset_delay_and_trace416_faults() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    gl.add_runner(RUNNER_TOKEN);
    gl.inject(Fault::Status {
        endpoint: Endpoint::RequestJob,
        status: 502,
        times: 2,
    });
    gl.inject(Fault::Reset {
        endpoint: Endpoint::RequestJob,
        times: 1,
    });
    gl.inject(Fault::RateLimited {
        endpoint: Endpoint::RequestJob,
        retry_after: 9,
        times: 1,
    });
    gl.inject(Fault::Delay {
        endpoint: Endpoint::RequestJob,
        by: Duration::from_millis(200),
        times: 1,
    });

    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 502);
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 502);
    // Reset: the client sees a transport error, not a response.
    let reset = c
        .post(format!("{}/api/v4/jobs/request", gl.url()))
        .json(&json!({"token": RUNNER_TOKEN}))
        .send()
        .await;
    let err = reset.expect_err("connection must be reset");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut reset_seen = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            reset_seen |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = e.source();
    }
    assert!(reset_seen, "expected ECONNRESET: {err:?}");
    let r = request_job(&c, &gl, RUNNER_TOKEN, &[]).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "retry-after")),
        (429, Some("9".into()))
    );
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 204);
    assert_eq!(request_job(&c, &gl, RUNNER_TOKEN, &[]).await.status(), 204);
    assert!(gl.pending_faults().is_empty());

    let reqs = gl.requests_to(Endpoint::RequestJob);
    let statuses: Vec<Option<u16>> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(502), Some(502), None, Some(429), Some(204), Some(204)]
    );
    assert!(reqs[2].reset && reqs[2].faulted);
    assert!(reqs[4].faulted && reqs[4].elapsed >= Duration::from_millis(200));
    assert!(!reqs[5].faulted);

    // Trace416: 416 with the true range although the offset is right.
    let (id, token) = running_job(&c, &gl, &[]).await;
    assert_eq!(patch(&c, &gl, id, &token, 0, b"abc").await.status(), 202);
    gl.inject(Fault::Trace416 { job: id, times: 1 });
    let r = patch(&c, &gl, id, &token, 3, b"def").await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "range")),
        (416, Some("0-3".into()))
    );
    assert_eq!(patch(&c, &gl, id, &token, 3, b"def").await.status(), 202);
    assert_eq!(gl.job(id).trace, b"abcdef");
    Ok(())
}

#[tokio::test]
async fn artifacts_upload_and_download() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    let (id, token) = running_job(&c, &gl, &[]).await;
    let upload = |tok: &str, ty: &str| {
        let part = reqwest::multipart::Part::bytes(b"PK\x05\x06zip-bytes".to_vec())
            .file_name("widget-5f2c1d0e.zip")
            .mime_str("application/octet-stream")
            .expect("mime");
        c.post(format!(
            "{}/api/v4/jobs/{id}/artifacts?artifact_format=zip&artifact_type={ty}&expire_in=1+week",
            gl.url()
        ))
        .header("JOB-TOKEN", tok)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
    };
    assert_eq!(upload("glcbt-wrong", "archive").await?.status(), 403);
    assert_eq!(upload(&token, "nonsense").await?.status(), 400);
    let r = upload(&token, "archive").await?;
    assert_eq!(r.status(), 201);
    assert_eq!(upload(&token, "archive").await?.status(), 400);
    let stored = &gl.job(id).artifacts[0];
    assert_eq!(stored.filename, "widget-5f2c1d0e.zip");
    assert_eq!(stored.expire_in.as_deref(), Some("1 week"));
    assert_eq!(stored.data, b"PK\x05\x06zip-bytes");
    let no_file = c
        .post(format!("{}/api/v4/jobs/{id}/artifacts", gl.url()))
        .header("JOB-TOKEN", &token)
        .multipart(reqwest::multipart::Form::new().text("artifact_type", "junit"))
        .send()
        .await?;
    assert_eq!(no_file.status(), 400);

    // A dependent job downloads with its own (running) token.
    let dep = gl.seed_artifact_job("acme/nogit", "build", "artifacts.zip", b"PKzip".to_vec());
    let next = gl.enqueue_job(JobSpec::new("acme/nogit").dependencies(&[dep, id]));
    let p = take_job(&c, &gl, &[]).await;
    assert_eq!(p["id"], json!(next));
    let deps = p["dependencies"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        deps[0]["artifacts_file"],
        json!({"filename": "artifacts.zip", "size": 5})
    );
    assert_eq!(deps[1]["name"], json!("test"));
    let dep_token = deps[0]["token"].as_str().unwrap_or_default().to_owned();
    let put = common::put(&c, &gl, next, &dep_token, json!({"state": "running"})).await;
    assert_eq!(put.status(), 200);
    let get = |job: i64, tok: &str| {
        c.get(format!(
            "{}/api/v4/jobs/{job}/artifacts?direct_download=true",
            gl.url()
        ))
        .header("JOB-TOKEN", tok)
        .send()
    };
    let r = get(dep, &dep_token).await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await?.as_ref(), b"PKzip");
    assert_eq!(get(dep, "glcbt-wrong").await?.status(), 403);
    let none = gl.enqueue_job(JobSpec::new("acme/nogit"));
    assert_eq!(get(none, &dep_token).await?.status(), 404);
    let anon = c
        .get(format!("{}/api/v4/jobs/{dep}/artifacts", gl.url()))
        .send()
        .await?;
    assert_eq!(anon.status(), 401);
    Ok(())
}
