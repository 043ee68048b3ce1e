//! The HTTP client: base URL, TLS, headers and transport-level retries.

use crate::error::Error;
use crate::retry::{API_ATTEMPTS, API_BACKOFF, RETRY_STATUSES, server_wait};
use reqwest::{Method, RequestBuilder, Response};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How to reach GitLab.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// GitLab URL as configured (`https://gitlab.example.com/`).
    pub url: String,
    /// Extra CA bundle (`tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (`tls-cert-file`).
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (`tls-key-file`).
    pub tls_key_file: Option<PathBuf>,
    /// Version string used in `User-Agent` and `info`.
    pub version: String,
}

/// Receives the final status of every API call, for metrics.
pub trait ApiObserver: Send + Sync {
    /// `status` is the HTTP status, or 0 when no answer came.
    fn observe(&self, endpoint: &'static str, status: u16);
}

/// A runner API client bound to one GitLab instance.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    observer: Option<Arc<dyn ApiObserver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish()
    }
}

/// Turns a configured URL into the `/api/v4/` base: trailing `/` and `/ci` removed.
pub fn api_base(url: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
    };
    let mut trimmed = url.trim().trim_end_matches('/').to_string();
    if let Some(s) = trimmed.strip_suffix("/ci") {
        trimmed = s.to_string();
    }
    let parsed = Url::parse(&format!("{trimmed}/")).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(invalid("only http and https are supported"));
    }
    if parsed.host_str().is_none() {
        return Err(invalid("no host"));
    }
    parsed.join("api/v4/").map_err(|e| invalid(&e.to_string()))
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, Error> {
    fs_err::read(path).map_err(|e| Error::TlsFile {
        path: path.display().to_string(),
        source: Box::new(e),
    })
}

impl Client {
    /// Builds a client. Installs the process-wide rustls crypto provider if none is set.
    pub fn new(cfg: &ClientConfig) -> Result<Self, Error> {
        // Ignore the error: it only says a provider was installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = api_base(&cfg.url)?;
        let ua = format!(
            "gitlab-runner {} (oar; rust; {}/{})",
            cfg.version,
            std::env::consts::OS,
            crate::info::go_arch()
        );
        let mut builder = reqwest::Client::builder()
            .user_agent(ua)
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            // Redirects are followed by the endpoints that expect them, so that the job
            // token header never travels to another host.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.tls_ca_file {
            let pem = read_file(ca)?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::TlsFile {
                    path: ca.display().to_string(),
                    source: Box::new(e),
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
            let mut pem = read_file(cert)?;
            pem.extend_from_slice(b"\n");
            pem.extend_from_slice(&read_file(key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| Error::TlsFile {
                path: cert.display().to_string(),
                source: Box::new(e),
            })?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(Error::Client)?;
        Ok(Client {
            http,
            base,
            observer: None,
        })
    }

    /// Reports every call's final status to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn ApiObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The `/api/v4/` base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The GitLab root URL (without `/api/v4/`).
    pub fn root(&self) -> Url {
        let mut u = self.base.clone();
        u.set_path(self.base.path().trim_end_matches("api/v4/"));
        u
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        // `path` is a fixed relative API path built by this crate; joining cannot fail.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.http
            .request(method, self.url(path))
            .header("X-Request-Id", id)
    }

    pub(crate) fn raw(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn observe(&self, endpoint: &'static str, status: u16) {
        if let Some(o) = &self.observer {
            o.observe(endpoint, status);
        }
    }

    /// Sends a request built by `build`, retrying network errors and the statuses GitLab Runner
    /// retries (408, 429, 5xx gateway errors) up to 5 attempts with jittered backoff. The last
    /// response, whatever its status, is returned for the endpoint to interpret.
    pub(crate) async fn send(
        &self,
        endpoint: &'static str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let result = build().send().await;
            attempt += 1;
            let last = attempt >= API_ATTEMPTS;
            match result {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if last || !RETRY_STATUSES.contains(&status) {
                        self.observe(endpoint, status);
                        return Ok(resp);
                    }
                    let wait = server_wait(resp.headers())
                        .unwrap_or_else(|| API_BACKOFF.delay(attempt - 1));
                    tracing::debug!(endpoint, status, attempt, ?wait, "retrying GitLab request");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    if last || e.is_builder() {
                        self.observe(endpoint, 0);
                        return Err(Error::Transport {
                            endpoint,
                            source: e,
                        });
                    }
                    let wait = API_BACKOFF.delay(attempt - 1);
                    tracing::debug!(endpoint, attempt, error = %e, ?wait, "retrying GitLab request");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The error for an answer the endpoint did not expect: `Forbidden` for 401/403, else
/// `Status`, with GitLab's message.
pub(crate) async fn unexpected(endpoint: &'static str, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let message = error_message(resp).await;
    match status {
        401 | 403 => Error::Forbidden { endpoint, message },
        _ => Error::Status {
            endpoint,
            status,
            message,
        },
    }
}

/// Reads an error message from a Grape (`{"message": …}` / `{"error": …}`) or object storage
/// (XML) body, falling back to the first 200 bytes of text.
pub(crate) async fn error_message(resp: Response) -> String {
    let body = resp.bytes().await.unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        for key in ["message", "error"] {
            if let Some(m) = v.get(key) {
                return match m {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
            }
        }
    }
    let text = String::from_utf8_lossy(&body);
    if let (Some(a), Some(b)) = (text.find("<Message>"), text.find("</Message>"))
        && a + 9 <= b
    {
        return text[a + 9..b].to_string();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_strips_ci_and_slashes() {
        for (input, want) in [
            (
                "https://gitlab.example.com",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "https://gitlab.example.com/ci/",
                "https://gitlab.example.com/api/v4/",
            ),
            (
                "http://host:8080/gitlab/",
                "http://host:8080/gitlab/api/v4/",
            ),
        ] {
            assert_eq!(api_base(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn api_base_refuses_other_schemes() {
        let err = api_base("ftp://gitlab.example.com").unwrap_err();
        assert!(err.to_string().contains("only http and https"), "{err}");
        assert!(api_base("not a url").is_err());
    }
}
