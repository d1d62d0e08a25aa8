//! Key lifecycle decisions (pure) and the minting step (randomness + argon2, no I/O).

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{Resource, ResourceExt};
use turnpike_api::{
    compiler::PreviousSecret,
    hash::{self, PhcHash},
    token::{KeyId, Token},
    types::ApiKey,
};

use crate::material::{Material, Origin};

/// Annotation that requests a rotation when set to a new value.
pub const ROTATE_ANNOTATION: &str = "turnpike.dev/rotate";
/// Grace period of a rotated-out secret when the ApiKey does not say.
pub const DEFAULT_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// What to do about one ApiKey's key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// Mint a new key (id and token), deliver the token once, record the hash.
    Issue {
        /// ApiKey name.
        api_key: String,
    },
    /// Mint a new secret for the same id; the current one stays valid until `not_after`.
    Rotate {
        /// ApiKey name.
        api_key: String,
        /// Annotation value being acted on.
        rotation: String,
        /// Last instant the old secret works (Unix seconds).
        not_after: i64,
    },
    /// Store this material as it is (manifest keys, expired grace periods).
    Record {
        /// ApiKey name.
        api_key: String,
        /// The material to store.
        material: Box<Material>,
        /// True when a manifest hash replaced an older one (a GitOps rotation).
        rotated: bool,
    },
}

impl KeyAction {
    /// The ApiKey the action is about.
    pub fn api_key(&self) -> &str {
        match self {
            KeyAction::Issue { api_key }
            | KeyAction::Rotate { api_key, .. }
            | KeyAction::Record { api_key, .. } => api_key,
        }
    }
}

fn grace(key: &ApiKey) -> jiff::SignedDuration {
    key.spec
        .rotation
        .as_ref()
        .and_then(|r| r.grace_period)
        .map(|d| {
            jiff::SignedDuration::from_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        })
        .unwrap_or(DEFAULT_GRACE)
}

fn not_after(now: Timestamp, grace: jiff::SignedDuration) -> i64 {
    now.as_second().saturating_add(grace.as_secs())
}

/// Decides the key actions for a namespace.
pub fn plan(
    keys: &[ApiKey],
    materials: &BTreeMap<String, Material>,
    now: Timestamp,
) -> Vec<KeyAction> {
    let mut out = Vec::new();
    for key in keys {
        if key.meta().deletion_timestamp.is_some() {
            continue;
        }
        let name = key.name_any();
        let current = materials.get(&name);
        let action = match (&key.spec.key_id, &key.spec.hash) {
            (Some(id), Some(hash)) => manifest_action(key, &name, id, hash, current, now),
            (None, None) => generated_action(key, &name, current, now),
            // Refused by the schema; the compiler reports it as Invalid.
            _ => None,
        };
        let action = action.or_else(|| expire_previous(&name, current, now));
        out.extend(action);
    }
    out
}

fn manifest_action(
    key: &ApiKey,
    name: &str,
    id: &str,
    hash: &str,
    current: Option<&Material>,
    now: Timestamp,
) -> Option<KeyAction> {
    // Invalid ids or hashes are the compiler's to report.
    let id = KeyId::parse(id).ok()?;
    let hash = PhcHash::parse(hash).ok()?;
    match current {
        Some(m) if m.key_id == id && m.hash == hash && m.origin == Origin::Manifest => None,
        Some(m) if m.key_id == id && m.hash != hash => Some(KeyAction::Record {
            api_key: name.to_string(),
            material: Box::new(Material {
                key_id: id,
                hash,
                previous: Some(PreviousSecret {
                    hash: m.hash.clone(),
                    not_after: not_after(now, grace(key)),
                }),
                origin: Origin::Manifest,
                rotation: m.rotation.clone(),
                issued_at: now,
                rotated_at: Some(now),
            }),
            rotated: true,
        }),
        _ => Some(KeyAction::Record {
            api_key: name.to_string(),
            material: Box::new(Material {
                key_id: id,
                hash,
                previous: None,
                origin: Origin::Manifest,
                rotation: None,
                issued_at: now,
                rotated_at: None,
            }),
            rotated: false,
        }),
    }
}

fn generated_action(
    key: &ApiKey,
    name: &str,
    current: Option<&Material>,
    now: Timestamp,
) -> Option<KeyAction> {
    let Some(m) = current.filter(|m| m.origin == Origin::Generated) else {
        return Some(KeyAction::Issue {
            api_key: name.to_string(),
        });
    };
    let requested = key.annotations().get(ROTATE_ANNOTATION)?;
    if m.rotation.as_ref() == Some(requested) || key.spec.revoked {
        return None;
    }
    Some(KeyAction::Rotate {
        api_key: name.to_string(),
        rotation: requested.clone(),
        not_after: not_after(now, grace(key)),
    })
}

fn expire_previous(name: &str, current: Option<&Material>, now: Timestamp) -> Option<KeyAction> {
    let m = current?;
    let p = m.previous.as_ref()?;
    (p.not_after <= now.as_second()).then(|| KeyAction::Record {
        api_key: name.to_string(),
        material: Box::new(Material {
            previous: None,
            ..m.clone()
        }),
        rotated: false,
    })
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// No randomness.
    #[error("minting a token: {0}")]
    Token(#[from] turnpike_api::token::TokenError),
    /// Hashing failed.
    #[error("hashing a token: {0}")]
    Hash(#[from] turnpike_api::hash::HashError),
    /// The blocking task was cancelled (shutdown).
    #[error("minting was cancelled")]
    Cancelled,
    /// A rotation found no current key to rotate.
    #[error("no current key to rotate")]
    NoCurrentKey,
}

/// Mints a brand-new key.
pub fn issue(now: Timestamp) -> Result<(Token, Material), MintError> {
    let token = Token::mint()?;
    let hash = hash::hash_token(&token)?;
    let material = Material {
        key_id: token.key_id(),
        hash,
        previous: None,
        origin: Origin::Generated,
        rotation: None,
        issued_at: now,
        rotated_at: None,
    };
    Ok((token, material))
}

/// Mints a new secret for an existing key; the old hash stays valid until `not_after`.
pub fn rotate(
    current: &Material,
    rotation: &str,
    not_after: i64,
    now: Timestamp,
) -> Result<(Token, Material), MintError> {
    let token = Token::mint_with_id(&current.key_id)?;
    let hash = hash::hash_token(&token)?;
    let material = Material {
        key_id: current.key_id.clone(),
        hash,
        previous: Some(PreviousSecret {
            hash: current.hash.clone(),
            not_after,
        }),
        origin: Origin::Generated,
        rotation: Some(rotation.to_string()),
        issued_at: current.issued_at,
        rotated_at: Some(now),
    };
    Ok((token, material))
}
