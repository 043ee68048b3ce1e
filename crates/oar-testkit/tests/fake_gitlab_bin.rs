//! The `fake-gitlab` binary: started as a real process, driven over HTTP through its `/_fake/`
//! admin API and the runner API, stopped with SIGTERM. No sleeps: the tests wait for the
//! printed lines and for HTTP answers.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const RUNNER_TOKEN: &str = "glrt-t1_binarytestrunner0001";
const WAIT: Duration = Duration::from_secs(30);

fn client(ca: Option<&Path>) -> anyhow::Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = Client::builder().no_proxy().timeout(WAIT);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem)?);
    }
    Ok(b.build()?)
}

/// A running `fake-gitlab serve` and the `key=value` lines it printed.
struct Server {
    child: Child,
    lines: HashMap<String, String>,
}

impl Server {
    /// Start the binary on a free port and wait for its ready line.
    async fn start(extra: &[&str]) -> anyhow::Result<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-gitlab"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("FAKE_GITLAB_ADDR")
            .env_remove("FAKE_GITLAB_STATE_DIR")
            .env_remove("FAKE_GITLAB_RUNNER_TOKEN")
            .env_remove("FAKE_GITLAB_REGISTRATION_TOKEN")
            .env_remove("FAKE_GITLAB_PUBLIC_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning fake-gitlab")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout).lines();
        let mut lines = HashMap::new();
        loop {
            let line = tokio::time::timeout(WAIT, reader.next_line())
                .await
                .context("no ready line in time")??;
            let Some(line) = line else {
                bail!("fake-gitlab exited before its ready line: {lines:?}");
            };
            if line.starts_with("Fake GitLab ready on ") {
                break;
            }
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("not a key=value line: {line:?}"))?;
            lines.insert(k.to_owned(), v.to_owned());
        }
        Ok(Server { child, lines })
    }

    fn line(&self, key: &str) -> &str {
        self.lines.get(key).map_or("", String::as_str)
    }

    /// `http://127.0.0.1:PORT/` + `path`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.line("url"))
    }

    /// SIGTERM, then the exit status must be 0.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        assert!(kill.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("fake-gitlab did not stop after SIGTERM")??;
        assert_eq!(status.code(), Some(0), "{status:?}");
        Ok(())
    }
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, body))
}

fn var<'a>(payload: &'a Value, key: &str) -> &'a Value {
    payload["variables"]
        .as_array()
        .and_then(|vs| vs.iter().rev().find(|v| v["key"] == key))
        .unwrap_or(&Value::Null)
}

fn runner_info() -> Value {
    json!({"name": "oar", "version": "0.1.0", "executor": "shell", "features": {"variables": true}})
}

#[tokio::test]
async fn job_round_trip_through_the_admin_and_runner_apis() -> anyhow::Result<()> {
    let srv = Server::start(&["--runner-token", RUNNER_TOKEN]).await?;
    let c = client(None)?;
    assert!(
        srv.line("url").starts_with("http://127.0.0.1:"),
        "{:?}",
        srv.lines
    );
    assert!(srv.line("url").ends_with('/'));
    assert_eq!(srv.line("admin_url"), srv.url("_fake/"));
    assert_eq!(srv.line("runner_token"), RUNNER_TOKEN);
    assert!(srv.line("registration_token").starts_with("GR1348941"));
    let state_dir = srv.line("state_dir").to_owned();
    assert!(Path::new(&state_dir).is_dir(), "{state_dir}");

    let (st, project) = send(c.post(srv.url("_fake/projects")).json(&json!({
        "path": "acme/widget", "files": {"README.md": "hello\n", "src/main.sh": "echo hi\n"},
    })))
    .await?;
    assert_eq!(st, 201, "{project}");
    let sha = project["sha"].as_str().unwrap_or_default().to_owned();
    assert_eq!(sha.len(), 40, "{project}");

    let (st, queued) = send(c.post(srv.url("_fake/jobs")).json(&json!({
        "project": "acme/widget", "name": "unit", "stage": "build",
        "script": ["cat README.md", "sh src/main.sh"], "before_script": ["echo before"],
        "variables": [
            {"key": "DEPLOY_TOKEN", "value": "s3cr3t-Value-9876", "masked": true},
            {"key": "KUBECONFIG", "value": "apiVersion: v1\n", "file": true},
            {"key": "PLAIN", "value": "x"},
        ],
        "image": {"name": "alpine:3.20", "entrypoint": [""]},
        "services": ["postgres:16"],
        "artifacts": [{"name": "out", "paths": ["out/"], "when": "on_success",
                       "artifact_type": "archive", "artifact_format": "zip"}],
        "timeout": 600,
    })))
    .await?;
    assert_eq!(st, 201, "{queued}");
    let id = queued["id"].as_i64().context("id")?;

    // The runner's side: the real runner API with the printed token.
    let (st, p) = send(c.post(srv.url("api/v4/jobs/request")).json(&json!({
        "token": RUNNER_TOKEN, "system_id": "s_0123456789ab", "info": runner_info(),
    })))
    .await?;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["id"], json!(id));
    let token = p["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(token, queued["token"].as_str().unwrap_or_default());
    assert_eq!(p["git_info"]["sha"], json!(sha));
    assert_eq!(p["job_info"]["name"], json!("unit"));
    assert_eq!(p["runner_info"]["timeout"], json!(600));
    assert_eq!(
        p["steps"][0]["script"],
        json!(["echo before", "cat README.md", "sh src/main.sh"])
    );
    assert_eq!(
        p["image"],
        json!({"name": "alpine:3.20", "entrypoint": [""]})
    );
    assert_eq!(p["services"][0]["name"], json!("postgres:16"));
    assert_eq!(p["artifacts"][0]["paths"], json!(["out/"]));
    let deploy = var(&p, "DEPLOY_TOKEN");
    assert_eq!(
        (&deploy["value"], &deploy["masked"], &deploy["file"]),
        (&json!("s3cr3t-Value-9876"), &json!(true), &json!(false))
    );
    let kube = var(&p, "KUBECONFIG");
    assert_eq!(
        (&kube["file"], &kube["masked"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(var(&p, "PLAIN")["public"], json!(true));

    // Trace, then the final update with checksum and size.
    let trace = b"$ cat README.md\nhello\n";
    let resp = c
        .patch(srv.url(&format!("api/v4/jobs/{id}/trace")))
        .header("JOB-TOKEN", &token)
        .header("Content-Type", "text/plain")
        .header("Content-Range", format!("0-{}", trace.len() - 1))
        .body(trace.to_vec())
        .send()
        .await?;
    assert_eq!(resp.status(), 202);
    let sum = format!("crc32:{:08x}", crc32fast::hash(trace));
    let (st, _) = send(
        c.put(srv.url(&format!("api/v4/jobs/{id}")))
            .header("JOB-TOKEN", &token)
            .json(&json!({"token": token, "state": "success", "exit_code": 0,
                          "checksum": sum, "output": {"checksum": sum, "bytesize": trace.len()}})),
    )
    .await?;
    assert_eq!(st, 200);

    let (st, job) = send(c.get(srv.url(&format!("_fake/jobs/{id}")))).await?;
    assert_eq!(st, 200, "{job}");
    assert_eq!(job["state"], json!("success"));
    assert_eq!(job["trace"], json!("$ cat README.md\nhello\n"));
    assert_eq!(job["trace_bytes"], json!(trace.len()));
    assert_eq!(job["checksum"], json!(sum));
    assert_eq!(job["checksum_matches"], json!(true));
    assert_eq!(job["finished"], json!(true));
    assert_eq!(job["ref"], json!("main"));
    assert_eq!(job["payload"]["id"], json!(id));
    let (st, waited) = send(c.get(srv.url(&format!("_fake/jobs/{id}/wait?timeout=5")))).await?;
    assert_eq!((st, &waited["state"]), (StatusCode::OK, &json!("success")));

    // The runner manager the request came from, and the recorded GitLab requests (admin calls
    // are not recorded).
    let (_, runners) = send(c.get(srv.url("_fake/runners"))).await?;
    assert_eq!(runners[0]["token"], json!(RUNNER_TOKEN));
    assert_eq!(runners[0]["system_ids"], json!(["s_0123456789ab"]));
    assert_eq!(runners[0]["deleted"], json!(false));
    let (_, requests) = send(c.get(srv.url("_fake/requests"))).await?;
    let requests = requests.as_array().cloned().unwrap_or_default();
    let summary: Vec<(Value, Value, Value)> = requests
        .iter()
        .map(|r| {
            (
                r["method"].clone(),
                r["endpoint"].clone(),
                r["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("POST"), json!("request_job"), json!(201)),
            (json!("PATCH"), json!("patch_trace"), json!(202)),
            (json!("PUT"), json!("update_job"), json!(200)),
        ]
    );

    // Cancel a pending job.
    let (_, second) = send(
        c.post(srv.url("_fake/jobs"))
            .json(&json!({"project": "acme/widget"})),
    )
    .await?;
    let second = second["id"].as_i64().context("id")?;
    let (st, canceled) = send(c.post(srv.url(&format!("_fake/jobs/{second}/cancel")))).await?;
    assert_eq!(
        (st, &canceled["state"]),
        (StatusCode::OK, &json!("canceled"))
    );
    let (_, list) = send(c.get(srv.url("_fake/jobs"))).await?;
    let states: Vec<(Value, Value)> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|j| (j["id"].clone(), j["state"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        states,
        [
            (json!(id), json!("success")),
            (json!(second), json!("canceled"))
        ]
    );
    let (st, _) = send(
        c.post(srv.url("api/v4/jobs/request"))
            .json(&json!({"token": RUNNER_TOKEN})),
    )
    .await?;
    assert_eq!(st, 204);

    srv.stop().await?;
    assert!(
        !Path::new(&state_dir).exists(),
        "temp state dir left behind"
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field() -> anyhow::Result<()> {
    let srv = Server::start(&[]).await?;
    let c = client(None)?;
    let post_job = |body: &str| {
        c.post(srv.url("_fake/jobs"))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    for (body, needle) in [
        (
            r#"{"project": "acme/x", "scirpt": ["true"]}"#,
            "unknown field `scirpt`",
        ),
        (
            r#"{"project": "acme/x", "timeout": "soon"}"#,
            "timeout: invalid type",
        ),
        (
            r#"{"project": "acme/x", "script": "true"}"#,
            "script: invalid type",
        ),
        (
            r#"{"project": "acme/x", "variables": [{"key": "A", "value": "b", "masked": "yes"}]}"#,
            "variables[0].masked: invalid type",
        ),
        (
            r#"{"project": "acme/x", "variables": [{"key": "A", "value": "b", "secret": true}]}"#,
            "unknown field `secret`",
        ),
        (
            r#"{"project": "acme/x", "variables": [{"key": "A-B", "value": "b"}]}"#,
            "variables[0].key",
        ),
        (
            r#"{"project": "acme/x", "image": 5}"#,
            "image: expected an image name",
        ),
        (
            r#"{"project": "acme/x", "services": [{"alias": "db"}]}"#,
            "services[0].name",
        ),
        (
            r#"{"project": "acme/x", "dependencies": [4242]}"#,
            "dependencies: no job 4242",
        ),
        (r#"{"project": "nonamespace"}"#, "project:"),
        (r#"{"name": "x"}"#, "missing field `project`"),
        (r#"{"project": "acme/x""#, "invalid JSON body"),
        ("[]", "the body must be a JSON object"),
    ] {
        let (st, err) = send(post_job(body)).await?;
        assert_eq!(st, 400, "{body} → {err}");
        let msg = err["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
    }

    let cases = [
        (
            c.post(srv.url("_fake/projects"))
                .json(&json!({"path": "acme/w", "files": {"../x": "y"}})),
            400,
            "files:",
        ),
        (
            c.post(srv.url("_fake/projects"))
                .json(&json!({"path": "acme/w", "files": {"a": 1}})),
            400,
            "files.a: invalid type",
        ),
        (
            c.post(srv.url("_fake/projects"))
                .json(&json!({"path": "_fake/w"})),
            400,
            "path: the _fake namespace",
        ),
        (
            c.post(srv.url("_fake/projects/acme/none/commits"))
                .json(&json!({})),
            404,
            "no project acme/none",
        ),
        (c.get(srv.url("_fake/jobs/abc")), 400, "id:"),
        (c.get(srv.url("_fake/jobs/77")), 404, "no job 77"),
        (c.post(srv.url("_fake/jobs/77/cancel")), 404, "no job 77"),
        (
            c.get(srv.url("_fake/jobs/77/wait?timeout=x")),
            400,
            "timeout:",
        ),
        (
            c.get(srv.url("_fake/jobs/77/wait?after=1")),
            400,
            "after: unknown query parameter",
        ),
        (
            c.post(srv.url("_fake/faults"))
                .json(&json!({"kind": "status", "endpoint": "nowhere", "status": 500})),
            400,
            "endpoint: unknown variant `nowhere`",
        ),
        (
            c.post(srv.url("_fake/faults"))
                .json(&json!({"kind": "status", "endpoint": "git", "status": 1000})),
            400,
            "status:",
        ),
        (
            c.post(srv.url("_fake/runners")).json(&json!({"token": ""})),
            400,
            "token:",
        ),
        (
            c.post(srv.url("_fake/runners"))
                .json(&json!({"tags": ["a"]})),
            400,
            "unknown field `tags`",
        ),
        (
            c.get(srv.url("_fake/requests?endpoint=nowhere")),
            400,
            "endpoint:",
        ),
        (
            c.put(srv.url("_fake/settings"))
                .json(&json!({"long_poll": 5})),
            400,
            "unknown field `long_poll`",
        ),
        (c.get(srv.url("_fake/nothing-here")), 404, "no admin route"),
        (c.delete(srv.url("_fake/jobs")), 405, "does not take DELETE"),
    ];
    for (req, status, needle) in cases {
        let (st, err) = send(req).await?;
        let msg = err["error"].as_str().unwrap_or_default();
        assert_eq!(st.as_u16(), status, "{needle}: {err}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }

    // A fault injected as JSON hits the runner API, and is used up.
    let (st, pending) = send(c.post(srv.url("_fake/faults")).json(&json!({
        "kind": "status", "endpoint": "request_job", "status": 503,
    })))
    .await?;
    assert_eq!(st, 201);
    assert_eq!(
        pending,
        json!([{"kind": "status", "endpoint": "request_job", "status": 503, "times": 1}])
    );
    let token = srv.line("runner_token").to_owned();
    let request = || {
        c.post(srv.url("api/v4/jobs/request"))
            .json(&json!({"token": token}))
    };
    assert_eq!(send(request()).await?.0, 503);
    assert_eq!(send(request()).await?.0, 204);
    let (_, requests) = send(c.get(srv.url("_fake/requests?endpoint=request_job"))).await?;
    assert_eq!(requests[0]["faulted"], json!(true));
    assert_eq!(requests[1]["status"], json!(204));
    srv.stop().await
}

fn git_rev_parse(git_dir: &Path, rev: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["rev-parse", rev])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    assert!(out.status.success(), "{out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn state_dir_keeps_the_repository() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let state_arg = state.to_string_lossy().into_owned();
    let c = client(None)?;

    let srv = Server::start(&["--state-dir", &state_arg, "--runner-token", RUNNER_TOKEN]).await?;
    assert_eq!(Path::new(srv.line("state_dir")), state);
    let (st, created) = send(c.post(srv.url("_fake/projects")).json(&json!({
        "path": "acme/widget", "files": {"README.md": "hello\n"},
    })))
    .await?;
    assert_eq!(st, 201, "{created}");
    let (st, committed) = send(
        c.post(srv.url("_fake/projects/acme/widget/commits"))
            .json(&json!({"files": {"CHANGELOG.md": "v2\n"}})),
    )
    .await?;
    assert_eq!(st, 201, "{committed}");
    let sha = committed["sha"].as_str().unwrap_or_default().to_owned();
    assert_ne!(json!(sha), created["sha"]);
    srv.stop().await?;

    let bare = state.join("repos/acme/widget.git");
    assert_eq!(git_rev_parse(&bare, "refs/heads/main")?, sha);

    // A second server on the same directory serves the repository again.
    let srv = Server::start(&["--state-dir", &state_arg, "--runner-token", RUNNER_TOKEN]).await?;
    let (st, again) = send(
        c.post(srv.url("_fake/projects"))
            .json(&json!({"path": "acme/widget"})),
    )
    .await?;
    assert_eq!(st, 409, "{again}");
    let (st, _) = send(
        c.post(srv.url("_fake/jobs"))
            .json(&json!({"project": "acme/widget"})),
    )
    .await?;
    assert_eq!(st, 201);
    let (st, p) = send(
        c.post(srv.url("api/v4/jobs/request"))
            .json(&json!({"token": RUNNER_TOKEN})),
    )
    .await?;
    assert_eq!(st, 201, "{p}");
    assert_eq!(p["git_info"]["sha"], json!(sha));
    srv.stop().await?;
    assert!(bare.join("HEAD").is_file());
    Ok(())
}

#[tokio::test]
async fn tls_prints_the_ca_and_serves_https() -> anyhow::Result<()> {
    let srv = Server::start(&["--tls"]).await?;
    assert!(
        srv.line("url").starts_with("https://127.0.0.1:"),
        "{:?}",
        srv.lines
    );
    let ca = Path::new(srv.line("ca_file")).to_owned();
    assert!(ca.starts_with(srv.line("state_dir")), "{}", ca.display());
    let c = client(Some(&ca))?;
    let (st, runners) = send(c.get(srv.url("_fake/runners"))).await?;
    assert_eq!(st, 200);
    let token = runners[0]["token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(token, srv.line("runner_token"));
    assert!(token.starts_with("glrt-"));
    let (st, verified) = send(c.post(srv.url("api/v4/runners/verify")).json(&json!({
        "token": token, "system_id": "s_abcdefabcdef",
    })))
    .await?;
    assert_eq!(st, 200, "{verified}");
    let (_, runners) = send(c.get(srv.url("_fake/runners"))).await?;
    assert_eq!(runners[0]["system_ids"], json!(["s_abcdefabcdef"]));
    srv.stop().await
}
