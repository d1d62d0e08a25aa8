//! The `CorsPolicy` resource.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{HEADER_PATTERN, Method, PolicyStatus, TargetRef};
use crate::duration::Duration;

/// An allowed origin: `*`, an exact origin, or one wildcard label directly after the
/// scheme (`https://*.example.com`).
pub const ORIGIN_PATTERN: &str = r"^(\*|https?://(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*(:[0-9]{1,5})?)$";

/// Cross-origin resource sharing for a target. Preflights are answered by the sidecar.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "CorsPolicy",
    plural = "corspolicies",
    singular = "corspolicy",
    shortname = "corsp",
    category = "turnpike",
    namespaced,
    doc = "Cross-origin resource sharing (CORS) for a target; preflights are answered by the sidecar.",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Origins","type":"string","jsonPath":".spec.allowOrigins"}"#,
    printcolumn = r#"{"name":"Credentials","type":"boolean","jsonPath":".spec.allowCredentials"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("!(has(self.allowCredentials) && self.allowCredentials) || !self.allowOrigins.exists(o, o == '*')").message("allowOrigins may not contain \"*\" when allowCredentials is true: browsers refuse it, and it would let any site make credentialed requests; list the origins instead").reason(Reason::FieldValueForbidden).field_path(".allowOrigins"),
)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicySpec {
    /// The target this policy applies to; absent: every target in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,

    /// Origins allowed to call the target: exact (`https://shop.example.com`), one
    /// wildcard label (`https://*.shop.example.com`), or `*` (not with credentials).
    #[schemars(
        length(min = 1, max = 256),
        inner(pattern(ORIGIN_PATTERN), length(max = 260))
    )]
    pub allow_origins: Vec<String>,

    /// Methods allowed in cross-origin requests. Default: GET, HEAD, POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub allow_methods: Vec<Method>,

    /// Request headers a cross-origin request may send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(HEADER_PATTERN)))]
    pub allow_headers: Vec<String>,

    /// Response headers the browser may expose to the calling script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(HEADER_PATTERN)))]
    pub expose_headers: Vec<String>,

    /// Whether cookies and credentials may be sent (`Access-Control-Allow-Credentials`).
    #[serde(default)]
    pub allow_credentials: bool,

    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}
