//! The HTTPS server the API server calls: `POST /mutate-pods` with an AdmissionReview.
//!
//! HTTP/1.1 over rustls. Every stage has a deadline so a slow or stuck client holds a
//! connection slot only briefly: the TLS handshake, the request headers (hyper's header
//! read timeout, also the keep-alive idle limit) and the body. Bodies are capped, and
//! so is the number of connections. On shutdown it stops accepting, lets reviews in
//! flight finish, and gives up on them after a grace period.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use rustls::ServerConfig;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::review::Admission;

/// The path the MutatingWebhookConfiguration points at.
pub const MUTATE_PODS_PATH: &str = "/mutate-pods";

/// Deadlines and caps of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send a request's headers (also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// Time to send the body once the headers are in.
    pub body_read_timeout: Duration,
    /// Largest body accepted (an AdmissionReview carries one pod).
    pub max_body_bytes: usize,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// How long the server keeps accepting after the shutdown signal: the API server
    /// learns that a terminating replica left the Service only after a moment, and a
    /// call to a closed port meanwhile fails (and `failurePolicy: Fail` refuses the pod).
    pub drain_delay: Duration,
    /// How long shutdown then waits for reviews in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            // A pod object is at most ~1.5 MiB (etcd's request limit); the review wraps it.
            max_body_bytes: 4 * 1024 * 1024,
            max_connections: 256,
            drain_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("binding the webhook server to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves on `listener` until [`Limits::drain_delay`] after `shutdown` fires.
pub async fn serve_on(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    admission: Arc<Admission>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, path = MUTATE_PODS_PATH, "webhook server listening (TLS)");
    }
    let acceptor = TlsAcceptor::from(tls);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        let delay = limits.drain_delay;
        async move {
            shutdown.cancelled().await;
            if !delay.is_zero() {
                info!(
                    ?delay,
                    "shutdown: the webhook keeps answering while the Service drains"
                );
                tokio::time::sleep(delay).await;
            }
            stop.cancel();
        }
    });
    let shutdown = stop;

    while let Some((permit, stream, peer)) =
        crate::http::accept_next(&listener, &permits, &shutdown, "webhook").await
    {
        let acceptor = acceptor.clone();
        let admission = Arc::clone(&admission);
        let http = http.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = tokio::select! {
                () = shutdown.cancelled() => return,
                r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)) => r,
            };
            let tls = match tls {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let admission = Arc::clone(&admission);
                async move { Ok::<_, Infallible>(handle(req, &admission, limits).await) }
            });
            let conn = watcher.watch(http.serve_connection(TokioIo::new(tls), service));
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => debug!("webhook server stopped"),
        () = tokio::time::sleep(limits.shutdown_grace) => {
            warn!("webhook server: connections still open after the grace period");
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    admission: &Admission,
    limits: Limits,
) -> Response<Full<Bytes>> {
    if req.uri().path() != MUTATE_PODS_PATH {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let body = Limited::new(req.into_body(), limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_read_timeout, body.collect()).await {
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body timed out\n"),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
            }
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    match admission.review(&bytes).await {
        Ok(out) => {
            let mut r = Response::new(Full::new(Bytes::from(out)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            warn!(error = %e, "malformed admission request");
            text(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
