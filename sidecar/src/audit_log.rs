//! Audit lines: one JSON object per security event on stdout, through `tracing`
//! with target `audit` (the subscriber writes that target as JSON whatever the log
//! format; see [`crate::telemetry`]).
//!
//! ```json
//! {"timestamp":"2026-11-20T10:00:00.123Z","level":"INFO","message":"security event",
//!  "event":"auth_failed","actor":"7k2m9q4xw3ab","resource":"shop/orders GET /orders/1",
//!  "action":"authenticate","result":"denied","reason":"wrong_secret",
//!  "client_ip":"203.0.113.9","key_name":"billing","target":"audit"}
//! ```
//!
//! `actor` is the key id named by the credential when there is one, else the client
//! IP. `resource` is the target, the method and the normalised path (never the query
//! string). A line never holds a token, a secret or a hash: the engine's
//! [`AuditEvent`] carries only the public key id and the key's resource name.
//!
//! Lines are rate limited per event kind (a token bucket each, the engine's GCRA), so
//! a storm of failed logins cannot flood the logs; what was dropped is counted and
//! reported by [`AuditLog::flush_suppressed`] as one `audit_suppressed` line per kind.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::engine::AuditEvent;
use crate::engine::buckets::{Gcra, Limit, Take};
use crate::metrics::{EventLabels, Metrics};

/// Lines per second per event kind, sustained.
const RATE_PER_SEC: u32 = 20;
/// Lines per event kind in a burst.
const BURST: u32 = 100;

/// What an event is about.
#[derive(Clone, Copy, Debug)]
pub struct Resource<'a> {
    /// `namespace/target`, when a bundle is loaded.
    pub namespace: &'a str,
    /// Target name.
    pub target: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Normalised path (or the raw one when it could not be normalised, truncated).
    pub path: &'a str,
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {} ", self.namespace, self.target, self.method)?;
        write_path(f, self.path)
    }
}

impl<'a> Resource<'a> {
    /// `METHOD /path`, the path as [`Resource`]'s `Display` writes it (bounded,
    /// escaped, tokens masked).
    pub fn route(&self) -> impl fmt::Display + 'a {
        Route(*self)
    }
}

struct Route<'a>(Resource<'a>);

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.0.method)?;
        write_path(f, self.0.path)
    }
}

/// Most path characters written.
const MAX_PATH_CHARS: usize = 256;

/// A path as it may appear in a log: at most [`MAX_PATH_CHARS`] characters, control
/// characters escaped, and anything that starts like a Turnpike token (`tpk_`) masked
/// up to the next `/` (a client may paste a token into a URL).
fn write_path(f: &mut fmt::Formatter<'_>, path: &str) -> fmt::Result {
    let mut written = 0;
    for (i, segment) in path.split('/').enumerate() {
        if written >= MAX_PATH_CHARS {
            return f.write_str("...");
        }
        if i > 0 {
            f.write_str("/")?;
            written += 1;
        }
        let (keep, masked) = match segment.find(turnpike_api::token::PREFIX) {
            Some(at) => (&segment[..at], true),
            None => (segment, false),
        };
        for c in keep.chars().take(MAX_PATH_CHARS.saturating_sub(written)) {
            write!(f, "{}", c.escape_debug())?;
            written += 1;
        }
        if masked {
            f.write_str("tpk_***")?;
            written += 7;
        }
    }
    Ok(())
}

/// Who acted: the key id, else the client address.
struct Actor<'a>(Option<&'a str>, IpAddr);

impl fmt::Display for Actor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => f.write_str(id),
            None => write!(f, "{}", self.1),
        }
    }
}

/// The verb of an event (`action`).
fn action_of(event: &str) -> &'static str {
    match event {
        "auth_failed"
        | "locked_out"
        | "lockout_triggered"
        | "revoked_key_used"
        | "expired_key_used"
        | "rotated_secret_used" => "authenticate",
        "scope_denied" => "authorize",
        "quota_exhausted" | "rate_limited" | "overloaded" | "cooldown" | "cooldown_triggered" => {
            "admit"
        }
        "cors_rejected" => "preflight",
        "invalid_request" => "parse",
        "policy_reloaded" | "policy_rejected" => "reload",
        _ => "request",
    }
}

/// Events written to the audit log. Plain rate-limit refusals and overload are
/// counted in metrics only (they are load, not security events).
pub fn is_audited(event: &str) -> bool {
    !matches!(
        event,
        "rate_limited" | "overloaded" | "not_ready" | "https_redirect" | "https_required"
    )
}

#[derive(Debug, Default)]
struct Kind {
    bucket: Gcra,
    suppressed: u64,
}

/// The audit writer.
#[derive(Debug)]
pub struct AuditLog {
    clock: Clock,
    limit: Option<Limit>,
    kinds: Mutex<HashMap<&'static str, Kind>>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    /// A writer with the default rate limit.
    pub fn new(clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self::with_rate(clock, metrics, RATE_PER_SEC, BURST)
    }

    /// A writer allowing `rate_per_sec` lines per second per event kind, `burst` at
    /// once.
    pub fn with_rate(clock: Clock, metrics: Arc<Metrics>, rate_per_sec: u32, burst: u32) -> Self {
        // Non-zero arguments: always `Some`.
        let limit = Limit::new(rate_per_sec.max(1), 1000, burst.max(1));
        Self {
            clock,
            limit,
            kinds: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// True when a line of `event` may be written now; counts it as suppressed if
    /// not. Event names are `'static` and few, so the map is bounded.
    fn admit(&self, event: &'static str) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let now_ms = self.clock.now().mono_ms;
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let kind = kinds.entry(event).or_default();
        match kind.bucket.take(&limit, now_ms) {
            Take::Allowed { .. } => true,
            Take::Limited { .. } => {
                kind.suppressed += 1;
                drop(kinds);
                self.metrics
                    .audit_suppressed
                    .get_or_create(&EventLabels { event })
                    .inc();
                false
            }
        }
    }

    /// Writes the line of a refusal (or a dry-run report) of the engine.
    pub fn refusal(&self, e: &AuditEvent<'_>, resource: Resource<'_>) {
        if !is_audited(e.event) || !self.admit(e.event) {
            return;
        }
        let result = if e.enforced { "denied" } else { "dry_run" };
        tracing::info!(
            target: "audit",
            event = e.event,
            actor = %Actor(e.key_id, e.client_ip),
            resource = %resource,
            action = action_of(e.event),
            result,
            reason = e.reason,
            client_ip = %e.client_ip,
            key_name = e.key_name,
            "security event"
        );
    }

    /// Writes a lockout or cooldown that a request started.
    pub fn triggered(
        &self,
        event: &'static str,
        subject: &'static str,
        key_id: Option<&str>,
        client_ip: IpAddr,
        resource: Resource<'_>,
    ) {
        if !self.admit(event) {
            return;
        }
        let actor = if subject == "key" { key_id } else { None };
        tracing::info!(
            target: "audit",
            event,
            actor = %Actor(actor, client_ip),
            resource = %resource,
            action = action_of(event),
            result = "triggered",
            reason = subject,
            client_ip = %client_ip,
            "security event"
        );
    }

    /// Writes a bundle reload (`ok`) or a refused bundle (`rejected`, with the
    /// error, which never holds a value of the files).
    pub fn reload(&self, source: &str, namespace_target: &str, error: Option<&str>) {
        let event = if error.is_some() {
            "policy_rejected"
        } else {
            "policy_reloaded"
        };
        if !self.admit(event) {
            return;
        }
        tracing::info!(
            target: "audit",
            event,
            actor = "sidecar",
            resource = namespace_target,
            action = "reload",
            result = if error.is_some() { "rejected" } else { "ok" },
            source,
            error,
            "security event"
        );
    }

    /// Writes one `audit_suppressed` line per event kind that dropped lines since the
    /// last call (call it from a timer).
    pub fn flush_suppressed(&self) {
        let mut pending = Vec::new();
        {
            let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            for (event, kind) in kinds.iter_mut() {
                if kind.suppressed > 0 {
                    pending.push((*event, std::mem::take(&mut kind.suppressed)));
                }
            }
        }
        for (event, suppressed) in pending {
            tracing::info!(
                target: "audit",
                event = "audit_suppressed",
                actor = "sidecar",
                resource = event,
                action = "log",
                result = "suppressed",
                suppressed,
                "security events suppressed by the audit rate limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_per_kind_counts_what_it_drops() {
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::with_rate(Clock::new(), Arc::clone(&metrics), 1, 3);
        let admitted = (0..10).filter(|_| log.admit("auth_failed")).count();
        assert_eq!(admitted, 3);
        // Another kind has its own bucket.
        assert!(log.admit("scope_denied"));
        assert!(
            metrics
                .encode()
                .contains("turnpike_sidecar_audit_suppressed_total{event=\"auth_failed\"} 7")
        );
        log.flush_suppressed();
        let kinds = log.kinds.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(kinds.get("auth_failed").map(|k| k.suppressed), Some(0));
    }

    #[test]
    fn resource_is_bounded_and_escaped() {
        let path = format!("/a\u{1}{}", "x".repeat(1000));
        let r = Resource {
            namespace: "shop",
            target: "orders",
            method: "GET",
            path: &path,
        };
        let s = r.to_string();
        assert!(s.starts_with("shop/orders GET /a\\u{1}x"));
        assert!(s.len() < 300);
    }

    #[test]
    fn tokens_in_paths_are_masked() {
        let r = Resource {
            namespace: "shop",
            target: "orders",
            method: "GET",
            path: "/orders/xtpk_7k2m9q4xw3ab_SECRETSECRET/items",
        };
        assert_eq!(r.to_string(), "shop/orders GET /orders/xtpk_***/items");
    }
}
