//! Step 1, request hygiene, is enforced by the proxy while it reads the request (the
//! engine sees a request only once its head is complete). These are its limits, in one
//! place with the rest of the policy, so the proxy and its tests agree on them.

/// Limits on what a client may send before the engine sees the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HygieneLimits {
    /// Most header fields in a request; more -> 431.
    pub max_header_count: usize,
    /// Most bytes of all header names and values together; more -> 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query); longer -> 414.
    pub max_uri_bytes: usize,
    /// Largest request body; larger -> 413 (checked on `Content-Length` up front and
    /// while streaming).
    pub max_body_bytes: u64,
    /// Time to receive the complete request head (slowloris); over -> 408.
    pub header_read_timeout_ms: u64,
    /// Longest pause between two body chunks; over -> 408.
    pub body_idle_timeout_ms: u64,
}

impl Default for HygieneLimits {
    /// Conservative defaults, in line with Envoy's and nginx's.
    fn default() -> Self {
        Self {
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout_ms: 10_000,
            body_idle_timeout_ms: 30_000,
        }
    }
}
