//! The `RateLimitPolicy` resource: buckets, quotas, lockout, abuse cooldown, overload.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Bucket, PolicyStatus, RouteMatch, TargetRef};
use crate::duration::Duration;

/// Rate limits, quotas and brute-force protection for a target.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "RateLimitPolicy",
    plural = "ratelimitpolicies",
    singular = "ratelimitpolicy",
    shortname = "rlp",
    category = "turnpike",
    namespaced,
    doc = "Token-bucket rate limits, daily quotas, brute-force lockout, abuse cooldown and load shedding for a target.",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Per Key","type":"string","jsonPath":".spec.perKey.rate","priority":1}"#,
    printcolumn = r#"{"name":"Quota","type":"integer","jsonPath":".spec.dailyQuota"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicySpec {
    /// The target this policy applies to; absent: every target in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,

    /// `Enforce` (default) blocks; `DryRun` computes, logs and counts every decision
    /// but blocks nothing.
    #[serde(default)]
    pub mode: Mode,

    /// Token bucket per key id (an ApiKey's `rateLimit` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Bucket>,

    /// Token bucket per client IP (applies to public routes too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Bucket>,

    /// Requests per key per UTC day (an ApiKey's `dailyQuota` overrides it). Absent: no
    /// quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000u64))]
    pub daily_quota: Option<u64>,

    /// Per-route buckets, in addition to the general ones; the first matching route wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub routes: Vec<RouteLimit>,

    /// Brute-force lockout per key id and per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<Lockout>,

    /// Cooldown for clients producing too many 404 or 400 answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse: Option<Abuse>,

    /// Load shedding: more than `maxInFlight` concurrent requests get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload: Option<Overload>,

    /// Where counters live: `Local` (per sidecar, the default) or `Redis` (shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,

    /// Hide `X-RateLimit-*` and `RateLimit*` response headers so thresholds are not
    /// advertised; `Retry-After` is always sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hide_limit_headers: bool,
}

/// Enforcement mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Mode {
    /// Block requests over the limits.
    #[default]
    Enforce,
    /// Compute and report decisions, block nothing.
    DryRun,
}

/// A per-route limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteLimit {
    /// Which requests this limit covers.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Bucket per key id on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Bucket>,
    /// Bucket per client IP on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Bucket>,
}

/// `maxFailures` failed authentications within `window` lock the key id (and,
/// separately, the client IP) for `duration`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lockout {
    /// Failures that trigger a lockout (at least 1).
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_failures: u32,
    /// Window in which failures are counted, e.g. `5m`.
    pub window: Duration,
    /// How long the lockout lasts, e.g. `15m`; it ends by itself.
    pub duration: Duration,
}

/// Too many 404 or 400 answers within `window` put the key or client IP into a
/// `cooldown` (429).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.maxNotFound) || has(self.maxBadRequest)").message("abuse needs maxNotFound, maxBadRequest or both").reason(Reason::FieldValueRequired),
)]
#[serde(rename_all = "camelCase")]
pub struct Abuse {
    /// 404 answers tolerated within the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_not_found: Option<u32>,
    /// 400 answers tolerated within the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_bad_request: Option<u32>,
    /// Window in which answers are counted.
    pub window: Duration,
    /// How long the cooldown lasts.
    pub cooldown: Duration,
}

/// Load shedding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overload {
    /// Concurrent requests forwarded to the workload before new ones get 503.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_in_flight: u32,
}

/// Counters backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("self.type != 'Redis' || has(self.secretRef)").message("a Redis backend needs secretRef naming the Secret (and key) that holds the redis:// URL").reason(Reason::FieldValueRequired).field_path(".secretRef"),
)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// `Local` or `Redis`.
    #[serde(rename = "type")]
    pub kind: BackendKind,
    /// Secret in the policy's namespace holding the Redis URL (with any password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// What to do when Redis cannot be reached: `Open` allows requests (rate limits
    /// only; keys are always checked), `Closed` refuses them. Default `Open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<FailureMode>,
}

/// Counters backend kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackendKind {
    /// Counters in each sidecar's memory.
    Local,
    /// Counters shared through Redis.
    Redis,
}

/// Behaviour when the counters backend is unreachable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureMode {
    /// Allow (rate limits and quotas are skipped; authentication still applies).
    Open,
    /// Refuse with 503.
    Closed,
}

/// A key inside a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Data key in the Secret (default `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}
