//! End to end against FakeGitlab over HTTPS: `tls-ca-file` and client certificates
//! (`tls-cert-file`/`tls-key-file`) for the runner's API calls and for the jobs' git, and
//! `oar register`/`verify`/`unregister` with `--tls-ca-file`; API calls through an HTTP proxy.

mod common;

use common::{Fixture, RUNNER_TOKEN};
use oar_testkit::{Endpoint, JobSpec, JobState, TlsOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `oar run-single` for one job, giving up after `wait_timeout` seconds without one.
async fn run_single(f: &Fixture, wait_timeout: u32) -> (bool, String) {
    let out = f
        .oar()
        .arg("run-single")
        .arg("-c")
        .arg(f.config_path())
        .args(["--max-builds", "1", "--wait-timeout"])
        .arg(wait_timeout.to_string())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("run-single ends")
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Files named `CI_SERVER_TLS_*` anywhere under `dir`.
fn tls_files_left(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with("CI_SERVER_TLS_")
            {
                found.push(p);
            }
        }
    }
    found
}

/// A job script proving the TLS file variables hold the runner's files and that git's TLS
/// settings live outside the repository's config.
fn checks(ca: &Path, client: Option<(&Path, &Path)>) -> Vec<String> {
    let mut lines = vec![
        "cat README.md".to_string(),
        format!(
            "cmp \"$CI_SERVER_TLS_CA_FILE\" '{}' && echo ca-file-matches",
            ca.display()
        ),
        "if grep -qi ssl .git/config; then echo ssl-in-git-config; exit 1; fi".into(),
        "git config --get-regexp 'http\\..*\\.ssl' | sed 's/ .*//'".into(),
        // The checkout's remote still works with the same settings later in the job.
        "git fetch -q origin && echo fetch-again-ok".into(),
    ];
    if let Some((cert, key)) = client {
        lines.push(format!(
            "cmp \"$CI_SERVER_TLS_CERT_FILE\" '{}' && cmp \"$CI_SERVER_TLS_KEY_FILE\" '{}' && echo client-files-match",
            cert.display(),
            key.display()
        ));
    } else {
        lines.push("test -z \"$CI_SERVER_TLS_CERT_FILE\" && echo no-client-cert".into());
    }
    lines
}

#[tokio::test]
async fn run_single_clones_over_https_with_the_configured_ca() {
    let f = Fixture::new_tls(TlsOptions::default()).await;
    f.write_config("concurrent = 1", &f.tls_config(false));
    f.gl.create_repo("acme/widget", &[("README.md", "served over https\n")])
        .unwrap();
    let ca = f.gl.ca_pem_path().unwrap().to_owned();
    let id =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(checks(&ca, None)));
    let (ok, stderr) = run_single(&f, 60).await;
    assert!(ok, "{stderr}");
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches, "the final trace is incomplete");
    assert!(trace.contains("served over https\n"), "{trace}");
    assert!(trace.contains("ca-file-matches"), "{trace}");
    assert!(trace.contains("fetch-again-ok"), "{trace}");
    assert!(trace.contains("no-client-cert"), "{trace}");
    let host = f.gl.url();
    assert!(
        trace.contains(&format!("http.{host}.sslcainfo")),
        "git is not configured for {host}: {trace}"
    );
    assert!(!trace.contains("sslcert"), "{trace}");
    assert!(
        f.gl.requests_to(Endpoint::Git)
            .iter()
            .any(|r| r.status == Some(200))
    );
    assert!(
        f.gl.tls_handshake_errors().is_empty(),
        "{:?}",
        f.gl.tls_handshake_errors()
    );
    assert!(f.gl.violations().is_empty(), "{:?}", f.gl.violations());
    // cleanup_file_variables removed the PEM copies.
    assert_eq!(tls_files_left(&f.builds_dir()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn without_the_ca_the_certificate_error_is_logged_and_no_job_is_taken() {
    let f = Fixture::new_tls(TlsOptions::default()).await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "x\n")])
        .unwrap();
    let id =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["true"]));
    let (ok, stderr) = run_single(&f, 2).await;
    assert!(!ok, "run-single should give up: {stderr}");
    let failed = stderr
        .lines()
        .find(|l| l.contains("job request failed"))
        .unwrap_or_else(|| panic!("no failed request in the log: {stderr}"));
    assert!(
        failed.contains("certificate") && failed.contains("UnknownIssuer"),
        "the log does not say why: {failed}"
    );
    f.gl.wait_tls_handshake_error(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(f.gl.requests_to(Endpoint::RequestJob).is_empty());
    let job = f.gl.job(id);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.runner_id, None);
}

#[tokio::test]
async fn mutual_tls_jobs_present_the_client_certificate() {
    let f = Fixture::new_tls(TlsOptions {
        require_client_cert: true,
    })
    .await;
    f.write_config("concurrent = 1", &f.tls_config(true));
    f.gl.create_repo("acme/widget", &[("README.md", "mutual tls\n")])
        .unwrap();
    let ca = f.gl.ca_pem_path().unwrap().to_owned();
    let cert = f.gl.client_cert_pem_path().unwrap().to_owned();
    let key = f.gl.client_key_pem_path().unwrap().to_owned();
    let id =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(checks(&ca, Some((&cert, &key)))));
    let (ok, stderr) = run_single(&f, 60).await;
    assert!(ok, "{stderr}");
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Success, "{trace}");
    assert!(job.checksum_matches);
    assert!(trace.contains("mutual tls\n"), "{trace}");
    assert!(trace.contains("client-files-match"), "{trace}");
    assert!(trace.contains("fetch-again-ok"), "{trace}");
    let host = f.gl.url();
    for setting in ["sslcainfo", "sslcert", "sslkey"] {
        assert!(
            trace.contains(&format!("http.{host}.{setting}")),
            "{setting}: {trace}"
        );
    }
    assert!(
        f.gl.tls_handshake_errors().is_empty(),
        "{:?}",
        f.gl.tls_handshake_errors()
    );
    assert_eq!(tls_files_left(&f.builds_dir()), Vec::<PathBuf>::new());

    // The same runner without its client certificate: the handshake fails, no job is taken.
    f.write_config("concurrent = 1", &f.tls_config(false));
    let requests_before = f.gl.requests_to(Endpoint::RequestJob).len();
    let second =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["true"]));
    let (ok, stderr) = run_single(&f, 2).await;
    assert!(!ok, "{stderr}");
    let why =
        f.gl.wait_tls_handshake_error(Duration::from_secs(10))
            .await
            .unwrap();
    assert!(why.contains("certificate"), "{why}");
    // With TLS 1.3 the server refuses the missing certificate after the client has
    // finished its side of the handshake: the client reads either the server's
    // `CertificateRequired` alert or, when the connection closes first, a closed
    // connection. Either way the request fails and the log says so.
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("job request failed"))
        .collect();
    assert!(!failed.is_empty(), "no failed request in the log: {stderr}");
    for line in &failed {
        assert!(
            line.contains("Certificate") || line.contains("connection"),
            "{line}"
        );
    }
    assert_eq!(
        f.gl.requests_to(Endpoint::RequestJob).len(),
        requests_before
    );
    assert_eq!(f.gl.job(second).state, JobState::Pending);
}

#[tokio::test]
async fn a_job_fails_naming_an_unreadable_tls_file() {
    let f = Fixture::new_tls(TlsOptions::default()).await;
    let ca_copy = f.dir.path().join("ca-copy.pem");
    std::fs::copy(f.gl.ca_pem_path().unwrap(), &ca_copy).unwrap();
    f.write_config(
        "concurrent = 1",
        &format!("  tls-ca-file = \"{}\"\n", ca_copy.display()),
    );
    let mut child = f
        .oar()
        .arg("run-single")
        .arg("-c")
        .arg(f.config_path())
        .args(["--max-builds", "1", "--wait-timeout", "60"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The runner's client loaded the CA at start; once it polls, the file goes away, and the
    // job, which reads it again for its CI_SERVER_TLS_CA_FILE, cannot have it.
    f.gl.wait_requests(Endpoint::RequestJob, 1, Duration::from_secs(60))
        .await
        .unwrap();
    std::fs::remove_file(&ca_copy).unwrap();
    let id = f.gl.enqueue_job(
        JobSpec::new("acme/none")
            .variable("GIT_STRATEGY", "none")
            .script(["echo must-not-run"]),
    );
    let job = f.finished(id).await;
    let trace = job.trace_str();
    assert_eq!(job.state, JobState::Failed, "{trace}");
    assert!(
        trace.contains(&format!("cannot read tls-ca-file {}", ca_copy.display())),
        "{trace}"
    );
    assert!(!trace.contains("must-not-run"), "{trace}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("run-single ends")
        .unwrap();
    assert!(status.success());
}

/// `oar register` for the HTTPS FakeGitlab with `extra` flags.
async fn register(f: &Fixture, name: &str, extra: &[&Path]) -> std::process::Output {
    let flags = ["--tls-ca-file", "--tls-cert-file", "--tls-key-file"];
    let mut c = f.oar();
    c.args(["register", "--non-interactive", "-c"])
        .arg(f.config_path())
        .args(["--url", &f.gl.url(), "--token", RUNNER_TOKEN])
        .args(["--name", name, "--executor", "shell"]);
    for (flag, path) in flags.iter().zip(extra) {
        c.arg(flag).arg(path);
    }
    c.output().await.unwrap()
}

#[tokio::test]
async fn register_verify_and_unregister_with_tls_ca_file() {
    let f = Fixture::new_tls(TlsOptions::default()).await;
    let ca = f.gl.ca_pem_path().unwrap().to_owned();

    let out = register(&f, "untrusting", &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    let out = register(&f, "tls", &[&ca]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        text.contains(&format!("tls-ca-file = \"{}\"", ca.display())),
        "{text}"
    );

    let out = f
        .oar()
        .args(["verify", "-c"])
        .arg(f.config_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));

    let out = f
        .oar()
        .args(["unregister", "-c"])
        .arg(f.config_path())
        .args(["--name", "tls"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unregistered = f.gl.requests_to(Endpoint::UnregisterRunner);
    assert!(
        unregistered
            .iter()
            .any(|r| r.status.is_some_and(|s| (200..300).contains(&s))),
        "{unregistered:?}"
    );
    assert!(f.gl.violations().is_empty(), "{:?}", f.gl.violations());
}

#[tokio::test]
async fn register_and_verify_with_a_client_certificate() {
    let f = Fixture::new_tls(TlsOptions {
        require_client_cert: true,
    })
    .await;
    let ca = f.gl.ca_pem_path().unwrap().to_owned();
    let cert = f.gl.client_cert_pem_path().unwrap().to_owned();
    let key = f.gl.client_key_pem_path().unwrap().to_owned();
    let out = register(&f, "no-cert", &[&ca]).await;
    assert!(!out.status.success());
    let out = register(&f, "mtls", &[&ca, &cert, &key]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(text.contains("tls-cert-file") && text.contains("tls-key-file"));
    let out = f
        .oar()
        .args(["verify", "-c"])
        .arg(f.config_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A forward HTTP proxy (absolute-form requests, no CONNECT) that records every URI it
/// forwards; returns its URL.
async fn start_proxy(seen: Arc<Mutex<Vec<String>>>) -> String {
    use axum::body::Body;
    use axum::response::{IntoResponse, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, seen) = (client.clone(), seen.clone());
        async move {
            let (parts, body) = req.into_parts();
            seen.lock().unwrap().push(parts.uri.to_string());
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let mut headers = parts.headers;
            for hop in ["host", "connection", "proxy-connection", "content-length"] {
                headers.remove(hop);
            }
            let sent = client
                .request(parts.method, parts.uri.to_string())
                .headers(headers)
                .body(body)
                .send()
                .await;
            let Ok(resp) = sent else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            let mut out = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if !matches!(
                    k.as_str(),
                    "connection" | "transfer-encoding" | "content-length"
                ) {
                    out = out.header(k, v);
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            out.body(Body::from(bytes)).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn api_calls_go_through_http_proxy() {
    let f = Fixture::new().await;
    f.write_config("concurrent = 1", "");
    f.gl.create_repo("acme/widget", &[("README.md", "proxied\n")])
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = start_proxy(seen.clone()).await;
    let id =
        f.gl.enqueue_job(JobSpec::new("acme/widget").script(["cat README.md"]));
    let mut c = f.oar();
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "ALL_PROXY",
        "HTTPS_PROXY",
    ] {
        c.env_remove(var);
    }
    c.env_remove("NO_PROXY").env_remove("no_proxy");
    let out = c
        .env("HTTP_PROXY", &proxy)
        .args([
            "run-single",
            "--max-builds",
            "1",
            "--wait-timeout",
            "60",
            "-c",
        ])
        .arg(f.config_path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = f.finished(id).await;
    assert_eq!(job.state, JobState::Success, "{}", job.trace_str());
    let seen = seen.lock().unwrap().clone();
    let base = f.gl.url();
    let api_seen: Vec<&String> = seen.iter().filter(|u| u.contains("/api/v4/")).collect();
    for path in [
        "/api/v4/jobs/request".to_string(),
        format!("/api/v4/jobs/{id}"),
        format!("/api/v4/jobs/{id}/trace"),
    ] {
        let want = format!("{base}{path}");
        assert!(
            api_seen
                .iter()
                .any(|u| u.split('?').next() == Some(want.as_str())),
            "{path} not proxied: {seen:?}"
        );
    }
    let api_received =
        f.gl.requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/v4/"))
            .count();
    assert_eq!(api_seen.len(), api_received, "{seen:?}");
}
