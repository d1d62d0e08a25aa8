//! What the engine needs to know about a request, borrowed from the proxy's parsed
//! request: no copy, no allocation.

use std::fmt;
use std::net::IpAddr;

/// The values of one header field: none, exactly one, or more than one (the engine
/// never needs the values past the first when there are several).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum HeaderValues<'a> {
    /// The header is absent.
    #[default]
    Absent,
    /// The header appears once, with this value.
    One(&'a [u8]),
    /// The header appears more than once.
    Many,
}

impl<'a> HeaderValues<'a> {
    /// From the values of a header in order (e.g. `map.get_all(name).iter().map(|v|
    /// v.as_bytes())`).
    pub fn collect<I: IntoIterator<Item = &'a [u8]>>(values: I) -> Self {
        let mut it = values.into_iter();
        match (it.next(), it.next()) {
            (None, _) => HeaderValues::Absent,
            (Some(v), None) => HeaderValues::One(v),
            (Some(_), Some(_)) => HeaderValues::Many,
        }
    }

    /// A single value.
    pub fn one(value: &'a str) -> Self {
        HeaderValues::One(value.as_bytes())
    }

    /// The value when there is exactly one.
    pub fn single(self) -> Option<&'a [u8]> {
        match self {
            HeaderValues::One(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Debug for HeaderValues<'_> {
    /// Values are not printed: they may be credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderValues::Absent => f.write_str("Absent"),
            HeaderValues::One(v) => write!(f, "One(<{} bytes>)", v.len()),
            HeaderValues::Many => f.write_str("Many"),
        }
    }
}

/// The facts of one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Method as on the wire (`GET`, ...).
    pub method: &'a str,
    /// Path as received, without the query string (`uri.path()`); it is normalised
    /// by the engine.
    pub path: &'a str,
    /// Client address, from [`super::ip::client_ip`].
    pub client_ip: IpAddr,
    /// `X-API-Key` values.
    pub api_key: HeaderValues<'a>,
    /// `Authorization` values.
    pub authorization: HeaderValues<'a>,
    /// `Origin` values.
    pub origin: HeaderValues<'a>,
    /// `Access-Control-Request-Method` values.
    pub access_control_request_method: HeaderValues<'a>,
    /// `Access-Control-Request-Headers` values.
    pub access_control_request_headers: HeaderValues<'a>,
    /// The request arrived over HTTPS: the sidecar's own TLS, or
    /// `X-Forwarded-Proto: https` from a trusted proxy.
    pub https: bool,
}

impl<'a> RequestFacts<'a> {
    /// A request with no credential and no CORS headers.
    pub fn new(method: &'a str, path: &'a str, client_ip: IpAddr) -> Self {
        Self {
            method,
            path,
            client_ip,
            api_key: HeaderValues::Absent,
            authorization: HeaderValues::Absent,
            origin: HeaderValues::Absent,
            access_control_request_method: HeaderValues::Absent,
            access_control_request_headers: HeaderValues::Absent,
            https: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_and_mask() {
        assert_eq!(
            HeaderValues::collect(Vec::<&[u8]>::new()),
            HeaderValues::Absent
        );
        assert_eq!(
            HeaderValues::collect([b"a".as_slice()]),
            HeaderValues::One(b"a")
        );
        assert_eq!(
            HeaderValues::collect([b"a".as_slice(), b"a"]),
            HeaderValues::Many
        );
        assert_eq!(
            format!("{:?}", HeaderValues::one("secret")),
            "One(<6 bytes>)"
        );
    }
}
