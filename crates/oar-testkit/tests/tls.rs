//! FakeGitlab over HTTPS: server certificate from a throwaway CA, optional client certificates,
//! git smart HTTP and fault injection through TLS.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{RUNNER_TOKEN, WAIT, info};
use oar_testkit::{Endpoint, FakeGitlab, Fault, JobSpec, TlsOptions};
use serde_json::json;

fn https_client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("CA PEM");
        let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("CA parses");
        b = b.tls_certs_only(certs);
    }
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).expect("cert PEM");
        pem.extend(std::fs::read(key).expect("key PEM"));
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity parses"));
    }
    b.build().expect("client")
}

async fn verify(c: &reqwest::Client, gl: &FakeGitlab) -> Result<reqwest::Response, reqwest::Error> {
    c.post(format!("{}/api/v4/runners/verify", gl.url()))
        .json(&json!({"token": RUNNER_TOKEN, "system_id": "s_0123456789ab", "info": info(&[])}))
        .send()
        .await
}

/// The whole chain of an error, for assertions on the innermost cause.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn git(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        // The environment's own CA bundle setting would win over `http.sslCAInfo`.
        .env_remove("GIT_SSL_CAINFO")
        .env_remove("GIT_SSL_CAPATH")
        .env_remove("GIT_SSL_CERT")
        .env_remove("GIT_SSL_KEY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .expect("git runs")
}

#[tokio::test]
async fn https_api_needs_the_generated_ca() -> anyhow::Result<()> {
    let gl = FakeGitlab::start_tls(TlsOptions::default()).await?;
    gl.add_runner(RUNNER_TOKEN);
    assert!(gl.url().starts_with("https://127.0.0.1:"), "{}", gl.url());
    assert!(gl.client_cert_pem_path().is_none());
    let ca = gl.ca_pem_path().expect("a CA").to_owned();
    assert!(std::fs::read_to_string(&ca)?.starts_with("-----BEGIN CERTIFICATE-----"));

    let resp = verify(&https_client(Some(&ca), None), &gl).await?;
    assert_eq!(resp.status(), 200);

    // A client that does not trust the CA fails the handshake; the server records it.
    let err = verify(&https_client(None, None), &gl)
        .await
        .expect_err("untrusted");
    assert!(
        chain(&err).to_lowercase().contains("certificate"),
        "{}",
        chain(&err)
    );
    let server_side = gl.wait_tls_handshake_error(WAIT).await?;
    assert!(!server_side.is_empty());
    assert_eq!(gl.requests_to(Endpoint::VerifyRunner).len(), 1);

    // Fault injection still works through TLS: a reset drops the connection.
    gl.inject(Fault::Reset {
        endpoint: Endpoint::VerifyRunner,
        times: 1,
    });
    let trusted = https_client(Some(&ca), None);
    assert!(verify(&trusted, &gl).await.is_err());
    assert_eq!(verify(&trusted, &gl).await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn client_certificates_are_required_when_asked() -> anyhow::Result<()> {
    let gl = FakeGitlab::start_tls(TlsOptions {
        require_client_cert: true,
    })
    .await?;
    gl.add_runner(RUNNER_TOKEN);
    let ca = gl.ca_pem_path().expect("CA").to_owned();
    let cert = gl.client_cert_pem_path().expect("client cert").to_owned();
    let key = gl.client_key_pem_path().expect("client key").to_owned();

    let with_cert = https_client(Some(&ca), Some((&cert, &key)));
    assert_eq!(verify(&with_cert, &gl).await?.status(), 200);

    let err = verify(&https_client(Some(&ca), None), &gl)
        .await
        .expect_err("no client certificate");
    let why = gl.wait_tls_handshake_error(WAIT).await?;
    assert!(why.to_lowercase().contains("certificate"), "{why}; {err}");
    assert_eq!(gl.requests_to(Endpoint::VerifyRunner).len(), 1);
    Ok(())
}

#[tokio::test]
async fn git_clones_over_https_with_ca_and_client_certificate() -> anyhow::Result<()> {
    let gl = FakeGitlab::start_tls(TlsOptions {
        require_client_cert: true,
    })
    .await?;
    gl.add_runner(RUNNER_TOKEN);
    gl.create_repo("acme/widget", &[("README.md", "over tls\n")])?;
    let id = gl.enqueue_job(JobSpec::new("acme/widget"));
    let ca = gl.ca_pem_path().expect("CA").to_owned();
    let cert = gl.client_cert_pem_path().expect("cert").to_owned();
    let key = gl.client_key_pem_path().expect("key").to_owned();
    let c = https_client(Some(&ca), Some((&cert, &key)));
    let resp = c
        .post(format!("{}/api/v4/jobs/request", gl.url()))
        .header("RUNNER-TOKEN", RUNNER_TOKEN)
        .json(&json!({"token": RUNNER_TOKEN, "system_id": "s_0123456789ab", "info": info(&[])}))
        .send()
        .await?;
    assert_eq!(resp.status(), 201);
    let p: serde_json::Value = resp.json().await?;
    assert_eq!(p["id"], id);
    let repo_url = p["git_info"]["repo_url"].as_str().unwrap_or_default();
    assert!(
        repo_url.starts_with("https://gitlab-ci-token:"),
        "{repo_url}"
    );
    let vars = p["variables"].as_array().cloned().unwrap_or_default();
    assert!(
        vars.iter()
            .any(|v| v["key"] == "CI_SERVER_PROTOCOL" && v["value"] == "https")
    );

    let tmp = tempfile::tempdir()?;
    let (ca_s, cert_s, key_s) = (
        format!("http.sslCAInfo={}", ca.display()),
        format!("http.sslCert={}", cert.display()),
        format!("http.sslKey={}", key.display()),
    );
    let out = git(
        tmp.path(),
        &[
            "-c", &ca_s, "-c", &cert_s, "-c", &key_s, "clone", "--quiet", repo_url, "clone",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("clone/README.md"))?,
        "over tls\n"
    );
    // Without the client certificate git is refused.
    let out = git(
        tmp.path(),
        &["-c", &ca_s, "clone", "--quiet", repo_url, "refused"],
    )
    .await;
    assert!(!out.status.success());
    Ok(())
}
