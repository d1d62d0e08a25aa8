//! The operator's durable record of a key: a Secret `turnpike-key-<apikey>` it owns,
//! holding the key id, the argon2id hash of the current secret, a rotated-out hash with
//! the end of its grace period, and the last rotation request handled. Never a token.

use std::collections::BTreeMap;

use jiff::Timestamp;
use turnpike_api::{compiler::PreviousSecret, hash::PhcHash, token::KeyId};

/// Label on every object the operator manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "turnpike-operator");
/// Label marking key-material Secrets.
pub const MATERIAL_LABEL: &str = "turnpike.dev/key-material";
/// Label naming the target of a bundle object.
pub const TARGET_LABEL: &str = "turnpike.dev/target";

/// Name of the key-material Secret of an ApiKey.
pub fn secret_name(api_key: &str) -> String {
    format!("turnpike-key-{api_key}")
}

/// Name of the token delivery Secret of an ApiKey (DESIGN.md: `<name>-token`).
pub fn token_secret_name(api_key: &str) -> String {
    format!("{api_key}-token")
}

/// Where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Minted by the operator; the token went to `<name>-token`.
    Generated,
    /// `spec.keyId` + `spec.hash` from the manifest (GitOps).
    Manifest,
}

/// Parsed key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// Key id.
    pub key_id: KeyId,
    /// Current hash.
    pub hash: PhcHash,
    /// Rotated-out secret during its grace period.
    pub previous: Option<PreviousSecret>,
    /// Origin of the key.
    pub origin: Origin,
    /// Value of the `turnpike.dev/rotate` annotation last acted on.
    pub rotation: Option<String>,
    /// When the current secret was issued.
    pub issued_at: Timestamp,
    /// When the key was last rotated.
    pub rotated_at: Option<Timestamp>,
}

/// Why a material Secret could not be read.
#[derive(Debug, thiserror::Error)]
#[error("key material Secret is unreadable: {0}")]
pub struct MaterialError(&'static str);

fn text(
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<Option<String>, MaterialError> {
    match data.get(key) {
        None => Ok(None),
        Some(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| MaterialError(key)),
    }
}

fn ts(v: Option<String>, key: &'static str) -> Result<Option<Timestamp>, MaterialError> {
    v.map(|s| s.parse::<Timestamp>().map_err(|_| MaterialError(key)))
        .transpose()
}

impl Material {
    /// Encodes as Secret data.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut d = BTreeMap::new();
        d.insert("keyId".into(), self.key_id.as_str().as_bytes().to_vec());
        d.insert("hash".into(), self.hash.as_str().as_bytes().to_vec());
        let origin = match self.origin {
            Origin::Generated => "generated",
            Origin::Manifest => "manifest",
        };
        d.insert("origin".into(), origin.as_bytes().to_vec());
        d.insert("issuedAt".into(), self.issued_at.to_string().into_bytes());
        if let Some(p) = &self.previous {
            d.insert("previousHash".into(), p.hash.as_str().as_bytes().to_vec());
            d.insert(
                "previousNotAfter".into(),
                p.not_after.to_string().into_bytes(),
            );
        }
        if let Some(r) = &self.rotation {
            d.insert("rotation".into(), r.as_bytes().to_vec());
        }
        if let Some(t) = &self.rotated_at {
            d.insert("rotatedAt".into(), t.to_string().into_bytes());
        }
        d
    }

    /// Decodes Secret data. Errors name the field, never its value.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, MaterialError> {
        let key_id = text(data, "keyId")?.ok_or(MaterialError("keyId"))?;
        let key_id = KeyId::parse(&key_id).map_err(|_| MaterialError("keyId"))?;
        let hash = text(data, "hash")?.ok_or(MaterialError("hash"))?;
        let hash = PhcHash::parse(&hash).map_err(|_| MaterialError("hash"))?;
        let origin = match text(data, "origin")?.as_deref() {
            Some("manifest") => Origin::Manifest,
            Some("generated") | None => Origin::Generated,
            Some(_) => return Err(MaterialError("origin")),
        };
        let previous = match (text(data, "previousHash")?, text(data, "previousNotAfter")?) {
            (Some(h), Some(n)) => Some(PreviousSecret {
                hash: PhcHash::parse(&h).map_err(|_| MaterialError("previousHash"))?,
                not_after: n.parse().map_err(|_| MaterialError("previousNotAfter"))?,
            }),
            (None, None) => None,
            _ => return Err(MaterialError("previousHash")),
        };
        Ok(Self {
            key_id,
            hash,
            previous,
            origin,
            rotation: text(data, "rotation")?,
            issued_at: ts(text(data, "issuedAt")?, "issuedAt")?.unwrap_or(Timestamp::UNIX_EPOCH),
            rotated_at: ts(text(data, "rotatedAt")?, "rotatedAt")?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let m = Material {
            key_id: KeyId::parse("7k2m9q4xw3ab").unwrap(),
            hash: PhcHash::parse(hash).unwrap(),
            previous: Some(PreviousSecret {
                hash: PhcHash::parse(hash).unwrap(),
                not_after: 42,
            }),
            origin: Origin::Generated,
            rotation: Some("2026-11-23".into()),
            issued_at: "2026-11-23T10:00:00Z".parse().unwrap(),
            rotated_at: Some("2026-11-23T11:00:00Z".parse().unwrap()),
        };
        assert_eq!(Material::from_data(&m.to_data()).unwrap(), m);
        let mut broken = m.to_data();
        broken.insert("hash".into(), b"hunter2".to_vec());
        let err = Material::from_data(&broken).unwrap_err().to_string();
        assert!(err.contains("hash") && !err.contains("hunter2"), "{err}");
    }
}
