//! Connection handling: an accept loop serving each TCP connection with hyper, a dispatcher
//! that records every request and applies injected faults, and the axum router behind it.
//!
//! Connections are served by hand (not `axum::serve`) so that a [`Fault::Reset`] can drop one
//! connection with `SO_LINGER 0`, i.e. an RST and no response at all. In HTTPS mode each
//! connection first goes through the TLS handshake; a reset then drops the TCP connection
//! under the TLS stream the same way.
//!
//! With the admin API on, requests under `/_fake/` go straight to its router: they are not
//! recorded, not subject to faults and never reach the GitLab routes.
//!
//! [`Fault::Reset`]: crate::Fault::Reset

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::faults::{self, Action};
use crate::state::Shared;
use crate::types::{Endpoint, RequestRecord};
use crate::{artifacts, git, jobs, runners, trace, util};

/// The API routes; everything else falls through to git smart HTTP (or 404).
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v4/runners",
            post(runners::register).delete(runners::unregister),
        )
        .route("/api/v4/runners/verify", post(runners::verify))
        .route(
            "/api/v4/runners/managers",
            delete(runners::unregister_manager),
        )
        .route(
            "/api/v4/runners/reset_authentication_token",
            post(runners::reset_token),
        )
        .route("/api/v4/jobs/request", post(jobs::request))
        .route("/api/v4/jobs/{id}", put(jobs::update))
        .route("/api/v4/jobs/{id}/trace", patch(trace::patch))
        .route(
            "/api/v4/jobs/{id}/artifacts",
            post(artifacts::upload).get(artifacts::download),
        )
        .route("/storage/artifacts/{link}", get(artifacts::storage))
        .route("/oauth/discovery/keys", get(crate::id_tokens::jwks))
        .fallback(git::handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// The routers a connection serves: the GitLab API (through the dispatcher) and, if enabled, the
/// admin API under `/_fake/`.
#[derive(Clone)]
struct Routes {
    api: Router,
    admin: Option<Router>,
}

/// Path prefix of the admin API.
pub(crate) const ADMIN_PREFIX: &str = "/_fake";

fn is_admin_path(path: &str) -> bool {
    path.strip_prefix(ADMIN_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept connections until `shutdown` fires; with `tls`, every connection speaks HTTPS. With
/// `admin`, requests under `/_fake/` go to that router.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tls: Option<TlsAcceptor>,
    admin: Option<Router>,
) {
    let router = Routes {
        api: router(shared.clone()),
        admin,
    };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                // As GitLab's own front ends: no 40 ms Nagle waits on small writes.
                let _ = stream.set_nodelay(true);
                let conn = serve_conn(
                    stream,
                    shared.clone(),
                    router.clone(),
                    shutdown.clone(),
                    tls.clone(),
                );
                tokio::spawn(conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_conn(
    stream: TcpStream,
    shared: Arc<Shared>,
    router: Routes,
    shutdown: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    // A second descriptor of the same socket, to set SO_LINGER 0 when resetting.
    let (stream, dup) = match stream.into_std() {
        Ok(std) => {
            let dup = std.try_clone().ok();
            match TcpStream::from_std(std) {
                Ok(s) => (s, dup),
                Err(_) => return,
            }
        }
        Err(_) => return,
    };
    let kill = CancellationToken::new();
    match tls {
        None => serve_http(stream, shared, router, &kill, &shutdown).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                () = shutdown.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls_stream)) => {
                    serve_http(tls_stream, shared, router, &kill, &shutdown).await;
                }
                // A client that hangs up before or during the handshake without an alert
                // (a process exiting with a connection still being set up: end of file, or a
                // reset when it left unread data) did not refuse anything: that is not a
                // failed handshake. A refusal comes with a TLS alert.
                Ok(Err(e)) if client_went_away(&e) => {
                    tracing::debug!(error = %e, "client closed the connection during the TLS handshake");
                    shared.write(|st| st.tls_abandoned_handshakes += 1);
                }
                Ok(Err(e)) => tls_failed(&shared, e.to_string()),
                Err(_) => tls_failed(&shared, "handshake timed out".into()),
            }
        }
    }
    if kill.is_cancelled()
        && let Some(dup) = &dup
    {
        let _ = socket2::SockRef::from(dup).set_linger(Some(Duration::ZERO));
    }
    // The stream was dropped by `serve_http` (closing its descriptor), now `dup`: the last
    // close sends the RST.
    drop(dup);
}

fn client_went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// A failed TLS handshake: logged and kept for [`crate::FakeGitlab::tls_handshake_errors`].
fn tls_failed(shared: &Shared, error: String) {
    tracing::info!(%error, "TLS handshake failed");
    shared.write(|st| st.tls_handshake_errors.push(error));
}

/// Serve HTTP/1.1 on `io` until the connection ends, `kill` fires (a reset fault) or the server
/// shuts down. `io` is dropped on return.
async fn serve_http<I>(
    io: I,
    shared: Arc<Shared>,
    router: Routes,
    kill: &CancellationToken,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let kill = kill.clone();
        service_fn(move |req: Request<Incoming>| {
            dispatch(shared.clone(), router.clone(), kill.clone(), req)
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None::<Duration>);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        () = kill.cancelled() => {}
        () = shutdown.cancelled() => {}
    }
}

/// Which endpoint a request targets.
fn classify(method: &Method, path: &str) -> Option<Endpoint> {
    let m = |x: &Method| method == x;
    match path {
        "/api/v4/runners" if m(&Method::POST) => return Some(Endpoint::RegisterRunner),
        "/api/v4/runners" | "/api/v4/runners/managers" if m(&Method::DELETE) => {
            return Some(Endpoint::UnregisterRunner);
        }
        "/api/v4/runners/verify" if m(&Method::POST) => return Some(Endpoint::VerifyRunner),
        "/api/v4/runners/reset_authentication_token" if m(&Method::POST) => {
            return Some(Endpoint::ResetRunnerToken);
        }
        "/api/v4/jobs/request" if m(&Method::POST) => return Some(Endpoint::RequestJob),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/api/v4/jobs/") {
        let mut parts = rest.split('/');
        let _id = parts.next();
        return match (parts.next(), parts.next()) {
            (None, None) if m(&Method::PUT) => Some(Endpoint::UpdateJob),
            (Some("trace"), None) if m(&Method::PATCH) => Some(Endpoint::PatchTrace),
            (Some("artifacts"), None) if m(&Method::POST) => Some(Endpoint::UploadArtifacts),
            (Some("artifacts"), None) if m(&Method::GET) => Some(Endpoint::DownloadArtifacts),
            _ => None,
        };
    }
    path.contains(".git/").then_some(Endpoint::Git)
}

fn job_id_of(path: &str) -> Option<i64> {
    let rest = path.strip_prefix("/api/v4/jobs/")?;
    rest.split('/').next()?.parse().ok()
}

/// Record the request, apply faults, route it, record the answer.
async fn dispatch(
    shared: Arc<Shared>,
    routes: Routes,
    kill: CancellationToken,
    req: Request<Incoming>,
) -> Result<Response, Infallible> {
    if let Some(admin) = &routes.admin
        && is_admin_path(req.uri().path())
    {
        return match admin.clone().oneshot(req.map(Body::new)).await {
            Ok(resp) => Ok(resp),
            Err(never) => match never {},
        };
    }
    let router = routes.api;
    let at = Instant::now();
    let received = SystemTime::now();
    let path = req.uri().path().to_owned();
    let endpoint = classify(req.method(), &path);
    let record = RequestRecord {
        method: req.method().to_string(),
        query: req.uri().query().map(str::to_owned),
        endpoint,
        job_id: job_id_of(&path),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        path,
        status: None,
        reset: false,
        faulted: false,
        at,
        received,
        elapsed: Duration::ZERO,
    };
    let (idx, action) = shared.write(|st| {
        st.requests.push(record);
        let action = endpoint.and_then(|e| faults::take(st, e));
        (st.requests.len() - 1, action)
    });
    let finish = |status: Option<u16>, reset: bool, faulted: bool| {
        shared.write(|st| {
            if let Some(r) = st.requests.get_mut(idx) {
                tracing::debug!(
                    method = %r.method,
                    path = %r.path,
                    status,
                    reset,
                    faulted,
                    elapsed_ms = at.elapsed().as_millis(),
                    "request"
                );
                r.status = status;
                r.reset = reset;
                r.faulted = faulted;
                r.elapsed = at.elapsed();
            }
        });
    };
    let mut resp = match action {
        Some(Action::Reset) => {
            finish(None, true, true);
            kill.cancel();
            return std::future::pending().await;
        }
        Some(Action::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let msg = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Fault")
            );
            finish(Some(status.as_u16()), false, true);
            util::message(status, &msg)
        }
        Some(Action::RateLimited(secs)) => {
            let mut resp = util::message(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests");
            util::set_header(&mut resp, "retry-after", &secs.to_string());
            finish(Some(429), false, true);
            resp
        }
        other => {
            if let Some(Action::Delay(by)) = other {
                tokio::time::sleep(by).await;
            }
            let resp = match router.oneshot(req.map(Body::new)).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            finish(Some(resp.status().as_u16()), false, other.is_some());
            resp
        }
    };
    util::set_header(&mut resp, "x-request-id", &util::random_token("", 26));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(
            classify(&Method::POST, "/api/v4/runners"),
            Some(Endpoint::RegisterRunner)
        );
        assert_eq!(
            classify(&Method::DELETE, "/api/v4/runners/managers"),
            Some(Endpoint::UnregisterRunner)
        );
        assert_eq!(
            classify(&Method::PUT, "/api/v4/jobs/12"),
            Some(Endpoint::UpdateJob)
        );
        assert_eq!(
            classify(&Method::PATCH, "/api/v4/jobs/12/trace"),
            Some(Endpoint::PatchTrace)
        );
        assert_eq!(
            classify(&Method::GET, "/api/v4/jobs/12/artifacts"),
            Some(Endpoint::DownloadArtifacts)
        );
        assert_eq!(
            classify(&Method::GET, "/acme/widget.git/info/refs"),
            Some(Endpoint::Git)
        );
        assert_eq!(classify(&Method::GET, "/api/v4/version"), None);
        assert_eq!(job_id_of("/api/v4/jobs/12/trace"), Some(12));
        assert!(is_admin_path("/_fake/jobs"));
        assert!(is_admin_path("/_fake"));
        assert!(!is_admin_path("/_fakery/x.git/info/refs"));
        assert!(!is_admin_path("/api/v4/_fake/jobs"));
    }
}
