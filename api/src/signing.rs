//! Sealed bundles: Ed25519 signatures over every bundle object the operator writes.
//!
//! A content hash tells a torn file from a whole one; it does not tell who wrote it.
//! Anyone allowed to write Secrets in a namespace could otherwise add a key hash of
//! their own to `turnpike-<target>` and mint a working credential. So the operator signs
//! each bundle file (primary `keys.json`, every `keys-<n>.json` shard, `policy.json`)
//! with a key only it holds (Secret [`SIGNING_SECRET`] in its own namespace), and every
//! injected sidecar gets the public key(s) from the webhook ([`TRUST_ENV`]), written
//! into the pod at creation, so nothing in the workload's namespace can change them.
//!
//! # What is signed
//!
//! The message is a fixed domain string, the file name (`keys.json`, `keys-3.json`,
//! `policy.json`), the namespace, the target and the file's content hash, one per line
//! ([`message`]). The content hash covers every other field (the signatures themselves
//! excepted, see [`crate::bundle::Sealed::seal`]), including the bundle's
//! [`generation`](crate::bundle::KeyBundle::generation): a bundle signed for one target
//! or file never verifies as another, and a sidecar refuses a validly signed but older
//! bundle (a replay) by its lower generation.
//!
//! # Rotation
//!
//! A bundle carries one signature per signing key in force: during a rotation's overlap
//! the operator signs with the new key and the previous one, so sidecars started before
//! the rotation (trusting only the previous key) and after it (trusting both) accept the
//! same bundles. Signatures by keys a sidecar does not trust are ignored; one valid
//! signature by a trusted key is enough.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Secret, in the operator's namespace, holding the signing key(s).
pub const SIGNING_SECRET: &str = "turnpike-bundle-signing";
/// Data key of [`SIGNING_SECRET`]: the current key's 32-byte Ed25519 seed.
pub const SIGNING_KEY: &str = "signing-key";
/// Data key of [`SIGNING_SECRET`]: the previous key's seed, during a rotation's overlap.
pub const PREVIOUS_SIGNING_KEY: &str = "previous-signing-key";
/// Data key of [`SIGNING_SECRET`]: end of the overlap (RFC 3339); after it the previous
/// key neither signs nor is trusted by new pods.
pub const PREVIOUS_UNTIL: &str = "previous-until";
/// ConfigMap, in the operator's namespace, publishing the trusted public keys.
pub const TRUST_CONFIG_MAP: &str = "turnpike-bundle-trust";
/// Data key of [`TRUST_CONFIG_MAP`]: one base64 public key a line.
pub const TRUST_KEYS: &str = "keys";
/// The sidecar's environment variable (and `--bundle-trust`): comma-separated base64
/// public keys.
pub const TRUST_ENV: &str = "TURNPIKE_BUNDLE_TRUST";
/// Most keys a trust list holds (current and previous, with room for a manual overlap).
pub const MAX_TRUSTED_KEYS: usize = 8;
/// Most signatures a bundle file may carry (and the operator writes at most 2).
pub const MAX_SIGNATURES: usize = 4;

const DOMAIN: &str = "turnpike.dev/bundle-signature/v1";

/// One signature of a bundle file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleSignature {
    /// Which key signed: [`key_id`] of its public key.
    pub key_id: String,
    /// The Ed25519 signature over [`message`], base64 (standard, padded).
    pub value: String,
}

/// The bytes signed for one bundle file.
pub fn message(file: &str, namespace: &str, target: &str, content_hash: &str) -> Vec<u8> {
    format!("{DOMAIN}\n{file}\n{namespace}\n{target}\n{content_hash}").into_bytes()
}

/// Short public id of a public key: the first 8 bytes of its SHA-256, hex. Names the
/// key in signatures, logs and Events (a public key is not a secret, but an id is
/// shorter to read).
pub fn key_id(public: &VerifyingKey) -> String {
    crate::bundle::hex(&Sha256::digest(public.as_bytes())[..8])
}

/// Why a trust list or a signature was refused. Never quotes a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The bundle file carries no signature, and unsigned bundles are not accepted.
    #[error(
        "{file}: not signed (this sidecar trusts only bundles signed by the operator; --insecure-unsigned-bundles is for development)"
    )]
    Unsigned {
        /// The file.
        file: String,
    },
    /// Signed, but by no trusted key, or no signature by a trusted key verifies.
    #[error(
        "{file}: no valid signature by a trusted key (signed by {signers}; trusted: {trusted})"
    )]
    Untrusted {
        /// The file.
        file: String,
        /// Key ids in the file's signatures.
        signers: String,
        /// Key ids the sidecar trusts.
        trusted: String,
    },
    /// More signatures than a bundle may carry.
    #[error("{file}: {found} signatures, more than the {MAX_SIGNATURES} a bundle may carry")]
    TooMany {
        /// The file.
        file: String,
        /// Signatures found.
        found: usize,
    },
    /// A trust list entry is not a base64 Ed25519 public key.
    #[error("trusted key {index}: {message}")]
    BadTrustedKey {
        /// 1-based position in the list.
        index: usize,
        /// What is wrong.
        message: &'static str,
    },
    /// An empty trust list, or too many keys.
    #[error("trust list: {0}")]
    TrustList(&'static str),
    /// A signing key seed that is not 32 bytes.
    #[error("signing key: {0}")]
    BadSigningKey(&'static str),
}

/// The public keys a sidecar trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

impl TrustedKeys {
    /// Parses a trust list: base64 public keys separated by commas, spaces or line
    /// breaks (the env var's and the ConfigMap's forms). Duplicates count once.
    ///
    /// # Errors
    /// An entry that is not a valid key, no key at all, or more than
    /// [`MAX_TRUSTED_KEYS`].
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let mut keys: Vec<(String, VerifyingKey)> = Vec::new();
        let entries = text
            .split([',', ' ', '\n', '\r', '\t'])
            .filter(|s| !s.is_empty());
        for (i, entry) in entries.enumerate() {
            let bad = |message| SignatureError::BadTrustedKey {
                index: i + 1,
                message,
            };
            let bytes = data_encoding::BASE64
                .decode(entry.as_bytes())
                .map_err(|_| bad("not base64"))?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("not 32 bytes (an Ed25519 public key)"))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a curve point"))?;
            if key.is_weak() {
                return Err(bad("a weak (small-order) key"));
            }
            let id = key_id(&key);
            if !keys.iter().any(|(k, _)| *k == id) {
                keys.push((id, key));
            }
            if keys.len() > MAX_TRUSTED_KEYS {
                return Err(SignatureError::TrustList("more than 8 keys"));
            }
        }
        if keys.is_empty() {
            return Err(SignatureError::TrustList("no key"));
        }
        Ok(Self { keys })
    }

    /// From public keys.
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        let mut out: Vec<(String, VerifyingKey)> = Vec::new();
        for k in keys {
            let id = key_id(&k);
            if !out.iter().any(|(i, _)| *i == id) {
                out.push((id, k));
            }
        }
        Self { keys: out }
    }

    /// Key ids, in list order.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// The list in [`TRUST_ENV`] form: comma-separated base64.
    pub fn to_env(&self) -> String {
        self.encoded().join(",")
    }

    /// Base64 of each key, in list order.
    pub fn encoded(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|(_, k)| data_encoding::BASE64.encode(k.as_bytes()))
            .collect()
    }

    /// Checks that `signatures` hold a valid signature, by a trusted key, of `file` of
    /// `namespace`/`target` with `content_hash`.
    ///
    /// # Errors
    /// [`SignatureError::Unsigned`], [`SignatureError::TooMany`] or
    /// [`SignatureError::Untrusted`].
    pub fn verify(
        &self,
        signatures: &[BundleSignature],
        file: &str,
        namespace: &str,
        target: &str,
        content_hash: &str,
    ) -> Result<(), SignatureError> {
        if signatures.is_empty() {
            return Err(SignatureError::Unsigned { file: file.into() });
        }
        if signatures.len() > MAX_SIGNATURES {
            return Err(SignatureError::TooMany {
                file: file.into(),
                found: signatures.len(),
            });
        }
        let msg = message(file, namespace, target, content_hash);
        for s in signatures {
            let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == s.key_id) else {
                continue;
            };
            let Ok(bytes) = data_encoding::BASE64.decode(s.value.as_bytes()) else {
                continue;
            };
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&bytes) else {
                continue;
            };
            // `verify_strict` refuses the malleable and small-order forms plain
            // `verify` lets through.
            if key.verify_strict(&msg, &sig).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Untrusted {
            file: file.into(),
            signers: signatures
                .iter()
                .map(|s| printable_id(&s.key_id))
                .collect::<Vec<_>>()
                .join(","),
            trusted: self.ids().join(","),
        })
    }
}

/// A key id from a bundle, safe to print: ids are 16 hex digits; anything else is
/// shown as `?` so a crafted bundle cannot put text in a log line.
fn printable_id(id: &str) -> String {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id.to_string()
    } else {
        "?".into()
    }
}

/// The operator's signing keys: the current one and, during a rotation's overlap, the
/// previous one. `Debug` shows key ids only.
#[derive(Clone)]
pub struct BundleSigner {
    keys: Vec<SigningKey>,
}

impl fmt::Debug for BundleSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleSigner")
            .field("keys", &self.public().ids())
            .finish()
    }
}

impl BundleSigner {
    /// From seeds: the current key first, then the previous one (if in its overlap).
    ///
    /// # Errors
    /// A seed that is not 32 bytes, or no seed.
    pub fn from_seeds<'a>(
        seeds: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        for seed in seeds {
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| SignatureError::BadSigningKey("a seed is 32 bytes"))?;
            keys.push(SigningKey::from_bytes(&seed));
        }
        if keys.is_empty() {
            return Err(SignatureError::BadSigningKey("no key"));
        }
        Ok(Self { keys })
    }

    /// A fresh 32-byte seed from the operating system's generator.
    ///
    /// # Errors
    /// The generator failed.
    pub fn generate_seed() -> Result<[u8; 32], getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(seed)
    }

    /// The public keys, current first: what sidecars are told to trust.
    pub fn public(&self) -> TrustedKeys {
        TrustedKeys::from_keys(self.keys.iter().map(SigningKey::verifying_key))
    }

    /// Id of the current key.
    pub fn current_id(&self) -> String {
        self.keys
            .first()
            .map(|k| key_id(&k.verifying_key()))
            .unwrap_or_default()
    }

    /// Signatures, one per key, of `file` of `namespace`/`target` with `content_hash`.
    /// Ed25519 is deterministic: the same input gives the same signatures, so signing an
    /// unchanged bundle again changes nothing the operator would write.
    pub fn sign(
        &self,
        file: &str,
        namespace: &str,
        target: &str,
        content_hash: &str,
    ) -> Vec<BundleSignature> {
        let msg = message(file, namespace, target, content_hash);
        self.keys
            .iter()
            .map(|k| BundleSignature {
                key_id: key_id(&k.verifying_key()),
                value: data_encoding::BASE64.encode(&k.sign(&msg).to_bytes()),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer(byte: u8) -> BundleSigner {
        BundleSigner::from_seeds([[byte; 32].as_slice()]).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_file_target_and_hash() {
        let s = signer(1);
        let trust = s.public();
        let sigs = s.sign("keys.json", "shop", "orders", "abc");
        trust
            .verify(&sigs, "keys.json", "shop", "orders", "abc")
            .unwrap();
        for (file, ns, target, hash) in [
            ("policy.json", "shop", "orders", "abc"),
            ("keys.json", "other", "orders", "abc"),
            ("keys.json", "shop", "payments", "abc"),
            ("keys.json", "shop", "orders", "abd"),
        ] {
            assert!(
                matches!(
                    trust.verify(&sigs, file, ns, target, hash),
                    Err(SignatureError::Untrusted { .. })
                ),
                "{file} {ns} {target} {hash}"
            );
        }
    }

    #[test]
    fn another_key_unsigned_and_garbage_are_refused() {
        let trust = signer(1).public();
        let other = signer(2).sign("keys.json", "shop", "orders", "abc");
        assert!(matches!(
            trust.verify(&other, "keys.json", "shop", "orders", "abc"),
            Err(SignatureError::Untrusted { .. })
        ));
        assert_eq!(
            trust.verify(&[], "keys.json", "shop", "orders", "abc"),
            Err(SignatureError::Unsigned {
                file: "keys.json".into()
            })
        );
        // A trusted key id with a forged value, and an id that is not an id.
        let mut forged = signer(1).sign("keys.json", "shop", "orders", "abc");
        forged[0].value = data_encoding::BASE64.encode(&[7u8; 64]);
        forged.push(BundleSignature {
            key_id: "evil\nline".into(),
            value: "!!".into(),
        });
        let e = trust
            .verify(&forged, "keys.json", "shop", "orders", "abc")
            .unwrap_err();
        assert!(!e.to_string().contains("evil"), "{e}");
        let many = vec![forged[0].clone(); MAX_SIGNATURES + 1];
        assert!(matches!(
            trust.verify(&many, "keys.json", "shop", "orders", "abc"),
            Err(SignatureError::TooMany { .. })
        ));
    }

    #[test]
    fn during_an_overlap_either_trust_list_accepts() {
        let old = signer(1);
        let both = BundleSigner::from_seeds([[2u8; 32].as_slice(), [1u8; 32].as_slice()]).unwrap();
        let sigs = both.sign("policy.json", "shop", "orders", "h");
        assert_eq!(sigs.len(), 2);
        old.public()
            .verify(&sigs, "policy.json", "shop", "orders", "h")
            .unwrap();
        signer(2)
            .public()
            .verify(&sigs, "policy.json", "shop", "orders", "h")
            .unwrap();
        assert_eq!(both.current_id(), signer(2).current_id());
    }

    #[test]
    fn trust_lists_parse_in_both_forms_and_refuse_bad_entries() {
        let a = signer(1).public().to_env();
        let b = signer(2).public().to_env();
        let env = TrustedKeys::parse(&format!("{a},{b}")).unwrap();
        let lines = TrustedKeys::parse(&format!("{a}\n{b}\n{a}\n")).unwrap();
        assert_eq!(env, lines);
        assert_eq!(env.ids().len(), 2);
        assert_eq!(TrustedKeys::parse(&env.to_env()).unwrap(), env);
        for bad in [
            "",
            " ,\n",
            "not-base64!",
            "AAAA",
            &data_encoding::BASE64.encode(&[0u8; 32]),
        ] {
            assert!(TrustedKeys::parse(bad).is_err(), "{bad:?}");
        }
        let nine: Vec<String> = (1..=9u8).map(|i| signer(i).public().to_env()).collect();
        assert!(TrustedKeys::parse(&nine.join(",")).is_err());
    }

    #[test]
    fn debug_shows_ids_never_key_material() {
        let s = signer(9);
        let seed_b64 = data_encoding::BASE64.encode(&[9u8; 32]);
        let dbg = format!("{s:?} {:?}", s.public());
        assert!(dbg.contains(&s.current_id()), "{dbg}");
        assert!(!dbg.contains(&seed_b64), "{dbg}");
        assert!(!dbg.contains(&s.public().to_env()), "{dbg}");
        assert!(BundleSigner::from_seeds([[1u8; 31].as_slice()]).is_err());
    }
}
