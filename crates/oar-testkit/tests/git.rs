//! Git smart HTTP through `git http-backend`, with `gitlab-ci-token` basic auth.

mod common;

use std::path::Path;
use std::process::Output;

use common::{RUNNER_TOKEN, client, final_body, put, take_job};
use oar_testkit::{Endpoint, FakeGitlab, JobSpec};
use serde_json::{Value, json};

/// Run the real git CLI without prompts or user config (async: the server shares the runtime).
async fn git(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .expect("git runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Enqueue a job of `acme/widget`, take and acknowledge it; returns (id, payload).
async fn running(gl: &FakeGitlab, spec: JobSpec) -> (i64, Value) {
    let c = client();
    let id = gl.enqueue_job(spec);
    let p = take_job(&c, gl, &[]).await;
    let token = p["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        put(&c, gl, id, &token, json!({"state": "running"}))
            .await
            .status(),
        200
    );
    (id, p)
}

#[tokio::test]
async fn clone_and_fetch_with_job_token() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    gl.add_runner(RUNNER_TOKEN);
    gl.create_repo(
        "acme/widget",
        &[("README.md", "hello\n"), ("src/lib.rs", "// lib\n")],
    )?;
    let sha = gl.commit("acme/widget", &[("README.md", "hello again\n")])?;
    let (id, p) = running(&gl, JobSpec::new("acme/widget").depth(5)).await;
    let repo_url = p["git_info"]["repo_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = p["token"].as_str().unwrap_or_default().to_owned();
    let tmp = tempfile::tempdir()?;

    // git clone with the credentials embedded in repo_url.
    let out = git(tmp.path(), &["clone", "--quiet", &repo_url, "clone"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clone = tmp.path().join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md"))?,
        "hello again\n"
    );
    assert_eq!(stdout(&git(&clone, &["rev-parse", "HEAD"]).await), sha);

    // The runner's way: init, credential-free remote, fetch the payload's refspecs shallowly.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work)?;
    assert!(git(&work, &["init", "--quiet"]).await.status.success());
    let mut args = vec!["fetch", "--quiet", repo_url.as_str()];
    let refspecs: Vec<String> = p["git_info"]["refspecs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    args.extend(refspecs.iter().map(String::as_str));
    args.extend(["--depth", "5", "--prune"]);
    let out = git(&work, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pipeline = p["job_info"]["pipeline_id"].as_i64().unwrap_or_default();
    let pref = format!("refs/pipelines/{pipeline}");
    assert_eq!(stdout(&git(&work, &["rev-parse", &pref]).await), sha);
    assert_eq!(
        stdout(&git(&work, &["rev-parse", "refs/remotes/origin/main"]).await),
        sha
    );

    // Wrong token: 401 with the GitLab realm, and git fails without prompting.
    let bad_url = repo_url.replace(&token, "glcbt-wrong");
    let out = git(tmp.path(), &["clone", "--quiet", &bad_url, "bad"]).await;
    assert!(!out.status.success());
    let denied = gl
        .requests_to(Endpoint::Git)
        .into_iter()
        .find(|r| r.status == Some(401))
        .expect("a 401");
    assert!(denied.path.ends_with("/acme/widget.git/info/refs"));
    let c = client();
    let r = c
        .get(format!(
            "{}/acme/widget.git/info/refs?service=git-upload-pack",
            gl.url()
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"GitLab\"")
    );

    // Once the job is finished its token no longer opens the repository.
    assert_eq!(
        put(&c, &gl, id, &token, final_body("success", b""))
            .await
            .status(),
        200
    );
    let out = git(tmp.path(), &["clone", "--quiet", &repo_url, "late"]).await;
    assert!(!out.status.success());
    Ok(())
}

#[tokio::test]
async fn large_negotiation_uses_gzip_bodies() -> anyhow::Result<()> {
    let gl = FakeGitlab::start().await?;
    gl.add_runner(RUNNER_TOKEN);
    gl.create_repo("acme/many", &[("n", "0")])?;
    for i in 1..=40 {
        gl.commit("acme/many", &[("n", &i.to_string())])?;
        gl.create_tag("acme/many", &format!("v{i}"))?;
    }
    let (_, p) = running(&gl, JobSpec::new("acme/many").depth(0)).await;
    let repo_url = p["git_info"]["repo_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tmp = tempfile::tempdir()?;
    let out = git(
        tmp.path(),
        &["clone", "--quiet", "--no-checkout", &repo_url, "many"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tags = stdout(&git(&tmp.path().join("many"), &["tag", "--list"]).await);
    assert_eq!(tags.lines().count(), 40);
    let gzipped = gl
        .requests_to(Endpoint::Git)
        .into_iter()
        .filter(|r| r.header("content-encoding") == Some("gzip"))
        .collect::<Vec<_>>();
    assert!(!gzipped.is_empty(), "git sent no gzip body");
    assert!(gzipped.iter().all(|r| r.status == Some(200)));
    Ok(())
}
