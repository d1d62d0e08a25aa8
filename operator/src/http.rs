//! The operator's health and metrics server (`:8080`): `/healthz`, `/readyz`, `/metrics`.
//!
//! Plain HTTP/1.1 on hyper, with a header read timeout (slowloris, and idle keep-alive
//! connections are closed after it too), a cap on concurrent connections, and graceful
//! shutdown: on the signal it stops accepting, lets requests in flight finish, and
//! gives up on them after a grace period.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Bytes,
    header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Time a client has to send a request's headers (also the keep-alive idle limit).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once; further clients wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Read buffer limit, which bounds a request's header block (hyper's minimum is 8 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("binding the health/metrics server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The readiness the process reports on `/readyz`; clones share one state.
#[derive(Clone, Debug)]
pub struct HealthState {
    not_ready: Arc<Mutex<Option<String>>>,
}

impl Default for HealthState {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthState {
    /// A state that is not ready yet (reason "starting").
    pub fn new() -> Self {
        Self {
            not_ready: Arc::new(Mutex::new(Some("starting".to_owned()))),
        }
    }

    /// Reports ready.
    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    /// Reports not ready, with a reason shown on `/readyz` (keep it free of secrets).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// `Ok` when ready, else the reason.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.lock() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // An Option<String> cannot be left half-written.
        self.not_ready.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds `addr` and serves until `shutdown` fires.
pub async fn serve(
    addr: SocketAddr,
    state: HealthState,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    serve_on(listener, state, metrics, shutdown).await;
    Ok(())
}

/// Serves on an already bound listener until `shutdown` fires (tests bind port 0).
pub async fn serve_on(
    listener: TcpListener,
    state: HealthState,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "health and metrics server listening");
    }
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    while let Some((permit, stream, peer)) =
        accept_next(&listener, &permits, &shutdown, "health").await
    {
        let state = state.clone();
        let metrics = Arc::clone(&metrics);
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            let response = respond(req.method(), req.uri().path(), &state, &metrics);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "health/metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => debug!("health and metrics server stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            warn!("health and metrics server: connections still open after the grace period");
        }
    }
}

/// The routing table: one response per (method, path).
fn respond(
    method: &Method,
    path: &str,
    state: &HealthState,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n".to_owned());
    }
    // HEAD is GET without a body (hyper drops the body); probes and tools use both.
    if method != Method::GET && method != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".to_owned(),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match state.readiness() {
            Ok(()) => text(StatusCode::OK, "ok\n".to_owned()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => {
            let mut resp = Response::new(Full::new(Bytes::from(metrics.encode())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Waits for a connection slot and the next connection, until `shutdown` fires (then
/// `None`). Accept errors (EMFILE and friends) are logged and retried after a pause
/// instead of spinning. Shared by the health server and the webhook server.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    server: &str,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    let permit = tokio::select! {
        biased;
        () = shutdown.cancelled() => return None,
        p = Arc::clone(permits).acquire_owned() => p.ok()?, // never closed
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((stream, peer)) => return Some((permit, stream, peer)),
                Err(e) => {
                    warn!(server, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    /// One HTTP/1.1 request on a fresh connection; returns (status, head, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    async fn start() -> (
        SocketAddr,
        HealthState,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = HealthState::new();
        let metrics = Metrics::new();
        metrics.set_leader(true);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_on(listener, state.clone(), metrics, shutdown.clone()));
        (addr, state, shutdown, task)
    }

    #[tokio::test]
    async fn routes_answer_as_specified() {
        let (addr, state, shutdown, task) = start().await;

        let (status, _, body) = request(addr, "GET", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, _, body) = request(addr, "GET", "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(body, "not ready: starting\n");
        state.set_not_ready("no API server yet");
        let (_, _, body) = request(addr, "GET", "/readyz").await;
        assert_eq!(body, "not ready: no API server yet\n");
        state.set_ready();
        let (status, _, body) = request(addr, "GET", "/readyz?verbose").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));

        let (status, head, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(body.contains("turnpike_operator_leader 1"), "{body}");
        assert!(body.trim_end().ends_with("# EOF"));

        let (status, _, body) = request(addr, "HEAD", "/healthz").await;
        assert_eq!((status, body.as_str()), (200, ""));

        let (status, _, _) = request(addr, "GET", "/").await;
        assert_eq!(status, 404);
        let (status, _, _) = request(addr, "GET", "/metricsx").await;
        assert_eq!(status, 404);

        let (status, head, _) = request(addr, "POST", "/metrics").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");
        let (status, _, _) = request(addr, "DELETE", "/healthz").await;
        assert_eq!(status, 405);

        shutdown.cancel();
        task.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    #[tokio::test]
    async fn shutdown_closes_idle_keep_alive_connections() {
        let (addr, _state, shutdown, task) = start().await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

        // The connection is idle and kept alive; shutdown must not wait for it.
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("shutdown waited for an idle connection")
            .unwrap();
        let mut rest = Vec::new();
        let n = stream.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "connection should be closed");
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(
            addr,
            HealthState::new(),
            Metrics::new(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
