//! The sidecar's Prometheus metrics (OpenMetrics text on the admin `/metrics`).
//!
//! Names follow `turnpike_sidecar_<what>_<unit>`, counters end in `_total`. Label
//! values come from fixed sets: the decision, the engine's refusal metric label
//! ([`crate::engine::RefusalResponse::metric`]), and a few enums of this module.
//! Never a key id, an IP address or a path. The one exception is the content-hash
//! prefix on `turnpike_sidecar_bundle_info`, which has exactly one series at a time.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of the `/metrics` answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `decision` and `reason` of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `allowed`, `refused`, `preflight`.
    pub decision: &'static str,
    /// For refusals the engine's metric label (or a proxy-level one such as
    /// `header_too_large`); `authenticated`/`public` for allowed requests, `ok` for
    /// preflights.
    pub reason: &'static str,
}

/// One label from a fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `ip`, `ip_route`, `key`, `key_route`.
    pub limit: &'static str,
}

/// Who a lockout or cooldown applies to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubjectLabels {
    /// `ip` or `key`.
    pub subject: &'static str,
}

/// Result of a cache lookup or a verification.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `hit`/`miss`, or `match`/`no_match`/`overloaded`.
    pub result: &'static str,
}

/// Why the upstream failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// `connect`, `timeout`, `other`.
    pub kind: &'static str,
}

/// A refusal reason (dry run).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The engine's metric label.
    pub reason: &'static str,
}

/// An audit event name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// Event name.
    pub event: &'static str,
}

/// Why an Event was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    /// `queue_full`, `table_full`, `api_error`, `rate_limited`.
    pub reason: &'static str,
}

/// What an Event write did.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `create`, `patch` (API server) or `log` (local mode).
    pub op: &'static str,
}

/// The loaded bundle.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    /// First 12 hex characters of the keys file's content hash.
    pub keys_hash: String,
    /// First 12 hex characters of the policy file's content hash.
    pub policy_hash: String,
}

/// Every metric of the sidecar.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by decision and reason.
    pub requests: Family<RequestLabels, Counter>,
    /// Refusals a dry run reported but did not enforce.
    pub dry_run: Family<ReasonLabels, Counter>,
    /// Requests refused by a token bucket.
    pub rate_limited: Family<LimitLabels, Counter>,
    /// Requests refused by a daily quota.
    pub quota_exceeded: Counter,
    /// Lockouts started.
    pub lockouts: Family<SubjectLabels, Counter>,
    /// Abuse cooldowns started.
    pub cooldowns: Family<SubjectLabels, Counter>,
    /// Verified-key cache lookups.
    pub key_cache: Family<ResultLabels, Counter>,
    /// argon2id verifications.
    pub verifications: Family<ResultLabels, Counter>,
    /// Time a verification waited for a thread.
    pub verify_queue_wait: Histogram,
    /// Time argon2id took.
    pub verify_duration: Histogram,
    /// Time the workload took to answer with headers.
    pub upstream_duration: Histogram,
    /// Failed upstream requests.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// Requests forwarded and not finished (set at scrape time).
    pub in_flight: Gauge,
    /// 1 with the loaded bundle's hashes.
    pub bundle_info: Family<BundleLabels, Gauge>,
    /// 1 when a bundle is loaded.
    pub bundle_loaded: Gauge,
    /// Keys in the loaded bundle.
    pub bundle_keys: Gauge,
    /// Bundles loaded.
    pub bundle_reloads: Counter,
    /// Bundles refused (the previous one stays).
    pub bundle_reload_failures: Counter,
    /// Audit lines dropped by the audit rate limit.
    pub audit_suppressed: Family<EventLabels, Counter>,
    /// Events dropped (`turnpike_events_dropped_total`, the name DESIGN.md fixes).
    pub events_dropped: Family<DroppedLabels, Counter>,
    /// Event writes done.
    pub event_writes: Family<WriteLabels, Counter>,
    /// Metrics whose names DESIGN.md fixes without the `turnpike_sidecar_` prefix.
    unprefixed: Registry,
    bundle_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("turnpike_sidecar");
        let m = Self {
            requests: Family::default(),
            dry_run: Family::default(),
            rate_limited: Family::default(),
            quota_exceeded: Counter::default(),
            lockouts: Family::default(),
            cooldowns: Family::default(),
            key_cache: Family::default(),
            verifications: Family::default(),
            verify_queue_wait: Histogram::new(exponential_buckets(0.000_5, 2.0, 14)),
            verify_duration: Histogram::new(exponential_buckets(0.002, 2.0, 10)),
            upstream_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            upstream_errors: Family::default(),
            in_flight: Gauge::default(),
            bundle_info: Family::default(),
            bundle_loaded: Gauge::default(),
            bundle_keys: Gauge::default(),
            bundle_reloads: Counter::default(),
            bundle_reload_failures: Counter::default(),
            audit_suppressed: Family::default(),
            events_dropped: Family::default(),
            event_writes: Family::default(),
            unprefixed: Registry::default(),
            bundle_lock: Mutex::new(()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests by decision and reason",
            m.requests.clone(),
        );
        r.register(
            "dry_run_refusals",
            "Refusals reported but not enforced (RateLimitPolicy mode DryRun)",
            m.dry_run.clone(),
        );
        r.register(
            "rate_limit_hits",
            "Requests refused by a token bucket",
            m.rate_limited.clone(),
        );
        r.register(
            "quota_exceeded",
            "Requests refused because the key's daily quota is used up",
            m.quota_exceeded.clone(),
        );
        r.register(
            "lockouts",
            "Lockouts started after failed authentications",
            m.lockouts.clone(),
        );
        r.register(
            "cooldowns",
            "Abuse cooldowns started after too many 404/400 answers",
            m.cooldowns.clone(),
        );
        r.register(
            "key_cache_lookups",
            "Verified-key cache lookups",
            m.key_cache.clone(),
        );
        r.register(
            "argon2_verifications",
            "argon2id verifications by result (overloaded: refused, queue full)",
            m.verifications.clone(),
        );
        r.register_with_unit(
            "argon2_queue_wait",
            "Time a verification waited for a thread",
            Unit::Seconds,
            m.verify_queue_wait.clone(),
        );
        r.register_with_unit(
            "argon2_duration",
            "Time one argon2id verification took",
            Unit::Seconds,
            m.verify_duration.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "Time the workload took to answer with response headers",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Forwarded requests that got no response from the workload",
            m.upstream_errors.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests forwarded to the workload and not finished",
            m.in_flight.clone(),
        );
        r.register(
            "bundle_info",
            "The loaded bundle (content hash prefixes); one series",
            m.bundle_info.clone(),
        );
        r.register(
            "bundle_loaded",
            "1 when a valid bundle is loaded, else 0 (requests are refused)",
            m.bundle_loaded.clone(),
        );
        r.register(
            "bundle_keys",
            "Keys in the loaded bundle",
            m.bundle_keys.clone(),
        );
        r.register(
            "bundle_reloads",
            "Bundles loaded (initial load included)",
            m.bundle_reloads.clone(),
        );
        r.register(
            "bundle_reload_failures",
            "Bundles that failed to load (the last good one stays)",
            m.bundle_reload_failures.clone(),
        );
        r.register(
            "audit_suppressed",
            "Audit lines dropped by the audit rate limit",
            m.audit_suppressed.clone(),
        );
        r.register(
            "event_writes",
            "Kubernetes Event writes (create, patch; log in local mode)",
            m.event_writes.clone(),
        );
        let mut unprefixed = Registry::default();
        unprefixed.register(
            "turnpike_events_dropped",
            "Sidecar Events dropped rather than delaying a request (queue full, table full, API error, rate limited)",
            m.events_dropped.clone(),
        );
        for reason in ["queue_full", "table_full", "api_error", "rate_limited"] {
            let _ = m.events_dropped.get_or_create(&DroppedLabels { reason });
        }
        Self {
            registry,
            unprefixed,
            ..m
        }
    }

    /// Counts a dropped Event.
    pub fn event_dropped(&self, d: crate::events::Dropped) {
        self.events_dropped
            .get_or_create(&DroppedLabels { reason: d.as_str() })
            .inc();
    }

    /// Counts an Event write.
    pub fn event_written(&self, op: &'static str) {
        self.event_writes.get_or_create(&WriteLabels { op }).inc();
    }

    /// Counts a request.
    pub fn request(&self, decision: &'static str, reason: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { decision, reason })
            .inc();
    }

    /// Records a newly loaded bundle.
    pub fn bundle_loaded(&self, keys_hash: &str, policy_hash: &str, keys: usize) {
        let _one_at_a_time = self.bundle_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.bundle_info.clear();
        self.bundle_info
            .get_or_create(&BundleLabels {
                keys_hash: keys_hash.chars().take(12).collect(),
                policy_hash: policy_hash.chars().take(12).collect(),
            })
            .set(1);
        self.bundle_loaded.set(1);
        self.bundle_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.bundle_reloads.inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.unprefixed);
        let _ = encode_eof(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_one_bundle_series() {
        let m = Metrics::new();
        m.request("refused", "wrong_secret");
        m.bundle_loaded("aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", 3);
        m.bundle_loaded("cccccccccccccccccccc", "dddddddddddddddd", 4);
        let text = m.encode();
        assert!(text.contains(
            "turnpike_sidecar_requests_total{decision=\"refused\",reason=\"wrong_secret\"} 1"
        ));
        assert!(text.contains("turnpike_sidecar_bundle_info{keys_hash=\"cccccccccccc\""));
        assert!(!text.contains("aaaaaaaaaaaa"));
        assert!(text.contains("turnpike_sidecar_upstream_duration_seconds_bucket"));
        assert!(text.contains("turnpike_sidecar_bundle_reload_failures_total 0"));
    }
}
