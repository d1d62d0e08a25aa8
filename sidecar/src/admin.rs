//! The admin server (`--admin-listen`): probes, metrics and live key usage.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 with the loaded bundle, 503 with the reason (no bundle yet, last error, shutting down) |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /internal/api-keys/{id}` | the key's masked metadata and live usage; needs `Authorization: Bearer <admin token>` (401 without or with a wrong one, 404 for an unknown id) |
//!
//! The admin token is compared in constant time (SHA-256 of both sides, so the
//! comparison does not leak the length either). Without a configured token the
//! internal endpoints always answer 401.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Secret;
use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};
use crate::proxy::Proxy;
use crate::source::BundleStore;

/// Connections the admin server serves at once.
const MAX_CONNECTIONS: usize = 64;
/// Prefix of the key usage endpoint.
const KEYS_PREFIX: &str = "/internal/api-keys/";

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The proxy (its engine holds the live counters).
    pub proxy: Arc<Proxy>,
    /// The bundle store (readiness, key metadata).
    pub store: Arc<BundleStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock.
    pub clock: Clock,
    /// The admin token, if configured.
    pub token: Option<Secret>,
}

/// Serves until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    header_timeout: Duration,
    stop: CancellationToken,
) {
    let state = Arc::new(state);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(16 * 1024);
    loop {
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            }),
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.store.readiness() {
            Ok(s) => text(StatusCode::OK, format!("{s}\n")),
            Err(s) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {s}\n")),
        },
        "/metrics" => {
            state
                .metrics
                .in_flight
                .set(i64::from(state.proxy.engine().in_flight()));
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            r
        }
        _ => match path.strip_prefix(KEYS_PREFIX) {
            Some(id) if !id.is_empty() && !id.contains('/') => key_usage(state, req, id),
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        },
    }
}

/// True when the request carries the admin token.
fn authorized(token: Option<&Secret>, req: &Request<Incoming>) -> bool {
    let Some(token) = token else {
        return false;
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| {
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
        })
        .unwrap_or_default();
    let want = Sha256::digest(token.expose().as_bytes());
    let got = Sha256::digest(presented);
    bool::from(want.as_slice().ct_eq(got.as_slice())) && !presented.is_empty()
}

fn key_usage(state: &AdminState, req: &Request<Incoming>, id: &str) -> Response<Full<Bytes>> {
    if !authorized(state.token.as_ref(), req) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        );
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"turnpike-admin\""),
        );
        return r;
    }
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "no such key");
    let Some(bundle) = state.store.current() else {
        return not_found();
    };
    let Some(key) = bundle.key(id) else {
        return not_found();
    };
    let now = state.clock.now();
    let usage = state.proxy.engine().key_usage(&bundle, id, now);
    let expires_at = key.expires_at().map(|s| {
        jiff::Timestamp::from_second(s)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| s.to_string())
    });
    let body = json!({
        "id": key.id.as_str(),
        "name": key.name,
        "owner": key.owner,
        "namespace": bundle.namespace,
        "target": bundle.target,
        "scopes": key.scopes,
        "expiresAt": expires_at,
        "expired": key.expires_at().is_some_and(|at| now.unix_secs >= at),
        "revoked": key.revoked(),
        "secrets": key.secret_count(),
        "usage": usage.map(|u| json!({
            "quotaUsedToday": u.quota_used_today,
            "dailyQuota": u.daily_quota,
            "bucket": u.bucket.map(|b| json!({"available": b.available, "burst": b.burst})),
            "lockedOut": u.locked_for_ms.is_some(),
            "lockedForMs": u.locked_for_ms,
            "coolingDown": u.cooldown_for_ms.is_some(),
            "cooldownForMs": u.cooldown_for_ms,
        })),
    });
    json_response(StatusCode::OK, &body)
}
