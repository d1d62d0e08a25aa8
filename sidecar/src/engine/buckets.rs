//! Token buckets in integer arithmetic (GCRA).
//!
//! A bucket of `burst` tokens refilled with `rate` tokens every `per` is tracked as a
//! single number, the *theoretical arrival time* (TAT) of the next conforming request,
//! as in the generic cell rate algorithm (ITU-T I.371; `governor` is the reference
//! for the semantics). One state value per client, no background refill, no floats.
//!
//! Time inside this module is in nanoseconds so that the emission interval
//! `per / rate` (e.g. 1s / 3) is exact enough; it is rounded **up**, so rounding can
//! only make a bucket slightly stricter than configured, never looser. The property
//! tests check the contract: in any interval of length `d`, at most
//! `burst + d * rate / per` requests are allowed, and a long pause refills to `burst`
//! and no further.
//!
//! Written here rather than taken from `governor` (DEPENDENCIES.md, "Written here on
//! purpose"): the limits differ per key and per route and change on bundle reloads,
//! and the same arithmetic has to run in the Redis backend's Lua script.

use turnpike_api::types::Bucket;

const NS_PER_MS: u64 = 1_000_000;

fn ms_to_ns(ms: u64) -> u64 {
    ms.saturating_mul(NS_PER_MS)
}

fn ns_to_ms_ceil(ns: u64) -> u64 {
    ns.div_ceil(NS_PER_MS)
}

/// A bucket's parameters, compiled for the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds per token (`per / rate`, rounded up, at least 1).
    interval_ns: u64,
    /// Capacity in tokens.
    burst: u64,
    /// `burst * interval_ns`: how far ahead of now the TAT may run.
    tau_ns: u64,
}

impl Limit {
    /// Compiles `rate` tokens per `per_ms` with capacity `burst`. `None` when any of
    /// them is zero (the compiler refuses such buckets).
    pub fn new(rate: u32, per_ms: u64, burst: u32) -> Option<Limit> {
        if rate == 0 || per_ms == 0 || burst == 0 {
            return None;
        }
        let interval_ns = ms_to_ns(per_ms).div_ceil(u64::from(rate)).max(1);
        let burst = u64::from(burst);
        Some(Limit {
            interval_ns,
            burst,
            tau_ns: interval_ns.saturating_mul(burst),
        })
    }

    /// Compiles a policy bucket.
    pub fn from_bucket(b: &Bucket) -> Option<Limit> {
        Self::new(b.rate, b.per.as_millis(), b.burst)
    }

    /// Capacity in tokens (`X-RateLimit-Limit`, the `q` of `RateLimit-Policy`).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Seconds an empty bucket takes to refill completely (the `w` of
    /// `RateLimit-Policy`), at least 1.
    pub fn window_secs(&self) -> u64 {
        self.tau_ns.div_ceil(1_000_000_000).max(1)
    }
}

/// Outcome of taking one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// A token was taken.
    Allowed {
        /// Tokens left.
        remaining: u64,
        /// Milliseconds until the bucket is full again.
        reset_ms: u64,
    },
    /// The bucket is empty; nothing was taken.
    Limited {
        /// Milliseconds until one token is available.
        retry_after_ms: u64,
        /// Milliseconds until the bucket is full again.
        reset_ms: u64,
    },
}

/// State of one bucket: its theoretical arrival time. The default (zero) is a full
/// bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    tat_ns: u64,
}

impl Gcra {
    /// Takes one token at `now_ms` if there is one.
    pub fn take(&mut self, limit: &Limit, now_ms: u64) -> Take {
        let now = ms_to_ns(now_ms);
        let tat = self.tat_ns.max(now);
        let new_tat = tat.saturating_add(limit.interval_ns);
        let ahead = new_tat - now;
        if ahead > limit.tau_ns {
            return Take::Limited {
                retry_after_ms: ns_to_ms_ceil(ahead - limit.tau_ns).max(1),
                reset_ms: ns_to_ms_ceil(tat - now),
            };
        }
        self.tat_ns = new_tat;
        Take::Allowed {
            remaining: (limit.tau_ns - ahead) / limit.interval_ns,
            reset_ms: ns_to_ms_ceil(ahead),
        }
    }

    /// Gives back a token taken by [`Gcra::take`] (a later check refused the request).
    pub fn refund(&mut self, limit: &Limit) {
        self.tat_ns = self.tat_ns.saturating_sub(limit.interval_ns);
    }

    /// Tokens available at `now_ms`, without taking one (live usage reports).
    pub fn available(&self, limit: &Limit, now_ms: u64) -> u64 {
        let ahead = self.tat_ns.saturating_sub(ms_to_ns(now_ms));
        limit.tau_ns.saturating_sub(ahead) / limit.interval_ns
    }

    /// The monotonic millisecond from which the bucket is full: forgetting the state
    /// from then on is the same as keeping it.
    pub fn full_at_ms(&self) -> u64 {
        ns_to_ms_ceil(self.tat_ns)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(rate: u32, per_ms: u64, burst: u32) -> Limit {
        Limit::new(rate, per_ms, burst).unwrap()
    }

    #[test]
    fn available_matches_take() {
        let l = limit(1, 500, 2);
        let mut g = Gcra::default();
        assert_eq!(g.available(&l, 1000), 2);
        let _ = g.take(&l, 1000);
        assert_eq!(g.available(&l, 1000), 1);
        let _ = g.take(&l, 1000);
        assert_eq!(g.available(&l, 1000), 0);
        assert_eq!(g.available(&l, 1499), 0);
        assert_eq!(g.available(&l, 1500), 1);
        assert_eq!(g.available(&l, 99_000), 2);
    }

    #[test]
    fn burst_then_refill() {
        let l = limit(1, 500, 2);
        let mut g = Gcra::default();
        assert_eq!(
            g.take(&l, 1000),
            Take::Allowed {
                remaining: 1,
                reset_ms: 500
            }
        );
        assert_eq!(
            g.take(&l, 1000),
            Take::Allowed {
                remaining: 0,
                reset_ms: 1000
            }
        );
        assert_eq!(
            g.take(&l, 1000),
            Take::Limited {
                retry_after_ms: 500,
                reset_ms: 1000
            }
        );
        // Limited requests take nothing.
        assert_eq!(
            g.take(&l, 1499),
            Take::Limited {
                retry_after_ms: 1,
                reset_ms: 501
            }
        );
        assert_eq!(
            g.take(&l, 1500),
            Take::Allowed {
                remaining: 0,
                reset_ms: 1000
            }
        );
        assert_eq!(g.full_at_ms(), 2500);
    }

    #[test]
    fn zero_parameters_are_refused() {
        assert!(Limit::new(0, 1000, 1).is_none());
        assert!(Limit::new(1, 0, 1).is_none());
        assert!(Limit::new(1, 1000, 0).is_none());
    }

    #[test]
    fn refund_gives_the_token_back() {
        let l = limit(1, 1000, 1);
        let mut g = Gcra::default();
        assert!(matches!(g.take(&l, 0), Take::Allowed { .. }));
        g.refund(&l);
        assert!(matches!(g.take(&l, 0), Take::Allowed { .. }));
        assert!(matches!(g.take(&l, 0), Take::Limited { .. }));
    }

    #[test]
    fn window_and_huge_values_do_not_overflow() {
        assert_eq!(limit(10, 1000, 20).window_secs(), 2);
        assert_eq!(limit(1000, 1, 1).window_secs(), 1);
        let l = limit(1, 366 * 86_400_000, 1_000_000_000);
        let mut g = Gcra::default();
        assert!(matches!(g.take(&l, u64::MAX / 2), Take::Allowed { .. }));
    }

    proptest! {
        /// Never more than `burst + rate * elapsed / per` in any interval, and never
        /// more than `burst` at one instant however long the pause before.
        #[test]
        fn conforms(
            rate in 1u32..20,
            per_ms in 1u64..5_000,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..700, 1..150),
        ) {
            let l = limit(rate, per_ms, burst);
            let mut g = Gcra::default();
            let mut t = 10_000u64;
            let mut allowed = Vec::new();
            for gap in gaps {
                t += gap;
                match g.take(&l, t) {
                    Take::Allowed { remaining, .. } => {
                        prop_assert!(remaining < u64::from(burst));
                        allowed.push(t);
                    }
                    Take::Limited { retry_after_ms, .. } => prop_assert!(retry_after_ms >= 1),
                }
            }
            for i in 0..allowed.len() {
                for j in i..allowed.len() {
                    let elapsed = u128::from(allowed[j] - allowed[i]);
                    let count = (j - i + 1) as u128;
                    let bound = u128::from(burst)
                        + elapsed * u128::from(rate) / u128::from(per_ms);
                    prop_assert!(count <= bound, "{count} allowed in {elapsed}ms, bound {bound}");
                }
            }
        }

        #[test]
        fn refill_caps_at_burst(rate in 1u32..50, per_ms in 1u64..10_000, burst in 1u32..50, pause in 0u64..10_000_000) {
            let l = limit(rate, per_ms, burst);
            let mut g = Gcra::default();
            while matches!(g.take(&l, 0), Take::Allowed { .. }) {}
            let mut n = 0;
            while matches!(g.take(&l, pause), Take::Allowed { .. }) {
                n += 1;
            }
            prop_assert!(n <= burst);
            if pause >= per_ms * u64::from(burst) {
                prop_assert_eq!(n, burst);
            }
        }

        #[test]
        fn retry_after_is_exact(rate in 1u32..50, per_ms in 1u64..10_000, burst in 1u32..10) {
            let l = limit(rate, per_ms, burst);
            let mut g = Gcra::default();
            while matches!(g.take(&l, 0), Take::Allowed { .. }) {}
            let Take::Limited { retry_after_ms, .. } = g.take(&l, 0) else {
                return Err(TestCaseError::fail("not limited"));
            };
            let allowed = matches!(g.take(&l, retry_after_ms), Take::Allowed { .. });
            prop_assert!(allowed);
        }
    }
}
