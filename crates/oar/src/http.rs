//! The `listen_address` HTTP server: Prometheus metrics and health probes.
//!
//! - `GET|HEAD /metrics`: the text format 0.0.4 (other methods: 405)
//! - `GET /health/live`: 200 `ok` while the process serves
//! - `GET /health/ready`: 200 `ready` or 503 `not ready`
//! - anything else: 404

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;

/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether Oar is ready for work: the owner sets it once the configuration is
/// loaded and the first GitLab check passed, and clears it when draining.
/// Cheap to clone; clones share the flag. Starts not ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
}

impl Readiness {
    /// A flag that is not ready yet.
    #[allow(dead_code)] // used by tests and kept as API
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Sets whether `/health/ready` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/health/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found")
}

/// The routes, without a listener (`get` also answers HEAD, without body).
fn router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .fallback(not_found)
        .with_state(AppState { metrics, readiness })
}

/// Serves metrics and health probes on `listener` until `shutdown` resolves,
/// then stops accepting and lets open requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Listens on `listen_address` as GitLab Runner (Go) reads it: `host:port`, or `:port` for
/// every interface (IPv6 and IPv4 where the host has IPv6, else IPv4 alone), which is the form
/// the Helm chart and most config.toml files use.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let Some(port) = addr.strip_prefix(':') else {
        return tokio::net::TcpListener::bind(addr).await;
    };
    let port: u16 = port.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr:?} is not :PORT or HOST:PORT"),
        )
    })?;
    match tokio::net::TcpListener::bind(("::", port)).await {
        Ok(l) => Ok(l),
        // No IPv6 in this network namespace (common in containers): every IPv4 interface.
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable
            || e.raw_os_error() == Some(97) /* EAFNOSUPPORT */ =>
        {
            tokio::net::TcpListener::bind(("0.0.0.0", port)).await
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    /// One HTTP/1.1 request on a fresh connection, read until the server
    /// closes it (`Connection: close`).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        Answer {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    }

    async fn start(metrics: Metrics, readiness: Readiness) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics, readiness, async move {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    #[tokio::test]
    async fn metrics_endpoint() {
        let metrics = Metrics::new("1.0.0", "deadbeef");
        metrics.set_concurrent(3);
        metrics.job_started("r1", "s");
        let server = start(metrics, Readiness::new()).await;

        let get = request(server.addr, "GET", "/metrics").await;
        assert_eq!(get.status, 200);
        assert!(
            get.head
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{}",
            get.head
        );
        assert!(get.body.contains("# TYPE gitlab_runner_jobs gauge\n"));
        assert!(
            get.body
                .contains("# TYPE gitlab_runner_jobs_total counter\n")
        );
        assert!(get.body.contains("gitlab_runner_concurrent 3\n"));

        let head = request(server.addr, "HEAD", "/metrics").await;
        assert_eq!(head.status, 200);
        assert!(
            head.head
                .contains("content-type: text/plain; version=0.0.4")
        );
        assert!(head.body.is_empty());

        for method in ["POST", "PUT", "DELETE"] {
            let answer = request(server.addr, method, "/metrics").await;
            assert_eq!(answer.status, 405, "{method}");
        }

        assert_eq!(request(server.addr, "GET", "/nope").await.status, 404);
        assert_eq!(request(server.addr, "GET", "/").await.status, 404);

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn health_endpoints() {
        let readiness = Readiness::new();
        let server = start(Metrics::new("1", "r"), readiness.clone()).await;

        let live = request(server.addr, "GET", "/health/live").await;
        assert_eq!((live.status, live.body.as_str()), (200, "ok"));

        let ready = request(server.addr, "GET", "/health/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (503, "not ready"));

        readiness.set_ready(true);
        let ready = request(server.addr, "GET", "/health/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready"));

        // Draining: not ready again, still live.
        readiness.set_ready(false);
        assert_eq!(
            request(server.addr, "GET", "/health/ready").await.status,
            503
        );
        assert_eq!(
            request(server.addr, "GET", "/health/live").await.status,
            200
        );

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shuts_down_when_the_future_resolves() {
        let server = start(Metrics::new("1", "r"), Readiness::new()).await;
        assert_eq!(
            request(server.addr, "GET", "/health/live").await.status,
            200
        );
        assert!(!server.task.is_finished());

        server.stop.send(()).unwrap();
        server.task.await.unwrap().unwrap();

        // The listener is gone with the server: nothing accepts any more.
        assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn a_port_alone_listens_on_every_interface() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let listener = bind(&format!(":{port}")).await.unwrap();
        let local = listener.local_addr().unwrap();
        assert_eq!(local.port(), port);
        assert!(local.ip().is_unspecified(), "{local}");
        // Reachable on the IPv4 loopback either way (dual-stack or IPv4 alone).
        let accept = tokio::spawn(async move { listener.accept().await.map(drop) });
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        accept.await.unwrap().unwrap();
        assert!(bind(":http").await.is_err());
        assert!(bind(":99999").await.is_err());
    }
}
