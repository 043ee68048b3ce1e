//! Malformed requests get 4xx answers, never a crash or a 5xx.

mod common;

use common::{client, running_job};
use oar_testkit::FakeGitlab;
use reqwest::Method;

#[tokio::test]
async fn garbage_is_answered_with_4xx() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    let (id, token) = running_job(&c, &gl, &[]).await;
    let paths = [
        (Method::POST, "/api/v4/runners".to_owned()),
        (Method::POST, "/api/v4/runners/verify".to_owned()),
        (Method::DELETE, "/api/v4/runners".to_owned()),
        (Method::DELETE, "/api/v4/runners/managers".to_owned()),
        (
            Method::POST,
            "/api/v4/runners/reset_authentication_token".to_owned(),
        ),
        (Method::POST, "/api/v4/jobs/request".to_owned()),
        (Method::PUT, format!("/api/v4/jobs/{id}")),
        (Method::PUT, "/api/v4/jobs/99999999999999999999".to_owned()),
        (Method::PUT, "/api/v4/jobs/-1".to_owned()),
        (Method::PATCH, format!("/api/v4/jobs/{id}/trace")),
        (Method::PATCH, "/api/v4/jobs/abc/trace".to_owned()),
        (Method::POST, format!("/api/v4/jobs/{id}/artifacts")),
        (Method::GET, format!("/api/v4/jobs/{id}/artifacts")),
        (Method::GET, "/acme/../../etc.git/info/refs".to_owned()),
        (Method::POST, "/acme/nogit.git/git-receive-pack".to_owned()),
    ];
    let bodies: [&[u8]; 8] = [
        b"",
        b"null",
        b"[1,2]",
        b"{\"token\": 5, \"state\": []}",
        b"{\"token\": {}, \"info\": 3, \"tag_list\": [1]}",
        b"\xff\xfe\x00garbage",
        b"{\"token\": \"x\", \"exit_code\": 1e400, \"output\": \"no\"}",
        b"{\"token\": \"x\", \"state\": \"success\", \"output\": {\"bytesize\": -5}}",
    ];
    let ranges = ["", "18446744073709551615-0", "5", "a-b", "0-0"];
    for (method, path) in &paths {
        for body in bodies {
            for range in ranges {
                let mut req = c
                    .request(method.clone(), format!("{}{path}", gl.url()))
                    .header("JOB-TOKEN", &token)
                    .body(body.to_vec());
                if !range.is_empty() {
                    req = req
                        .header("Content-Range", range)
                        .header("Content-Type", "text/plain");
                }
                let status = req.send().await?.status();
                assert!(
                    status.is_client_error() || status.is_success(),
                    "{method} {path} {body:?} {range:?} -> {status}"
                );
            }
        }
    }
    let unanswered = gl.requests().iter().filter(|r| r.status.is_none()).count();
    assert_eq!(unanswered, 0);
    // Still serving.
    assert_eq!(gl.job(id).state, oar_testkit::JobState::Running);
    Ok(())
}
