//! The enforcement engine: the request path of DESIGN.md as pure functions.
//!
//! The proxy calls, per request:
//!
//! ```text
//! let facts = RequestFacts { method, path, client_ip: client_ip(peer, xff, &trusted), .. };
//! let now = Now { mono_ms, unix_secs };                     // read once
//! let decision = match engine.decide(&bundle, facts, now) {
//!     Step::Decided(d) => d,                                 // cache hit, refusal, preflight, public
//!     Step::Verify(pending) => {
//!         let job = pending.job();                           // owned, Send + 'static
//!         let outcome = pool.run(move || verify(&job)).await; // argon2id, bounded pool
//!         pending.complete(outcome, now_again)
//!     }
//! };
//! match decision {
//!     Decision::Allow(a) => forward(a.path, a.identity, ...), // hold a.in_flight until done
//!     Decision::Refuse(r) => respond(r.response.status, r.response.body, ...),
//!     Decision::Preflight(p) => respond(204, p.headers),
//! }
//! engine.observe_response(&bundle, client_ip, key_id, status, now); // abuse counters
//! ```
//!
//! Modules, one capability each: [`clock`], [`path`], [`buckets`], [`table`],
//! [`quota`], [`lockout`], [`abuse`], [`keys`], [`cache`], [`overload`], [`scope`],
//! [`routes`], [`cors`], [`credential`], [`refusal`], [`headers`], [`audit`], [`ip`],
//! [`hygiene`], [`bundle`], [`decision`] (what the engine answers), and [`decide`],
//! where the steps are called in order.

pub mod abuse;
pub mod audit;
pub mod buckets;
pub mod bundle;
pub mod cache;
pub mod clock;
pub mod cors;
pub mod credential;
pub mod decide;
pub mod decision;
pub mod facts;
pub mod headers;
pub mod hygiene;
pub mod ip;
pub mod keys;
pub mod lockout;
pub mod overload;
pub mod path;
pub mod quota;
pub mod refusal;
pub mod routes;
pub mod scope;
pub mod security;
pub mod table;

use std::net::IpAddr;

pub use audit::{AuditEvent, Triggered};
pub use bundle::{CompileError, CompiledBundle};
pub use clock::Now;
pub use decide::Pending;
pub use decision::{Allow, Decision, Identity, Preflight, Refused, Step};
pub use facts::{HeaderValues, RequestFacts};
pub use headers::RateHeaders;
pub use hygiene::HygieneLimits;
pub use ip::{TrustedProxies, client_ip};
pub use keys::{VerifyJob, VerifyOutcome, verify};
pub use refusal::{Refusal, RefusalResponse};
pub use security::SecurityHeaders;

use abuse::{AbuseState, Answer};
use buckets::Gcra;
use cache::VerifiedCache;
use ip::IpKey;
use lockout::LockoutState;
use overload::InFlight;
use quota::QuotaState;
use table::{Expiring, KeyIdHasher, Table};

impl Expiring for Gcra {
    /// A bucket is idle once it is full again.
    fn idle_at_ms(&self) -> u64 {
        self.full_at_ms()
    }
}

/// Sizes of the engine's tables and cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most client IPs (IPv6 /64s) tracked per table (buckets, lockouts, cooldowns).
    pub ip_table_capacity: usize,
    /// Most key ids tracked per table.
    pub key_table_capacity: usize,
    /// Shards per table (lock striping).
    pub shards: usize,
    /// Most key ids in the verified-key cache.
    pub cache_capacity: usize,
    /// How long a verification is reused.
    pub cache_ttl_ms: u64,
    /// Limits the proxy enforces before the engine sees a request (step 1).
    pub hygiene: HygieneLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ip_table_capacity: 100_000,
            key_table_capacity: 100_000,
            shards: 16,
            cache_capacity: 100_000,
            cache_ttl_ms: 5 * 60 * 1000,
            hygiene: HygieneLimits::default(),
        }
    }
}

/// All counters of the local backend, bounded.
pub(crate) struct Counters {
    pub(crate) ip_buckets: Table<IpKey, Gcra>,
    pub(crate) ip_route_buckets: Table<(u64, IpKey), Gcra>,
    pub(crate) key_buckets: Table<u128, Gcra, KeyIdHasher>,
    pub(crate) key_route_buckets: Table<(u64, u128), Gcra, KeyIdHasher>,
    pub(crate) quotas: Table<u128, QuotaState, KeyIdHasher>,
    pub(crate) ip_lockouts: Table<IpKey, LockoutState>,
    pub(crate) key_lockouts: Table<u128, LockoutState, KeyIdHasher>,
    pub(crate) ip_abuse: Table<IpKey, AbuseState>,
    pub(crate) key_abuse: Table<u128, AbuseState, KeyIdHasher>,
}

impl Counters {
    fn new(c: &EngineConfig) -> Self {
        let ip = c.ip_table_capacity;
        let key = c.key_table_capacity;
        Self {
            ip_buckets: Table::new(ip, c.shards),
            ip_route_buckets: Table::new(ip, c.shards),
            key_buckets: Table::new(key, c.shards),
            key_route_buckets: Table::new(key, c.shards),
            quotas: Table::new(key, c.shards),
            ip_lockouts: Table::new(ip, c.shards),
            key_lockouts: Table::new(key, c.shards),
            ip_abuse: Table::new(ip, c.shards),
            key_abuse: Table::new(key, c.shards),
        }
    }

    fn sweep(&self, now: Now) {
        self.ip_buckets.sweep(now);
        self.ip_route_buckets.sweep(now);
        self.key_buckets.sweep(now);
        self.key_route_buckets.sweep(now);
        self.quotas.sweep(now);
        self.ip_lockouts.sweep(now);
        self.key_lockouts.sweep(now);
        self.ip_abuse.sweep(now);
        self.key_abuse.sweep(now);
    }
}

/// The engine: counters, verified-key cache and in-flight count, shared by all
/// requests (`Sync`), independent of the bundle so a reload keeps them.
pub struct Engine {
    pub(crate) counters: Counters,
    pub(crate) cache: VerifiedCache,
    pub(crate) in_flight: InFlight,
    config: EngineConfig,
}

/// Live usage of one key (for `/internal/api-keys/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUsage {
    /// Requests counted today (UTC).
    pub quota_used_today: u64,
    /// The daily quota that applies, if any.
    pub daily_quota: Option<u64>,
    /// Milliseconds until the key's lockout ends, if locked.
    pub locked_for_ms: Option<u64>,
    /// Milliseconds until the key's cooldown ends, if cooling down.
    pub cooldown_for_ms: Option<u64>,
    /// The key's general bucket (its own `rateLimit` or the policy's `perKey`), if
    /// one applies.
    pub bucket: Option<BucketLevel>,
}

/// Level of a token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketLevel {
    /// Tokens available now.
    pub available: u64,
    /// Capacity (`burst`).
    pub burst: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("in_flight", &self.in_flight.current())
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new(EngineConfig::default())
    }
}

impl Engine {
    /// An engine with empty counters.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            counters: Counters::new(&config),
            cache: VerifiedCache::new(config.cache_capacity, config.shards, config.cache_ttl_ms),
            in_flight: InFlight::default(),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Requests forwarded and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.current()
    }

    /// Keys in the verified-key cache.
    pub fn cached_keys(&self) -> usize {
        self.cache.len()
    }

    /// Drops idle table entries and expired cache entries. Optional (tables evict by
    /// themselves when full); a timer may call it to return memory early.
    pub fn sweep(&self, now: Now) {
        self.counters.sweep(now);
        self.cache.sweep(now);
    }

    /// Step 14, response side: counts 404 and 400 answers for the abuse cooldown of
    /// the client IP and, for authenticated requests, of the key. Returns what it
    /// triggered (for audit and Events).
    pub fn observe_response(
        &self,
        bundle: &CompiledBundle,
        client_ip: IpAddr,
        key_id: Option<&str>,
        status: u16,
        now: Now,
    ) -> Triggered {
        let mut triggered = Triggered::default();
        let (Some(limit), Some(answer)) =
            (bundle.limits.abuse.as_ref(), Answer::from_status(status))
        else {
            return triggered;
        };
        let ms = now.mono_ms;
        triggered.ip_cooldown = self
            .counters
            .ip_abuse
            .with(IpKey::of(client_ip), now, |s| s.record(answer, limit, ms));
        if let Some(bits) = key_id.and_then(keys::key_id_bits) {
            triggered.key_cooldown = self
                .counters
                .key_abuse
                .with(bits, now, |s| s.record(answer, limit, ms));
        }
        triggered
    }

    /// Live usage of a key of `bundle`.
    pub fn key_usage(&self, bundle: &CompiledBundle, key_id: &str, now: Now) -> Option<KeyUsage> {
        let key = bundle.key(key_id)?;
        let bits = key.id_bits;
        Some(KeyUsage {
            quota_used_today: self
                .counters
                .quotas
                .update_existing(bits, |q| q.used(now))
                .unwrap_or(0),
            daily_quota: key.daily_quota.or(bundle.limits.daily_quota),
            locked_for_ms: self
                .counters
                .key_lockouts
                .update_existing(bits, |l| l.locked_for_ms(now.mono_ms))
                .flatten(),
            cooldown_for_ms: self
                .counters
                .key_abuse
                .update_existing(bits, |a| a.cooldown_for_ms(now.mono_ms))
                .flatten(),
            bucket: key.rate_limit.or(bundle.limits.per_key).map(|limit| {
                let available = self
                    .counters
                    .key_buckets
                    .update_existing(bits, |g| g.available(&limit, now.mono_ms))
                    .unwrap_or(limit.burst());
                BucketLevel {
                    available,
                    burst: limit.burst(),
                }
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send_static<T: Send + 'static>() {}
    fn send<T: Send>() {}

    /// The proxy shares the engine and the bundle across tasks, sends verification
    /// jobs to a blocking pool, and holds pending and final decisions across `.await`.
    #[test]
    fn thread_safety_the_proxy_relies_on() {
        send_sync::<Engine>();
        send_sync::<CompiledBundle>();
        send_static::<VerifyJob>();
        send_static::<VerifyOutcome>();
        send::<Step<'static>>();
        send::<Decision<'static>>();
        send::<Box<Pending<'static>>>();
    }
}
