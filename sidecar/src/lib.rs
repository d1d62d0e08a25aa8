//! Turnpike sidecar.
//!
//! [`engine`] is the enforcement engine: a pure function of (request facts, compiled
//! bundle, counters, `now`) to a decision. It knows nothing of hyper, sockets, files,
//! Redis or Kubernetes, and it never reads a clock (`clippy.toml` forbids
//! `Instant::now`/`SystemTime::now`): the proxy reads the clock once per request and
//! passes [`engine::Now`].
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod engine;
