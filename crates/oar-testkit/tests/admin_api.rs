//! The `/_fake/` admin API on an in-process FakeGitlab (the same router the `fake-gitlab`
//! binary serves): off by default, unrecorded, and backed by the handle's own state.

mod common;

use common::{client, running_job};
use oar_testkit::{FakeGitlab, Fault, StartOptions};
use serde_json::{Value, json};

async fn admin_gitlab() -> anyhow::Result<FakeGitlab> {
    FakeGitlab::start_with(StartOptions {
        admin_api: true,
        ..StartOptions::default()
    })
    .await
}

#[tokio::test]
async fn off_by_default() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let resp = client()
        .get(format!("{}/_fake/jobs", gl.url()))
        .send()
        .await?;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await?;
    assert_eq!(body, json!({"message": "404 Not Found"}));
    assert_eq!(gl.requests().len(), 1, "an ordinary (recorded) request");
    Ok(())
}

#[tokio::test]
async fn runners_managers_and_registration_tokens() -> anyhow::Result<()> {
    let gl = admin_gitlab().await?;
    let c = client();
    let url = |p: &str| format!("{}/{p}", gl.url());

    let created: Value = c
        .post(url("_fake/runners"))
        .json(&json!({"tag_list": ["linux"], "run_untagged": false, "maximum_timeout": 3600}))
        .send()
        .await?
        .json()
        .await?;
    let token = created["token"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("glrt-"), "{created}");
    let id = created["id"].as_i64().unwrap_or_default();
    let runner = gl.runner(id).expect("runner in the handle's state");
    assert_eq!(runner.tag_list, ["linux"]);
    assert_eq!(
        (runner.run_untagged, runner.maximum_timeout),
        (false, Some(3600))
    );
    let dup = c
        .post(url("_fake/runners"))
        .json(&json!({"token": token}))
        .send()
        .await?;
    assert_eq!(dup.status(), 409);

    // Two runner managers: one from verify, one from jobs/request; unregistering one leaves
    // the other.
    let verify = c
        .post(url("api/v4/runners/verify"))
        .json(&json!({"token": token, "system_id": "s_000000000001"}))
        .send()
        .await?;
    assert_eq!(verify.status(), 200);
    let request = c
        .post(url("api/v4/jobs/request"))
        .json(&json!({"token": token, "system_id": "r_AbCdEfGhIjKl"}))
        .send()
        .await?;
    assert_eq!(request.status(), 204);
    let managers = |v: &Value| v[0]["system_ids"].clone();
    let listed: Value = c.get(url("_fake/runners")).send().await?.json().await?;
    assert_eq!(
        managers(&listed),
        json!(["s_000000000001", "r_AbCdEfGhIjKl"])
    );
    let removed = c
        .delete(url("api/v4/runners/managers"))
        .json(&json!({"token": token, "system_id": "s_000000000001"}))
        .send()
        .await?;
    assert_eq!(removed.status(), 204);
    let listed: Value = c.get(url("_fake/runners")).send().await?.json().await?;
    assert_eq!(managers(&listed), json!(["r_AbCdEfGhIjKl"]));
    assert_eq!(gl.runners()[0].system_ids, ["r_AbCdEfGhIjKl"]);
    let gone = c
        .delete(url("api/v4/runners"))
        .json(&json!({"token": token}))
        .send()
        .await?;
    assert_eq!(gone.status(), 204);
    let listed: Value = c.get(url("_fake/runners")).send().await?.json().await?;
    assert_eq!(listed[0]["deleted"], json!(true));

    // Registration tokens (random and given), with token expiry from the settings.
    let settings = c
        .put(url("_fake/settings"))
        .json(&json!({"token_expiry_secs": 3600}))
        .send()
        .await?;
    assert_eq!(settings.status(), 200);
    let reg: Value = c
        .post(url("_fake/registration-tokens"))
        .send()
        .await?
        .json()
        .await?;
    let reg = reg["token"].as_str().unwrap_or_default().to_owned();
    assert!(reg.starts_with("GR1348941"), "{reg}");
    let registered = c
        .post(url("api/v4/runners"))
        .json(&json!({"token": reg, "description": "from a script"}))
        .send()
        .await?;
    assert_eq!(registered.status(), 201);
    let details: Value = registered.json().await?;
    assert!(details["token_expires_at"].is_string(), "{details}");

    // Admin calls are not recorded; GitLab calls are.
    let paths: Vec<String> = gl.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v4/runners/verify",
            "/api/v4/jobs/request",
            "/api/v4/runners/managers",
            "/api/v4/runners",
            "/api/v4/runners",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn faults_and_artifacts_share_the_handle_state() -> anyhow::Result<()> {
    let gl = admin_gitlab().await?;
    let c = client();
    let url = |p: &str| format!("{}/{p}", gl.url());

    // A fault injected in Rust shows up in JSON, and one injected as JSON in Rust.
    gl.inject(Fault::Delay {
        endpoint: oar_testkit::Endpoint::Git,
        by: std::time::Duration::from_millis(1500),
        times: 2,
    });
    let resp = c
        .post(url("_fake/faults"))
        .json(&json!({"kind": "trace416", "job": 5}))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let pending: Value = c.get(url("_fake/faults")).send().await?.json().await?;
    assert_eq!(
        pending,
        json!([
            {"kind": "delay", "endpoint": "git", "by_ms": 1500, "times": 2},
            {"kind": "trace416", "job": 5, "times": 1},
        ])
    );
    assert_eq!(gl.pending_faults()[1], Fault::Trace416 { job: 5, times: 1 });

    // An uploaded artifact: in the job, on disk under the state dir, and over the admin API.
    let (id, token) = running_job(&c, &gl, &[]).await;
    let part = reqwest::multipart::Part::bytes(b"PK\x05\x06zip".to_vec()).file_name("../out.zip");
    let up = c
        .post(url(&format!("api/v4/jobs/{id}/artifacts")))
        .header("JOB-TOKEN", &token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await?;
    assert_eq!(up.status(), 201);
    let on_disk = gl
        .state_dir()
        .join(format!("artifacts/{id}/archive/out.zip"));
    assert_eq!(std::fs::read(&on_disk)?, b"PK\x05\x06zip");
    let got = c
        .get(url(&format!("_fake/jobs/{id}/artifacts/archive")))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await?.as_ref(), b"PK\x05\x06zip");
    let job: Value = c
        .get(url(&format!("_fake/jobs/{id}")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(job["artifacts"][0]["size"], json!(7));
    assert_eq!(job["state"], json!("running"));
    let missing = c
        .get(url(&format!("_fake/jobs/{id}/artifacts/junit")))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}
