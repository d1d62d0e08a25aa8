//! Keys as the engine holds them (steps 7-9), and secret verification.
//!
//! argon2id verification takes tens of milliseconds, so it never runs inside the
//! engine's synchronous decision. When the verified-key cache has no entry for the
//! presented token, [`crate::engine::Engine::decide`] returns a
//! [`crate::engine::Pending`]; the proxy takes its [`VerifyJob`] (owned, `Send`,
//! `'static`) to a bounded blocking pool, calls [`verify`] there, and hands the
//! [`VerifyOutcome`] back to [`crate::engine::Pending::complete`].

use std::fmt;
use std::sync::Arc;

use turnpike_api::bundle::{KeyEntry, SecretEntry};
use turnpike_api::hash::verify_parsed;
use turnpike_api::token::{KEY_ID_LEN, KeyId, Token};

use super::buckets::Limit;
use super::refusal::Refusal;
use super::routes::stable_hash;

/// A key id as a number, for per-key table keys: its ASCII bytes packed into a
/// `u128` (a bijection for ids of [`KEY_ID_LEN`] characters; no dependence on the
/// id alphabet). `None` for a string of another length.
pub fn key_id_bits(id: &str) -> Option<u128> {
    const _: () = assert!(KEY_ID_LEN <= 16, "a key id must fit in a u128");
    if id.len() != KEY_ID_LEN {
        return None;
    }
    Some(id.bytes().fold(0u128, |acc, b| acc << 8 | u128::from(b)))
}

/// One key of the loaded bundle.
pub struct Key {
    /// Public key id.
    pub id: KeyId,
    pub(crate) id_bits: u128,
    /// ApiKey resource name.
    pub name: String,
    /// ApiKey resource UID (for Events' `regarding`; absent in local mode).
    pub uid: Option<String>,
    /// Owner text.
    pub owner: Option<String>,
    /// Scopes held, sorted, without duplicates.
    pub scopes: Box<[String]>,
    /// Scopes joined with spaces (`X-Turnpike-Scopes`).
    pub scopes_header: Box<str>,
    pub(crate) secrets: Arc<[SecretEntry]>,
    pub(crate) rate_limit: Option<Limit>,
    pub(crate) daily_quota: Option<u64>,
    pub(crate) expires_at: Option<i64>,
    pub(crate) revoked: bool,
    /// Hash of the bundle's fingerprint of this entry: a cached verification is valid
    /// only for the fingerprint it was made with.
    pub(crate) fingerprint: u64,
}

impl Key {
    /// Compiles a bundle entry; `None` for a key id that is not valid (cannot happen
    /// for a `KeyId`, which is validated on parse).
    pub(crate) fn compile(id: &KeyId, entry: &KeyEntry) -> Option<Key> {
        let mut scopes = entry.scopes.clone();
        scopes.sort();
        scopes.dedup();
        Some(Key {
            id: id.clone(),
            id_bits: key_id_bits(id.as_str())?,
            name: entry.name.clone(),
            uid: entry.uid.clone(),
            owner: entry.owner.clone(),
            scopes_header: scopes.join(" ").into_boxed_str(),
            scopes: scopes.into_boxed_slice(),
            secrets: entry.secrets.clone().into(),
            rate_limit: entry.rate_limit.as_ref().and_then(Limit::from_bucket),
            daily_quota: entry.daily_quota,
            expires_at: entry.expires_at,
            revoked: entry.revoked,
            fingerprint: stable_hash(&entry.fingerprint),
        })
    }

    /// Expiry, seconds since the Unix epoch (UTC).
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// True when the key is revoked.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// Number of accepted secrets (2 during a rotation's grace period).
    pub fn secret_count(&self) -> usize {
        self.secrets.len()
    }

    /// Step 9: is the key, with the secret that matched, valid at `unix_secs`?
    ///
    /// # Errors
    /// [`Refusal::KeyRevoked`], [`Refusal::KeyExpired`] or [`Refusal::SecretRotatedOut`].
    pub(crate) fn check_validity(
        &self,
        secret_index: usize,
        unix_secs: i64,
    ) -> Result<(), Refusal> {
        if self.revoked {
            return Err(Refusal::KeyRevoked);
        }
        if self.expires_at.is_some_and(|at| unix_secs >= at) {
            return Err(Refusal::KeyExpired);
        }
        let rotated_out = self
            .secrets
            .get(secret_index)
            .is_none_or(|s| s.not_after.is_some_and(|last| unix_secs > last));
        if rotated_out {
            return Err(Refusal::SecretRotatedOut);
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("secrets", &self.secrets.len())
            .field("revoked", &self.revoked)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Verification work for the blocking pool: the key's accepted hashes and a copy of
/// the presented token. `Debug` masks the token.
pub struct VerifyJob {
    pub(crate) secrets: Arc<[SecretEntry]>,
    pub(crate) token: Token,
}

impl fmt::Debug for VerifyJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyJob")
            .field("token", &self.token)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// Result of [`verify`]: which of the key's secrets the token matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyOutcome {
    pub(crate) matched: Option<usize>,
}

impl VerifyOutcome {
    /// The token matched no secret.
    pub const NO_MATCH: VerifyOutcome = VerifyOutcome { matched: None };

    /// True when the token matched one of the key's secrets (valid or rotated out).
    pub fn is_match(&self) -> bool {
        self.matched.is_some()
    }
}

/// Runs argon2id for each of the key's secrets (the current one first) until one
/// matches. A rotated-out secret past its `notAfter` is still checked, so the audit
/// record can say "rotated-out secret used" rather than "wrong secret"; validity is
/// decided afterwards by the engine. Pure and blocking: call it on a blocking pool.
pub fn verify(job: &VerifyJob) -> VerifyOutcome {
    let parsed = job.token.as_parsed();
    VerifyOutcome {
        matched: job
            .secrets
            .iter()
            .position(|s| verify_parsed(&s.hash, &parsed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_bits_is_a_bijection_on_valid_ids() {
        let a = key_id_bits("7k2m6q4xw3ab");
        assert!(a.is_some());
        assert_ne!(a, key_id_bits("7k2m6q4xw3ac"));
        assert_ne!(a, key_id_bits("ak2m6q4xw3ab"));
        assert_eq!(key_id_bits("short"), None);
        assert_eq!(key_id_bits("7k2m6q4xw3abc"), None);
    }
}
