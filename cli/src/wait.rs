//! Waiting for the operator: a deadline and a fixed poll interval on Tokio's clock, so
//! tests with a paused clock run instantly.

use std::time::Duration;

use tokio::time::Instant;

/// How often the state is read again while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A point in time after which waiting stops.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    timeout: Duration,
}

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Deadline {
        Deadline {
            end: Instant::now() + timeout,
            timeout,
        }
    }

    /// The timeout this deadline was made with, as `1m30s`.
    pub fn timeout_text(&self) -> String {
        turnpike_api::duration::Duration::from_millis(
            u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        )
        .to_string()
    }

    /// Sleeps one poll interval (less if the deadline is nearer); false once the
    /// deadline has passed, so the caller stops waiting.
    pub async fn tick(&self) -> bool {
        let now = Instant::now();
        if now >= self.end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(self.end - now)).await;
        true
    }

    /// Time spent since the deadline was set.
    pub fn elapsed(&self) -> Duration {
        self.timeout
            .saturating_sub(self.end.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_until_the_deadline() {
        let deadline = Deadline::after(Duration::from_millis(1200));
        let mut ticks = 0;
        while deadline.tick().await {
            ticks += 1;
        }
        // 500 + 500 + 200 ms, then the deadline has passed.
        assert_eq!(ticks, 3);
        assert_eq!(deadline.elapsed(), Duration::from_millis(1200));
        assert_eq!(deadline.timeout_text(), "1s200ms");
    }
}
