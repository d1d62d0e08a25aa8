//! Pieces shared by several resource kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// API group of every Turnpike resource.
pub const GROUP: &str = "turnpike.dev";
/// API version of every Turnpike resource.
pub const VERSION: &str = "v1alpha1";

/// A target name: a DNS-1123 label, as used in pod annotations and object names.
pub const TARGET_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A scope such as `orders:read`.
pub const SCOPE_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$";
/// A route path pattern: segments separated by `/`, where a whole segment may be `*`
/// (exactly one segment) and the last segment may be `**` (any rest, including none).
pub const PATH_PATTERN: &str = r"^(/(\*|[A-Za-z0-9._~!$&'()+,;=:@-]*))*(/\*\*)?$";
/// An HTTP header name (RFC 9110 token).
pub const HEADER_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$";

/// Names the protected workload ("target") a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct TargetRef {
    /// Target name: the pod annotation `turnpike.dev/target`, or by default the pod's
    /// `app.kubernetes.io/name` (else `app`) label.
    #[schemars(pattern(TARGET_PATTERN), length(max = 63))]
    pub name: String,
}

/// HTTP request methods a rule can match.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// CONNECT
    Connect,
    /// TRACE
    Trace,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Connect,
        Method::Trace,
    ];

    /// The method as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
        }
    }

    /// Parses a wire method name (case-sensitive, as HTTP defines).
    pub fn from_wire(s: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Which requests a rule applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct RouteMatch {
    /// Methods this rule applies to; empty or absent means every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub methods: Vec<Method>,
    /// Path pattern: exact segments, `*` for exactly one segment, and a final `**` for
    /// any rest (including nothing), e.g. `/orders/*/items` or `/orders/**`.
    #[schemars(pattern(PATH_PATTERN), length(min = 1, max = 1024))]
    pub path: String,
}

/// A token bucket: `rate` tokens are added every `per`, up to `burst` tokens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct Bucket {
    /// Tokens added every `per` (at least 1).
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub rate: u32,
    /// Refill period, e.g. `1s` or `1m` (at least 1ms).
    pub per: Duration,
    /// Bucket capacity: the largest burst allowed after a quiet period (at least 1).
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub burst: u32,
}

/// Status shared by the policy kinds (AccessPolicy, RateLimitPolicy, CorsPolicy).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Targets this policy is in force for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// `Accepted` (in force), `Conflicted` (another policy wins; the message names it)
    /// and `Invalid` (the message says why), Gateway API style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
