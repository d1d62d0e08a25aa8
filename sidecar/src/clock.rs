//! The clock adapter: the one place of the sidecar that reads the clocks. The engine
//! takes time as a [`Now`] parameter (its `clippy.toml` forbids reading a clock); the
//! proxy asks this adapter once per decision.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::Now;

/// Monotonic and wall clocks, read together.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose monotonic origin is now.
    // The clock adapter is where time enters the sidecar (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The instant of a decision: monotonic milliseconds since start and wall-clock
    /// Unix seconds.
    // The clock adapter is where time enters the sidecar (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn now(&self) -> Now {
        let mono_ms = u64::try_from(
            Instant::now()
                .saturating_duration_since(self.origin)
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Now::new(mono_ms, unix_secs)
    }

    /// A monotonic instant, to measure durations (metrics).
    // The clock adapter is where time enters the sidecar (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    pub fn instant(&self) -> Instant {
        Instant::now()
    }

    /// Seconds elapsed since `start` (for histograms).
    pub fn secs_since(&self, start: Instant) -> f64 {
        self.instant()
            .saturating_duration_since(start)
            .as_secs_f64()
    }
}

/// A timer deadline `after` from now, for `tokio::time::Sleep::reset`.
pub fn deadline_after(after: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + after
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_wall() {
        let c = Clock::new();
        let a = c.now();
        let b = c.now();
        assert!(b.mono_ms >= a.mono_ms);
        assert!(a.unix_secs > 1_700_000_000);
    }
}
