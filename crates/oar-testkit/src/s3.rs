//! [`S3Server`]: a real S3-compatible server for tests, in process, that checks AWS SigV4
//! signatures (header auth and presigned URLs, including their expiry).
//!
//! It is [`s3s`] (the S3 protocol, SigV4 verification) over [`s3s_fs`] (objects as files in a
//! temporary directory), with [`s3s::auth::SimpleAuth`] holding one access key, served by hyper
//! on `127.0.0.1:0`. A request signed with another secret gets S3's `403
//! SignatureDoesNotMatch`, an expired presigned URL `403 AccessDenied` ("Request has
//! expired"), an unsigned one `403 AccessDenied`, a missing object `404 NoSuchKey`.
//!
//! Only path-style URLs are served (`http://127.0.0.1:<port>/<bucket>/<key>`); the region in
//! a signature's scope is not checked, any region works.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use oar_testkit::s3::S3Server;
//!
//! let s3 = S3Server::start("oar-cache").await?;
//! s3.put_object("project/1/main", b"seeded")?;
//! // ... presign URLs for s3.url(), s3.bucket(), s3.access_key(), s3.secret_key() ...
//! assert_eq!(s3.get_object("project/1/main").as_deref(), Some(&b"seeded"[..]));
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use url::Url;

/// The access key of [`S3Server::start`].
pub const ACCESS_KEY: &str = "OARTESTACCESSKEY0001";
/// The secret key of [`S3Server::start`].
pub const SECRET_KEY: &str = "oar/test/secret/key/0000000000000000000";

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3RequestRecord {
    /// HTTP method (`GET`, `PUT`, `HEAD`, ...).
    pub method: String,
    /// Request path (`/<bucket>/<key>`, percent-encoded as sent); the query string (the
    /// signature) is left out.
    pub path: String,
    /// Status of the answer.
    pub status: u16,
}

/// An in-process S3-compatible server with one bucket; see the [module docs](self).
///
/// It stops serving when dropped, and its storage directory is removed then.
pub struct S3Server {
    addr: SocketAddr,
    bucket: String,
    access_key: String,
    secret_key: String,
    root: tempfile::TempDir,
    requests: Arc<Mutex<Vec<S3RequestRecord>>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("addr", &self.addr)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts a server with bucket `bucket` (which must be a valid S3 bucket name: 3-63
    /// lowercase letters, digits, `-`, `.`) and the keys [`ACCESS_KEY`]/[`SECRET_KEY`].
    pub async fn start(bucket: &str) -> anyhow::Result<Self> {
        Self::start_with_keys(bucket, ACCESS_KEY, SECRET_KEY).await
    }

    /// Like [`S3Server::start`], with the given access key and secret key.
    pub async fn start_with_keys(
        bucket: &str,
        access_key: &str,
        secret_key: &str,
    ) -> anyhow::Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("oar-s3-")
            .tempdir()
            .context("creating the S3 storage directory")?;
        std::fs::create_dir(root.path().join(bucket))
            .with_context(|| format!("creating bucket directory {bucket}"))?;
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| anyhow::anyhow!("s3s-fs on {}: {e:?}", root.path().display()))?;
        let service = {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
            builder.build()
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            service,
            requests.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            bucket: bucket.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            root,
            requests,
            shutdown,
        })
    }

    /// Base URL of the server, `http://127.0.0.1:<port>/` (the S3 endpoint).
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address makes a valid URL")
    }

    /// `127.0.0.1:<port>`, as GitLab Runner's `ServerAddress` (with `Insecure = true`).
    pub fn server_address(&self) -> String {
        self.addr.to_string()
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key of [`S3Server::access_key`].
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Where object `key` is (or would be) stored on disk.
    ///
    /// Panics if `key` has `.` or `..` segments or is absolute (test keys are literals).
    pub fn object_path(&self, key: &str) -> PathBuf {
        let relative = Path::new(key);
        assert!(
            relative
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "object key {key:?} is not a plain relative path"
        );
        self.root.path().join(&self.bucket).join(relative)
    }

    /// The bytes of object `key`, or `None` when there is no such object.
    pub fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.object_path(key);
        if !path.is_file() {
            return None;
        }
        std::fs::read(path).ok()
    }

    /// Stores object `key` directly (seeding), bypassing HTTP and signatures.
    pub fn put_object(&self, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.object_path(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// The keys of all objects in the bucket, sorted.
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let base = self.root.path().join(&self.bucket);
        collect_keys(&base, &base, &mut keys);
        keys.sort();
        keys
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<S3RequestRecord> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn collect_keys(base: &Path, dir: &Path, keys: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_keys(base, &path, keys);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let key: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            keys.push(key.join("/"));
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: S3Service,
    requests: Arc<Mutex<Vec<S3RequestRecord>>>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(serve_conn(
                    stream,
                    service.clone(),
                    requests.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "S3 test server: accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    service: S3Service,
    requests: Arc<Mutex<Vec<S3RequestRecord>>>,
    shutdown: CancellationToken,
) {
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let service = service.clone();
        let requests = requests.clone();
        let method = req.method().to_string();
        let path = req.uri().path().to_owned();
        async move {
            let result = service.call(req.map(s3s::Body::from)).await;
            let status = match &result {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 500,
            };
            requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(S3RequestRecord {
                    method,
                    path,
                    status,
                });
            result
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        () = shutdown.cancelled() => {}
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "S3 test server: connection ended with an error");
            }
        }
    }
}
