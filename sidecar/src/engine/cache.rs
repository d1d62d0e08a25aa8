//! The verified-key cache (step 8): a token that verified recently is not sent
//! through argon2id again.
//!
//! An entry, per key id, remembers up to two verified tokens (a key has at most a
//! current and a rotated-out secret, each possibly in use), each as:
//! - the SHA-256 of the token: never the plaintext, and compared in constant time;
//! - the index of the secret it matched;
//! - the key's fingerprint and the bundle's session epoch at verification time: when
//!   the operator changes the key (new secret, revocation, new scopes...) or raises
//!   the epoch, the entry no longer matches and the token is verified again;
//! - an expiry (TTL, monotonic clock).
//!
//! The cache is a bounded [`Table`]; entries are idle once their TTL is over. A full
//! cache shares one overflow entry (which is keyed by key id inside, so it never
//! confuses keys): caching gets worse, never wrong.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::clock::Now;
use super::table::{Expiring, KeyIdHasher, Table};

/// SHA-256 of a presented token, as four words (compared word-wise in constant time).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u64; 4]);

impl TokenDigest {
    /// Digest of `token`.
    pub fn of(token: &str) -> Self {
        let bytes: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut words = [0u64; 4];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        Self(words)
    }

    /// Constant-time equality.
    fn ct_eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        (a[0].ct_eq(&b[0]) & a[1].ct_eq(&b[1]) & a[2].ct_eq(&b[2]) & a[3].ct_eq(&b[3])).into()
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(***)")
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    digest: TokenDigest,
    secret_index: u8,
    fingerprint: u64,
    epoch: u64,
    expires_ms: u64,
}

/// What a cached verification is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheScope {
    /// Key id as a number.
    pub key_bits: u128,
    /// Hash of the key entry's fingerprint.
    pub fingerprint: u64,
    /// Bundle session epoch.
    pub epoch: u64,
}

/// Cached verifications of one key id.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheEntry {
    key_bits: u128,
    slots: [Option<Slot>; 2],
}

impl Expiring for CacheEntry {
    fn idle_at_ms(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.expires_ms)
            .max()
            .unwrap_or(0)
    }
}

/// The verified-key cache.
pub struct VerifiedCache {
    table: Table<u128, CacheEntry, KeyIdHasher>,
    ttl_ms: u64,
}

impl VerifiedCache {
    /// A cache of at most `capacity` key ids, entries valid for `ttl_ms`.
    pub fn new(capacity: usize, shards: usize, ttl_ms: u64) -> Self {
        Self {
            table: Table::new(capacity, shards),
            ttl_ms,
        }
    }

    /// The index of the secret `digest` verified against, if cached and still valid
    /// for `scope`.
    pub fn lookup(&self, scope: CacheScope, digest: &TokenDigest, now: Now) -> Option<usize> {
        self.table.peek(scope.key_bits, now, |entry| {
            let entry = entry?;
            if entry.key_bits != scope.key_bits {
                return None;
            }
            entry.slots.iter().flatten().find_map(|s| {
                let same_token = s.digest.ct_eq(digest);
                (same_token
                    && s.fingerprint == scope.fingerprint
                    && s.epoch == scope.epoch
                    && now.mono_ms < s.expires_ms)
                    .then_some(usize::from(s.secret_index))
            })
        })
    }

    /// Remembers that `digest` verified against secret `secret_index`.
    pub fn insert(&self, scope: CacheScope, digest: TokenDigest, secret_index: usize, now: Now) {
        let Ok(secret_index) = u8::try_from(secret_index) else {
            return;
        };
        let slot = Slot {
            digest,
            secret_index,
            fingerprint: scope.fingerprint,
            epoch: scope.epoch,
            expires_ms: now.mono_ms.saturating_add(self.ttl_ms),
        };
        self.table.with(scope.key_bits, now, |entry| {
            if entry.key_bits != scope.key_bits {
                *entry = CacheEntry {
                    key_bits: scope.key_bits,
                    slots: [None, None],
                };
            }
            // Replace, in order of preference: the same token, a slot that no longer
            // matches (stale or for another secret index), an empty one, the oldest.
            let pick = entry
                .slots
                .iter()
                .position(|s| s.is_some_and(|s| s.digest == digest))
                .or_else(|| {
                    entry.slots.iter().position(|s| {
                        s.is_some_and(|s| {
                            s.fingerprint != scope.fingerprint
                                || s.epoch != scope.epoch
                                || s.expires_ms <= now.mono_ms
                                || s.secret_index == secret_index
                        })
                    })
                })
                .or_else(|| entry.slots.iter().position(Option::is_none))
                .unwrap_or_else(|| {
                    let age = |s: &Option<Slot>| s.map_or(0, |s| s.expires_ms);
                    usize::from(age(&entry.slots[1]) < age(&entry.slots[0]))
                });
            entry.slots[pick] = Some(slot);
        });
    }

    /// Drops idle entries.
    pub fn sweep(&self, now: Now) {
        self.table.sweep(now);
    }

    /// Number of cached key ids.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: CacheScope = CacheScope {
        key_bits: 7,
        fingerprint: 1,
        epoch: 1,
    };

    #[test]
    fn hit_miss_and_invalidation() {
        let c = VerifiedCache::new(16, 1, 1000);
        let now = Now::new(0, 0);
        let a = TokenDigest::of("a");
        let b = TokenDigest::of("b");
        assert_eq!(c.lookup(SCOPE, &a, now), None);
        c.insert(SCOPE, a, 0, now);
        assert_eq!(c.lookup(SCOPE, &a, now), Some(0));
        assert_eq!(c.lookup(SCOPE, &b, now), None);
        assert_eq!(
            c.lookup(
                CacheScope {
                    fingerprint: 2,
                    ..SCOPE
                },
                &a,
                now
            ),
            None
        );
        assert_eq!(c.lookup(CacheScope { epoch: 2, ..SCOPE }, &a, now), None);
        assert_eq!(
            c.lookup(
                CacheScope {
                    key_bits: 8,
                    ..SCOPE
                },
                &a,
                now
            ),
            None
        );
        assert_eq!(c.lookup(SCOPE, &a, Now::new(999, 0)), Some(0));
        assert_eq!(c.lookup(SCOPE, &a, Now::new(1000, 0)), None);
    }

    #[test]
    fn two_secrets_of_one_key() {
        let c = VerifiedCache::new(16, 1, 1000);
        let now = Now::new(0, 0);
        let (new, old, other) = (
            TokenDigest::of("new"),
            TokenDigest::of("old"),
            TokenDigest::of("x"),
        );
        c.insert(SCOPE, new, 0, now);
        c.insert(SCOPE, old, 1, now);
        assert_eq!(c.lookup(SCOPE, &new, now), Some(0));
        assert_eq!(c.lookup(SCOPE, &old, now), Some(1));
        // Another token for secret 0 (a re-issued token) replaces the slot of secret 0.
        c.insert(SCOPE, other, 0, now);
        assert_eq!(c.lookup(SCOPE, &new, now), None);
        assert_eq!(c.lookup(SCOPE, &old, now), Some(1));
        assert_eq!(c.lookup(SCOPE, &other, now), Some(0));
    }

    #[test]
    fn debug_is_masked() {
        assert_eq!(
            format!("{:?}", TokenDigest::of("secret")),
            "TokenDigest(***)"
        );
    }
}
