//! Answers the sidecar gives itself: the engine's refusals and preflights, and the
//! proxy's own refusals (request hygiene, upstream failures), each from one table.
//! Bodies are `{"error":{"code":"...","message":"..."}}` with no internal detail.

use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::headers;
use crate::engine::cors::CorsHeaders;
use crate::engine::refusal::{DEFAULT_RETRY_AFTER_SECS, Refusal, error_body};
use crate::engine::{Preflight, RateHeaders, Refused, SecurityHeaders};

/// What every answer of the sidecar is decorated with: the target's security header
/// plan (none with `--disable-security-headers`) and whether the request arrived over
/// HTTPS (HSTS).
#[derive(Clone, Copy, Debug)]
pub struct Decor<'a> {
    /// The plan; `None`: no security headers.
    pub plan: Option<&'a SecurityHeaders>,
    /// The request arrived over HTTPS.
    pub https: bool,
}

impl Decor<'_> {
    /// Security headers (unless disabled).
    pub fn apply(&self, h: &mut HeaderMap) {
        if let Some(plan) = self.plan {
            plan.apply(h, self.https);
        }
    }
}

/// Refusals of the proxy itself (the engine's are [`Refusal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// `CONNECT`: the sidecar is not a forward proxy.
    MethodNotAllowed,
    /// Request target longer than `--max-uri-bytes`.
    UriTooLong,
    /// More header fields or bytes than allowed.
    HeadersTooLarge,
    /// Body larger than `--max-body-bytes`.
    BodyTooLarge,
    /// Body stalled for `--body-idle-timeout`.
    BodyTimeout,
    /// The decided path cannot be forwarded, or the client's body failed.
    BadRequest,
    /// The workload refused the connection, or failed before answering.
    UpstreamUnavailable,
    /// The workload did not answer in `--upstream-timeout`.
    UpstreamTimeout,
}

/// One row of the proxy's refusal table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: &'static str,
    /// Metric `reason` label.
    pub metric: &'static str,
}

macro_rules! row {
    ($status:literal, $code:literal, $message:literal, $metric:literal) => {
        Row {
            status: $status,
            body: error_body!($code, $message),
            metric: $metric,
        }
    };
}

impl ProxyRefusal {
    /// The table.
    pub const fn row(self) -> Row {
        use ProxyRefusal::*;
        match self {
            MethodNotAllowed => row!(
                405,
                "method_not_allowed",
                "method not allowed",
                "method_not_allowed"
            ),
            UriTooLong => row!(
                414,
                "uri_too_long",
                "the request target is too long",
                "uri_too_long"
            ),
            HeadersTooLarge => row!(
                431,
                "headers_too_large",
                "the request headers are too large",
                "headers_too_large"
            ),
            BodyTooLarge => row!(
                413,
                "body_too_large",
                "the request body is too large",
                "body_too_large"
            ),
            BodyTimeout => row!(
                408,
                "request_timeout",
                "the request body was not received in time",
                "body_timeout"
            ),
            BadRequest => row!(
                400,
                "invalid_request",
                "the request could not be forwarded",
                "bad_request"
            ),
            UpstreamUnavailable => row!(
                502,
                "bad_gateway",
                "the service is unavailable",
                "upstream_unavailable"
            ),
            UpstreamTimeout => row!(
                504,
                "gateway_timeout",
                "the service did not answer in time",
                "upstream_timeout"
            ),
        }
    }
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const CSP_NONE: HeaderValue =
    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'");

fn json(status: u16, body: &'static str, decor: Decor<'_>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, JSON);
    h.insert(CACHE_CONTROL, NO_STORE);
    if decor.plan.is_some() {
        h.insert(CONTENT_SECURITY_POLICY, CSP_NONE);
    }
    decor.apply(h);
    resp
}

fn rate_and_cors(h: &mut HeaderMap, rate: Option<&RateHeaders>, cors: Option<&CorsHeaders<'_>>) {
    if let Some(rate) = rate {
        rate.for_each(|n, v| headers::put(h, n, v));
    }
    if let Some(cors) = cors {
        cors.for_each(|n, v| headers::put(h, n, v));
    }
}

/// The answer to an engine refusal; `location` for a redirect.
pub fn refused(
    r: &Refused<'_>,
    location: Option<HeaderValue>,
    decor: Decor<'_>,
) -> Response<ResponseBody> {
    let mut resp = json(r.response.status, r.response.body, decor);
    let h = resp.headers_mut();
    if let Some(l) = location {
        h.insert(http::header::LOCATION, l);
    }
    if let Some(challenge) = r.www_authenticate {
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    rate_and_cors(h, Some(&r.rate), r.cors.as_ref());
    resp
}

/// The answer to a proxy refusal; `rate` and `cors` of the request when the engine
/// had allowed it (so a browser can read the error).
pub fn proxy_refusal(
    p: ProxyRefusal,
    rate: Option<&RateHeaders>,
    cors: Option<&CorsHeaders<'_>>,
    decor: Decor<'_>,
) -> Response<ResponseBody> {
    let row = p.row();
    let mut resp = json(row.status, row.body, decor);
    rate_and_cors(resp.headers_mut(), rate, cors);
    resp
}

/// A JSON answer from a row of the engine's table, without its extra headers.
pub fn proxy_refusal_row(
    status: u16,
    body: &'static str,
    decor: Decor<'_>,
) -> Response<ResponseBody> {
    json(status, body, decor)
}

/// 204 to an allowed CORS preflight.
pub fn preflight(p: &Preflight<'_>, decor: Decor<'_>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    p.headers.for_each(|n, v| headers::put(h, n, v));
    decor.apply(h);
    resp
}

/// 503 while no valid bundle is loaded (fail closed).
pub fn not_ready(decor: Decor<'_>) -> Response<ResponseBody> {
    let row = Refusal::NotReady.response();
    let mut resp = json(row.status, row.body, decor);
    let rate = RateHeaders {
        retry_after_secs: Some(DEFAULT_RETRY_AFTER_SECS),
        ..RateHeaders::default()
    };
    rate_and_cors(resp.headers_mut(), Some(&rate), None);
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_bodies_are_json_errors() {
        use ProxyRefusal::*;
        for p in [
            MethodNotAllowed,
            UriTooLong,
            HeadersTooLarge,
            BodyTooLarge,
            BodyTimeout,
            BadRequest,
            UpstreamUnavailable,
            UpstreamTimeout,
        ] {
            let row = p.row();
            let v: serde_json::Value = serde_json::from_str(row.body).unwrap();
            assert!(v["error"]["code"].is_string(), "{p:?}");
            assert!(v["error"]["message"].is_string(), "{p:?}");
            assert!(row.status >= 400);
        }
    }

    #[test]
    fn not_ready_is_503_with_retry_after() {
        let r = not_ready(Decor {
            plan: Some(SecurityHeaders::defaults()),
            https: false,
        });
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(!r.headers().contains_key("strict-transport-security"));
    }
}
