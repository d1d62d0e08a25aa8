//! Bounded per-client state tables.
//!
//! Every per-IP and per-key counter (buckets, quotas, lockouts, cooldowns, the
//! verified-key cache) lives in a [`Table`]: a fixed number of shards, each a
//! `Mutex<HashMap>`, with a hard cap on entries. Two rules make the bound safe:
//!
//! - **Eviction never refills early.** An entry is dropped only once it is *idle*
//!   ([`Expiring::is_idle`]): a bucket that is full again, a window that is over, a
//!   lockout or cooldown that has ended, a quota whose day is past. Dropping an idle
//!   entry is the same as keeping it, so a limited client cannot get a fresh bucket
//!   by waiting for eviction (Envoy's local rate limiter forgets limited descriptors
//!   when its LRU is full).
//! - **When full, new clients share one overflow entry.** A table that is full of
//!   non-idle entries does not forget anyone to make room: a new client is counted in
//!   the table's shared overflow entry (one bucket for all of them), so a flood of new
//!   addresses is limited as a group while every known client keeps its own state.
//!   While the overflow entry is not idle, a client without an entry is judged by it,
//!   and a new entry starts as a copy of it: a client limited in the overflow bucket
//!   cannot shed that by getting an entry of its own once room frees up.
//!
//! A full shard is swept (idle entries dropped) only when one of its entries can have
//! become idle since the last sweep, so a full table does not cost a scan per request.
//! Keys are hashed once per operation and the shard maps reuse that hash. Tables keyed
//! by client address use SipHash with a per-table random key (attackers choose their
//! addresses); tables keyed by key id use [`KeyIdHasher`], a cheap keyed multiply-fold:
//! only ids of keys in a bundle ever get entries there, so clients cannot choose them.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::clock::Now;

/// State that can be forgotten once it no longer constrains anyone.
pub trait Expiring: Default + Clone {
    /// Monotonic millisecond from which the entry may be idle (a hint for scheduling
    /// sweeps; must not be later than the instant [`Expiring::is_idle`] turns true
    /// when no further updates happen).
    fn idle_at_ms(&self) -> u64;

    /// True when dropping the entry changes nothing: a fresh entry would behave the
    /// same from `now` on.
    fn is_idle(&self, now: Now) -> bool {
        now.mono_ms >= self.idle_at_ms()
    }
}

/// A key together with its precomputed hash, so each table operation hashes once.
#[derive(Clone, Copy, Debug)]
struct Hashed<K> {
    hash: u64,
    key: K,
}

impl<K: PartialEq> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Eq> Eq for Hashed<K> {}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes the precomputed hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Hashed`; fold anything else in for safety.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ShardMap<K, V> = HashMap<Hashed<K>, V, BuildHasherDefault<PassThrough>>;

struct Shard<K, V> {
    map: ShardMap<K, V>,
    /// No entry can be idle before this monotonic millisecond (set by the last sweep
    /// that found nothing to drop).
    next_sweep_ms: u64,
}

/// A cheap keyed hasher for key ids (see the module documentation): multiply-fold
/// with a random per-table seed.
#[derive(Clone, Copy, Debug)]
pub struct KeyIdHasher {
    seed: u64,
}

impl Default for KeyIdHasher {
    fn default() -> Self {
        // A seed from the standard library's per-process random keys.
        Self {
            seed: RandomState::new().hash_one(0x7475_726e_7069_6b65_u64) | 1,
        }
    }
}

/// State of [`KeyIdHasher`].
pub struct KeyIdState {
    state: u64,
}

impl Hasher for KeyIdState {
    fn finish(&self) -> u64 {
        // Final avalanche (the murmur3 64-bit finaliser).
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.state = (self.state ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

impl BuildHasher for KeyIdHasher {
    type Hasher = KeyIdState;

    fn build_hasher(&self) -> KeyIdState {
        KeyIdState { state: self.seed }
    }
}

/// A bounded, sharded map from client to state. See the module documentation.
pub struct Table<K, V, S = RandomState> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    overflow: Mutex<V>,
    /// `idle_at_ms` of the overflow entry, readable without its lock: until then the
    /// overflow entry may be busy.
    overflow_busy_until: AtomicU64,
    /// Entries in all shards (approximate under concurrency): lets lookups in an
    /// empty table (no lockout, no cooldown: the normal case) skip hashing and locking.
    entries: AtomicUsize,
    hasher: S,
    shard_cap: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a table lock leaves plain counters behind; they are still
    // meaningful, so poisoning is ignored rather than turned into a panic per request.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V, S> Table<K, V, S>
where
    K: Hash + Eq + Copy,
    V: Expiring,
    S: BuildHasher + Default,
{
    /// A table holding at most `capacity` entries (rounded up to a multiple of the
    /// shard count) in `shards` shards (rounded up to a power of two, at least 1).
    pub fn new(capacity: usize, shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        let shard_cap = capacity.div_ceil(shards).max(1);
        let shards = (0..shards)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity_and_hasher(
                        shard_cap.min(1024),
                        BuildHasherDefault::default(),
                    ),
                    next_sweep_ms: 0,
                })
            })
            .collect();
        Self {
            shards,
            overflow: Mutex::new(V::default()),
            overflow_busy_until: AtomicU64::new(0),
            entries: AtomicUsize::new(0),
            hasher: S::default(),
            shard_cap,
        }
    }

    fn locate(&self, key: K) -> (Hashed<K>, &Mutex<Shard<K, V>>) {
        let hash = self.hasher.hash_one(key);
        // High bits pick the shard; the map uses the whole hash.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        (Hashed { hash, key }, &self.shards[index])
    }

    /// Runs `f` on the entry of `key`, creating it if needed. When the shard is full
    /// of entries that are not idle, `f` runs on the shared overflow entry instead.
    pub fn with<R>(&self, key: K, now: Now, f: impl FnOnce(&mut V) -> R) -> R {
        let (hashed, shard) = self.locate(key);
        let mut shard = lock(shard);
        if let Some(v) = shard.map.get_mut(&hashed) {
            return f(v);
        }
        if shard.map.len() >= self.shard_cap {
            self.sweep_shard(&mut shard, now);
        }
        if shard.map.len() < self.shard_cap {
            let initial = self.busy_overflow(now).unwrap_or_default();
            self.entries.fetch_add(1, Ordering::Relaxed);
            return f(shard.map.entry(hashed).or_insert(initial));
        }
        drop(shard);
        let mut overflow = lock(&self.overflow);
        let result = f(&mut overflow);
        self.overflow_busy_until
            .store(overflow.idle_at_ms(), Ordering::Release);
        result
    }

    /// A copy of the overflow entry unless it is idle. Lock order: shard, then
    /// overflow (never the other way round).
    fn busy_overflow(&self, now: Now) -> Option<V> {
        if now.mono_ms >= self.overflow_busy_until.load(Ordering::Acquire) {
            return None;
        }
        let overflow = lock(&self.overflow);
        (!overflow.is_idle(now)).then(|| overflow.clone())
    }

    /// Runs `f` on the entry of `key` without creating one: `None` for an unknown
    /// client, unless the overflow entry is busy (or the shard full): then the client
    /// is judged by the overflow entry it would be counted in.
    pub fn peek<R>(&self, key: K, now: Now, f: impl FnOnce(Option<&V>) -> R) -> R {
        if self.entries.load(Ordering::Relaxed) == 0
            && now.mono_ms >= self.overflow_busy_until.load(Ordering::Acquire)
        {
            return f(None);
        }
        let (hashed, shard) = self.locate(key);
        let shard = lock(shard);
        if let Some(v) = shard.map.get(&hashed) {
            return f(Some(v));
        }
        let full = shard.map.len() >= self.shard_cap;
        drop(shard);
        if full {
            return f(Some(&lock(&self.overflow)));
        }
        match self.busy_overflow(now) {
            Some(v) => f(Some(&v)),
            None => f(None),
        }
    }

    /// Runs `f` on the entry of `key` if it exists (the overflow entry is never
    /// touched).
    pub fn update_existing<R>(&self, key: K, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let (hashed, shard) = self.locate(key);
        lock(shard).map.get_mut(&hashed).map(f)
    }

    /// Drops every idle entry (the proxy may call this from a timer to return memory
    /// early; correctness never depends on it).
    pub fn sweep(&self, now: Now) {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.next_sweep_ms = 0;
            self.sweep_shard(&mut shard, now);
        }
    }

    fn sweep_shard(&self, shard: &mut Shard<K, V>, now: Now) {
        let before = shard.map.len();
        sweep(shard, now);
        self.entries
            .fetch_sub(before - shard.map.len(), Ordering::Relaxed);
    }

    /// Number of entries (not counting the overflow entry).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// True when no client has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }
}

fn sweep<K, V: Expiring>(shard: &mut Shard<K, V>, now: Now) {
    if now.mono_ms < shard.next_sweep_ms {
        return;
    }
    let mut next = u64::MAX;
    shard.map.retain(|_, v| {
        if v.is_idle(now) {
            false
        } else {
            // An entry idle by the hint but not yet by `is_idle` (a quota waiting for
            // the wall-clock day) is rechecked at the next opportunity.
            next = next.min(v.idle_at_ms().max(now.mono_ms.saturating_add(1)));
            true
        }
    });
    shard.next_sweep_ms = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that is idle from a given instant.
    #[derive(Default, Debug, Clone)]
    struct Until {
        idle_at: u64,
        hits: u32,
    }

    impl Expiring for Until {
        fn idle_at_ms(&self) -> u64 {
            self.idle_at
        }
    }

    fn at(ms: u64) -> Now {
        Now::new(ms, 0)
    }

    #[test]
    fn caps_and_overflow() {
        let t: Table<u32, Until> = Table::new(4, 1);
        for k in 0..4 {
            t.with(k, at(0), |v| {
                v.idle_at = 1000;
                v.hits += 1;
            });
        }
        assert_eq!(t.len(), 4);
        // Full of busy entries: new clients share the overflow entry.
        let a = t.with(10, at(10), |v| {
            v.hits += 1;
            v.hits
        });
        let b = t.with(11, at(10), |v| {
            v.hits += 1;
            v.hits
        });
        assert_eq!((a, b), (1, 2));
        assert_eq!(t.len(), 4);
        assert_eq!(t.peek(12, at(10), |v| v.map(|v| v.hits)), Some(2));
        // Known clients keep their own entry.
        assert_eq!(t.peek(0, at(10), |v| v.map(|v| v.hits)), Some(1));
        // Once entries are idle, a new client gets its own entry again.
        let c = t.with(12, at(1000), |v| {
            v.hits += 1;
            v.hits
        });
        assert_eq!(c, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn new_entries_inherit_a_busy_overflow_entry() {
        let t: Table<u32, Until> = Table::new(1, 1);
        t.with(0, at(0), |v| v.idle_at = 100);
        // Client 1 is counted in the overflow entry, which becomes busy until 500.
        t.with(1, at(0), |v| {
            v.idle_at = 500;
            v.hits = 7;
        });
        // Room again at 100: client 1 gets its own entry, but starts from the overflow
        // state instead of a fresh one.
        let hits = t.with(1, at(100), |v| v.hits);
        assert_eq!(hits, 7);
        // Unknown clients are judged by the busy overflow entry...
        assert_eq!(t.peek(2, at(100), |v| v.map(|v| v.hits)), Some(7));
        // ...until it is idle.
        t.sweep(at(500));
        assert_eq!(t.peek(2, at(500), |v| v.map(|v| v.hits)), None);
        assert_eq!(t.with(3, at(500), |v| v.hits), 0);
    }

    #[test]
    fn peek_does_not_insert() {
        let t: Table<u32, Until> = Table::new(8, 2);
        assert!(t.peek(1, at(0), |v| v.is_none()));
        assert!(t.is_empty());
        assert_eq!(t.update_existing(1, |v| v.hits), None);
    }

    #[test]
    fn sweep_keeps_busy_entries() {
        let t: Table<u32, Until> = Table::new(100, 4);
        for k in 0..10 {
            t.with(k, at(0), |v| v.idle_at = u64::from(k) * 100);
        }
        t.sweep(at(450));
        assert_eq!(t.len(), 5);
        for k in 5..10 {
            assert!(t.peek(k, at(450), |v| v.is_some()));
        }
    }
}
