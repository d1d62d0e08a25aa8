//! `AccessPolicy.spec.securityHeaders`: the security headers of a target's answers.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::HEADER_PATTERN;
use crate::duration::Duration;

/// A header value: visible ASCII, spaces and tabs, not starting or ending with
/// whitespace (RFC 9110 field-value).
pub const HEADER_VALUE_PATTERN: &str = r"^[!-~]([ \t!-~]*[!-~])?$";

/// Header names a policy may not set or remove, lower-case: hop-by-hop and framing
/// fields (the HTTP layer owns them), and the fields the sidecar itself writes
/// (identity, rate limits, `Retry-After`, `WWW-Authenticate`, CORS). HSTS is written
/// by `hsts`, never by `set`.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "content-length",
    "host",
    "retry-after",
    "www-authenticate",
    "ratelimit",
    "ratelimit-policy",
    "vary",
];
/// Prefixes (lower-case) of forbidden header names.
pub const FORBIDDEN_PREFIXES: &[&str] = &["x-turnpike-", "x-ratelimit-", "access-control-"];

/// CEL regex of the forbidden names, case-insensitive. Mirrors
/// [`FORBIDDEN_HEADERS`] and [`FORBIDDEN_PREFIXES`] (a test keeps them in step).
pub const FORBIDDEN_RE: &str = "(?i)^(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade|proxy-authenticate|proxy-authorization|content-length|host|retry-after|www-authenticate|ratelimit|ratelimit-policy|vary|x-turnpike-.*|x-ratelimit-.*|access-control-.*)$";

/// Security headers on the target's answers (the workload's and the sidecar's own).
///
/// Unless `defaults` is false, the OWASP Secure Headers project's choices for APIs
/// apply first: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
/// `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`,
/// `Referrer-Policy: no-referrer`, `X-Permitted-Cross-Domain-Policies: none` and
/// `X-XSS-Protection: 0`, each only where the workload did not set it; `Server` and
/// `X-Powered-By` removed; HSTS `max-age=31536000; includeSubDomains`. A header named
/// in `set`, `setIfMissing` or `remove` replaces its default.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new(format!("self.remove.all(n, !n.matches('{FORBIDDEN_RE}'))")).message("remove may not name hop-by-hop, framing or Turnpike-owned headers (Connection, Transfer-Encoding, X-Turnpike-*, X-RateLimit-*, Access-Control-*, Retry-After, WWW-Authenticate, ...)").reason(Reason::FieldValueForbidden).field_path(".remove"),
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityHeaders {
    /// Start from the OWASP defaults (true, the default) or from nothing.
    #[serde(default = "yes")]
    pub defaults: bool,
    /// Headers set on every answer, replacing the workload's value.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub set: Vec<HeaderField>,
    /// Headers set only on answers where the workload did not set them.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub set_if_missing: Vec<HeaderField>,
    /// Headers removed from the workload's answers (leaks such as `Server`,
    /// `X-Powered-By`).
    #[serde(default)]
    #[schemars(length(max = 32), inner(pattern(HEADER_PATTERN), length(max = 128)))]
    pub remove: Vec<String>,
    /// `Strict-Transport-Security`, sent only on requests that arrived over HTTPS (the
    /// sidecar's own TLS, or `X-Forwarded-Proto: https` from a `--trusted-proxies`
    /// peer). Absent: the default (`max-age=31536000; includeSubDomains`); to send
    /// none, list the header in `remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
}

impl Default for SecurityHeaders {
    fn default() -> Self {
        Self {
            defaults: true,
            set: Vec::new(),
            set_if_missing: Vec::new(),
            remove: Vec::new(),
            hsts: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// One header and its value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new(format!("!self.name.matches('{FORBIDDEN_RE}')")).message("hop-by-hop, framing and Turnpike-owned headers (Connection, Transfer-Encoding, X-Turnpike-*, X-RateLimit-*, Access-Control-*, Retry-After, WWW-Authenticate, ...) cannot be set").reason(Reason::FieldValueForbidden).field_path(".name"),
    validation = Rule::new("!self.name.matches('(?i)^strict-transport-security$')").message("Strict-Transport-Security is set with hsts, which sends it only over HTTPS").reason(Reason::FieldValueForbidden).field_path(".name"),
)]
pub struct HeaderField {
    /// Header name (an RFC 9110 token, case-insensitive).
    #[schemars(pattern(HEADER_PATTERN), length(max = 128))]
    pub name: String,
    /// Header value (visible ASCII and inner spaces).
    #[schemars(pattern(HEADER_VALUE_PATTERN), length(min = 1, max = 1024))]
    pub value: String,
}

/// HTTP Strict Transport Security (RFC 6797).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!(has(self.preload) && self.preload) || (has(self.includeSubDomains) && self.includeSubDomains)").message("hsts.preload needs includeSubDomains (and a maxAge of at least 8760h): the preload list refuses anything less").reason(Reason::FieldValueInvalid).field_path(".preload"),
)]
#[serde(rename_all = "camelCase")]
pub struct Hsts {
    /// How long browsers remember to use HTTPS only (`max-age`), e.g. `8760h` (a year).
    /// `0s` tells them to forget.
    pub max_age: Duration,
    /// The rule covers every subdomain too.
    #[serde(default)]
    pub include_sub_domains: bool,
    /// Ask to be included in browsers' preload lists (needs `includeSubDomains` and a
    /// `maxAge` of at least a year).
    #[serde(default)]
    pub preload: bool,
}
