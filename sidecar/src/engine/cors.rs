//! CORS: preflights answered by the sidecar (step 2), headers for actual responses.
//!
//! Origin matching:
//! - `*` matches every origin. `Access-Control-Allow-Origin: *` is sent unless
//!   credentials are allowed (admission forbids `*` with credentials; if a bundle has
//!   both anyway, the request's origin is echoed, as browsers require).
//! - An exact origin (`https://shop.example.com`, optionally with a port) matches
//!   that origin only, ASCII case-insensitively.
//! - `https://*.example.com` matches `https://` followed by **one or more** DNS labels
//!   and `.example.com`: `https://a.example.com` and `https://a.b.example.com`, never
//!   `https://example.com` itself, `https://evilexample.com`, another scheme or
//!   another port. A deeper subdomain of a domain you trust is under the same
//!   owner's control, and this is how most CORS libraries read the pattern.
//! - `null` and anything with a path, user info or wrong port never matches a
//!   pattern other than `*`.
//!
//! A preflight is `OPTIONS` with `Origin` and `Access-Control-Request-Method`. It has
//! no credentials; it passes the per-IP limits like any other request. An allowed
//! preflight is answered 204 with the `Access-Control-Allow-*` headers; a disallowed
//! origin, method or header gets 403 `cors_forbidden` (a browser fails either way,
//! and the status tells a developer why). Without a CorsPolicy there is no CORS and
//! an `OPTIONS` request is an ordinary request.
//!
//! `Allow-Methods` lists the configured methods (default `GET, HEAD, POST`),
//! `Allow-Headers` the configured headers; requested headers must all be in that
//! list (case-insensitive).

use std::fmt::Write as _;

use turnpike_api::bundle::CorsConfig;
use turnpike_api::types::Method;

use super::facts::HeaderValues;
use super::headers::Text;
use super::refusal::Refusal;
use super::routes::MethodSet;

#[derive(Clone, Debug)]
enum OriginRule {
    Exact(Box<str>),
    /// `scheme://` + one or more labels + `suffix` (`.example.com[:port]`).
    Subdomains {
        scheme: Box<str>,
        suffix: Box<str>,
    },
}

impl OriginRule {
    fn parse(pattern: &str) -> Self {
        for scheme in ["https://", "http://"] {
            if let Some(rest) = pattern.strip_prefix(scheme)
                && let Some(suffix) = rest.strip_prefix('*')
            {
                return OriginRule::Subdomains {
                    scheme: scheme.into(),
                    suffix: suffix.to_ascii_lowercase().into(),
                };
            }
        }
        OriginRule::Exact(pattern.to_ascii_lowercase().into())
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Subdomains { scheme, suffix } => {
                let ob = origin.as_bytes();
                let (sl, xl) = (scheme.len(), suffix.len());
                if ob.len() <= sl + xl
                    || !ob[..sl].eq_ignore_ascii_case(scheme.as_bytes())
                    || !ob[ob.len() - xl..].eq_ignore_ascii_case(suffix.as_bytes())
                {
                    return false;
                }
                labels(&ob[sl..ob.len() - xl])
            }
        }
    }
}

/// One or more DNS labels separated by dots: `[a-z0-9-]+`, no empty label, no label
/// starting or ending with `-`.
fn labels(s: &[u8]) -> bool {
    s.split(|&b| b == b'.').all(|l| {
        !l.is_empty()
            && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && l.first() != Some(&b'-')
            && l.last() != Some(&b'-')
    })
}

/// A compiled CorsPolicy.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Box<[OriginRule]>,
    any_origin: bool,
    methods: MethodSet,
    methods_header: Box<str>,
    headers: Box<[Box<str>]>,
    headers_header: Option<Box<str>>,
    expose_header: Option<Box<str>>,
    credentials: bool,
    max_age: Option<Box<str>>,
}

fn join<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Option<Box<str>> {
    let mut out = String::new();
    for item in items {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    (!out.is_empty()).then(|| out.into_boxed_str())
}

impl Cors {
    /// Compiles the policy.
    pub fn compile(c: &CorsConfig) -> Self {
        let methods = if c.allow_methods.is_empty() {
            vec![Method::Get, Method::Head, Method::Post]
        } else {
            c.allow_methods.clone()
        };
        let mut headers: Vec<Box<str>> = c
            .allow_headers
            .iter()
            .map(|h| h.to_ascii_lowercase().into_boxed_str())
            .collect();
        headers.sort();
        headers.dedup();
        Self {
            any_origin: c.allow_origins.iter().any(|o| o == "*"),
            origins: c
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| OriginRule::parse(o))
                .collect(),
            methods: MethodSet::from_list(&methods),
            methods_header: join(methods.iter().map(|m| m.as_str())).unwrap_or_default(),
            headers_header: join(c.allow_headers.iter()),
            headers: headers.into_boxed_slice(),
            expose_header: join(c.expose_headers.iter()),
            credentials: c.allow_credentials,
            max_age: c.max_age_secs.map(|s| s.to_string().into_boxed_str()),
        }
    }

    /// The answer depends on the request's origin (so caches need `Vary: Origin`).
    fn varies(&self) -> bool {
        !self.any_origin || self.credentials
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    fn allow_origin<'a>(&self, origin: HeaderValues<'a>) -> Option<&'a str> {
        let origin = std::str::from_utf8(origin.single()?).ok()?;
        if self.any_origin {
            return Some(if self.credentials { origin } else { "*" });
        }
        self.origins
            .iter()
            .any(|r| r.matches(origin))
            .then_some(origin)
    }

    /// True when the request is a CORS preflight.
    pub fn is_preflight(
        method: &str,
        origin: HeaderValues<'_>,
        request_method: HeaderValues<'_>,
    ) -> bool {
        method == "OPTIONS"
            && !matches!(origin, HeaderValues::Absent)
            && !matches!(request_method, HeaderValues::Absent)
    }

    /// Answers a preflight.
    ///
    /// # Errors
    /// [`Refusal::CorsRejected`] for an origin, method or header not allowed.
    pub fn preflight<'a>(
        &'a self,
        origin: HeaderValues<'a>,
        request_method: HeaderValues<'_>,
        request_headers: HeaderValues<'_>,
    ) -> Result<PreflightHeaders<'a>, Refusal> {
        let allow_origin = self.allow_origin(origin).ok_or(Refusal::CorsRejected)?;
        let method = request_method
            .single()
            .and_then(|m| std::str::from_utf8(m).ok())
            .and_then(Method::from_wire)
            .ok_or(Refusal::CorsRejected)?;
        if !self.methods.contains(method) {
            return Err(Refusal::CorsRejected);
        }
        let requested = match request_headers {
            HeaderValues::Absent => &b""[..],
            HeaderValues::One(v) => v,
            HeaderValues::Many => return Err(Refusal::CorsRejected),
        };
        let all_allowed = requested
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .filter(|h| !h.is_empty())
            .all(|h| {
                self.headers
                    .iter()
                    .any(|a| a.as_bytes().eq_ignore_ascii_case(h))
            });
        if !all_allowed {
            return Err(Refusal::CorsRejected);
        }
        Ok(PreflightHeaders {
            allow_origin,
            allow_methods: &self.methods_header,
            allow_headers: self.headers_header.as_deref(),
            allow_credentials: self.credentials,
            max_age: self.max_age.as_deref(),
            vary_origin: self.varies(),
        })
    }

    /// Headers for an actual (non-preflight) response, including the sidecar's own
    /// refusals, so a browser can read them.
    pub fn decorate<'a>(&'a self, origin: HeaderValues<'a>) -> CorsHeaders<'a> {
        let allow_origin = self.allow_origin(origin);
        CorsHeaders {
            allow_origin,
            allow_credentials: allow_origin.is_some() && self.credentials,
            expose_headers: allow_origin.and(self.expose_header.as_deref()),
            vary_origin: self.varies(),
        }
    }
}

/// Header names, lower case.
pub mod names {
    /// `Access-Control-Allow-Origin`.
    pub const ALLOW_ORIGIN: &str = "access-control-allow-origin";
    /// `Access-Control-Allow-Credentials`.
    pub const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
    /// `Access-Control-Allow-Methods`.
    pub const ALLOW_METHODS: &str = "access-control-allow-methods";
    /// `Access-Control-Allow-Headers`.
    pub const ALLOW_HEADERS: &str = "access-control-allow-headers";
    /// `Access-Control-Expose-Headers`.
    pub const EXPOSE_HEADERS: &str = "access-control-expose-headers";
    /// `Access-Control-Max-Age`.
    pub const MAX_AGE: &str = "access-control-max-age";
    /// `Vary`.
    pub const VARY: &str = "vary";
}

/// CORS headers of an actual response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorsHeaders<'a> {
    /// `Access-Control-Allow-Origin`; `None` when the origin is not allowed.
    pub allow_origin: Option<&'a str>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Option<&'a str>,
    /// Add `Origin` to `Vary`.
    pub vary_origin: bool,
}

impl CorsHeaders<'_> {
    /// Calls `emit(name, value)` for each header. `Vary` should be appended to (not
    /// replace) the upstream's `Vary`.
    pub fn for_each(&self, mut emit: impl FnMut(&'static str, &str)) {
        if let Some(o) = self.allow_origin {
            emit(names::ALLOW_ORIGIN, o);
        }
        if self.allow_credentials {
            emit(names::ALLOW_CREDENTIALS, "true");
        }
        if let Some(e) = self.expose_headers {
            emit(names::EXPOSE_HEADERS, e);
        }
        if self.vary_origin {
            emit(names::VARY, "Origin");
        }
    }
}

/// Headers of an allowed preflight answer (status 204).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreflightHeaders<'a> {
    /// `Access-Control-Allow-Origin`.
    pub allow_origin: &'a str,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: &'a str,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Option<&'a str>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age: Option<&'a str>,
    /// `Vary: Origin` (always with the request-method and request-headers fields).
    pub vary_origin: bool,
}

impl PreflightHeaders<'_> {
    /// Calls `emit(name, value)` for each header.
    pub fn for_each(&self, mut emit: impl FnMut(&'static str, &str)) {
        emit(names::ALLOW_ORIGIN, self.allow_origin);
        emit(names::ALLOW_METHODS, self.allow_methods);
        if let Some(h) = self.allow_headers {
            emit(names::ALLOW_HEADERS, h);
        }
        if self.allow_credentials {
            emit(names::ALLOW_CREDENTIALS, "true");
        }
        if let Some(m) = self.max_age {
            emit(names::MAX_AGE, m);
        }
        let mut vary = Text::<96>::new();
        if self.vary_origin {
            let _ = vary.write_str("Origin, ");
        }
        let _ = vary.write_str("Access-Control-Request-Method, Access-Control-Request-Headers");
        emit(names::VARY, vary.as_str());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::compile(&CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec![Method::Get, Method::Post],
            allow_headers: vec!["content-type".into(), "x-api-key".into()],
            expose_headers: vec!["X-RateLimit-Limit".into()],
            allow_credentials: credentials,
            max_age_secs: Some(600),
        })
    }

    fn allowed(c: &Cors, origin: &str) -> bool {
        c.decorate(HeaderValues::one(origin)).allow_origin.is_some()
    }

    #[test]
    fn origin_matching() {
        let c = cors(
            &[
                "https://shop.example.com",
                "https://*.shop.example.com",
                "http://localhost:3000",
            ],
            true,
        );
        assert!(allowed(&c, "https://shop.example.com"));
        assert!(allowed(&c, "HTTPS://Shop.Example.com"));
        assert!(allowed(&c, "https://a.shop.example.com"));
        assert!(allowed(&c, "https://a.b.shop.example.com"));
        assert!(allowed(&c, "http://localhost:3000"));
        for no in [
            "https://evilshop.example.com",
            "https://.shop.example.com",
            "https://a..shop.example.com",
            "https://-a.shop.example.com",
            "http://a.shop.example.com",
            "https://a.shop.example.com:8443",
            "https://a.shop.example.com.evil.com",
            "https://a/b.shop.example.com",
            "https://a@b.shop.example.com",
            "http://localhost:30001",
            "null",
            "",
        ] {
            assert!(!allowed(&c, no), "{no}");
        }
        assert!(c.decorate(HeaderValues::Many).allow_origin.is_none());
    }

    #[test]
    fn wildcard_origin() {
        let c = cors(&["*"], false);
        let h = c.decorate(HeaderValues::one("https://any.where"));
        assert_eq!(h.allow_origin, Some("*"));
        assert!(!h.vary_origin);
        assert!(!h.allow_credentials);
    }

    #[test]
    fn preflight() {
        let c = cors(&["https://shop.example.com"], true);
        let origin = HeaderValues::one("https://shop.example.com");
        let ok = c
            .preflight(
                origin,
                HeaderValues::one("POST"),
                HeaderValues::one("Content-Type, X-API-Key"),
            )
            .unwrap();
        assert_eq!(ok.allow_origin, "https://shop.example.com");
        assert_eq!(ok.allow_methods, "GET, POST");
        assert_eq!(ok.allow_headers, Some("content-type, x-api-key"));
        assert_eq!(ok.max_age, Some("600"));
        assert!(ok.allow_credentials);
        let mut names = Vec::new();
        ok.for_each(|n, v| names.push(format!("{n}: {v}")));
        assert!(
            names.contains(
                &"vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
                    .to_string()
            )
        );

        let reject = |o: &'static str, m: &'static str, h: &'static str| {
            c.preflight(
                HeaderValues::one(o),
                HeaderValues::one(m),
                HeaderValues::one(h),
            )
            .map(|_| ())
        };
        assert_eq!(
            reject("https://evil.com", "GET", "").err(),
            Some(Refusal::CorsRejected)
        );
        assert_eq!(
            reject("https://shop.example.com", "DELETE", "").err(),
            Some(Refusal::CorsRejected)
        );
        assert_eq!(
            reject("https://shop.example.com", "get", "").err(),
            Some(Refusal::CorsRejected)
        );
        assert_eq!(
            reject("https://shop.example.com", "GET", "x-secret").err(),
            Some(Refusal::CorsRejected)
        );
        assert!(reject("https://shop.example.com", "GET", " , ").is_ok());
    }

    #[test]
    fn is_preflight() {
        let o = HeaderValues::one("https://a");
        let m = HeaderValues::one("GET");
        assert!(Cors::is_preflight("OPTIONS", o, m));
        assert!(!Cors::is_preflight("OPTIONS", o, HeaderValues::Absent));
        assert!(!Cors::is_preflight("GET", o, m));
    }
}
