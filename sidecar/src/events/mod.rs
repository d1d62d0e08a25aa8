//! Sidecar Events (DESIGN.md, "Talking to Kubernetes from the sidecar").
//!
//! The request path hands an [`Observation`] to [`EventRecorder::record`], which is a
//! `try_send` on a bounded queue: a full queue drops the observation and counts it in
//! `turnpike_events_dropped_total{reason="queue_full"}`; a request never waits for
//! the API server. One task ([`run`]) drains the queue into the pure
//! [`aggregate::Aggregator`] (one Event per regarding object x reason x pod, repeats
//! counted in `series`, writes rate limited per object and in total) and hands the
//! writes to a second bounded queue, drained by the writer: the API server
//! ([`kube::KubeWriter`], every call under a timeout) or, in local mode, audit lines
//! ([`Sink::Audit`]).
//!
//! A note names the key id, the route (method and normalised path, with anything
//! that looks like a token masked) and the client IP; never a token or a hash.

pub mod aggregate;
pub mod kube;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit_log::Resource;
use crate::clock::Clock;
use crate::engine::{AuditEvent, CompiledBundle, Refusal, Triggered};
use crate::metrics::Metrics;
use aggregate::{Aggregator, Limits};
pub use aggregate::{Dropped, Observation, Reason, Regarding, Write};

/// Observations that may wait for the aggregator.
pub const QUEUE: usize = 1024;
/// Writes that may wait for the API server.
pub const WRITE_QUEUE: usize = 64;
/// Most bytes of a note (the API server's limit is 1 kB).
const MAX_NOTE_BYTES: usize = 1000;
/// How often due series writes are looked for.
const TICK: Duration = Duration::from_secs(1);

/// The request path's handle: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    tx: Option<mpsc::Sender<Observation>>,
    metrics: Arc<Metrics>,
}

impl EventRecorder {
    /// A recorder that records nothing (tests, or Events turned off).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self { tx: None, metrics }
    }

    /// A recorder feeding `tx`.
    pub fn new(tx: mpsc::Sender<Observation>, metrics: Arc<Metrics>) -> Self {
        Self {
            tx: Some(tx),
            metrics,
        }
    }

    /// Queues `o`, or drops and counts it when the queue is full.
    pub fn record(&self, o: Observation) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(o).is_err() {
            self.metrics.event_dropped(Dropped::QueueFull);
        }
    }

    /// The Events of a refusal: revoked or expired key used, scope denied, quota
    /// exhausted (dry-run reports included: the note says so).
    pub fn refusal(&self, bundle: &CompiledBundle, e: &AuditEvent<'_>, resource: Resource<'_>) {
        if self.tx.is_none() {
            return;
        }
        let reason = match e.refusal {
            Refusal::KeyRevoked => Reason::RevokedKeyUsed,
            Refusal::KeyExpired => Reason::ExpiredKeyUsed,
            Refusal::ScopeDenied | Refusal::NoMatchingRule => Reason::ScopeDenied,
            Refusal::QuotaExhausted => Reason::QuotaExhausted,
            _ => return,
        };
        // These refusals all come after the key was found.
        let Some(regarding) = regarding(bundle, e.key_name.and(e.key_id)) else {
            return;
        };
        let what = if e.enforced {
            e.reason
        } else {
            "dry run, not enforced"
        };
        self.record(Observation {
            namespace: bundle.namespace.clone(),
            regarding,
            reason,
            note: note(reason, e.key_id, resource, e.client_ip, what),
        });
    }

    /// The Events of the lockouts and cooldowns a request started. `key_id` is the
    /// id of an existing key, if the request named one.
    pub fn triggered(
        &self,
        bundle: &CompiledBundle,
        t: Triggered,
        key_id: Option<&str>,
        client_ip: IpAddr,
        resource: Resource<'_>,
    ) {
        if self.tx.is_none() || !t.any() {
            return;
        }
        // On the key when the request named an existing one, else on the pod.
        let on = regarding(bundle, key_id).unwrap_or(Regarding::Pod);
        for (fired, reason, subject_key) in [
            (t.key_lockout, Reason::LockoutTriggered, true),
            (t.ip_lockout, Reason::LockoutTriggered, false),
            (t.key_cooldown, Reason::AbuseCooldown, true),
            (t.ip_cooldown, Reason::AbuseCooldown, false),
        ] {
            if fired {
                let what = if subject_key {
                    "the key is blocked"
                } else {
                    "the client IP is blocked"
                };
                self.record(Observation {
                    namespace: bundle.namespace.clone(),
                    regarding: on.clone(),
                    reason,
                    note: note(reason, key_id, resource, client_ip, what),
                });
            }
        }
    }
}

/// The ApiKey a key id names in `bundle`, if it exists there.
fn regarding(bundle: &CompiledBundle, key_id: Option<&str>) -> Option<Regarding> {
    let key = bundle.key(key_id?)?;
    Some(Regarding::ApiKey {
        name: key.name.clone(),
        uid: key.uid.clone(),
    })
}

/// `"<summary>: key <id>, route <METHOD /path>, client <ip> (<detail>)"`, at most
/// [`MAX_NOTE_BYTES`]. The key id is public; the route is the audit log's (bounded,
/// escaped, tokens masked).
pub fn note(
    reason: Reason,
    key_id: Option<&str>,
    resource: Resource<'_>,
    client_ip: IpAddr,
    detail: &str,
) -> String {
    let summary = match reason {
        Reason::LockoutTriggered => "lockout triggered after failed authentications",
        Reason::QuotaExhausted => "daily quota exhausted",
        Reason::RevokedKeyUsed => "revoked key used",
        Reason::ExpiredKeyUsed => "expired key used",
        Reason::ScopeDenied => "scope denied",
        Reason::AbuseCooldown => "abuse cooldown after too many 404/400 answers",
    };
    let route = resource.route();
    let mut s = format!(
        "{summary}: key {}, route {route}, client {client_ip} ({detail})",
        key_id.unwrap_or("-")
    );
    if s.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Where writes go.
#[derive(Debug)]
pub enum Sink {
    /// The API server.
    Kube(kube::KubeWriter),
    /// Local mode: one audit line per write.
    Audit,
}

/// Settings of the Events task.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Least time between two writes of one Event's series.
    pub series_interval: Duration,
}

/// Starts the Events pipeline; the recorder feeds it. The tasks end when `shutdown`
/// is cancelled, after a last flush of due writes (each under the writer's timeout).
pub fn spawn(
    sink: Sink,
    settings: Settings,
    clock: Clock,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> (EventRecorder, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let recorder = EventRecorder::new(tx, Arc::clone(&metrics));
    let handle = tokio::spawn(run(rx, sink, settings, clock, metrics, shutdown));
    (recorder, handle)
}

async fn run(
    mut rx: mpsc::Receiver<Observation>,
    sink: Sink,
    settings: Settings,
    clock: Clock,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let interval_ms = u64::try_from(settings.series_interval.as_millis()).unwrap_or(u64::MAX);
    let mut agg = Aggregator::new(Limits::with_series_interval(interval_ms));
    let (wtx, wrx) = mpsc::channel::<Write>(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(wrx, sink, Arc::clone(&metrics)));
    let mut send = |w: Write| wtx.try_send(w).is_ok();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            o = rx.recv() => match o {
                Some(o) => {
                    if let Err(d) = agg.observe(o, clock.now(), &mut send) {
                        metrics.event_dropped(d);
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                let lost = agg.due(clock.now(), &mut send);
                for _ in 0..lost {
                    metrics.event_dropped(Dropped::RateLimited);
                }
            }
        }
    }
    // Last flush: what is pending and due goes out, ignoring the series interval is
    // not worth a burst at shutdown.
    while let Ok(o) = rx.try_recv() {
        if let Err(d) = agg.observe(o, clock.now(), &mut send) {
            metrics.event_dropped(d);
        }
    }
    agg.due(clock.now(), &mut send);
    drop(wtx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

async fn write_loop(mut rx: mpsc::Receiver<Write>, sink: Sink, metrics: Arc<Metrics>) {
    while let Some(w) = rx.recv().await {
        match &sink {
            Sink::Kube(k) => match k.write(&w).await {
                Ok(op) => metrics.event_written(op),
                Err(e) => {
                    metrics.event_dropped(Dropped::ApiError);
                    tracing::warn!(error = %e, reason = w.reason.as_str(), "writing an Event failed; dropped");
                }
            },
            Sink::Audit => {
                audit_line(&w);
                metrics.event_written("log");
            }
        }
    }
}

/// Local mode: the Event as an audit line.
fn audit_line(w: &Write) {
    let regarding = match &w.regarding {
        Regarding::ApiKey { name, .. } => format!("ApiKey/{}/{name}", w.namespace),
        Regarding::Pod => format!("Pod/{}", w.namespace),
    };
    tracing::info!(
        target: "audit",
        event = "kubernetes_event",
        actor = "sidecar",
        resource = %regarding,
        action = w.reason.action(),
        result = "reported",
        reason = w.reason.as_str(),
        count = w.count,
        note = %w.note,
        "security event"
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_note_names_key_route_and_client_and_never_a_token() {
        let r = Resource {
            namespace: "shop",
            target: "orders",
            method: "GET",
            path: "/orders/tpk_7k2m9q4xw3ab_SECRETSECRETSECRET/items",
        };
        let n = note(
            Reason::RevokedKeyUsed,
            Some("7k2m9q4xw3ab"),
            r,
            "203.0.113.9".parse().unwrap(),
            "key_revoked",
        );
        assert_eq!(
            n,
            "revoked key used: key 7k2m9q4xw3ab, route GET /orders/tpk_***/items, client 203.0.113.9 (key_revoked)"
        );
        assert!(!n.contains("SECRET"));
    }

    #[test]
    fn a_note_is_bounded() {
        let path = format!("/{}", "é".repeat(2000));
        let r = Resource {
            namespace: "shop",
            target: "orders",
            method: "GET",
            path: &path,
        };
        let n = note(
            Reason::ScopeDenied,
            None,
            r,
            "::1".parse().unwrap(),
            "missing_scope",
        );
        assert!(n.len() <= MAX_NOTE_BYTES);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let (tx, _rx) = mpsc::channel(1);
        let rec = EventRecorder::new(tx, Arc::clone(&metrics));
        let o = Observation {
            namespace: "shop".into(),
            regarding: Regarding::Pod,
            reason: Reason::LockoutTriggered,
            note: "x".into(),
        };
        rec.record(o.clone());
        rec.record(o);
        assert!(
            metrics
                .encode()
                .contains("turnpike_events_dropped_total{reason=\"queue_full\"} 1")
        );
    }
}
