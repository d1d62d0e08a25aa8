//! Load shedding (step 12): at most `maxInFlight` requests forwarded at once.
//!
//! Every forwarded request holds an [`InFlightGuard`] until its response is done;
//! dropping the guard releases the slot, whatever path the proxy's code takes
//! (success, error, client gone).

use std::sync::atomic::{AtomicU32, Ordering};

/// Requests in flight towards the workload.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicU32,
}

/// Holds one in-flight slot; releases it on drop.
#[derive(Debug)]
#[must_use = "dropping the guard releases the in-flight slot at once"]
pub struct InFlightGuard<'a> {
    count: &'a AtomicU32,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Takes a slot. The guard is returned with `over_limit` true when `max` was
    /// already reached: the caller refuses (and drops the guard) or, in dry run,
    /// keeps it and only reports.
    pub fn acquire(&self, max: Option<u32>) -> (InFlightGuard<'_>, bool) {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let over = max.is_some_and(|m| before >= m);
        (InFlightGuard { count: &self.count }, over)
    }

    /// Requests in flight now (a gauge for metrics).
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases() {
        let f = InFlight::default();
        let (a, over_a) = f.acquire(Some(2));
        let (b, over_b) = f.acquire(Some(2));
        let (c, over_c) = f.acquire(Some(2));
        assert_eq!((over_a, over_b, over_c), (false, false, true));
        drop(c);
        assert_eq!(f.current(), 2);
        drop((a, b));
        assert_eq!(f.current(), 0);
        let (_d, over) = f.acquire(None);
        assert!(!over);
    }
}
