//! The ApiKey manifest `key new` prints.
//!
//! Temporary local shape: when the CRD types in `turnpike-api` land, this becomes the
//! real `ApiKey` type. Strings the YAML could read as something else (scopes such as
//! `true` or `1.0`, the `$`-laden hash, the timestamp) are written double-quoted.

use serde::Serialize;
use serde_saphyr::{DoubleQuoted, FlowMap, FlowSeq};

/// API group and version of the ApiKey resource.
pub const API_VERSION: &str = "turnpike.dev/v1alpha1";
/// Kind of the ApiKey resource.
pub const KIND: &str = "ApiKey";

/// What goes into an ApiKey manifest made offline.
#[derive(Debug)]
pub struct ApiKeyInput {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; absent means the namespace of the kubectl context.
    pub namespace: Option<String>,
    /// `spec.targets`; empty means every target of the namespace.
    pub targets: Vec<String>,
    /// `spec.scopes`, at least one.
    pub scopes: Vec<String>,
    /// `spec.owner`.
    pub owner: Option<String>,
    /// `spec.expiresAt`, RFC 3339.
    pub expires_at: Option<String>,
    /// `spec.keyId`.
    pub key_id: String,
    /// `spec.hash`, an argon2id PHC string.
    pub hash: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: FlowMap<Metadata<'a>>,
    spec: Spec<'a>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    targets: Option<FlowSeq<Vec<&'a str>>>,
    scopes: FlowSeq<Vec<DoubleQuoted<&'a str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<DoubleQuoted<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DoubleQuoted<&'a str>>,
    key_id: &'a str,
    hash: DoubleQuoted<&'a str>,
}

/// The manifest as YAML.
///
/// # Errors
/// If the YAML serializer refuses a value.
pub fn to_yaml(input: &ApiKeyInput) -> Result<String, serde_saphyr::SerializeError> {
    let manifest = Manifest {
        api_version: API_VERSION,
        kind: KIND,
        metadata: FlowMap(Metadata {
            name: &input.name,
            namespace: input.namespace.as_deref(),
        }),
        spec: Spec {
            targets: (!input.targets.is_empty())
                .then(|| FlowSeq(input.targets.iter().map(String::as_str).collect())),
            scopes: FlowSeq(
                input
                    .scopes
                    .iter()
                    .map(|s| DoubleQuoted(s.as_str()))
                    .collect(),
            ),
            owner: input.owner.as_deref().map(DoubleQuoted),
            expires_at: input.expires_at.as_deref().map(DoubleQuoted),
            key_id: &input.key_id,
            hash: DoubleQuoted(&input.hash),
        },
    };
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(&manifest, options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input() -> ApiKeyInput {
        ApiKeyInput {
            name: "billing".into(),
            namespace: Some("shop".into()),
            targets: vec!["orders".into()],
            scopes: vec!["orders:read".into(), "true".into()],
            owner: Some("team \"billing\" #1".into()),
            expires_at: Some("2027-06-30T00:00:00Z".into()),
            key_id: "7k2m9q4xw3ab".into(),
            hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI".into(),
        }
    }

    #[test]
    fn full_manifest() {
        let yaml = to_yaml(&input()).unwrap();
        let expected = "\
apiVersion: turnpike.dev/v1alpha1
kind: ApiKey
metadata: {name: billing, namespace: shop}
spec:
  targets: [orders]
  scopes: [\"orders:read\", \"true\"]
  owner: \"team \\\"billing\\\" #1\"
  expiresAt: \"2027-06-30T00:00:00Z\"
  keyId: 7k2m9q4xw3ab
  hash: \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI\"
";
        assert_eq!(yaml, expected);
    }

    #[test]
    fn optional_fields_are_omitted() {
        let mut input = input();
        input.namespace = None;
        input.targets.clear();
        input.owner = None;
        input.expires_at = None;
        let yaml = to_yaml(&input).unwrap();
        assert!(yaml.contains("metadata: {name: billing}\n"), "{yaml}");
        for absent in ["namespace", "targets", "owner", "expiresAt"] {
            assert!(!yaml.contains(absent), "{absent} in {yaml}");
        }
    }
}
