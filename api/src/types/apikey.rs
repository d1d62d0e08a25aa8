//! The `ApiKey` resource: one credential.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Bucket, SCOPE_PATTERN, TARGET_PATTERN};
use crate::duration::Duration;

pub use crate::token::KEY_ID_PATTERN;
/// Shape of an argon2id PHC string. The schema checks the shape; the compiler checks
/// that salt and digest decode and that the cost parameters are within bounds.
pub const HASH_PATTERN: &str =
    r"^\$argon2id\$v=19\$m=[0-9]{1,7},t=[0-9]{1,3},p=[0-9]{1,3}\$[^$\s]{1,128}\$[^$\s]{1,256}$";
/// RFC 3339 timestamp, as Kubernetes and `kubectl` print them.
pub const RFC3339_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

/// CEL rule for `expiresAt` (a raw CEL string, so the regex needs no extra escaping).
pub const RFC3339_RULE: &str = r"self.matches(r'^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$')";

/// One API credential for the targets of a namespace.
///
/// Without `keyId`/`hash` the operator generates the key and writes the token once to
/// Secret `<name>-token`; with them (from `kubectl turnpike key new`) the plaintext never
/// enters Git or the cluster.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    plural = "apikeys",
    singular = "apikey",
    shortname = "ak",
    category = "turnpike",
    namespaced,
    doc = "An API credential for protected workloads (targets) in this namespace. Only an argon2id hash of the token is ever stored.",
    status = "ApiKeyStatus",
    printcolumn = r#"{"name":"Key ID","type":"string","jsonPath":".status.keyId","description":"Public key id (the part of the token before the secret)"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Pending, Active, Expired or Revoked"}"#,
    printcolumn = r#"{"name":"Scopes","type":"string","jsonPath":".spec.scopes","description":"Scopes granted to the key"}"#,
    printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".spec.targets","description":"Targets the key is valid for (empty: all in the namespace)","priority":1}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner","priority":1}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expiresAt","description":"Expiry time (RFC 3339)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("has(self.keyId) == has(self.hash)").message("keyId and hash must be set together (both from `kubectl turnpike key new`), or both left out so the operator generates the key").reason(Reason::FieldValueInvalid).field_path(".hash"),
    validation = Rule::new("!has(oldSelf.keyId) || (has(self.keyId) && self.keyId == oldSelf.keyId)").message("keyId cannot be changed or removed once set; create a new ApiKey instead").reason(Reason::FieldValueForbidden).field_path(".keyId"),
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Targets this key is valid for. Empty or absent: every target in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(TARGET_PATTERN), length(max = 63)))]
    pub targets: Vec<String>,

    /// Scopes granted to the key, e.g. `orders:read`. Route rules of an AccessPolicy
    /// require scopes; a request is allowed when the key holds all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(SCOPE_PATTERN), length(max = 128)))]
    pub scopes: Vec<String>,

    /// Free text naming who owns the key (a team or a mail address); shown in audit
    /// records and `kubectl get apikeys -o wide`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub owner: Option<String>,

    /// When the key stops working, as an RFC 3339 timestamp (`2027-06-30T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(RFC3339_RULE).message("expiresAt must be an RFC 3339 timestamp such as 2027-06-30T00:00:00Z").reason(Reason::FieldValueInvalid))]
    pub expires_at: Option<String>,

    /// Revoked keys are refused at once by every sidecar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,

    /// Requests per UTC day for this key; overrides the RateLimitPolicy default.
    /// 0 blocks every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000u64))]
    pub daily_quota: Option<u64>,

    /// Per-key token bucket for this key; overrides the RateLimitPolicy `perKey` bucket
    /// (plans and tiers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Bucket>,

    /// Public key id from `kubectl turnpike key new` (12 lower-case Crockford base32
    /// characters: digits and letters except i, l, o, u).
    /// Set together with `hash`; leave both out to have the operator generate the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(KEY_ID_PATTERN), length(max = 12))]
    pub key_id: Option<String>,

    /// argon2id PHC string of the token, from `kubectl turnpike key new`. Never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(HASH_PATTERN), length(max = 512))]
    pub hash: Option<String>,

    /// How rotation (annotation `turnpike.dev/rotate`) treats the previous secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

/// Rotation settings of an ApiKey.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// How long the previous secret keeps working after a rotation (default 24h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

/// Lifecycle of a key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum KeyPhase {
    /// Not yet issued (or not yet compiled into a bundle).
    #[default]
    Pending,
    /// Issued and accepted by the sidecars of its targets.
    Active,
    /// Past `expiresAt`.
    Expired,
    /// `revoked: true`.
    Revoked,
}

/// Observed state of an ApiKey, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Public key id (the `<id>` in `tpk_<id>_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Pending, Active, Expired or Revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<KeyPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the current secret was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Time>,
    /// When the key was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<Time>,
    /// Until when the previous secret still works after a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<Time>,
    /// Standard conditions: `Ready`, `Invalid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
