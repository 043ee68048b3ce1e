//! Helpers shared by the integration tests: a plain HTTP client playing the runner.

#![allow(dead_code)]

use std::time::Duration;

use oar_testkit::FakeGitlab;
use reqwest::{Client, Response};
use serde_json::{Value, json};

pub const RUNNER_TOKEN: &str = "glrt-t1_abcdefghijklmnopqrst";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// The `info` object a shell runner sends, with the given features on.
pub fn info(features: &[&str]) -> Value {
    let mut f = serde_json::Map::new();
    for name in features {
        f.insert((*name).to_owned(), Value::Bool(true));
    }
    json!({
        "name": "oar", "version": "0.1.0", "revision": "deadbeef", "platform": "linux",
        "architecture": "amd64", "executor": "shell", "shell": "bash", "features": f,
    })
}

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /api/v4/jobs/request`.
pub async fn request_job(c: &Client, gl: &FakeGitlab, token: &str, features: &[&str]) -> Response {
    c.post(format!("{}/api/v4/jobs/request", gl.url()))
        .header("RUNNER-TOKEN", token)
        .json(&json!({"token": token, "system_id": "s_0123456789ab", "info": info(features)}))
        .send()
        .await
        .expect("request job")
}

/// Request a job that must be there; returns the payload.
pub async fn take_job(c: &Client, gl: &FakeGitlab, features: &[&str]) -> Value {
    let resp = request_job(c, gl, RUNNER_TOKEN, features).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    resp.json().await.expect("payload")
}

/// `PUT /api/v4/jobs/:id`.
pub async fn put(c: &Client, gl: &FakeGitlab, id: i64, token: &str, body: Value) -> Response {
    let mut body = body;
    body["token"] = Value::String(token.to_owned());
    c.put(format!("{}/api/v4/jobs/{id}", gl.url()))
        .header("JOB-TOKEN", token)
        .json(&body)
        .send()
        .await
        .expect("put")
}

/// `PATCH /api/v4/jobs/:id/trace` at `start`.
pub async fn patch(
    c: &Client,
    gl: &FakeGitlab,
    id: i64,
    token: &str,
    start: usize,
    data: &[u8],
) -> Response {
    let end = start + data.len() - 1;
    c.patch(format!("{}/api/v4/jobs/{id}/trace", gl.url()))
        .header("JOB-TOKEN", token)
        .header("Content-Type", "text/plain")
        .header("Content-Range", format!("{start}-{end}"))
        .body(data.to_vec())
        .send()
        .await
        .expect("patch")
}

/// The final update the official runner sends for `trace`.
pub fn final_body(state: &str, trace: &[u8]) -> Value {
    let sum = format!("crc32:{:08x}", crc32fast::hash(trace));
    let mut body = json!({
        "state": state, "checksum": sum,
        "output": {"checksum": sum, "bytesize": trace.len()},
    });
    if state == "failed" {
        body["failure_reason"] = json!("script_failure");
        body["exit_code"] = json!(2);
    }
    body
}

/// A fake with a runner and a started (acknowledged) git-less job; returns (id, token).
pub async fn running_job(c: &Client, gl: &FakeGitlab, features: &[&str]) -> (i64, String) {
    if !gl.runners().iter().any(|r| r.token == RUNNER_TOKEN) {
        gl.add_runner(RUNNER_TOKEN);
    }
    let spec = oar_testkit::JobSpec::new("acme/nogit")
        .variable("GIT_STRATEGY", "none")
        .script(["echo hi"]);
    let id = gl.enqueue_job(spec);
    let payload = take_job(c, gl, features).await;
    let token = payload["token"].as_str().expect("token").to_owned();
    let resp = put(c, gl, id, &token, json!({"state": "running"})).await;
    assert_eq!(resp.status(), 200);
    (id, token)
}
