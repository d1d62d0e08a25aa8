//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! kube-runtime has no leader election, so this is a small one with the semantics of
//! client-go's `leaderelection` package:
//!
//! - One Lease names the leader (`holderIdentity`) and how long its claim lasts
//!   (`leaseDurationSeconds`); the leader rewrites `renewTime` every `retry_period`.
//! - Every write is a `replace` carrying the `resourceVersion` that was read (or a
//!   `create`, which only one candidate can win), so two candidates never both win.
//! - **Expiry is judged on our own monotonic clock**, not by comparing the holder's
//!   `renewTime` with our wall clock: a candidate takes the Lease only when the record
//!   has not changed for `leaseDurationSeconds` since *it* first saw that version
//!   (client-go's `observedTime`). Wall-clock skew between nodes therefore cannot make
//!   a standby take a Lease its holder still renews; `renewTime` is written for people
//!   and other tools. The price: a freshly started candidate waits one lease duration
//!   before taking a Lease that a crashed holder left behind; a Lease released on
//!   graceful shutdown (empty holder) is taken at once.
//! - The leader counts itself leader only until `renew_deadline` after the start of its
//!   last successful renewal, which is earlier than any standby can take over
//!   (`renew_deadline < lease_duration`); the caller stops its controllers when
//!   [`Elector::hold`] returns.
//!
//! The decision is the pure function [`decide`]; the rest is API plumbing.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, api::PostParams};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Where the Lease lives, who we are, and the timing of the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own namespace).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among candidates (the pod name).
    pub identity: String,
    /// How long a claim lasts without renewal; written as `leaseDurationSeconds`
    /// (whole seconds, at least 1). Default 15s.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    /// Must be shorter than `lease_duration`. Default 10s.
    pub renew_deadline: Duration,
    /// Pause between attempts, both for the leader's renewals and a standby's tries.
    /// `renew_deadline` must exceed 1.2 × `retry_period`. Default 2s.
    pub retry_period: Duration,
    /// Timeout of each API call. Default 5s (a renewal is further bounded by what is
    /// left of `renew_deadline`).
    pub api_timeout: Duration,
}

/// Name of the operator's Lease.
pub const DEFAULT_LEASE_NAME: &str = "turnpike-operator";

/// client-go's `JitterFactor`: a standby waits `retry_period × (1 + rand[0, 1.2))`.
const JITTER_FACTOR: f64 = 1.2;

impl LeaseConfig {
    /// A config with client-go's default timings (15s / 10s / 2s) and a 5s API timeout.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            api_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the relations client-go enforces between the timings.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let bad = |msg: String| Err(LeaderError::Config(msg));
        if self.namespace.is_empty() || self.name.is_empty() {
            return bad("lease namespace and name must not be empty".into());
        }
        if self.identity.is_empty() {
            return bad("identity must not be empty".into());
        }
        if self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.as_secs() < 1
            || self.lease_duration.as_secs() > i32::MAX as u64
        {
            return bad(format!(
                "lease duration {:?} must be a whole number of seconds, at least 1s",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return bad(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero()
            || self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64()
        {
            return bad(format!(
                "renew deadline {:?} must exceed {JITTER_FACTOR} x retry period {:?} (> 0)",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.api_timeout.is_zero() {
            return bad("API timeout must be > 0".into());
        }
        Ok(())
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why an election call failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The configuration breaks a timing rule or misses a name.
    #[error("invalid leader election config: {0}")]
    Config(String),
    /// The API server did not answer in time.
    #[error("Lease {lease}: {action} timed out after {timeout:?}")]
    Timeout {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What we tried (`get`, `create`, `replace`).
        action: &'static str,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// RBAC does not let us touch the Lease; retrying will not help.
    #[error(
        "Lease {lease}: not allowed to {action}; the operator's Role must grant \
         get/create/update on coordination.k8s.io leases: {source}"
    )]
    Forbidden {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What we tried.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Someone else wrote the Lease between our read and our write (a normal race).
    #[error("Lease {lease}: changed concurrently during {action}")]
    Conflict {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What we tried.
        action: &'static str,
    },
    /// Any other API failure.
    #[error("Lease {lease}: {action} failed: {source}")]
    Api {
        /// `namespace/name` of the Lease.
        lease: String,
        /// What we tried.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl LeaderError {
    /// True when retrying cannot succeed (bad config, missing RBAC).
    pub fn is_fatal(&self) -> bool {
        matches!(self, LeaderError::Config(_) | LeaderError::Forbidden { .. })
    }
}

/// How [`Elector::hold`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEnd {
    /// The shutdown signal fired while we still led; call [`Elector::release`].
    Shutdown,
    /// Leadership is gone: stop the controllers (exiting the process is simplest).
    Lost(LeaderLost),
}

/// Why leadership was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderLost {
    /// Another candidate holds the Lease now.
    TakenOver {
        /// Its identity (empty when the Lease was released by someone else).
        holder: String,
    },
    /// No renewal succeeded within the renew deadline.
    RenewDeadlineExceeded {
        /// Time since the last successful renewal started.
        since_last_renew: Duration,
    },
    /// `hold` was called without holding the Lease.
    NotHeld,
}

impl std::fmt::Display for LeaderLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaderLost::TakenOver { holder } if holder.is_empty() => {
                f.write_str("the lease was released by someone else")
            }
            LeaderLost::TakenOver { holder } => write!(f, "the lease is now held by {holder}"),
            LeaderLost::RenewDeadlineExceeded { since_last_renew } => {
                write!(f, "no renewal succeeded for {since_last_renew:?}")
            }
            LeaderLost::NotHeld => f.write_str("the lease was never held"),
        }
    }
}

/// The election-relevant part of a Lease, as read from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Current holder; `None` when empty or absent (released).
    pub holder: Option<String>,
    /// `leaseDurationSeconds` (our own default when absent or invalid).
    pub lease_duration: Duration,
    /// `acquireTime`.
    pub acquire_time: Option<Timestamp>,
    /// `renewTime`.
    pub renew_time: Option<Timestamp>,
    /// `leaseTransitions` (0 when absent).
    pub transitions: i32,
}

impl LeaseRecord {
    /// Reads the record out of a Lease; `default_duration` stands in for a missing or
    /// non-positive `leaseDurationSeconds`.
    pub fn from_lease(lease: &Lease, default_duration: Duration) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map_or(default_duration, Duration::from_secs),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What a candidate should do about the Lease, given what it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// There is no Lease: create it, naming us.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free (released) or expired: take it over.
    Acquire,
    /// Someone else holds a valid claim.
    Held {
        /// The holder.
        holder: String,
        /// How long until the claim expires if the holder stops renewing.
        expires_in: Duration,
    },
}

/// The pure election rule. `current` is the record as just read (`None`: no Lease);
/// `observed_at` is when this candidate first saw that exact record (our monotonic
/// clock); `now` is the same clock now.
pub fn decide(
    identity: &str,
    current: Option<&LeaseRecord>,
    observed_at: Instant,
    now: Instant,
) -> Verdict {
    let Some(record) = current else {
        return Verdict::Create;
    };
    match record.holder.as_deref() {
        None => Verdict::Acquire,
        Some(holder) if holder == identity => Verdict::Renew,
        Some(holder) => {
            let expiry = observed_at + record.lease_duration;
            if now >= expiry {
                Verdict::Acquire
            } else {
                Verdict::Held {
                    holder: holder.to_owned(),
                    expires_in: expiry - now,
                }
            }
        }
    }
}

/// The spec a candidate writes for `verdict` (not for [`Verdict::Held`], which writes
/// nothing; it is treated like a renewal).
pub fn next_spec(
    identity: &str,
    lease_duration: Duration,
    previous: Option<&LeaseRecord>,
    verdict: &Verdict,
    now: Timestamp,
) -> LeaseSpec {
    let now = MicroTime(now);
    let seconds = i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX);
    let (acquire_time, transitions) = match (verdict, previous) {
        (Verdict::Create, _) | (_, None) => (now.clone(), 0),
        (Verdict::Acquire, Some(prev)) => (now.clone(), prev.transitions.saturating_add(1)),
        (Verdict::Renew | Verdict::Held { .. }, Some(prev)) => (
            prev.acquire_time.map_or_else(|| now.clone(), MicroTime),
            prev.transitions,
        ),
    };
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(acquire_time),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// The spec written on release: no holder and a 1s duration, so any candidate takes
/// over at its next try (client-go does the same).
pub fn released_spec(previous: &LeaseRecord, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(previous.transitions),
        ..LeaseSpec::default()
    }
}

/// Outcome of one try.
#[derive(Debug)]
enum Attempt {
    Leading,
    Standby {
        holder: String,
        expires_in: Duration,
    },
}

#[derive(Default)]
struct State {
    /// The last record seen and when it was first seen (for expiry).
    observed: Option<(LeaseRecord, Instant)>,
    /// The last Lease object we wrote or read (carries the resourceVersion).
    lease: Option<Lease>,
    /// When the last successful renewal (or acquisition) was started.
    last_renew: Option<Instant>,
    /// Last holder logged while standing by (to log changes only).
    last_logged_holder: Option<String>,
}

/// A candidate in the election. Cheap to share behind an `Arc`.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    metrics: Option<Arc<Metrics>>,
    state: Mutex<State>,
}

impl Elector {
    /// A candidate for `cfg`'s Lease. Fails only on an invalid config.
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Result<Self, LeaderError> {
        cfg.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            leader: watch::Sender::new(false),
            metrics: None,
            state: Mutex::new(State::default()),
        })
    }

    /// Keeps the `turnpike_operator_leader` gauge in step with the leader flag.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.set_leader(*self.leader.borrow());
        self.metrics = Some(metrics);
        self
    }

    /// The config this candidate runs with.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// True while this process holds the Lease.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// A receiver that sees every change of the leader flag.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Blocks until this process holds the Lease (`Ok(true)`) or `shutdown` fires
    /// (`Ok(false)`). Transient API errors are logged and retried; a fatal one
    /// (missing RBAC) is returned.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<bool, LeaderError> {
        info!(lease = %self.cfg.lease_ref(), identity = %self.cfg.identity, "trying to acquire the leader lease");
        loop {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    self.lock().last_renew = Some(started);
                    self.set_leader(true);
                    info!(lease = %self.cfg.lease_ref(), identity = %self.cfg.identity, "acquired the leader lease");
                    return Ok(true);
                }
                Ok(Attempt::Standby { holder, expires_in }) => {
                    let mut state = self.lock();
                    if state.last_logged_holder.as_deref() != Some(holder.as_str()) {
                        info!(lease = %self.cfg.lease_ref(), %holder, ?expires_in, "standing by: another replica leads");
                        state.last_logged_holder = Some(holder);
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e @ LeaderError::Conflict { .. }) => {
                    debug!(error = %e, "lost a race for the lease")
                }
                Err(e) => warn!(error = %e, "leader election attempt failed; retrying"),
            }
            let pause = self
                .cfg
                .retry_period
                .mul_f64(1.0 + rand::random_range(0.0..JITTER_FACTOR));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renews the Lease every `retry_period` while we lead. Completes when leadership
    /// is lost (no renewal within `renew_deadline`, or another holder) or `shutdown`
    /// fires. The leader flag is cleared before a loss is returned.
    pub async fn hold(&self, shutdown: &CancellationToken) -> HoldEnd {
        let Some(mut last_renew) = self.lock().last_renew.filter(|_| self.is_leader()) else {
            return HoldEnd::Lost(LeaderLost::NotHeld);
        };
        loop {
            let deadline = last_renew + self.cfg.renew_deadline;
            let now = Instant::now();
            if now >= deadline {
                return self.lost(LeaderLost::RenewDeadlineExceeded {
                    since_last_renew: now - last_renew,
                });
            }
            let pause = self.cfg.retry_period.min(deadline - now);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return HoldEnd::Shutdown,
                () = tokio::time::sleep(pause) => {}
            }
            let started = Instant::now();
            if started >= deadline {
                continue;
            }
            // The whole attempt (get + replace) must end before the deadline.
            let attempt = tokio::select! {
                biased;
                () = shutdown.cancelled() => return HoldEnd::Shutdown,
                r = tokio::time::timeout(deadline - started, self.try_acquire_or_renew()) => r,
            };
            match attempt {
                Ok(Ok(Attempt::Leading)) => {
                    last_renew = started;
                    self.lock().last_renew = Some(started);
                    debug!(lease = %self.cfg.lease_ref(), "renewed the leader lease");
                }
                Ok(Ok(Attempt::Standby { holder, .. })) => {
                    return self.lost(LeaderLost::TakenOver { holder });
                }
                Ok(Err(e)) => warn!(error = %e, "renewing the leader lease failed; retrying"),
                Err(_) => {} // the deadline check at the top of the loop decides
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once (empty holder, 1s duration).
    /// Clears the leader flag first; does nothing when someone else holds the Lease.
    pub async fn release(&self) -> Result<(), LeaderError> {
        self.set_leader(false);
        self.lock().last_renew = None;
        let Some(mut lease) = self.call("get", self.api.get_opt(&self.cfg.name)).await? else {
            return Ok(());
        };
        let record = LeaseRecord::from_lease(&lease, self.cfg.lease_duration);
        if record.holder.as_deref() != Some(self.cfg.identity.as_str()) {
            debug!(lease = %self.cfg.lease_ref(), "not the holder; nothing to release");
            return Ok(());
        }
        lease.spec = Some(released_spec(&record, Timestamp::now()));
        let pp = PostParams::default();
        let replaced = self.call("release", self.api.replace(&self.cfg.name, &pp, &lease));
        match replaced.await {
            Ok(lease) => {
                self.observe(&lease, Instant::now());
                info!(lease = %self.cfg.lease_ref(), "released the leader lease");
                Ok(())
            }
            // Someone wrote it in between: it is not ours to release any more.
            Err(LeaderError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaderError> {
        // Fast path: the leader renews its cached copy without reading first; a
        // conflict sends it down the slow path.
        let cached = {
            let state = self.lock();
            state.lease.clone().filter(|_| self.is_leader())
        };
        if let Some(mut lease) = cached {
            let prev = LeaseRecord::from_lease(&lease, self.cfg.lease_duration);
            lease.spec = Some(self.spec_for(Some(&prev), &Verdict::Renew));
            match self.write_replace(&lease).await {
                Ok(()) => return Ok(Attempt::Leading),
                Err(e @ LeaderError::Forbidden { .. }) => return Err(e),
                Err(e) => debug!(error = %e, "fast renewal failed; reading the lease"),
            }
        }

        let current = self.call("get", self.api.get_opt(&self.cfg.name)).await?;
        let now = Instant::now();
        let record = current.as_ref().map(|l| self.observe(l, now));
        let observed_at = self.lock().observed.as_ref().map_or(now, |(_, at)| *at);
        let verdict = decide(&self.cfg.identity, record.as_ref(), observed_at, now);
        match (&verdict, current) {
            (Verdict::Held { holder, expires_in }, _) => Ok(Attempt::Standby {
                holder: holder.clone(),
                expires_in: *expires_in,
            }),
            (Verdict::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec_for(None, &Verdict::Create)),
                };
                let created = self
                    .call("create", self.api.create(&PostParams::default(), &lease))
                    .await?;
                self.remember_written(created);
                Ok(Attempt::Leading)
            }
            (Verdict::Renew | Verdict::Acquire, Some(mut lease)) => {
                if verdict == Verdict::Acquire {
                    info!(lease = %self.cfg.lease_ref(), previous = ?record.as_ref().and_then(|r| r.holder.clone()), "taking over the leader lease");
                }
                lease.spec = Some(self.spec_for(record.as_ref(), &verdict));
                self.write_replace(&lease).await?;
                Ok(Attempt::Leading)
            }
        }
    }

    fn spec_for(&self, previous: Option<&LeaseRecord>, verdict: &Verdict) -> LeaseSpec {
        next_spec(
            &self.cfg.identity,
            self.cfg.lease_duration,
            previous,
            verdict,
            Timestamp::now(),
        )
    }

    async fn write_replace(&self, lease: &Lease) -> Result<(), LeaderError> {
        let written = self
            .call(
                "replace",
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), lease),
            )
            .await?;
        self.remember_written(written);
        Ok(())
    }

    fn remember_written(&self, lease: Lease) {
        self.observe(&lease, Instant::now());
        self.lock().lease = Some(lease);
    }

    /// Records `lease` as observed; the observation time moves only when the record
    /// changed, which is what expiry is measured from.
    fn observe(&self, lease: &Lease, now: Instant) -> LeaseRecord {
        let record = LeaseRecord::from_lease(lease, self.cfg.lease_duration);
        let mut state = self.lock();
        let changed = state.observed.as_ref().is_none_or(|(r, _)| *r != record);
        if changed {
            state.observed = Some((record.clone(), now));
        }
        state.lease = Some(lease.clone());
        record
    }

    /// Runs one API call with the configured timeout and maps its error.
    async fn call<T>(
        &self,
        action: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaderError> {
        let lease = || self.cfg.lease_ref();
        match tokio::time::timeout(self.cfg.api_timeout, fut).await {
            Err(_) => Err(LeaderError::Timeout {
                lease: lease(),
                action,
                timeout: self.cfg.api_timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(status)))
                if status.is_conflict() || status.is_already_exists() =>
            {
                Err(LeaderError::Conflict {
                    lease: lease(),
                    action,
                })
            }
            Ok(Err(source @ kube::Error::Api(_))) if is_denied(&source) => {
                Err(LeaderError::Forbidden {
                    lease: lease(),
                    action,
                    source,
                })
            }
            Ok(Err(source)) => Err(LeaderError::Api {
                lease: lease(),
                action,
                source,
            }),
        }
    }

    fn set_leader(&self, leader: bool) {
        self.leader
            .send_if_modified(|v| std::mem::replace(v, leader) != leader);
        if let Some(m) = &self.metrics {
            m.set_leader(leader);
        }
    }

    fn lost(&self, why: LeaderLost) -> HoldEnd {
        self.set_leader(false);
        self.lock().last_renew = None;
        warn!(lease = %self.cfg.lease_ref(), reason = %why, "lost leadership");
        HoldEnd::Lost(why)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every field is
        // replaced whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn is_denied(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_forbidden() || s.code == 401)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holder: Option<&str>, secs: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            lease_duration: Duration::from_secs(secs),
            acquire_time: None,
            renew_time: None,
            transitions: 3,
        }
    }

    #[test]
    fn no_lease_means_create() {
        let t = Instant::now();
        assert_eq!(decide("me", None, t, t), Verdict::Create);
    }

    #[test]
    fn our_own_lease_is_renewed_even_when_old() {
        let t = Instant::now();
        let r = record(Some("me"), 15);
        assert_eq!(
            decide("me", Some(&r), t, t + Duration::from_secs(3600)),
            Verdict::Renew
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t = Instant::now();
        assert_eq!(decide("me", Some(&record(None, 1)), t, t), Verdict::Acquire);
    }

    #[test]
    fn another_holder_is_respected_until_the_duration_passes_since_observation() {
        let t = Instant::now();
        let r = record(Some("other"), 15);
        assert_eq!(
            decide("me", Some(&r), t, t + Duration::from_secs(14)),
            Verdict::Held {
                holder: "other".into(),
                expires_in: Duration::from_secs(1)
            }
        );
        assert_eq!(
            decide("me", Some(&r), t, t + Duration::from_secs(15)),
            Verdict::Acquire
        );
    }

    #[test]
    fn the_holders_duration_counts_not_ours() {
        let t = Instant::now();
        let r = record(Some("other"), 60);
        assert!(matches!(
            decide("me", Some(&r), t, t + Duration::from_secs(30)),
            Verdict::Held { .. }
        ));
    }

    #[test]
    fn missing_or_bad_duration_falls_back_to_ours() {
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(-5),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        let r = LeaseRecord::from_lease(&lease, Duration::from_secs(15));
        assert_eq!(r.holder, None);
        assert_eq!(r.lease_duration, Duration::from_secs(15));
        assert_eq!(r.transitions, 0);
    }

    #[test]
    fn takeover_counts_a_transition_and_renewal_keeps_acquire_time() {
        let acquired = Timestamp::from_second(1_000).expect("valid timestamp");
        let now = Timestamp::from_second(2_000).expect("valid timestamp");
        let mut prev = record(Some("other"), 15);
        prev.acquire_time = Some(acquired);

        let taken = next_spec(
            "me",
            Duration::from_secs(15),
            Some(&prev),
            &Verdict::Acquire,
            now,
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        assert_eq!(taken.renew_time, Some(MicroTime(now)));
        assert_eq!(taken.lease_duration_seconds, Some(15));

        prev.holder = Some("me".into());
        let renewed = next_spec(
            "me",
            Duration::from_secs(15),
            Some(&prev),
            &Verdict::Renew,
            now,
        );
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(acquired)));
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));

        let created = next_spec("me", Duration::from_secs(15), None, &Verdict::Create, now);
        assert_eq!(created.lease_transitions, Some(0));
    }

    #[test]
    fn release_empties_the_holder_and_shortens_the_lease() {
        let now = Timestamp::from_second(2_000).expect("valid timestamp");
        let spec = released_spec(&record(Some("me"), 15), now);
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn config_rules_follow_client_go() {
        let ok = LeaseConfig::new("turnpike-system", DEFAULT_LEASE_NAME, "pod-a");
        assert!(ok.validate().is_ok());

        let mut c = ok.clone();
        c.renew_deadline = c.lease_duration;
        assert!(c.validate().is_err());

        let mut c = ok.clone();
        c.retry_period = Duration::from_secs(9);
        assert!(c.validate().is_err());

        let mut c = ok.clone();
        c.lease_duration = Duration::from_millis(15_500);
        assert!(c.validate().is_err());

        let mut c = ok;
        c.identity = String::new();
        assert!(matches!(c.validate(), Err(LeaderError::Config(_))));
    }
}
