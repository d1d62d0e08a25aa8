//! The `AccessPolicy` resource: which credentials a target accepts and which scopes
//! each route requires.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{PolicyStatus, RouteMatch, SCOPE_PATTERN, TargetRef};
use super::headers::SecurityHeaders;

/// Which credentials a target accepts, its public routes, and the scopes each route needs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "turnpike.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    singular = "accesspolicy",
    shortname = "acp",
    category = "turnpike",
    namespaced,
    doc = "Which credentials a target accepts, which routes are public, and which scopes each route requires.",
    status = "PolicyStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name","description":"Target (empty: every target in the namespace)"}"#,
    printcolumn = r#"{"name":"Default","type":"string","jsonPath":".spec.defaultAction"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// The target this policy applies to; absent: every target in the namespace. A
    /// policy naming a target wins over one without; among equals the oldest wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,

    /// Where credentials are read from: `ApiKeyHeader` (the `X-API-Key` header) and/or
    /// `Bearer` (`Authorization: Bearer <token>`). Default: both.
    #[serde(default = "default_credentials")]
    #[schemars(length(min = 1, max = 2))]
    pub credentials: Vec<CredentialSource>,

    /// Routes that need no key. Only the per-IP limits apply to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub public: Vec<RouteMatch>,

    /// Route rules; the first rule whose match fits the request decides the scopes the
    /// key must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub rules: Vec<AccessRule>,

    /// What happens to authenticated requests that match no rule: `Deny` (403, the
    /// default) or `AllowAuthenticated` (any valid key passes).
    #[serde(default)]
    pub default_action: DefaultAction,

    /// Security headers on the target's answers. Absent: the OWASP defaults for APIs
    /// (see `SecurityHeaders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeaders>,

    /// Refuse plain HTTP: a request that did not arrive over HTTPS (the sidecar's own
    /// TLS, or `X-Forwarded-Proto: https` from a `--trusted-proxies` peer) gets 308 to
    /// the `https://` URL for GET and HEAD, and 403 `https_required` for other methods
    /// (a redirect would lose the body), before any credential is read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,

    /// Routes still served over plain HTTP when `httpsRedirect` is on (an ACME
    /// challenge, a health check from inside the cluster). Admin probes are on the
    /// admin port and never redirected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub https_redirect_exempt: Vec<RouteMatch>,
}

fn default_credentials() -> Vec<CredentialSource> {
    vec![CredentialSource::ApiKeyHeader, CredentialSource::Bearer]
}

/// Where a credential can be presented.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum CredentialSource {
    /// The `X-API-Key` request header.
    ApiKeyHeader,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

/// A route rule: requests that match need all of `scopes`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct AccessRule {
    /// Which requests this rule covers.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Scopes the key must hold (all of them). Empty: any authenticated key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(pattern(SCOPE_PATTERN), length(max = 128)))]
    pub scopes: Vec<String>,
}

/// Decision for authenticated requests that match no rule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DefaultAction {
    /// Refuse with 403.
    #[default]
    Deny,
    /// Allow any valid key.
    AllowAuthenticated,
}
