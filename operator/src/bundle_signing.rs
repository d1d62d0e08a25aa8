//! The operator's bundle signing key (see [`turnpike_api::signing`]).
//!
//! Secret [`SIGNING_SECRET`] in the operator's own namespace holds the current key's
//! seed ([`SIGNING_KEY`]) and, during a rotation's overlap, the previous one
//! ([`PREVIOUS_SIGNING_KEY`], until [`PREVIOUS_UNTIL`]). Every replica reads it at start
//! (the webhook of each replica injects the public keys into new pods; the leader
//! signs); the first to start on a cluster without it generates it, and a replica
//! that loses the creation race reads the winner's. ConfigMap [`TRUST_CONFIG_MAP`]
//! publishes the public keys for people and tools (`keys`, one a line).
//!
//! The seed never leaves this module except into [`BundleSigner`], whose `Debug`
//! shows key ids only; errors name the Secret and the data key, never a value.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use tracing::{info, warn};
use turnpike_api::signing::{
    BundleSigner, PREVIOUS_SIGNING_KEY, PREVIOUS_UNTIL, SIGNING_KEY, SIGNING_SECRET,
    SignatureError, TRUST_CONFIG_MAP, TRUST_KEYS,
};

use crate::{material::MANAGED_BY, reconcile::FIELD_MANAGER};

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The API server refused or failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but does not hold a usable key.
    #[error("Secret {namespace}/{SIGNING_SECRET}: {message}")]
    Invalid {
        /// The operator's namespace.
        namespace: String,
        /// What is wrong (never a value).
        message: String,
    },
    /// The operating system's random generator failed.
    #[error("generating a signing key: {0}")]
    Random(String),
}

/// The keys in force in `secret` at `now`: the current one, and the previous one
/// while its overlap lasts.
///
/// # Errors
/// A missing or malformed current key, a malformed previous key or end of overlap.
pub fn signer_from(secret: &Secret, now: Timestamp) -> Result<BundleSigner, String> {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.as_slice());
    let current = get(SIGNING_KEY).ok_or_else(|| format!("data key {SIGNING_KEY} is missing"))?;
    let mut seeds = vec![current];
    if let Some(previous) = get(PREVIOUS_SIGNING_KEY) {
        let until = get(PREVIOUS_UNTIL)
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| format!("{PREVIOUS_SIGNING_KEY} needs {PREVIOUS_UNTIL} (RFC 3339)"))?;
        let until: Timestamp = until
            .trim()
            .parse()
            .map_err(|_| format!("{PREVIOUS_UNTIL} is not an RFC 3339 time"))?;
        if now < until {
            seeds.push(previous);
        }
    }
    BundleSigner::from_seeds(seeds).map_err(|e: SignatureError| e.to_string())
}

fn new_secret(namespace: &str, seed: &[u8; 32]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SIGNING_SECRET.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            SIGNING_KEY.to_owned(),
            ByteString(seed.to_vec()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// Reads the signing key from the operator's namespace, generating it when absent, and
/// publishes the public keys in [`TRUST_CONFIG_MAP`].
///
/// # Errors
/// The API server failed, or the Secret exists but holds no usable key (never
/// replaced: a key that sidecars trust must not change behind their back).
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
) -> Result<BundleSigner, SigningKeyError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let kube = |action: String| move |source| SigningKeyError::Kube { action, source };
    let secret = match secrets
        .get_opt(SIGNING_SECRET)
        .await
        .map_err(kube(format!("reading Secret {namespace}/{SIGNING_SECRET}")))?
    {
        Some(s) => s,
        None => {
            let seed = BundleSigner::generate_seed()
                .map_err(|e| SigningKeyError::Random(e.to_string()))?;
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            match secrets.create(&pp, &new_secret(namespace, &seed)).await {
                Ok(s) => {
                    info!(
                        namespace,
                        secret = SIGNING_SECRET,
                        "generated the bundle signing key"
                    );
                    s
                }
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(s)) if s.code == 409 => secrets
                    .get(SIGNING_SECRET)
                    .await
                    .map_err(kube(format!("reading Secret {namespace}/{SIGNING_SECRET}")))?,
                Err(e) => {
                    return Err(kube(format!(
                        "creating Secret {namespace}/{SIGNING_SECRET}"
                    ))(e));
                }
            }
        }
    };
    let signer =
        signer_from(&secret, Timestamp::now()).map_err(|message| SigningKeyError::Invalid {
            namespace: namespace.to_owned(),
            message,
        })?;
    info!(keys = %signer.public().ids().join(","), "bundles are signed; sidecars are told to trust these keys");
    if let Err(e) = publish_trust(client, namespace, &signer).await {
        // The ConfigMap is for people and tools; sidecars get the keys from the webhook.
        warn!(error = %e, "could not publish ConfigMap {TRUST_CONFIG_MAP}");
    }
    Ok(signer)
}

/// The trust ConfigMap's content: one base64 public key a line, current first.
pub fn trust_config_map(namespace: &str, signer: &BundleSigner) -> ConfigMap {
    let mut lines = signer.public().encoded().join("\n");
    lines.push('\n');
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(TRUST_CONFIG_MAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(TRUST_KEYS.to_owned(), lines)])),
        ..ConfigMap::default()
    }
}

async fn publish_trust(
    client: &Client,
    namespace: &str,
    signer: &BundleSigner,
) -> Result<(), kube::Error> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut cm = trust_config_map(namespace, signer);
    cm.metadata.managed_fields = None;
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": cm.metadata,
        "data": cm.data,
    });
    maps.patch(TRUST_CONFIG_MAP, &pp, &Patch::Apply(value))
        .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret_with(entries: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn the_previous_key_signs_only_until_its_overlap_ends() {
        let now: Timestamp = "2026-12-07T00:00:00Z".parse().unwrap();
        let s = secret_with(&[
            (SIGNING_KEY, &[2u8; 32]),
            (PREVIOUS_SIGNING_KEY, &[1u8; 32]),
            (PREVIOUS_UNTIL, b"2026-12-08T00:00:00Z"),
        ]);
        assert_eq!(signer_from(&s, now).unwrap().public().ids().len(), 2);
        let later: Timestamp = "2026-12-08T00:00:01Z".parse().unwrap();
        assert_eq!(signer_from(&s, later).unwrap().public().ids().len(), 1);
        let only_current = BundleSigner::from_seeds([[2u8; 32].as_slice()]).unwrap();
        assert_eq!(
            signer_from(&s, later).unwrap().current_id(),
            only_current.current_id()
        );
    }

    #[test]
    fn a_malformed_secret_is_an_error_without_its_content() {
        let now = Timestamp::now();
        let e = signer_from(&secret_with(&[]), now).unwrap_err();
        assert!(e.contains(SIGNING_KEY), "{e}");
        let e = signer_from(&secret_with(&[(SIGNING_KEY, b"short-seed-value")]), now).unwrap_err();
        assert!(!e.contains("short-seed-value"), "{e}");
        let e = signer_from(
            &secret_with(&[
                (SIGNING_KEY, &[2u8; 32]),
                (PREVIOUS_SIGNING_KEY, &[1u8; 32]),
            ]),
            now,
        )
        .unwrap_err();
        assert!(e.contains(PREVIOUS_UNTIL), "{e}");
    }

    #[test]
    fn the_trust_config_map_lists_the_public_keys_a_line_each() {
        let s = BundleSigner::from_seeds([[2u8; 32].as_slice(), [1u8; 32].as_slice()]).unwrap();
        let cm = trust_config_map("turnpike-system", &s);
        let text = &cm.data.unwrap()[TRUST_KEYS];
        let parsed = turnpike_api::signing::TrustedKeys::parse(text).unwrap();
        assert_eq!(parsed, s.public());
        assert_eq!(text.lines().count(), 2);
    }
}
