//! Transfers to and from (presigned) URLs, job side.
//!
//! - [`Transfer::download`] streams a URL into a file: a temporary file next to the target,
//!   renamed into place once complete; redirects are followed; `404` is
//!   [`Downloaded::NotFound`], not an error.
//! - [`Transfer::upload`] streams a file to a presigned `PUT` URL with its `Content-Length`.
//!
//! Both retry network errors and `5xx` answers with jittered exponential backoff, never `4xx`
//! ones. Errors carry S3's error `Code` and `Message` from the XML body (e.g.
//! `SignatureDoesNotMatch`) and print URLs without their query string, i.e. without the
//! signature.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use rand::Rng as _;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt as _;
use url::Url;

/// The most bytes of an error body read to find S3's error code.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Retry and timeout settings of a [`Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOptions {
    /// Tries per transfer, the first one included (at least 1). Default 3 (GitLab Runner's
    /// helper tries once and retries twice).
    pub attempts: u32,
    /// Backoff before the first retry; doubled for each further one, up to `max_backoff`,
    /// and jittered (a random duration between half of it and all of it). Default 1 s.
    pub backoff: Duration,
    /// Longest backoff. Default 30 s.
    pub max_backoff: Duration,
    /// Time limit of one try, body included (`CACHE_REQUEST_TIMEOUT`). Default 10 minutes.
    pub timeout: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
        }
    }
}

/// What a download found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downloaded {
    /// The object was written to the target file.
    File {
        /// Its size in bytes.
        bytes: u64,
    },
    /// The server answered `404`: there is no such object.
    NotFound,
}

/// Why a transfer failed (after its retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The server answered with an error status.
    #[error("{method} {url}: {}{}", status_text(*.status), s3_suffix(.code.as_deref(), .message.as_deref()))]
    Status {
        /// `GET` or `PUT`.
        method: &'static str,
        /// The URL without its query string.
        url: String,
        /// The HTTP status.
        status: u16,
        /// S3's error `Code` (`SignatureDoesNotMatch`, `AccessDenied`, `NoSuchKey`, ...).
        code: Option<String>,
        /// S3's error `Message`.
        message: Option<String>,
    },
    /// The request could not be sent or the body not transferred.
    #[error("{method} {url}: {detail}")]
    Network {
        /// `GET` or `PUT`.
        method: &'static str,
        /// The URL without its query string.
        url: String,
        /// The error and its causes (never the URL's query string).
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(String),
}

fn status_text(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn s3_suffix(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!(": {code}: {message}"),
        (Some(code), None) => format!(": {code}"),
        (None, Some(message)) => format!(": {message}"),
        (None, None) => String::new(),
    }
}

impl TransferError {
    /// S3's error code, when the server sent one.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            TransferError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            TransferError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether another try may succeed: network errors and `5xx` answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::Status { status, .. } => *status >= 500,
            TransferError::Network { .. } => true,
            TransferError::Io { .. } | TransferError::Client(_) => false,
        }
    }
}

/// `url` as printable text: without query string (the signature), fragment and user info.
pub fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// An HTTP client for cache transfers, with retries.
#[derive(Debug, Clone)]
pub struct Transfer {
    client: reqwest::Client,
    opts: TransferOptions,
}

impl Transfer {
    /// A transfer client with its own connection pool. Installs rustls' `ring` provider as
    /// the process default if there is none yet.
    pub fn new(opts: TransferOptions) -> Result<Self, TransferError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| TransferError::Client(error_chain(&e.without_url())))?;
        Ok(Self::with_client(client, opts))
    }

    /// A transfer client over `client` (which should follow redirects, reqwest's default).
    pub fn with_client(client: reqwest::Client, opts: TransferOptions) -> Self {
        Self { client, opts }
    }

    /// The options.
    pub fn options(&self) -> &TransferOptions {
        &self.opts
    }

    /// Downloads `url` into `dest` (its directory is created): streamed into a temporary file
    /// beside it, renamed to `dest` once complete, so `dest` is never half-written. `log`
    /// gets a line for each retry.
    pub async fn download(
        &self,
        url: &Url,
        dest: &Path,
        log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Downloaded, TransferError> {
        self.retrying("GET", url, log, || self.download_once(url, dest))
            .await
    }

    /// Uploads `file` to the presigned `PUT` URL `url`, streamed with its `Content-Length`.
    /// Returns the bytes sent. `log` gets a line for each retry.
    pub async fn upload(
        &self,
        file: &Path,
        url: &Url,
        log: &mut (dyn FnMut(&str) + Send),
    ) -> Result<u64, TransferError> {
        self.retrying("PUT", url, log, || self.upload_once(file, url))
            .await
    }

    async fn retrying<T, F, Fut>(
        &self,
        method: &str,
        url: &Url,
        log: &mut (dyn FnMut(&str) + Send),
        mut once: F,
    ) -> Result<T, TransferError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TransferError>>,
    {
        let attempts = self.opts.attempts.max(1);
        let mut attempt = 1;
        loop {
            match once().await {
                Ok(v) => return Ok(v),
                Err(err) if err.is_retryable() && attempt < attempts => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(%err, ?delay, attempt, "cache transfer failed, retrying");
                    log(&format!(
                        "WARNING: {err}. Retrying {method} {} in {:.1}s (try {} of {attempts})...",
                        redact_url(url),
                        delay.as_secs_f64(),
                        attempt + 1
                    ));
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Jittered exponential backoff before retry number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .opts
            .backoff
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.opts.max_backoff);
        let half = exp / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    async fn download_once(&self, url: &Url, dest: &Path) -> Result<Downloaded, TransferError> {
        let shown = redact_url(url);
        let network = |e: reqwest::Error| TransferError::Network {
            method: "GET",
            url: shown.clone(),
            detail: error_chain(&e.without_url()),
        };
        let resp = self
            .client
            .get(url.clone())
            .timeout(self.opts.timeout)
            .send()
            .await
            .map_err(network)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Downloaded::NotFound);
        }
        if !status.is_success() {
            return Err(status_error("GET", &shown, resp).await);
        }

        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| TransferError::Io { op, path, source }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err("creating directory", &dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".oar-download-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(io_err("creating a temporary file in", &dir))?;
        let (file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut bytes = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(network)?;
            file.write_all(&chunk)
                .await
                .map_err(io_err("writing", &tmp_path))?;
            bytes += chunk.len() as u64;
        }
        file.flush().await.map_err(io_err("writing", &tmp_path))?;
        drop(file);
        tmp_path.persist(dest).map_err(|e| TransferError::Io {
            op: "renaming the download to",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(Downloaded::File { bytes })
    }

    async fn upload_once(&self, path: &Path, url: &Url) -> Result<u64, TransferError> {
        let shown = redact_url(url);
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| TransferError::Io {
                op: "opening",
                path: path.to_path_buf(),
                source,
            })?;
        let len = file
            .metadata()
            .await
            .map_err(|source| TransferError::Io {
                op: "reading the size of",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        let resp = self
            .client
            .put(url.clone())
            .timeout(self.opts.timeout)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(|e| TransferError::Network {
                method: "PUT",
                url: shown.clone(),
                detail: error_chain(&e.without_url()),
            })?;
        if resp.status().is_success() {
            Ok(len)
        } else {
            Err(status_error("PUT", &shown, resp).await)
        }
    }
}

/// The error of a non-success answer, with S3's `Code`/`Message` when the body has them.
async fn status_error(method: &'static str, url: &str, resp: reqwest::Response) -> TransferError {
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = ERROR_BODY_LIMIT.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_LIMIT {
            break;
        }
    }
    let text = String::from_utf8_lossy(&body);
    TransferError::Status {
        method,
        url: url.to_owned(),
        status,
        code: xml_text(&text, "Code").filter(|c| !c.is_empty()),
        message: xml_text(&text, "Message").filter(|m| !m.is_empty()),
    }
}

/// An error and its causes, `: `-joined.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The text of the first `<tag>` element in `xml` (no nested elements expected), with the
/// predefined and numeric character references decoded. Enough for S3 and STS answers.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut from = 0;
    while let Some(pos) = xml[from..].find(&open) {
        let start = from + pos + open.len();
        let rest = &xml[start..];
        // `<Code>` or `<Code attr="…">`, not `<CodeName>`; `<Code/>` is empty.
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                let end = body.find(&close)?;
                return Some(decode_entities(body[..end].trim()));
            }
            Some(c) if c.is_whitespace() || c == '/' => {
                let gt = rest.find('>')?;
                if rest[..gt].ends_with('/') {
                    return Some(String::new());
                }
                let body = &rest[gt + 1..];
                let end = body.find(&close)?;
                return Some(decode_entities(body[..end].trim()));
            }
            _ => from = start,
        }
    }
    None
}

fn decode_entities(text: &str) -> String {
    if let Some(cdata) = text
        .strip_prefix("<![CDATA[")
        .and_then(|t| t.strip_suffix("]]>"))
    {
        return cdata.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').filter(|end| *end <= 10).and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .map(|hex| u32::from_str_radix(hex, 16))
                    .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            }?;
            Some((c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

    use super::*;

    fn fast() -> TransferOptions {
        TransferOptions {
            attempts: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            timeout: Duration::from_secs(30),
        }
    }

    fn transfer() -> Transfer {
        Transfer::new(fast()).unwrap()
    }

    const SIGNATURE_ERROR: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. Check your key and signing method.</Message><Resource>/cache/k</Resource></Error>"#;

    #[test]
    fn xml_text_finds_elements_and_decodes_entities() {
        assert_eq!(
            xml_text(SIGNATURE_ERROR, "Code").as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(
            xml_text("<a><CodeX>1</CodeX><Code>2</Code></a>", "Code").as_deref(),
            Some("2")
        );
        assert_eq!(
            xml_text(r#"<Code lang="en"> x </Code>"#, "Code").as_deref(),
            Some("x")
        );
        assert_eq!(xml_text("<Code/>", "Code").as_deref(), Some(""));
        assert_eq!(
            xml_text(
                "<T>a&amp;b&lt;c&gt;&quot;&apos;&#65;&#x42;&bogus;&</T>",
                "T"
            )
            .as_deref(),
            Some("a&b<c>\"'AB&bogus;&")
        );
        assert_eq!(
            xml_text("<T><![CDATA[<raw>&amp;]]></T>", "T").as_deref(),
            Some("<raw>&amp;")
        );
        assert_eq!(xml_text("<Code>unterminated", "Code"), None);
        assert_eq!(xml_text("nothing", "Code"), None);
    }

    #[test]
    fn urls_are_printed_without_signature() {
        let url =
            Url::parse("https://user:pw@s3.example/b/k?X-Amz-Signature=abc&X-Amz-Credential=AK#f")
                .unwrap();
        assert_eq!(redact_url(&url), "https://s3.example/b/k");
    }

    #[tokio::test]
    async fn download_writes_the_file_atomically() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/b/k"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![7u8; 300_000]))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/dir/cache.tar.zst");
        let url = Url::parse(&format!("{}/b/k?X-Amz-Signature=s", server.uri())).unwrap();
        let got = transfer().download(&url, &dest, &mut |_| {}).await.unwrap();
        assert_eq!(got, Downloaded::File { bytes: 300_000 });
        assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 300_000]);
        let leftovers: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[tokio::test]
    async fn download_follows_redirects() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/old"))
            .respond_with(ResponseTemplate::new(307).insert_header("location", "/new"))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/new"))
            .respond_with(ResponseTemplate::new(200).set_body_string("moved"))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let url = Url::parse(&format!("{}/old", server.uri())).unwrap();
        transfer().download(&url, &dest, &mut |_| {}).await.unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "moved");
    }

    #[tokio::test]
    async fn not_found_is_not_an_error_and_leaves_no_file() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404).set_body_string(
                "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let url = Url::parse(&format!("{}/b/k", server.uri())).unwrap();
        let got = transfer().download(&url, &dest, &mut |_| {}).await.unwrap();
        assert_eq!(got, Downloaded::NotFound);
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn forbidden_is_not_retried_and_names_the_s3_code_without_the_signature() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(403).set_body_string(SIGNATURE_ERROR))
            .expect(1)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let url = Url::parse(&format!("{}/b/k?X-Amz-Signature=SECRETSIG", server.uri())).unwrap();
        let mut lines = Vec::new();
        let err = transfer()
            .download(&url, &dir.path().join("f"), &mut |l| {
                lines.push(l.to_owned())
            })
            .await
            .unwrap_err();
        assert_eq!(err.s3_code(), Some("SignatureDoesNotMatch"));
        assert_eq!(err.status(), Some(403));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "GET {}/b/k: 403 Forbidden: SignatureDoesNotMatch: The request signature",
                server.uri()
            )),
            "{text}"
        );
        assert!(!text.contains("SECRETSIG"), "{text}");
        assert!(lines.is_empty(), "no retry: {lines:?}");
    }

    /// Fails with 503 `n` times, then serves `body`.
    struct FlakyThenOk {
        failures: usize,
        calls: Arc<AtomicUsize>,
        body: &'static str,
    }

    impl Respond for FlakyThenOk {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                ResponseTemplate::new(503).set_body_string("<Error><Code>SlowDown</Code></Error>")
            } else {
                ResponseTemplate::new(200).set_body_string(self.body)
            }
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_succeed() {
        let server = MockServer::start().await;
        let calls = Arc::new(AtomicUsize::new(0));
        Mock::given(method("GET"))
            .respond_with(FlakyThenOk {
                failures: 2,
                calls: calls.clone(),
                body: "third time",
            })
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        let url = Url::parse(&format!("{}/b/k?sig=1", server.uri())).unwrap();
        let mut lines = Vec::new();
        transfer()
            .download(&url, &dest, &mut |l| lines.push(l.to_owned()))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "third time");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("503 Service Unavailable: SlowDown"),
            "{lines:?}"
        );
        assert!(!lines[0].contains("sig=1"), "{lines:?}");
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(500))
            .expect(3)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let url = Url::parse(&format!("{}/b/k", server.uri())).unwrap();
        let err = transfer()
            .upload(&file, &url, &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn network_errors_are_retried_and_reported() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}/b/k?X-Amz-Signature=S")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        let err = transfer()
            .download(&url, &dir.path().join("f"), &mut |l| {
                lines.push(l.to_owned())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Network { .. }), "{err:?}");
        assert_eq!(lines.len(), 2);
        assert!(!err.to_string().contains("X-Amz-Signature"), "{err}");
    }

    #[tokio::test]
    async fn upload_streams_the_file_with_its_length() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/b/k"))
            .and(header("content-length", "200000"))
            .and(header("content-type", "application/octet-stream"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache.tar.zst");
        std::fs::write(&file, vec![1u8; 200_000]).unwrap();
        let url = Url::parse(&format!("{}/b/k?X-Amz-Signature=s", server.uri())).unwrap();
        let sent = transfer().upload(&file, &url, &mut |_| {}).await.unwrap();
        assert_eq!(sent, 200_000);
        let received = server.received_requests().await.unwrap();
        assert_eq!(received[0].body.len(), 200_000);
        assert!(
            received[0].headers.get("transfer-encoding").is_none(),
            "not chunked"
        );
    }

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let t = Transfer::new(TransferOptions {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        for _ in 0..50 {
            let first = t.backoff(1);
            assert!(
                (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first),
                "{first:?}"
            );
            let third = t.backoff(3);
            assert!(
                (Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third),
                "{third:?}"
            );
            let late = t.backoff(30);
            assert!(
                (Duration::from_millis(500)..=Duration::from_millis(1000)).contains(&late),
                "{late:?}"
            );
        }
    }
}
