//! The bounded pool where argon2id runs (step 8 on a cache miss).
//!
//! A verification takes tens of milliseconds of CPU. At most `threads` run at once
//! (on tokio's blocking threads, so the async workers keep serving), at most `queue`
//! more wait for a thread, and anything beyond is refused at once with 503
//! ([`crate::engine::Pending::overloaded`]). A flood of wrong secrets therefore costs
//! a fixed amount of CPU and memory, and valid keys already in the verified-key cache
//! never enter the pool at all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::engine::{VerifyJob, VerifyOutcome, verify};

/// The queue is full (or the pool is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// A verification that ran.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    /// Which secret matched, if any.
    pub outcome: VerifyOutcome,
    /// Time spent waiting for a thread.
    pub queued: Duration,
    /// Time argon2 took.
    pub took: Duration,
}

/// The pool.
#[derive(Debug, Clone)]
pub struct VerifyPool {
    /// Admission: running plus waiting.
    slots: Arc<Semaphore>,
    /// Running.
    threads: Arc<Semaphore>,
    clock: Clock,
}

impl VerifyPool {
    /// A pool of `threads` concurrent verifications and `queue` waiting ones.
    pub fn new(threads: usize, queue: usize, clock: Clock) -> Self {
        let threads = threads.max(1);
        Self {
            slots: Arc::new(Semaphore::new(threads.saturating_add(queue))),
            threads: Arc::new(Semaphore::new(threads)),
            clock,
        }
    }

    /// Runs `job` on the pool.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue is full: the caller answers 503.
    pub async fn run(&self, job: VerifyJob) -> Result<Verified, Overloaded> {
        // Dropped when this future ends or is dropped (client gone): the admission
        // slot frees as soon as nobody waits for the answer.
        let _slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Overloaded)?;
        let queued_at = self.clock.instant();
        let thread = Arc::clone(&self.threads)
            .acquire_owned()
            .await
            .map_err(|_| Overloaded)?;
        let queued = self.clock.instant().saturating_duration_since(queued_at);
        let clock = self.clock;
        let (outcome, took) = tokio::task::spawn_blocking(move || {
            // The thread permit moves into the blocking task: it is released when
            // argon2 finishes, even if the request was abandoned meanwhile, so the
            // CPU bound holds.
            let _thread = thread;
            let start = clock.instant();
            let outcome = verify(&job);
            (outcome, clock.instant().saturating_duration_since(start))
        })
        .await
        .map_err(|_| Overloaded)?;
        Ok(Verified {
            outcome,
            queued,
            took,
        })
    }
}
