//! Turnpike sidecar.
//!
//! [`engine`] is the enforcement engine: a pure function of (request facts, compiled
//! bundle, counters, `now`) to a decision. It knows nothing of hyper, sockets, files,
//! Redis or Kubernetes, and it never reads a clock (`clippy.toml` forbids
//! `Instant::now`/`SystemTime::now`): the proxy reads the clock once per request
//! through [`clock::Clock`] and passes [`engine::Now`].
//!
//! Around it, the adapters of the `turnpike-sidecar` binary: [`config`] (flags),
//! [`source`] (bundle directory and local mode, hot reload), [`proxy`] (the hyper
//! request path), [`verify_pool`] (bounded argon2), [`admin`] (probes, metrics, key
//! usage), [`metrics`], [`audit_log`], [`telemetry`], [`tls`] and [`server`] (the
//! process: listeners, signals, graceful shutdown).
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod admin;
pub mod audit_log;
pub mod clock;
pub mod config;
pub mod engine;
pub mod events;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod tls;
pub mod verify_pool;
pub mod watch;
