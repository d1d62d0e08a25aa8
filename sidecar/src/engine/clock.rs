//! Time as a parameter.
//!
//! The engine never reads a clock. The proxy reads two clocks once per request and
//! passes them as [`Now`]: a monotonic one for buckets, windows, lockouts, cooldowns
//! and cache lifetimes (immune to wall-clock steps), and the wall clock for what is
//! defined in calendar time (key expiry, rotated secrets' `notAfter`, the UTC day of
//! daily quotas). Tests build `Now` values and move them forward without sleeping.

/// Seconds in a UTC day (Unix time has no leap seconds).
pub const SECS_PER_DAY: i64 = 86_400;

/// The instant of one decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary origin (the proxy's start).
    pub mono_ms: u64,
    /// Wall-clock seconds since the Unix epoch (UTC).
    pub unix_secs: i64,
}

impl Now {
    /// An instant from its two clock readings.
    pub const fn new(mono_ms: u64, unix_secs: i64) -> Self {
        Self { mono_ms, unix_secs }
    }

    /// The same instant moved forward by `ms` milliseconds on both clocks (tests and
    /// simulations).
    #[must_use]
    pub const fn advance_ms(self, ms: u64) -> Self {
        Self {
            mono_ms: self.mono_ms.saturating_add(ms),
            // Floor division: the wall clock moves with whole elapsed seconds.
            unix_secs: self.unix_secs.saturating_add(
                ((self.mono_ms.saturating_add(ms) / 1000) as i64) - ((self.mono_ms / 1000) as i64),
            ),
        }
    }

    /// The UTC day number (days since 1970-01-01).
    pub const fn utc_day(self) -> i64 {
        self.unix_secs.div_euclid(SECS_PER_DAY)
    }

    /// Whole seconds until the next UTC midnight (1..=86400).
    pub const fn secs_until_utc_midnight(self) -> u64 {
        (SECS_PER_DAY - self.unix_secs.rem_euclid(SECS_PER_DAY)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_day_and_midnight() {
        let now = Now::new(0, 86_400 * 3 + 10);
        assert_eq!(now.utc_day(), 3);
        assert_eq!(now.secs_until_utc_midnight(), 86_390);
        let midnight = Now::new(0, 86_400 * 4);
        assert_eq!(midnight.utc_day(), 4);
        assert_eq!(midnight.secs_until_utc_midnight(), 86_400);
        assert_eq!(Now::new(0, -1).utc_day(), -1);
        assert_eq!(Now::new(0, -1).secs_until_utc_midnight(), 1);
    }

    #[test]
    fn advance_moves_both_clocks() {
        let now = Now::new(500, 1000).advance_ms(600);
        assert_eq!(now, Now::new(1100, 1001));
        assert_eq!(now.advance_ms(60_000), Now::new(61_100, 1061));
    }
}
