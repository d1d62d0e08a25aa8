//! Brute-force lockout: `maxFailures` failed authentications within `window` lock the
//! client IP (and, separately, the key id) for `duration`; the lock ends by itself.
//!
//! What counts, and for whom (see also `decide`):
//! - every failed authentication from an address counts for that address: a
//!   malformed token, an unknown key id, a wrong secret, and a genuine token of a
//!   revoked or expired key or a rotated-out secret;
//! - a wrong secret for an existing key id also counts for that key id. A token that
//!   proves possession of a real (former) secret (revoked, expired, rotated out) is
//!   not a guess, and counting it would let one stale client lock out every holder of
//!   the current secret.
//!
//! A missing credential is not an authentication attempt and does not count. The
//! window is fixed, starting at the first failure; failures during a lock are not
//! counted (the lock does not extend itself).

use turnpike_api::bundle::LockoutSpec;
use turnpike_api::duration::Duration;

use super::table::Expiring;

/// Lockout parameters in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutLimit {
    max_failures: u32,
    window_ms: u64,
    duration_ms: u64,
}

impl LockoutLimit {
    /// From the policy; `None` when it would never lock (zero failures or duration).
    pub fn new(spec: &LockoutSpec) -> Option<Self> {
        Self::from_parts(spec.max_failures, spec.window, spec.duration)
    }

    /// From its parts.
    pub fn from_parts(max_failures: u32, window: Duration, duration: Duration) -> Option<Self> {
        if max_failures == 0 || duration.is_zero() {
            return None;
        }
        Some(Self {
            max_failures,
            window_ms: window.as_millis().max(1),
            duration_ms: duration.as_millis(),
        })
    }
}

/// Failures of one client (an IP or a key id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockoutState {
    failures: u32,
    window_end_ms: u64,
    locked_until_ms: u64,
}

impl LockoutState {
    /// Milliseconds until the lock ends, if locked at `now_ms`.
    pub fn locked_for_ms(&self, now_ms: u64) -> Option<u64> {
        (now_ms < self.locked_until_ms).then(|| self.locked_until_ms - now_ms)
    }

    /// Counts one failure; true when this failure started a lock.
    pub fn record_failure(&mut self, limit: &LockoutLimit, now_ms: u64) -> bool {
        if self.locked_for_ms(now_ms).is_some() {
            return false;
        }
        if now_ms >= self.window_end_ms {
            self.failures = 0;
            self.window_end_ms = now_ms.saturating_add(limit.window_ms);
        }
        self.failures += 1;
        if self.failures < limit.max_failures {
            return false;
        }
        self.failures = 0;
        self.window_end_ms = now_ms;
        self.locked_until_ms = now_ms.saturating_add(limit.duration_ms);
        true
    }
}

impl Expiring for LockoutState {
    fn idle_at_ms(&self) -> u64 {
        self.window_end_ms.max(self.locked_until_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limit() -> LockoutLimit {
        LockoutLimit::from_parts(3, Duration::from_secs(60), Duration::from_secs(300)).unwrap()
    }

    #[test]
    fn locks_after_max_failures_in_window_and_unlocks() {
        let l = limit();
        let mut s = LockoutState::default();
        assert!(!s.record_failure(&l, 1_000));
        assert!(!s.record_failure(&l, 2_000));
        assert_eq!(s.locked_for_ms(2_500), None);
        assert!(s.record_failure(&l, 3_000));
        assert_eq!(s.locked_for_ms(3_000), Some(300_000));
        // Failures while locked do not extend the lock.
        assert!(!s.record_failure(&l, 100_000));
        assert_eq!(s.locked_for_ms(302_999), Some(1));
        assert_eq!(s.locked_for_ms(303_000), None);
        assert!(s.is_idle(crate::engine::clock::Now::new(303_000, 0)));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = limit();
        let mut s = LockoutState::default();
        s.record_failure(&l, 0);
        s.record_failure(&l, 1_000);
        assert!(!s.record_failure(&l, 60_000));
        assert!(!s.record_failure(&l, 61_000));
        assert!(s.record_failure(&l, 62_000));
    }

    #[test]
    fn zero_never_locks() {
        assert!(
            LockoutLimit::from_parts(0, Duration::from_secs(1), Duration::from_secs(1)).is_none()
        );
        assert!(
            LockoutLimit::from_parts(1, Duration::from_secs(1), Duration::from_secs(0)).is_none()
        );
    }
}
