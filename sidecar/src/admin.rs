//! The admin server (`--admin-listen`): probes, metrics and live key usage.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 with the loaded bundle, 503 with the reason (no bundle yet, last error, shutting down) |
//! | `GET /metrics` | OpenMetrics text |
//! | `GET /internal/api-keys/{id}` | the key's masked metadata and live usage; needs the admin token (401 without or with a wrong one, 503 while no token is configured, 404 for an unknown id) |
//!
//! The admin token is presented in the header `x-turnpike-admin-token`
//! ([`ADMIN_TOKEN_HEADER`]) or as `Authorization: Bearer <token>`. The dedicated header
//! exists because the API server's pod proxy (`kubectl turnpike usage`) consumes
//! `Authorization` itself; when it is present, it alone is checked (one credential,
//! never "either one"), and a repeated header is refused. The token is compared in
//! constant time (SHA-256 of both sides, so the comparison does not leak the length
//! either).
//!
//! The token comes from `TURNPIKE_ADMIN_TOKEN` (fixed for the process) or from
//! `--admin-token-file`, which may not exist yet: the injector mounts the namespace's
//! Secret `turnpike.admin` as an optional volume, and the kubelet adds or replaces the
//! file (a `..data` symlink swap) when the Secret appears. The file is re-read when a
//! request needs it, at most once per [`TOKEN_RECHECK_MS`]. While there is no usable
//! token the internal endpoints answer 503 `admin_token_unavailable` (with
//! `Retry-After`): the caller's token may well be right, the sidecar cannot tell yet,
//! so a 401 would send the caller looking for the wrong problem.

use std::convert::Infallible;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
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
pub use turnpike_api::bundle::ADMIN_TOKEN_HEADER;

use crate::clock::Clock;
use crate::config::{AdminTokenConfig, Secret};
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
    /// Where the admin token comes from.
    pub token: Arc<AdminToken>,
}

/// A token file is re-read at most this often (milliseconds), and only when a request
/// to `/internal/...` needs the token.
pub const TOKEN_RECHECK_MS: u64 = 1_000;
/// Largest admin token file read; a bigger one is refused (it is not a token).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The admin token as the internal endpoints see it. `Debug` never shows the token.
#[derive(Debug)]
pub enum AdminToken {
    /// None configured: the internal endpoints answer 503.
    Unset,
    /// Fixed for the life of the process (`TURNPIKE_ADMIN_TOKEN`).
    Fixed(Secret),
    /// `--admin-token-file`, which may appear, change or vanish while the process runs.
    File(TokenFile),
}

impl AdminToken {
    /// The token source `config` describes. A file is read at the first request that
    /// needs it.
    pub fn from_config(config: &AdminTokenConfig) -> Self {
        match config {
            AdminTokenConfig::Unset => AdminToken::Unset,
            AdminTokenConfig::Env(secret) => AdminToken::Fixed(secret.clone()),
            AdminTokenConfig::File(path) => AdminToken::File(TokenFile::new(path.clone())),
        }
    }

    /// The token now (`now_ms`: the monotonic clock), or `None` when there is none yet.
    pub fn current(&self, now_ms: u64) -> Option<Secret> {
        match self {
            AdminToken::Unset => None,
            AdminToken::Fixed(secret) => Some(secret.clone()),
            AdminToken::File(file) => file.current(now_ms),
        }
    }
}

/// An admin token file, re-read at most once per [`TOKEN_RECHECK_MS`]. Reading the
/// path anew each time follows the kubelet's `..data` symlink swap; the previous
/// contents are never kept once the file is gone or unreadable.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    /// Monotonic milliseconds of the last read.
    read_at: Option<u64>,
    token: Option<Secret>,
    /// Why there is no token (logged once per change, never the content).
    problem: Option<String>,
}

impl TokenFile {
    /// A token file, not read yet.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new(FileState::default()),
        }
    }

    /// The token, re-reading the file when the last read is [`TOKEN_RECHECK_MS`] old.
    pub fn current(&self, now_ms: u64) -> Option<Secret> {
        // The state only caches a read: a panic elsewhere cannot leave it inconsistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .read_at
            .is_none_or(|at| now_ms.saturating_sub(at) >= TOKEN_RECHECK_MS);
        if due {
            state.read_at = Some(now_ms);
            let path = self.path.display();
            match read_token(&self.path) {
                Ok(token) => {
                    let changed = state
                        .token
                        .as_ref()
                        .is_none_or(|old| old.expose() != token.expose());
                    if changed {
                        tracing::info!(file = %path, "admin token loaded");
                    }
                    state.token = Some(token);
                    state.problem = None;
                }
                Err(problem) => {
                    if state.problem.as_deref() != Some(problem.as_str()) {
                        tracing::warn!(
                            file = %path,
                            problem = %problem,
                            "no admin token: /internal answers 503 until the file holds one"
                        );
                    }
                    state.token = None;
                    state.problem = Some(problem);
                }
            }
        }
        state.token.clone()
    }
}

/// Reads a token file: trimmed, non-empty, UTF-8, at most [`MAX_TOKEN_FILE_BYTES`].
/// Errors describe the problem, never the content.
pub(crate) fn read_token(path: &Path) -> Result<Secret, String> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "the file does not exist (yet)".to_owned(),
        kind => kind.to_string(),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "the file is larger than {MAX_TOKEN_FILE_BYTES} bytes"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_owned())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".to_owned());
    }
    Ok(Secret::new(token.to_owned()))
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

/// Why a request to `/internal/...` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No token is configured (yet).
    NoToken,
    /// No token presented, or a wrong one.
    Unauthorized,
}

/// Checks the presented admin token against `token` (constant time). The dedicated
/// header wins over `Authorization` when present; a repeated dedicated header is
/// refused.
pub fn check_token(token: Option<&Secret>, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(token) = token else {
        return Err(Denied::NoToken);
    };
    let mut dedicated = headers.get_all(ADMIN_TOKEN_HEADER).iter();
    let presented: &[u8] = match (dedicated.next(), dedicated.next()) {
        (Some(_), Some(_)) => return Err(Denied::Unauthorized),
        (Some(v), None) => v.as_bytes().trim_ascii(),
        (None, _) => headers
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| {
                (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
                    .then(|| v[7..].trim_ascii())
            })
            .unwrap_or_default(),
    };
    let want = Sha256::digest(token.expose().as_bytes());
    let got = Sha256::digest(presented);
    if bool::from(want.as_slice().ct_eq(got.as_slice())) && !presented.is_empty() {
        Ok(())
    } else {
        Err(Denied::Unauthorized)
    }
}

/// The answer to a refused `/internal/...` request.
fn denied(why: Denied) -> Response<Full<Bytes>> {
    match why {
        Denied::NoToken => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin_token_unavailable",
                "admin token not configured yet",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("10"));
            r
        }
        Denied::Unauthorized => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin token is required",
            );
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"turnpike-admin\""),
            );
            r
        }
    }
}

fn key_usage(state: &AdminState, req: &Request<Incoming>, id: &str) -> Response<Full<Bytes>> {
    let now = state.clock.now();
    let token = state.token.current(now.mono_ms);
    if let Err(why) = check_token(token.as_ref(), req.headers()) {
        return denied(why);
    }
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "no such key");
    let Some(bundle) = state.store.current() else {
        return not_found();
    };
    let Some(key) = bundle.key(id) else {
        return not_found();
    };
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    #[test]
    fn token_in_the_dedicated_header_or_as_bearer() {
        let t = secret("adm1n-token");
        let ok = |pairs: &[(&str, &str)]| check_token(Some(&t), &headers(pairs));
        assert_eq!(ok(&[(ADMIN_TOKEN_HEADER, "adm1n-token")]), Ok(()));
        assert_eq!(ok(&[("X-Turnpike-Admin-Token", " adm1n-token ")]), Ok(()));
        assert_eq!(ok(&[("authorization", "Bearer adm1n-token")]), Ok(()));
        assert_eq!(ok(&[("authorization", "bearer adm1n-token")]), Ok(()));
        for bad in [
            &[][..],
            &[(ADMIN_TOKEN_HEADER, "wrong")][..],
            &[(ADMIN_TOKEN_HEADER, "")][..],
            &[(ADMIN_TOKEN_HEADER, "adm1n-token-and-more")][..],
            &[("authorization", "Basic adm1n-token")][..],
            &[("authorization", "Bearer ")][..],
            // The dedicated header wins: a right Bearer does not rescue a wrong one.
            &[
                (ADMIN_TOKEN_HEADER, "wrong"),
                ("authorization", "Bearer adm1n-token"),
            ][..],
            // One credential: a repeated header is refused even when one copy is right.
            &[
                (ADMIN_TOKEN_HEADER, "adm1n-token"),
                (ADMIN_TOKEN_HEADER, "adm1n-token"),
            ][..],
        ] {
            assert_eq!(ok(bad), Err(Denied::Unauthorized), "{bad:?}");
        }
    }

    #[test]
    fn without_a_token_every_request_is_told_to_come_back() {
        let h = headers(&[(ADMIN_TOKEN_HEADER, "anything")]);
        assert_eq!(check_token(None, &h), Err(Denied::NoToken));
        let r = denied(Denied::NoToken);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(RETRY_AFTER));
        let r = denied(Denied::Unauthorized);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(WWW_AUTHENTICATE));
    }

    /// Writes `token` the way the kubelet updates a Secret volume: a new timestamped
    /// directory, then an atomic swap of the `..data` symlink; `token` links through it.
    fn kubelet_write(dir: &Path, generation: u32, token: &str) {
        let data = dir.join(format!("..2026_{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), token).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        let link = dir.join("token");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("..data/token", &link).unwrap();
        }
    }

    #[test]
    fn a_token_file_that_appears_changes_and_vanishes_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = TokenFile::new(dir.path().join("token"));
        let mut now = 0;
        assert!(file.current(now).is_none(), "no file yet");

        kubelet_write(dir.path(), 1, "first-token\n");
        // Within the recheck interval the last read stands; after it, the file is read.
        assert!(file.current(now + TOKEN_RECHECK_MS - 1).is_none());
        now += TOKEN_RECHECK_MS;
        assert_eq!(file.current(now).unwrap().expose(), "first-token");

        kubelet_write(dir.path(), 2, "second-token");
        now += TOKEN_RECHECK_MS;
        assert_eq!(file.current(now).unwrap().expose(), "second-token");

        // An emptied or removed file leaves no token behind (the old one is not kept).
        kubelet_write(dir.path(), 3, "");
        now += TOKEN_RECHECK_MS;
        assert!(file.current(now).is_none());
        std::fs::remove_file(dir.path().join("..data")).unwrap();
        now += TOKEN_RECHECK_MS;
        assert!(file.current(now).is_none());
        assert!(!format!("{:?}", AdminToken::File(file)).contains("second-token"));
    }

    #[test]
    fn oversized_or_binary_token_files_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(5000)).unwrap();
        let err = read_token(&big).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        assert!(!err.contains("xxx"));
        let bin = dir.path().join("bin");
        std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_token(&bin).unwrap_err(), "the file is not UTF-8");
    }
}
