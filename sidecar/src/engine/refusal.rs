//! Every refusal the sidecar answers itself, in one table.
//!
//! [`Refusal`] says *why* a request is refused; [`Refusal::response`] is the one place
//! that turns it into a status code, the JSON error body, the need for
//! `WWW-Authenticate` or `Retry-After`, the audit event and reason, and the metric
//! label. No other code builds a 401 or a 429.
//!
//! Every authentication failure gets the same client-facing answer (401, "invalid or
//! missing API key"): whether the key exists, is revoked, expired or the secret is
//! wrong is only in the audit reason, never in the response.

use super::path::PathError;
use turnpike_api::token::{Malformed, TokenError};

/// Why a presented credential is not even a token. Audit detail only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// Not valid UTF-8 / not visible ASCII.
    Encoding,
    /// A structural check of `Token::parse` failed.
    Malformed(Malformed),
    /// The CRC32 checksum does not match.
    BadChecksum,
}

impl TokenFault {
    /// From a `Token::parse` error.
    pub fn from_error(e: TokenError) -> Self {
        match e {
            TokenError::Malformed(m) => TokenFault::Malformed(m),
            TokenError::BadChecksum => TokenFault::BadChecksum,
            TokenError::InvalidKeyId | TokenError::Entropy(_) => {
                TokenFault::Malformed(Malformed::KeyId)
            }
        }
    }

    const fn reason(self) -> &'static str {
        match self {
            TokenFault::Encoding => "malformed_token_encoding",
            TokenFault::BadChecksum => "malformed_token_checksum",
            TokenFault::Malformed(m) => match m {
                Malformed::Length => "malformed_token_length",
                Malformed::Prefix => "malformed_token_prefix",
                Malformed::KeyId => "malformed_token_key_id",
                Malformed::Separator => "malformed_token_separator",
                Malformed::Charset => "malformed_token_charset",
                Malformed::SecretRange => "malformed_token_secret_range",
            },
        }
    }
}

/// Why the sidecar refuses a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 308: `httpsRedirect` and a plain-HTTP GET or HEAD (the proxy adds `Location`).
    HttpsRedirect,
    /// 403: `httpsRedirect` and a plain-HTTP request of another method (a redirect
    /// would lose its body).
    HttpsRequired,
    /// 400: the path cannot be decided on (encoded separators, control characters...).
    InvalidPath(PathError),
    /// 400: two `X-API-Key` headers, two `Authorization` headers, or an `X-API-Key`
    /// and a Bearer token that differ.
    ConflictingCredentials,
    /// 401: no credential in an accepted place.
    MissingCredential,
    /// 401: the credential is not a well-formed token.
    MalformedCredential(TokenFault),
    /// 401: well-formed, but no key with that id.
    UnknownKey,
    /// 401: the secret does not verify.
    WrongSecret,
    /// 401: the token is a rotated-out secret past its grace period.
    SecretRotatedOut,
    /// 401: the key is revoked.
    KeyRevoked,
    /// 401: the key is past `expiresAt`.
    KeyExpired,
    /// 403: the key lacks a scope the route requires.
    ScopeDenied,
    /// 403: no rule matches the route and the default action is `Deny`.
    NoMatchingRule,
    /// 403: a CORS preflight from an origin, or for a method or headers, that the
    /// CorsPolicy does not allow.
    CorsRejected,
    /// 429: the client IP is locked out after failed authentications.
    IpLockedOut,
    /// 429: the key id is locked out after failed authentications.
    KeyLockedOut,
    /// 429: the client IP is cooling down after too many 404/400 answers.
    IpCooldown,
    /// 429: the key is cooling down after too many 404/400 answers.
    KeyCooldown,
    /// 429: the per-IP bucket is empty.
    IpRateLimited,
    /// 429: the per-IP bucket of the route is empty.
    IpRouteRateLimited,
    /// 429: the per-key bucket is empty.
    KeyRateLimited,
    /// 429: the per-key bucket of the route is empty.
    KeyRouteRateLimited,
    /// 429: the key's daily quota is used up (until UTC midnight).
    QuotaExhausted,
    /// 503: more requests in flight than `maxInFlight`, or the verification pool's
    /// queue is full.
    Overloaded,
    /// 503: no valid bundle loaded (fail closed).
    NotReady,
}

/// How a [`Refusal`] is answered, audited and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusalResponse {
    /// HTTP status code.
    pub status: u16,
    /// `error.code` of the JSON body.
    pub code: &'static str,
    /// `error.message` of the JSON body.
    pub message: &'static str,
    /// The whole JSON body, `{"error":{"code":"...","message":"..."}}`.
    pub body: &'static str,
    /// The response carries `WWW-Authenticate`.
    pub www_authenticate: bool,
    /// The response carries `Retry-After`.
    pub retry_after: bool,
    /// Audit event name (`event` field of the audit line).
    pub event: &'static str,
    /// Audit reason: the precise why, never sent to the client.
    pub reason: &'static str,
    /// Metric label value (`reason` label); a small, fixed set.
    pub metric: &'static str,
    /// This refusal comes from a limit (rate, quota, lockout, cooldown, overload):
    /// in `DryRun` mode it is reported but not enforced.
    pub is_limit: bool,
}

/// The JSON error body `{"error":{"code":"...","message":"..."}}` as a `&'static str`,
/// built at compile time. The one definition of that shape: the engine's refusals
/// (below) and the proxy's own (`proxy::respond`) both use it.
macro_rules! error_body {
    ($code:expr, $message:expr) => {
        concat!(
            r#"{"error":{"code":""#,
            $code,
            r#"","message":""#,
            $message,
            r#""}}"#
        )
    };
}
pub(crate) use error_body;

macro_rules! row {
    ($status:literal, $code:literal, $message:literal, $event:literal, $reason:expr, $metric:literal, www: $www:literal, retry: $retry:literal, limit: $limit:literal) => {
        RefusalResponse {
            status: $status,
            code: $code,
            message: $message,
            body: error_body!($code, $message),
            www_authenticate: $www,
            retry_after: $retry,
            event: $event,
            reason: $reason,
            metric: $metric,
            is_limit: $limit,
        }
    };
}

/// Message of every 401.
pub const UNAUTHORIZED_MESSAGE: &str = "invalid or missing API key";

impl Refusal {
    /// The one table: status, body, headers, audit and metric of each refusal.
    pub const fn response(self) -> RefusalResponse {
        use Refusal::*;
        match self {
            HttpsRedirect => {
                row!(308, "https_redirect", "use https", "https_redirect", "plain_http", "https_redirect", www: false, retry: false, limit: false)
            }
            HttpsRequired => {
                row!(403, "https_required", "this service requires https", "https_required", "plain_http", "https_required", www: false, retry: false, limit: false)
            }
            InvalidPath(e) => {
                row!(400, "invalid_request", "the request path is not acceptable", "invalid_request", e.as_str(), "invalid_path", www: false, retry: false, limit: false)
            }
            ConflictingCredentials => {
                row!(400, "invalid_request", "more than one credential was presented", "invalid_request", "conflicting_credentials", "conflicting_credentials", www: false, retry: false, limit: false)
            }
            MissingCredential => {
                row!(401, "unauthorized", "invalid or missing API key", "auth_failed", "missing_credential", "missing_credential", www: true, retry: false, limit: false)
            }
            MalformedCredential(f) => {
                row!(401, "unauthorized", "invalid or missing API key", "auth_failed", f.reason(), "malformed_credential", www: true, retry: false, limit: false)
            }
            UnknownKey => {
                row!(401, "unauthorized", "invalid or missing API key", "auth_failed", "unknown_key", "unknown_key", www: true, retry: false, limit: false)
            }
            WrongSecret => {
                row!(401, "unauthorized", "invalid or missing API key", "auth_failed", "wrong_secret", "wrong_secret", www: true, retry: false, limit: false)
            }
            SecretRotatedOut => {
                row!(401, "unauthorized", "invalid or missing API key", "rotated_secret_used", "secret_rotated_out", "secret_rotated_out", www: true, retry: false, limit: false)
            }
            KeyRevoked => {
                row!(401, "unauthorized", "invalid or missing API key", "revoked_key_used", "key_revoked", "key_revoked", www: true, retry: false, limit: false)
            }
            KeyExpired => {
                row!(401, "unauthorized", "invalid or missing API key", "expired_key_used", "key_expired", "key_expired", www: true, retry: false, limit: false)
            }
            ScopeDenied => {
                row!(403, "forbidden", "the API key is not allowed to access this route", "scope_denied", "missing_scope", "scope_denied", www: false, retry: false, limit: false)
            }
            NoMatchingRule => {
                row!(403, "forbidden", "the API key is not allowed to access this route", "scope_denied", "no_matching_rule", "no_matching_rule", www: false, retry: false, limit: false)
            }
            CorsRejected => {
                row!(403, "cors_forbidden", "cross-origin request not allowed", "cors_rejected", "cors_preflight_rejected", "cors_rejected", www: false, retry: false, limit: false)
            }
            IpLockedOut => {
                row!(429, "locked_out", "too many failed authentication attempts; try again later", "locked_out", "ip_locked_out", "ip_locked_out", www: false, retry: true, limit: true)
            }
            KeyLockedOut => {
                row!(429, "locked_out", "too many failed authentication attempts; try again later", "locked_out", "key_locked_out", "key_locked_out", www: false, retry: true, limit: true)
            }
            IpCooldown => {
                row!(429, "cooldown", "too many invalid requests; try again later", "cooldown", "ip_cooldown", "ip_cooldown", www: false, retry: true, limit: true)
            }
            KeyCooldown => {
                row!(429, "cooldown", "too many invalid requests; try again later", "cooldown", "key_cooldown", "key_cooldown", www: false, retry: true, limit: true)
            }
            IpRateLimited => {
                row!(429, "rate_limited", "rate limit exceeded", "rate_limited", "ip_rate_limit", "ip_rate_limit", www: false, retry: true, limit: true)
            }
            IpRouteRateLimited => {
                row!(429, "rate_limited", "rate limit exceeded", "rate_limited", "ip_route_rate_limit", "ip_route_rate_limit", www: false, retry: true, limit: true)
            }
            KeyRateLimited => {
                row!(429, "rate_limited", "rate limit exceeded", "rate_limited", "key_rate_limit", "key_rate_limit", www: false, retry: true, limit: true)
            }
            KeyRouteRateLimited => {
                row!(429, "rate_limited", "rate limit exceeded", "rate_limited", "key_route_rate_limit", "key_route_rate_limit", www: false, retry: true, limit: true)
            }
            QuotaExhausted => {
                row!(429, "quota_exceeded", "daily quota exhausted; it resets at midnight UTC", "quota_exhausted", "daily_quota", "daily_quota", www: false, retry: true, limit: true)
            }
            Overloaded => {
                row!(503, "overloaded", "the service is overloaded; try again later", "overloaded", "overloaded", "overloaded", www: false, retry: true, limit: true)
            }
            NotReady => {
                row!(503, "unavailable", "the service is not ready", "not_ready", "no_bundle", "not_ready", www: false, retry: true, limit: false)
            }
        }
    }

    /// Every metric label value a refusal can produce (for pre-registering series).
    pub const METRIC_LABELS: [&'static str; 24] = [
        "https_redirect",
        "https_required",
        "invalid_path",
        "conflicting_credentials",
        "missing_credential",
        "malformed_credential",
        "unknown_key",
        "wrong_secret",
        "secret_rotated_out",
        "key_revoked",
        "key_expired",
        "scope_denied",
        "no_matching_rule",
        "cors_rejected",
        "ip_locked_out",
        "key_locked_out",
        "ip_cooldown",
        "key_cooldown",
        "ip_rate_limit",
        "ip_route_rate_limit",
        "key_rate_limit",
        "key_route_rate_limit",
        "daily_quota",
        "overloaded",
    ];
}

/// `Retry-After` for refusals that have no better estimate (overload, not ready).
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all() -> Vec<Refusal> {
        use Refusal::*;
        vec![
            HttpsRedirect,
            HttpsRequired,
            InvalidPath(PathError::EncodedSlash),
            ConflictingCredentials,
            MissingCredential,
            MalformedCredential(TokenFault::BadChecksum),
            MalformedCredential(TokenFault::Malformed(Malformed::Length)),
            MalformedCredential(TokenFault::Encoding),
            UnknownKey,
            WrongSecret,
            SecretRotatedOut,
            KeyRevoked,
            KeyExpired,
            ScopeDenied,
            NoMatchingRule,
            CorsRejected,
            IpLockedOut,
            KeyLockedOut,
            IpCooldown,
            KeyCooldown,
            IpRateLimited,
            IpRouteRateLimited,
            KeyRateLimited,
            KeyRouteRateLimited,
            QuotaExhausted,
            Overloaded,
            NotReady,
        ]
    }

    #[test]
    fn table_is_consistent() {
        for r in all() {
            let resp = r.response();
            let body: serde_json::Value = serde_json::from_str(resp.body).unwrap();
            assert_eq!(body["error"]["code"], resp.code, "{r:?}");
            assert_eq!(body["error"]["message"], resp.message, "{r:?}");
            assert_eq!(resp.www_authenticate, resp.status == 401, "{r:?}");
            assert_eq!(
                resp.retry_after,
                resp.status == 429 || resp.status == 503,
                "{r:?}"
            );
            if resp.status == 401 {
                assert_eq!(resp.message, UNAUTHORIZED_MESSAGE);
            }
            assert!(
                Refusal::METRIC_LABELS.contains(&resp.metric) || resp.metric == "not_ready",
                "{r:?}"
            );
        }
    }

    #[test]
    fn status_codes() {
        use Refusal::*;
        let want = [
            (HttpsRedirect, 308),
            (HttpsRequired, 403),
            (InvalidPath(PathError::Control), 400),
            (ConflictingCredentials, 400),
            (UnknownKey, 401),
            (ScopeDenied, 403),
            (QuotaExhausted, 429),
            (IpLockedOut, 429),
            (Overloaded, 503),
            (NotReady, 503),
        ];
        for (r, status) in want {
            assert_eq!(r.response().status, status, "{r:?}");
        }
    }
}
