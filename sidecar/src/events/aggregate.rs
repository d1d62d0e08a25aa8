//! Aggregation and rate limiting of sidecar Events: pure code, time passed in.
//!
//! One Event per (regarding object, reason) of this pod and series: the first
//! occurrence is written at once (a create), repeats only raise a counter, and the
//! counter is written (a patch of `series`) at most once per `series_interval` while
//! repeats go on. Writes are rate limited per regarding object and in total (token
//! buckets, the engine's GCRA); a write that the limits hold back stays pending and
//! goes out on a later [`Aggregator::due`]. The table is bounded: when it is full, a
//! new (object, reason) pair is dropped and counted, never an old one silently lost.
//!
//! Counts written are cumulative, so a write that never reached the API server is
//! repaired by the next one.

use std::collections::HashMap;

use crate::engine::Now;
use crate::engine::buckets::{Gcra, Limit, Take};

/// What an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Regarding {
    /// An ApiKey of the bundle's namespace.
    ApiKey {
        /// Resource name.
        name: String,
        /// Resource UID, when the bundle carries it.
        uid: Option<String>,
    },
    /// This pod (an IP lockout or cooldown without a known key).
    Pod,
}

/// The reasons a sidecar reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A key or client IP got locked out after failed authentications.
    LockoutTriggered,
    /// A key's daily quota is used up.
    QuotaExhausted,
    /// A revoked key was presented.
    RevokedKeyUsed,
    /// An expired key was presented.
    ExpiredKeyUsed,
    /// A key asked for a route its scopes do not allow.
    ScopeDenied,
    /// A key or client IP started an abuse cooldown (too many 404/400 answers).
    AbuseCooldown,
}

impl Reason {
    /// The Event's `reason`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::LockoutTriggered => "LockoutTriggered",
            Reason::QuotaExhausted => "QuotaExhausted",
            Reason::RevokedKeyUsed => "RevokedKeyUsed",
            Reason::ExpiredKeyUsed => "ExpiredKeyUsed",
            Reason::ScopeDenied => "ScopeDenied",
            Reason::AbuseCooldown => "AbuseCooldown",
        }
    }

    /// The Event's `action` (what the sidecar did).
    pub const fn action(self) -> &'static str {
        match self {
            Reason::LockoutTriggered => "Lockout",
            Reason::QuotaExhausted => "Throttle",
            Reason::RevokedKeyUsed | Reason::ExpiredKeyUsed => "Authenticate",
            Reason::ScopeDenied => "Authorize",
            Reason::AbuseCooldown => "Cooldown",
        }
    }
}

/// One thing that happened, as the request path reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Namespace of the Event (the bundle's).
    pub namespace: String,
    /// What it is about.
    pub regarding: Regarding,
    /// Why.
    pub reason: Reason,
    /// Human-readable note: key id, route, client IP; never a token or a hash.
    pub note: String,
}

/// Whether a write creates the Event or updates its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// First write of the series.
    Create,
    /// Later write: `series.count` and `series.lastObservedTime`.
    Patch,
}

/// One API write. It holds everything a create needs, so a patch that finds the
/// Event gone (TTL, deleted) can create it instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Create or patch.
    pub op: Op,
    /// Namespace of the Event.
    pub namespace: String,
    /// What it is about.
    pub regarding: Regarding,
    /// Why.
    pub reason: Reason,
    /// The note of the first occurrence (a note cannot change on an Event).
    pub note: String,
    /// Occurrences so far (cumulative).
    pub count: u64,
    /// First occurrence, Unix seconds (names the series).
    pub first_unix: i64,
    /// Latest occurrence, Unix seconds.
    pub last_unix: i64,
}

/// Why an observation or a write was dropped (the `reason` label of
/// `turnpike_events_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The queue from the request path was full.
    QueueFull,
    /// The aggregation table was full.
    TableFull,
    /// The API server refused the write or did not answer in time.
    ApiError,
    /// Occurrences evicted before the rate limits let them be written.
    RateLimited,
}

impl Dropped {
    /// Metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::TableFull => "table_full",
            Dropped::ApiError => "api_error",
            Dropped::RateLimited => "rate_limited",
        }
    }
}

/// The bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Least time between two writes of one Event's series.
    pub series_interval_ms: u64,
    /// A series idle this long (and fully written) is forgotten; a later occurrence
    /// starts a new Event. One hour: the API server's default Event TTL.
    pub idle_ms: u64,
    /// Most (object, reason) pairs tracked.
    pub max_entries: usize,
    /// Writes per regarding object (`None`: unlimited).
    pub per_object: Option<Limit>,
    /// Writes in total (`None`: unlimited).
    pub total: Option<Limit>,
}

impl Limits {
    /// The defaults, with `series_interval_ms` between series writes: per object a
    /// burst of 6 (one per reason) then one write a minute; in total a burst of 20
    /// then one write every 2 seconds.
    pub fn with_series_interval(series_interval_ms: u64) -> Self {
        Self {
            series_interval_ms: series_interval_ms.max(1),
            idle_ms: 3_600_000,
            max_entries: 1024,
            // Non-zero arguments: always `Some`.
            per_object: Limit::new(1, 60_000, 6),
            total: Limit::new(1, 2_000, 20),
        }
    }
}

/// Takes a token, `true` when allowed (always without a limit).
fn take(bucket: &mut Gcra, limit: Option<&Limit>, now_ms: u64) -> bool {
    limit.is_none_or(|l| matches!(bucket.take(l, now_ms), Take::Allowed { .. }))
}

fn refund(bucket: &mut Gcra, limit: Option<&Limit>) {
    if let Some(l) = limit {
        bucket.refund(l);
    }
}

#[derive(Debug)]
struct Entry {
    note: String,
    count: u64,
    written: u64,
    first_unix: i64,
    last_unix: i64,
    last_seen_ms: u64,
    last_write_ms: Option<u64>,
}

/// The aggregation table and the write limits.
#[derive(Debug)]
pub struct Aggregator {
    limits: Limits,
    entries: HashMap<(String, Regarding, Reason), Entry>,
    per_object: HashMap<(String, Regarding), Gcra>,
    total: Gcra,
}

impl Aggregator {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            per_object: HashMap::new(),
            total: Gcra::default(),
        }
    }

    /// Pairs tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records one occurrence. The first of a series is offered to `send` at once
    /// when the limits allow (`send` returns false when it could not take it: the
    /// write stays pending). `Err` when the occurrence was dropped.
    pub fn observe(
        &mut self,
        o: Observation,
        now: Now,
        send: &mut impl FnMut(Write) -> bool,
    ) -> Result<(), Dropped> {
        let key = (o.namespace, o.regarding, o.reason);
        if let Some(e) = self.entries.get_mut(&key) {
            e.count = e.count.saturating_add(1);
            e.last_unix = now.unix_secs;
            e.last_seen_ms = now.mono_ms;
            return Ok(());
        }
        if self.entries.len() >= self.limits.max_entries && !self.evict_one() {
            return Err(Dropped::TableFull);
        }
        self.entries.insert(
            key.clone(),
            Entry {
                note: o.note,
                count: 1,
                written: 0,
                first_unix: now.unix_secs,
                last_unix: now.unix_secs,
                last_seen_ms: now.mono_ms,
                last_write_ms: None,
            },
        );
        self.try_write(&key, now, send);
        Ok(())
    }

    /// Offers every write that is due (repeats not yet written, whose series interval
    /// has passed, within the limits) to `send`, and forgets idle series. Returns the
    /// occurrences dropped by forgetting series the limits never let out.
    pub fn due(&mut self, now: Now, send: &mut impl FnMut(Write) -> bool) -> u64 {
        let mut pending: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.count > e.written && self.interval_passed(e, now))
            .map(|(k, e)| (e.first_unix, k.clone()))
            .collect();
        // Oldest series first, so a burst of new ones cannot starve them.
        pending.sort();
        for (_, key) in pending {
            self.try_write(&key, now, send);
        }
        let idle = self.limits.idle_ms;
        let mut lost = 0;
        self.entries.retain(|_, e| {
            let keep = now.mono_ms.saturating_sub(e.last_seen_ms) < idle;
            if !keep {
                lost += e.count - e.written;
            }
            keep
        });
        let entries = &self.entries;
        self.per_object
            .retain(|(ns, r), _| entries.keys().any(|(n, reg, _)| n == ns && reg == r));
        lost
    }

    fn interval_passed(&self, e: &Entry, now: Now) -> bool {
        e.last_write_ms
            .is_none_or(|at| now.mono_ms.saturating_sub(at) >= self.limits.series_interval_ms)
    }

    /// Frees one slot: the fully written series seen longest ago.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.count == e.written)
            .min_by_key(|(_, e)| e.last_seen_ms)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.entries.remove(&k);
                true
            }
            None => false,
        }
    }

    fn try_write(
        &mut self,
        key: &(String, Regarding, Reason),
        now: Now,
        send: &mut impl FnMut(Write) -> bool,
    ) {
        let Some(e) = self.entries.get(key) else {
            return;
        };
        let object = (key.0.clone(), key.1.clone());
        let (per_limit, total_limit) = (self.limits.per_object, self.limits.total);
        let per = self.per_object.entry(object).or_default();
        if !take(per, per_limit.as_ref(), now.mono_ms) {
            return;
        }
        if !take(&mut self.total, total_limit.as_ref(), now.mono_ms) {
            refund(per, per_limit.as_ref());
            return;
        }
        let write = Write {
            op: if e.written == 0 {
                Op::Create
            } else {
                Op::Patch
            },
            namespace: key.0.clone(),
            regarding: key.1.clone(),
            reason: key.2,
            note: e.note.clone(),
            count: e.count,
            first_unix: e.first_unix,
            last_unix: e.last_unix,
        };
        let count = e.count;
        if send(write) {
            if let Some(e) = self.entries.get_mut(key) {
                e.written = count;
                e.last_write_ms = Some(now.mono_ms);
            }
        } else {
            // Not taken (the writer's queue is full): give the tokens back, retry later.
            refund(per, per_limit.as_ref());
            refund(&mut self.total, total_limit.as_ref());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn obs(key: &str, reason: Reason) -> Observation {
        Observation {
            namespace: "shop".into(),
            regarding: Regarding::ApiKey {
                name: key.into(),
                uid: None,
            },
            reason,
            note: format!("{reason:?} of {key}"),
        }
    }

    fn at(ms: u64) -> Now {
        Now::new(ms, 1_800_000_000 + i64::try_from(ms / 1000).unwrap())
    }

    fn limits() -> Limits {
        Limits::with_series_interval(10_000)
    }

    #[test]
    fn a_storm_is_one_create_and_a_patch_per_interval() {
        let mut agg = Aggregator::new(limits());
        let mut writes = Vec::new();
        let mut send = |w: Write| {
            writes.push(w);
            true
        };
        // 100,000 refusals over 20 seconds, ticks every second.
        for i in 0..100_000u64 {
            let now = at(i / 5);
            agg.observe(obs("billing", Reason::RevokedKeyUsed), now, &mut send)
                .unwrap();
            if i % 5_000 == 0 {
                agg.due(now, &mut send);
            }
        }
        agg.due(at(30_000), &mut send);
        let ops: Vec<_> = writes.iter().map(|w| (w.op, w.count)).collect();
        assert_eq!(ops[0], (Op::Create, 1));
        assert!(writes[1..].iter().all(|w| w.op == Op::Patch));
        assert_eq!(writes.last().unwrap().count, 100_000);
        // The create at 0 s, a patch at 10 s, the rest at the tick after the storm.
        assert_eq!(
            ops,
            [(Op::Create, 1), (Op::Patch, 50_001), (Op::Patch, 100_000)]
        );
        assert_eq!(agg.len(), 1);
    }

    #[test]
    fn nothing_is_written_again_without_new_occurrences() {
        let mut agg = Aggregator::new(limits());
        let mut n = 0;
        let mut send = |_w: Write| {
            n += 1;
            true
        };
        agg.observe(obs("billing", Reason::ScopeDenied), at(0), &mut send)
            .unwrap();
        for s in 1..100 {
            agg.due(at(s * 1000), &mut send);
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn reasons_and_objects_are_separate_events() {
        let mut agg = Aggregator::new(limits());
        let mut writes = Vec::new();
        let mut send = |w: Write| {
            writes.push(w);
            true
        };
        agg.observe(obs("a", Reason::ScopeDenied), at(0), &mut send)
            .unwrap();
        agg.observe(obs("a", Reason::QuotaExhausted), at(0), &mut send)
            .unwrap();
        agg.observe(obs("b", Reason::ScopeDenied), at(0), &mut send)
            .unwrap();
        agg.observe(obs("a", Reason::ScopeDenied), at(1), &mut send)
            .unwrap();
        assert_eq!(writes.len(), 3);
        assert!(writes.iter().all(|w| w.op == Op::Create && w.count == 1));
    }

    #[test]
    fn per_object_limit_holds_writes_back_until_tokens_return() {
        let mut agg = Aggregator::new(Limits {
            per_object: Limit::new(1, 60_000, 2),
            ..limits()
        });
        let writes = std::cell::RefCell::new(Vec::new());
        let mut send = |w: Write| {
            writes.borrow_mut().push(w);
            true
        };
        for r in [
            Reason::ScopeDenied,
            Reason::QuotaExhausted,
            Reason::RevokedKeyUsed,
        ] {
            agg.observe(obs("a", r), at(0), &mut send).unwrap();
        }
        // A second object is not held back by the first one's limit.
        agg.observe(obs("b", Reason::ScopeDenied), at(0), &mut send)
            .unwrap();
        assert_eq!(writes.borrow().len(), 3);
        agg.due(at(30_000), &mut send);
        assert_eq!(writes.borrow().len(), 3, "no token yet");
        agg.due(at(60_000), &mut send);
        let writes = writes.borrow();
        assert_eq!(writes.len(), 4);
        let last = writes.last().unwrap();
        assert_eq!((last.reason, last.op), (Reason::RevokedKeyUsed, Op::Create));
    }

    #[test]
    fn total_limit_bounds_writes_across_objects() {
        let mut agg = Aggregator::new(limits());
        let n = std::cell::Cell::new(0u64);
        let mut send = |_w: Write| {
            n.set(n.get() + 1);
            true
        };
        // 500 distinct keys in one second: the burst of 20 gets out.
        for i in 0..500 {
            agg.observe(obs(&format!("k{i}"), Reason::ScopeDenied), at(0), &mut send)
                .unwrap();
        }
        assert_eq!(n.get(), 20);
        // Then one write per 2 seconds: after 60 s, 30 more.
        for s in 1..=60 {
            agg.due(at(s * 1000), &mut send);
        }
        assert_eq!(n.get(), 50);
    }

    #[test]
    fn a_full_table_drops_new_pairs_and_counts_them() {
        let mut agg = Aggregator::new(Limits {
            max_entries: 2,
            ..limits()
        });
        let mut refuse = |_w: Write| false;
        agg.observe(obs("a", Reason::ScopeDenied), at(0), &mut refuse)
            .unwrap();
        agg.observe(obs("b", Reason::ScopeDenied), at(0), &mut refuse)
            .unwrap();
        // Nothing written yet: nothing may be evicted.
        assert_eq!(
            agg.observe(obs("c", Reason::ScopeDenied), at(0), &mut refuse),
            Err(Dropped::TableFull)
        );
        // Once written, the oldest series makes room.
        let mut take = |_w: Write| true;
        agg.due(at(1000), &mut take);
        agg.observe(obs("c", Reason::ScopeDenied), at(2000), &mut take)
            .unwrap();
        assert_eq!(agg.len(), 2);
    }

    #[test]
    fn a_write_the_writer_could_not_take_is_retried() {
        let mut agg = Aggregator::new(limits());
        let mut refuse = |_w: Write| false;
        agg.observe(obs("a", Reason::ExpiredKeyUsed), at(0), &mut refuse)
            .unwrap();
        let mut writes = Vec::new();
        let mut take = |w: Write| {
            writes.push(w);
            true
        };
        agg.due(at(1), &mut take);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].op, Op::Create);
    }

    #[test]
    fn idle_series_are_forgotten_and_start_a_new_event() {
        let mut agg = Aggregator::new(limits());
        let mut writes = Vec::new();
        let mut send = |w: Write| {
            writes.push(w);
            true
        };
        agg.observe(obs("a", Reason::ScopeDenied), at(0), &mut send)
            .unwrap();
        assert_eq!(agg.due(at(3_600_000), &mut send), 0);
        assert!(agg.is_empty());
        agg.observe(obs("a", Reason::ScopeDenied), at(3_700_000), &mut send)
            .unwrap();
        assert_eq!(writes.len(), 2);
        assert_eq!(writes[1].op, Op::Create);
        assert_ne!(writes[0].first_unix, writes[1].first_unix);
    }
}
