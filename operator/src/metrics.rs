//! The operator's Prometheus metrics (OpenMetrics text on `/metrics`).
//!
//! Names follow `turnpike_operator_<what>_<unit>`, counters end in `_total`. Every
//! label takes values from a closed enum: never a namespace, resource name or key id,
//! so the series count is fixed no matter how many tenants the cluster has.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The kinds the operator reconciles (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ResourceKind {
    /// A whole namespace (the unit the operator compiles bundles for).
    Namespace,
    /// `ApiKey`.
    ApiKey,
    /// `AccessPolicy`.
    AccessPolicy,
    /// `RateLimitPolicy`.
    RateLimitPolicy,
    /// `CorsPolicy`.
    CorsPolicy,
}

impl ResourceKind {
    /// The label value (the Kubernetes kind).
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::ApiKey => "ApiKey",
            ResourceKind::AccessPolicy => "AccessPolicy",
            ResourceKind::RateLimitPolicy => "RateLimitPolicy",
            ResourceKind::CorsPolicy => "CorsPolicy",
        }
    }
}

impl EncodeLabelValue for ResourceKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// How a reconcile ended (the `result` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Finished without error.
    Ok,
    /// Returned an error (and will be retried with backoff).
    Error,
}

impl EncodeLabelValue for ReconcileResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        })
    }
}

/// ApiKey phases (the `phase` label), in the order of the counts array of
/// [`Metrics::set_keys_in_namespace`].
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum KeyPhase {
    /// Not yet issued.
    Pending,
    /// Usable.
    Active,
    /// Past `expiresAt`.
    Expired,
    /// `revoked: true`.
    Revoked,
}

impl KeyPhase {
    /// Every phase, in counts-array order.
    pub const ALL: [KeyPhase; 4] = [
        KeyPhase::Pending,
        KeyPhase::Active,
        KeyPhase::Expired,
        KeyPhase::Revoked,
    ];

    /// The label value (the status phase as the CRD spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPhase::Pending => "Pending",
            KeyPhase::Active => "Active",
            KeyPhase::Expired => "Expired",
            KeyPhase::Revoked => "Revoked",
        }
    }
}

impl EncodeLabelValue for KeyPhase {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: ResourceKind,
    result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: KeyPhase,
}

/// Reconcile duration buckets: 1ms to 10s.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// All operator metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Histogram,
    bundles_written: Counter,
    bundles_deleted: Counter,
    keys: Family<PhaseLabels, Gauge>,
    keys_by_namespace: Mutex<HashMap<String, [u64; 4]>>,
    keys_issued: Counter,
    keys_rotated: Counter,
    leader: Gauge,
}

impl Metrics {
    /// A registry with every operator metric registered (all at zero).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("turnpike_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by resource kind and result",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "reconcile_duration",
            "Time spent in one reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let bundles_written = Counter::default();
        registry.register(
            "bundles_written",
            "Bundle Secrets and ConfigMaps created or updated",
            bundles_written.clone(),
        );
        let bundles_deleted = Counter::default();
        registry.register(
            "bundles_deleted",
            "Bundle Secrets and ConfigMaps deleted (target gone)",
            bundles_deleted.clone(),
        );
        let keys = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "keys",
            "ApiKeys by phase, over all reconciled namespaces",
            keys.clone(),
        );
        let keys_issued = Counter::default();
        registry.register(
            "keys_issued",
            "Keys generated by the operator",
            keys_issued.clone(),
        );
        let keys_rotated = Counter::default();
        registry.register(
            "keys_rotated",
            "Key rotations (operator-generated or from a new manifest hash)",
            keys_rotated.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease, else 0",
            leader.clone(),
        );
        // Every phase is present from the start, so dashboards see 0 instead of nothing.
        for phase in KeyPhase::ALL {
            keys.get_or_create(&PhaseLabels { phase }).set(0);
        }
        Arc::new(Self {
            registry,
            reconciles,
            reconcile_duration,
            bundles_written,
            bundles_deleted,
            keys,
            keys_by_namespace: Mutex::new(HashMap::new()),
            keys_issued,
            keys_rotated,
            leader,
        })
    }

    /// Counts one reconcile of `kind` and observes its duration.
    pub fn reconciled(&self, kind: ResourceKind, result: ReconcileResult, elapsed: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { kind, result })
            .inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts `n` bundle objects written.
    pub fn bundles_written(&self, n: u64) {
        self.bundles_written.inc_by(n);
    }

    /// Counts `n` bundle objects deleted.
    pub fn bundles_deleted(&self, n: u64) {
        self.bundles_deleted.inc_by(n);
    }

    /// Counts one generated key.
    pub fn key_issued(&self) {
        self.keys_issued.inc();
    }

    /// Counts one rotation.
    pub fn key_rotated(&self) {
        self.keys_rotated.inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records the ApiKey counts of one namespace (`counts` in [`KeyPhase::ALL`] order)
    /// and sets the `keys` gauge to the sum over namespaces. The namespace stays in
    /// this private map; it never becomes a label.
    pub fn set_keys_in_namespace(&self, namespace: &str, counts: [u64; 4]) {
        let mut map = self.lock_keys();
        if counts == [0; 4] {
            map.remove(namespace);
        } else {
            map.insert(namespace.to_owned(), counts);
        }
        self.publish_keys(&map);
    }

    /// Drops a namespace's counts (namespace deleted, or this replica stopped leading).
    pub fn forget_namespace(&self, namespace: &str) {
        let mut map = self.lock_keys();
        map.remove(namespace);
        self.publish_keys(&map);
    }

    /// Drops every namespace's counts (for example when leadership is lost).
    pub fn forget_all_namespaces(&self) {
        let mut map = self.lock_keys();
        map.clear();
        self.publish_keys(&map);
    }

    /// The registry in OpenMetrics text format (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; keep the scrape valid if it ever does.
            tracing::error!(error = %e, "encoding metrics failed");
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }

    fn publish_keys(&self, map: &HashMap<String, [u64; 4]>) {
        let mut sums = [0u64; 4];
        for counts in map.values() {
            for (sum, n) in sums.iter_mut().zip(counts) {
                *sum = sum.saturating_add(*n);
            }
        }
        for (phase, sum) in KeyPhase::ALL.into_iter().zip(sums) {
            self.keys
                .get_or_create(&PhaseLabels { phase })
                .set(i64::try_from(sum).unwrap_or(i64::MAX));
        }
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u64; 4]>> {
        // A poisoned map is still a valid map of counts.
        self.keys_by_namespace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series ` (exact series text).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    #[test]
    fn every_metric_is_exposed_with_its_contract_name() {
        let m = Metrics::new();
        m.reconciled(
            ResourceKind::Namespace,
            ReconcileResult::Ok,
            Duration::from_millis(3),
        );
        m.reconciled(
            ResourceKind::ApiKey,
            ReconcileResult::Error,
            Duration::from_millis(30),
        );
        m.bundles_written(2);
        m.bundles_deleted(1);
        m.key_issued();
        m.key_rotated();
        m.set_leader(true);
        let text = m.encode();
        for name in [
            "turnpike_operator_reconciles_total{kind=\"Namespace\",result=\"ok\"}",
            "turnpike_operator_reconciles_total{kind=\"ApiKey\",result=\"error\"}",
            "turnpike_operator_reconcile_duration_seconds_count",
            "turnpike_operator_bundles_written_total",
            "turnpike_operator_bundles_deleted_total",
            "turnpike_operator_keys{phase=\"Pending\"}",
            "turnpike_operator_keys{phase=\"Active\"}",
            "turnpike_operator_keys{phase=\"Expired\"}",
            "turnpike_operator_keys{phase=\"Revoked\"}",
            "turnpike_operator_keys_issued_total",
            "turnpike_operator_keys_rotated_total",
            "turnpike_operator_leader",
        ] {
            assert!(sample(&text, name).is_some(), "missing {name} in:\n{text}");
        }
        assert_eq!(
            sample(&text, "turnpike_operator_bundles_written_total"),
            Some(2.0)
        );
        assert_eq!(sample(&text, "turnpike_operator_leader"), Some(1.0));
        assert_eq!(
            sample(&text, "turnpike_operator_reconcile_duration_seconds_count"),
            Some(2.0)
        );
        assert!(text.contains("le=\"0.001\""), "{text}");
        assert!(text.contains("le=\"10.0\""), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn key_gauge_sums_namespaces_without_naming_them() {
        let m = Metrics::new();
        m.set_keys_in_namespace("shop-7k2m9q4xw3ab", [1, 2, 3, 4]);
        m.set_keys_in_namespace("billing", [0, 5, 0, 0]);
        let text = m.encode();
        assert_eq!(
            sample(&text, "turnpike_operator_keys{phase=\"Active\"}"),
            Some(7.0)
        );
        assert_eq!(
            sample(&text, "turnpike_operator_keys{phase=\"Revoked\"}"),
            Some(4.0)
        );

        // Replacing a namespace's counts replaces, not adds.
        m.set_keys_in_namespace("billing", [0, 1, 0, 0]);
        m.forget_namespace("shop-7k2m9q4xw3ab");
        let text = m.encode();
        assert_eq!(
            sample(&text, "turnpike_operator_keys{phase=\"Active\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "turnpike_operator_keys{phase=\"Revoked\"}"),
            Some(0.0)
        );
        m.forget_all_namespaces();
        assert_eq!(
            sample(&m.encode(), "turnpike_operator_keys{phase=\"Active\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn labels_are_only_the_bounded_ones() {
        let m = Metrics::new();
        m.set_keys_in_namespace("shop", [1, 1, 1, 1]);
        for kind in [
            ResourceKind::Namespace,
            ResourceKind::ApiKey,
            ResourceKind::AccessPolicy,
            ResourceKind::RateLimitPolicy,
            ResourceKind::CorsPolicy,
        ] {
            m.reconciled(kind, ReconcileResult::Ok, Duration::from_millis(1));
        }
        let text = m.encode();
        assert!(!text.contains("shop"), "a namespace leaked into:\n{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some(labels) = line.split_once('{').and_then(|(_, r)| r.split_once('}')) else {
                continue;
            };
            for pair in labels.0.split(',') {
                let name = pair.split('=').next().unwrap_or_default();
                assert!(
                    ["kind", "result", "phase", "le"].contains(&name),
                    "unexpected label {name} in {line}"
                );
            }
        }
    }
}
