//! Header handling of the proxy: what the workload receives (step 13) and what is
//! added to every response (step 14; the security headers are the bundle's plan,
//! [`crate::engine::SecurityHeaders`]).
//!
//! Towards the workload:
//! - hop-by-hop fields (RFC 9110 §7.6.1: `Connection` and the fields it names,
//!   `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
//!   `Upgrade`, `Proxy-Authorization`) are not forwarded, except `Upgrade` on an
//!   upgrade request;
//! - the credential never reaches the workload: `X-API-Key` is removed, and so is an
//!   `Authorization: Bearer` whose token is a Turnpike token (`tpk_...`); another
//!   Authorization (a JWT the workload checks itself, Basic) is passed on;
//! - every client-sent `X-Turnpike-*` field is removed, then `X-Turnpike-Key-Id` and
//!   `X-Turnpike-Scopes` are set for authenticated requests;
//! - a field whose name reads as one of those with `_` for `-` (`X_Turnpike_Key_Id`,
//!   `X_API_Key`, `X_Forwarded_For`, `X_Real_IP`, `Proxy_Authorization`) is removed
//!   too: CGI, WSGI and Rack servers turn both spellings into the same variable
//!   (`HTTP_X_TURNPIKE_KEY_ID`), so a client could otherwise set the identity the
//!   workload reads. Other fields with `_` pass unchanged;
//! - `X-Forwarded-For` gets the peer address appended when the peer is a trusted
//!   proxy; from any other peer the client's `X-Forwarded-*`, `Forwarded` and
//!   `X-Real-IP` are dropped and `X-Forwarded-For` is the peer address alone.
//!   `X-Forwarded-Proto` is the scheme the client used (kept from a trusted proxy).

use std::net::IpAddr;

use http::header::{
    AUTHORIZATION, CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::uri::Authority;

use crate::engine::Identity;

/// `X-API-Key`.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `X-Turnpike-Key-Id`.
pub const X_TURNPIKE_KEY_ID: HeaderName = HeaderName::from_static("x-turnpike-key-id");
/// `X-Turnpike-Scopes`.
pub const X_TURNPIKE_SCOPES: HeaderName = HeaderName::from_static("x-turnpike-scopes");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Prefix of the identity fields the sidecar owns.
const TURNPIKE_PREFIX: &str = "x-turnpike-";

/// Names (with `-`) whose `_` spellings are removed, and the prefix likewise.
const UNDERSCORE_ALIASED: [&str; 6] = [
    "x-api-key",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "proxy-authorization",
];

/// `a` equals `b` (lower case, with `-`) when each `_` of `a` is read as `-`.
fn eq_underscore_as_dash(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(&x, &y)| x == y || (x == b'_' && y == b'-'))
}

/// True for a name with `_` that a CGI-style server would read as a field the
/// sidecar owns (see the module documentation).
fn is_underscore_alias(name: &HeaderName) -> bool {
    let n = name.as_str().as_bytes();
    if !n.contains(&b'_') {
        return false;
    }
    let prefix = TURNPIKE_PREFIX.as_bytes();
    (n.len() >= prefix.len() && eq_underscore_as_dash(&n[..prefix.len()], prefix))
        || UNDERSCORE_ALIASED
            .iter()
            .any(|field| eq_underscore_as_dash(n, field.as_bytes()))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == PROXY_AUTHENTICATE
}

/// True when `Connection` lists `name` (case-insensitive tokens).
fn named_by_connection(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE) && named_by_connection(headers, "upgrade")
}

/// True when an `Authorization` value is `Bearer tpk_...`.
fn is_turnpike_bearer(value: &HeaderValue) -> bool {
    let v = value.as_bytes();
    v.len() > 7
        && v[..7].eq_ignore_ascii_case(b"bearer ")
        && v[7..].trim_ascii_start().starts_with(b"tpk_")
}

/// What the forwarded headers depend on besides the client's headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The peer is in `--trusted-proxies`.
    pub peer_trusted: bool,
    /// The client connected over TLS.
    pub tls: bool,
    /// The authenticated key, if any.
    pub identity: Option<Identity<'a>>,
    /// Keep `Upgrade` (an allowed upgrade request).
    pub upgrade: bool,
    /// The request's authority (HTTP/2 has no `Host` field), for `Host`.
    pub authority: Option<&'a Authority>,
}

/// The headers the workload receives.
pub fn forward(src: &HeaderMap, f: &Forwarding<'_>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(src.len() + 4);
    let has_connection = src.contains_key(CONNECTION);
    let mut prior_xff: Option<Vec<u8>> = None;
    for (name, value) in src {
        if is_hop_by_hop(name) || name == X_API_KEY {
            continue;
        }
        if has_connection && named_by_connection(src, name.as_str()) {
            continue;
        }
        if name == AUTHORIZATION && is_turnpike_bearer(value) {
            continue;
        }
        if name.as_str().starts_with(TURNPIKE_PREFIX) || is_underscore_alias(name) {
            continue;
        }
        if name == X_FORWARDED_FOR {
            if f.peer_trusted {
                let list = prior_xff.get_or_insert_with(Vec::new);
                if !list.is_empty() {
                    list.extend_from_slice(b", ");
                }
                list.extend_from_slice(value.as_bytes().trim_ascii());
            }
            continue;
        }
        if !f.peer_trusted
            && (name == X_FORWARDED_PROTO
                || name == X_FORWARDED_HOST
                || name == FORWARDED
                || name == X_REAL_IP)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }

    if f.upgrade
        && let Some(up) = src.get(UPGRADE)
    {
        out.insert(UPGRADE, up.clone());
        out.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !out.contains_key(HOST)
        && let Some(authority) = f.authority
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        out.insert(HOST, v);
    }

    let peer = f.peer.to_string();
    let xff = match prior_xff {
        Some(mut list) if !list.is_empty() => {
            list.extend_from_slice(b", ");
            list.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&list).ok()
        }
        _ => HeaderValue::from_str(&peer).ok(),
    };
    if let Some(xff) = xff {
        out.insert(X_FORWARDED_FOR, xff);
    }
    if !out.contains_key(X_FORWARDED_PROTO) {
        out.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if f.tls { "https" } else { "http" }),
        );
    }

    if let Some(id) = f.identity {
        if let Ok(v) = HeaderValue::from_str(id.key_id.as_str()) {
            out.insert(X_TURNPIKE_KEY_ID, v);
        }
        if let Ok(v) = HeaderValue::from_str(id.scopes_header) {
            out.insert(X_TURNPIKE_SCOPES, v);
        }
    }
    out
}

/// Removes hop-by-hop fields from the workload's response (kept on a 101, which
/// needs `Connection` and `Upgrade`).
pub fn clean_response(headers: &mut HeaderMap, switching_protocols: bool) {
    if switching_protocols {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
}

/// Writes one header from an engine renderer (`for_each`): `Vary` is appended to,
/// everything else replaced.
pub fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    let Ok(value) = HeaderValue::from_str(value) else {
        return;
    };
    let name = HeaderName::from_static(name);
    if name == http::header::VARY {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn fwd(peer_trusted: bool) -> Forwarding<'static> {
        Forwarding {
            peer: "10.0.0.5".parse().unwrap(),
            peer_trusted,
            tls: false,
            identity: None,
            upgrade: false,
            authority: None,
        }
    }

    #[test]
    fn strips_credentials_turnpike_fields_and_hop_by_hop() {
        let src = map(&[
            ("host", "api"),
            ("x-api-key", "tpk_x"),
            ("authorization", "Bearer tpk_abc"),
            ("x-turnpike-key-id", "spoofed"),
            ("X-Turnpike-Anything", "spoofed"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x_api_key", "tpk_y"),
            ("X_Turnpike_Key_Id", "spoofed"),
            ("x-turnpike_scopes", "admin"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("proxy_authorization", "Basic eA=="),
            ("x_request_id", "kept: not a field the sidecar owns"),
            ("accept", "application/json"),
        ]);
        let out = forward(&src, &fwd(false));
        for gone in [
            "x-api-key",
            "authorization",
            "x-turnpike-key-id",
            "x-turnpike-anything",
            "connection",
            "x-secret-hop",
            "te",
            "upgrade",
            "x_api_key",
            "x_turnpike_key_id",
            "x-turnpike_scopes",
            "x_forwarded_for",
            "x_real_ip",
            "proxy_authorization",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        assert_eq!(out["accept"], "application/json");
        assert_eq!(out["host"], "api");
        assert_eq!(out["x_request_id"], "kept: not a field the sidecar owns");
        assert_eq!(out["x-forwarded-for"], "10.0.0.5");
        assert_eq!(out["x-forwarded-proto"], "http");
    }

    #[test]
    fn other_authorization_schemes_pass() {
        let src = map(&[("authorization", "Bearer eyJhbGciOi.x.y")]);
        assert_eq!(
            forward(&src, &fwd(false))["authorization"],
            "Bearer eyJhbGciOi.x.y"
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let src = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let untrusted = forward(&src, &fwd(false));
        assert_eq!(untrusted["x-forwarded-for"], "10.0.0.5");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        assert!(!untrusted.contains_key("x-real-ip"));
        let trusted = forward(&src, &fwd(true));
        assert_eq!(trusted["x-forwarded-for"], "6.6.6.6, 1.2.3.4, 10.0.0.5");
        assert_eq!(trusted["x-forwarded-proto"], "https");
    }

    #[test]
    fn upgrade_kept_when_allowed() {
        let src = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&src));
        let mut f = fwd(false);
        f.upgrade = true;
        let out = forward(&src, &f);
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["connection"], "upgrade");
    }

    #[test]
    fn response_cleanup() {
        let mut h = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-frame-options", "SAMEORIGIN"),
        ]);
        clean_response(&mut h, false);
        assert!(!h.contains_key("x-hop") && !h.contains_key("keep-alive"));
        assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    }
}
