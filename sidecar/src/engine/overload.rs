//! Load shedding (step 12): at most `maxInFlight` requests forwarded at once.
//!
//! Every forwarded request holds an [`InFlightGuard`] until its response is done;
//! dropping the guard releases the slot, whatever path the proxy's code takes
//! (success, error, client gone). The proxy streams a response body after its
//! handler has returned, and tunnels upgraded connections in tasks of their own, so a
//! guard can be [detached](InFlightGuard::detach) from the decision's lifetime into an
//! owned [`InFlightSlot`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Requests in flight towards the workload.
#[derive(Debug, Default)]
pub struct InFlight {
    // Shared (one allocation, at engine creation) so a slot can outlive a borrow of
    // the engine; taking a slot clones the `Arc`, which does not allocate.
    count: Arc<AtomicU32>,
}

/// One in-flight slot, owned (`Send + 'static`); releases the slot on drop.
#[derive(Debug)]
#[must_use = "dropping the slot releases it at once"]
pub struct InFlightSlot {
    count: Arc<AtomicU32>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one in-flight slot for as long as the decision that took it; releases it on
/// drop.
#[derive(Debug)]
#[must_use = "dropping the guard releases the in-flight slot at once"]
pub struct InFlightGuard<'a> {
    slot: InFlightSlot,
    _decision: PhantomData<&'a InFlight>,
}

impl InFlightGuard<'_> {
    /// The slot, no longer tied to the decision's lifetime: the proxy moves it into
    /// the response body or a tunnel task and it is released when that ends.
    pub fn detach(self) -> InFlightSlot {
        self.slot
    }
}

impl InFlight {
    /// Takes a slot. The guard is returned with `over_limit` true when `max` was
    /// already reached: the caller refuses (and drops the guard) or, in dry run,
    /// keeps it and only reports.
    pub fn acquire(&self, max: Option<u32>) -> (InFlightGuard<'_>, bool) {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        let over = max.is_some_and(|m| before >= m);
        let guard = InFlightGuard {
            slot: InFlightSlot {
                count: Arc::clone(&self.count),
            },
            _decision: PhantomData,
        };
        (guard, over)
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

    fn send_static<T: Send + 'static>(_: &T) {}

    #[test]
    fn detached_slot_is_held_until_dropped() {
        let f = InFlight::default();
        let (guard, _) = f.acquire(Some(1));
        let slot = guard.detach();
        send_static(&slot);
        assert_eq!(f.current(), 1);
        let (_again, over) = f.acquire(Some(1));
        assert!(over, "a detached slot still counts");
        drop(slot);
        assert_eq!(f.current(), 1);
    }
}
