//! Daily quotas per key, counted per UTC day.
//!
//! The day is `unix_secs / 86400` (UTC, no time zones, no leap seconds), so every
//! quota resets at UTC midnight, whatever the time the first request of the day came
//! in. A refused request does not count. `Retry-After` is the number of seconds until
//! the next UTC midnight.

use super::clock::Now;
use super::table::Expiring;

/// Outcome of counting one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaTake {
    /// Counted.
    Allowed {
        /// Requests left today.
        remaining: u64,
        /// Seconds until the quota resets (next UTC midnight).
        reset_secs: u64,
    },
    /// Today's quota is used up; nothing was counted.
    Exhausted {
        /// Seconds until the next UTC midnight.
        retry_after_secs: u64,
    },
}

/// Requests counted for one key on one UTC day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaState {
    day: i64,
    used: u64,
    /// Monotonic millisecond at which `day` ends (eviction hint).
    day_end_ms: u64,
}

impl QuotaState {
    /// Counts one request against `limit` requests per day.
    pub fn take(&mut self, limit: u64, now: Now) -> QuotaTake {
        let today = now.utc_day();
        let until_midnight = now.secs_until_utc_midnight();
        if self.day != today {
            self.day = today;
            self.used = 0;
        }
        self.day_end_ms = now
            .mono_ms
            .saturating_add(until_midnight.saturating_mul(1000));
        if self.used >= limit {
            return QuotaTake::Exhausted {
                retry_after_secs: until_midnight,
            };
        }
        self.used += 1;
        QuotaTake::Allowed {
            remaining: limit - self.used,
            reset_secs: until_midnight,
        }
    }

    /// Gives back a request counted by [`QuotaState::take`] (a later check refused it).
    pub fn refund(&mut self, now: Now) {
        if self.day == now.utc_day() {
            self.used = self.used.saturating_sub(1);
        }
    }

    /// Requests counted on the current day.
    pub fn used(&self, now: Now) -> u64 {
        if self.day == now.utc_day() {
            self.used
        } else {
            0
        }
    }
}

impl Expiring for QuotaState {
    fn idle_at_ms(&self) -> u64 {
        self.day_end_ms
    }

    /// Idle once its day is over on the wall clock (and, as a hint, on the monotonic
    /// clock): only then does a fresh entry count the same.
    fn is_idle(&self, now: Now) -> bool {
        self.used == 0 || (now.utc_day() > self.day && now.mono_ms >= self.day_end_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_at_utc_midnight() {
        let day = 20_000 * 86_400;
        let evening = Now::new(1_000, day + 86_400 - 10);
        let mut q = QuotaState::default();
        assert_eq!(
            q.take(2, evening),
            QuotaTake::Allowed {
                remaining: 1,
                reset_secs: 10
            }
        );
        assert_eq!(
            q.take(2, evening),
            QuotaTake::Allowed {
                remaining: 0,
                reset_secs: 10
            }
        );
        assert_eq!(
            q.take(2, evening),
            QuotaTake::Exhausted {
                retry_after_secs: 10
            }
        );
        let last_second = Now::new(10_000, day + 86_399);
        assert_eq!(
            q.take(2, last_second),
            QuotaTake::Exhausted {
                retry_after_secs: 1
            }
        );
        assert!(!q.is_idle(last_second));
        let midnight = Now::new(11_000, day + 86_400);
        assert!(q.is_idle(midnight));
        assert_eq!(
            q.take(2, midnight),
            QuotaTake::Allowed {
                remaining: 1,
                reset_secs: 86_400
            }
        );
    }

    #[test]
    fn zero_blocks_everything() {
        let mut q = QuotaState::default();
        assert!(matches!(
            q.take(0, Now::new(0, 5)),
            QuotaTake::Exhausted { .. }
        ));
    }

    #[test]
    fn refund() {
        let now = Now::new(0, 100);
        let mut q = QuotaState::default();
        q.take(1, now);
        q.refund(now);
        assert_eq!(q.used(now), 0);
        assert!(matches!(q.take(1, now), QuotaTake::Allowed { .. }));
    }
}
