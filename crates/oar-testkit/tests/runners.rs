//! Registration, verify, token reset and unregistration (reference §1).

mod common;

use common::{client, header, info, request_job};
use oar_testkit::{Endpoint, FakeGitlab};
use serde_json::{Value, json};

#[tokio::test]
async fn legacy_registration_verify_reset_and_unregister() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    gl.add_registration_token("GR1348941regtoken");
    let url = |p: &str| format!("{}/api/v4/{p}", gl.url());

    let bad = c
        .post(url("runners"))
        .json(&json!({"token": "nope"}))
        .send()
        .await?;
    assert_eq!(bad.status(), 403);
    let missing = c
        .post(url("runners"))
        .json(&json!({"description": "x"}))
        .send()
        .await?;
    assert_eq!(missing.status(), 400);
    let broken = c.post(url("runners")).body("{not json").send().await?;
    assert_eq!(broken.status(), 400);

    let resp = c
        .post(url("runners"))
        .json(&json!({
            "token": "GR1348941regtoken", "description": "oar-01", "tag_list": "linux, rust",
            "run_untagged": false, "locked": true, "access_level": "ref_protected",
            "paused": false, "maximum_timeout": 3600, "info": info(&["variables"]),
        }))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    let reg: Value = resp.json().await?;
    let token = reg["token"].as_str().unwrap_or_default().to_owned();
    // Only runners created in GitLab get `glrt-` tokens; a registered one gets a bare token.
    assert!(!token.starts_with("glrt-") && token.len() >= 24, "{token}");
    assert!(reg["token_expires_at"].is_null());
    let runner = &gl.runners()[0];
    assert_eq!(runner.id, reg["id"].as_i64().unwrap_or_default());
    assert_eq!(runner.tag_list, ["linux", "rust"]);
    assert_eq!((runner.run_untagged, runner.locked), (false, true));
    assert_eq!(runner.access_level, "ref_protected");
    assert_eq!(runner.maximum_timeout, Some(3600));
    assert!(runner.feature("variables"));

    // verify: token in the body, or only in the RUNNER-TOKEN header.
    let v = c
        .post(url("runners/verify"))
        .json(&json!({"token": token, "system_id": "s_0123456789ab", "info": info(&["cancel_gracefully"])}))
        .send()
        .await?;
    assert_eq!(v.status(), 200);
    let body: Value = v.json().await?;
    assert_eq!(body["token"], json!(token));
    let v = c
        .post(url("runners/verify"))
        .header("RUNNER-TOKEN", &token)
        .json(&json!({"system_id": "r_AbCdEfGhIjKl"}))
        .send()
        .await?;
    assert_eq!(v.status(), 200);
    let runner = &gl.runners()[0];
    assert_eq!(runner.system_ids, ["s_0123456789ab", "r_AbCdEfGhIjKl"]);
    assert!(runner.feature("cancel_gracefully"));
    let v = c
        .post(url("runners/verify"))
        .json(&json!({"token": "glrt-unknown"}))
        .send()
        .await?;
    assert_eq!(v.status(), 403);

    // Token reset: the old token stops working.
    let r = c
        .post(url("runners/reset_authentication_token"))
        .json(&json!({"token": token}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let new_token = r.json::<Value>().await?["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(new_token, token);
    let old = c
        .post(url("runners/verify"))
        .json(&json!({"token": token}))
        .send()
        .await?;
    assert_eq!(old.status(), 403);

    // Runner managers.
    let del = |sys: &str| {
        c.delete(url("runners/managers"))
            .json(&json!({"token": new_token, "system_id": sys}))
            .send()
    };
    assert_eq!(del("s_ffffffffffff").await?.status(), 404);
    assert_eq!(del("s_0123456789ab").await?.status(), 204);
    assert_eq!(gl.runners()[0].system_ids, ["r_AbCdEfGhIjKl"]);

    // Unregister: 204, then every runner-token call is 403.
    let d = c
        .delete(url("runners"))
        .json(&json!({"token": new_token}))
        .send()
        .await?;
    assert_eq!(d.status(), 204);
    let d = c
        .delete(url("runners"))
        .json(&json!({"token": new_token}))
        .send()
        .await?;
    assert_eq!(d.status(), 403);
    assert!(gl.runners()[0].deleted);
    assert_eq!(request_job(&c, &gl, &new_token, &[]).await.status(), 403);
    assert_eq!(gl.requests_to(Endpoint::RegisterRunner).len(), 4);
    assert!(gl.requests().iter().all(|r| r.status.is_some()));
    Ok(())
}

#[tokio::test]
async fn registration_validates_parameters() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    let c = client();
    gl.add_registration_token("GR1348941regtoken");
    gl.set_token_expiry(Some(std::time::Duration::from_secs(3600)));
    let post = |body: Value| {
        c.post(format!("{}/api/v4/runners", gl.url()))
            .json(&body)
            .send()
    };
    let base = |extra: Value| {
        let mut b = json!({"token": "GR1348941regtoken"});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        b
    };
    for bad in [
        json!({"access_level": "everything"}),
        json!({"paused": true, "active": true}),
        json!({"maximum_timeout": 10}),
        json!({"run_untagged": "maybe"}),
        json!({"tag_list": 7}),
    ] {
        assert_eq!(post(base(bad.clone())).await?.status(), 400, "{bad}");
    }
    let ok: Value = post(base(json!({"tag_list": ["a", "b"], "active": false})))
        .await?
        .json()
        .await?;
    assert!(
        ok["token_expires_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    let runner = &gl.runners()[0];
    assert!(runner.paused);
    assert_eq!(runner.tag_list, ["a", "b"]);
    Ok(())
}
