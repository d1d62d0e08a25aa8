//! Leader election against an in-memory Lease API (GET/POST/PUT with resourceVersion
//! checks, as the API server does), on tokio's paused clock: no cluster, no sleeping.
//! The two-process test against a real API server belongs to the e2e suite.
#![allow(clippy::unwrap_used)]

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Bytes};
use k8s_openapi::api::coordination::v1::Lease;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use turnpike_operator::{
    leader::{Elector, HoldEnd, LeaderError, LeaderLost, LeaseConfig},
    metrics::Metrics,
};

const NS: &str = "turnpike-system";
const NAME: &str = "turnpike-operator";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Every call answers 500.
    Fail,
    /// Every call hangs.
    Hang,
    /// Every call answers 403.
    Forbid,
}

struct FakeApi {
    lease: Mutex<Option<Lease>>,
    version: Mutex<u64>,
    mode: Mutex<Mode>,
}

impl FakeApi {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lease: Mutex::new(None),
            version: Mutex::new(0),
            mode: Mutex::new(Mode::Normal),
        })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap().clone()
    }

    fn holder(&self) -> Option<String> {
        self.lease()?.spec?.holder_identity
    }

    fn transitions(&self) -> Option<i32> {
        self.lease()?.spec?.lease_transitions
    }

    /// Writes the Lease as a third party would (bumps the resourceVersion).
    fn overwrite(&self, f: impl FnOnce(&mut Lease)) {
        let mut guard = self.lease.lock().unwrap();
        let lease = guard.as_mut().unwrap();
        f(lease);
        lease.metadata.resource_version = Some(self.bump());
    }

    fn bump(&self) -> String {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        v.to_string()
    }

    fn client(self: &Arc<Self>) -> kube::Client {
        let api = Arc::clone(self);
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = Arc::clone(&api);
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        kube::Client::new(service, NS)
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Normal => {}
            Mode::Fail => return status(500, "InternalError"),
            Mode::Forbid => return status(403, "Forbidden"),
            Mode::Hang => std::future::pending::<()>().await,
        }
        let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let item = format!("{collection}/{NAME}");
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut stored = self.lease.lock().unwrap();
        match (method, path.as_str()) {
            (Method::GET, p) if p == item => match stored.as_ref() {
                Some(lease) => ok(200, lease),
                None => status(404, "NotFound"),
            },
            (Method::POST, p) if p == collection => {
                if stored.is_some() {
                    return status(409, "AlreadyExists");
                }
                let mut lease: Lease = serde_json::from_slice(&body).unwrap();
                assert_eq!(lease.metadata.name.as_deref(), Some(NAME));
                lease.metadata.resource_version = Some(self.bump());
                *stored = Some(lease.clone());
                ok(201, &lease)
            }
            (Method::PUT, p) if p == item => {
                let mut lease: Lease = serde_json::from_slice(&body).unwrap();
                let Some(current) = stored.as_ref() else {
                    return status(404, "NotFound");
                };
                if lease.metadata.resource_version != current.metadata.resource_version {
                    return status(409, "Conflict");
                }
                lease.metadata.resource_version = Some(self.bump());
                *stored = Some(lease.clone());
                ok(200, &lease)
            }
            _ => status(404, "NotFound"),
        }
    }
}

fn ok(code: u16, lease: &Lease) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(serde_json::to_vec(lease).unwrap())));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp
}

fn status(code: u16, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("fake: {reason}"), "reason": reason, "code": code,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp
}

fn elector(api: &Arc<FakeApi>, identity: &str) -> Arc<Elector> {
    Arc::new(Elector::new(api.client(), LeaseConfig::new(NS, NAME, identity)).unwrap())
}

#[tokio::test(start_paused = true)]
async fn first_candidate_leads_second_stands_by_and_takes_over_on_release() {
    let api = FakeApi::new();
    let metrics = Metrics::new();
    let a = Arc::new(
        Elector::new(api.client(), LeaseConfig::new(NS, NAME, "a"))
            .unwrap()
            .with_metrics(Arc::clone(&metrics)),
    );
    let b = elector(&api, "b");

    let stop_a = CancellationToken::new();
    assert!(a.acquire(&stop_a).await.unwrap());
    assert!(a.is_leader());
    assert!(metrics.encode().contains("turnpike_operator_leader 1"));
    assert_eq!(api.holder().as_deref(), Some("a"));
    assert_eq!(api.transitions(), Some(0));

    let hold_a = tokio::spawn({
        let (a, stop) = (Arc::clone(&a), stop_a.clone());
        async move { a.hold(&stop).await }
    });
    let stop_b = CancellationToken::new();
    let acquire_b = tokio::spawn({
        let (b, stop) = (Arc::clone(&b), stop_b.clone());
        async move { b.acquire(&stop).await }
    });

    // A minute of renewals: b never gets in.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!acquire_b.is_finished());
    assert!(a.is_leader() && !b.is_leader());
    assert_eq!(api.holder().as_deref(), Some("a"));

    // Graceful shutdown of a: release hands over within one (jittered) retry period.
    stop_a.cancel();
    assert_eq!(hold_a.await.unwrap(), HoldEnd::Shutdown);
    a.release().await.unwrap();
    assert!(!a.is_leader());
    assert!(metrics.encode().contains("turnpike_operator_leader 0"));
    let released = Instant::now();
    let acquired = tokio::time::timeout(Duration::from_secs(5), acquire_b)
        .await
        .expect("b should take a released lease at its next try")
        .unwrap()
        .unwrap();
    assert!(acquired && b.is_leader());
    assert!(released.elapsed() <= Duration::from_millis(4_400));
    assert_eq!(api.holder().as_deref(), Some("b"));
    assert_eq!(api.transitions(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_after_one_lease_duration() {
    let api = FakeApi::new();
    let a = elector(&api, "a");
    assert!(a.acquire(&CancellationToken::new()).await.unwrap());
    drop(a); // crashed: no renewals, no release

    let b = elector(&api, "b");
    let start = Instant::now();
    assert!(b.acquire(&CancellationToken::new()).await.unwrap());
    let waited = start.elapsed();
    // Expiry counts from b's first sight of the record: at least the lease duration,
    // at most that plus one jittered retry period.
    assert!(waited >= Duration::from_secs(15), "{waited:?}");
    assert!(waited <= Duration::from_millis(19_400), "{waited:?}");
    assert_eq!(api.holder().as_deref(), Some("b"));
    assert_eq!(api.transitions(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_end_leadership_before_a_standby_may_take_over() {
    for mode in [Mode::Fail, Mode::Hang] {
        let api = FakeApi::new();
        let a = elector(&api, "a");
        assert!(a.acquire(&CancellationToken::new()).await.unwrap());
        let acquired = Instant::now();
        api.set_mode(mode);

        let end = a.hold(&CancellationToken::new()).await;
        let lost_after = acquired.elapsed();
        assert!(
            matches!(end, HoldEnd::Lost(LeaderLost::RenewDeadlineExceeded { .. })),
            "{end:?}"
        );
        assert!(!a.is_leader());
        // The leader steps down at the renew deadline (10s), well before the 15s after
        // which a standby that saw the last renewal may take over.
        assert!(lost_after <= Duration::from_secs(10), "{lost_after:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_leader_notices_another_holder() {
    let api = FakeApi::new();
    let a = elector(&api, "a");
    assert!(a.acquire(&CancellationToken::new()).await.unwrap());
    api.overwrite(|l| {
        l.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    });
    let end = a.hold(&CancellationToken::new()).await;
    assert_eq!(
        end,
        HoldEnd::Lost(LeaderLost::TakenOver {
            holder: "intruder".into()
        })
    );
    assert!(!a.is_leader());
    assert_eq!(api.holder().as_deref(), Some("intruder"));
}

#[tokio::test(start_paused = true)]
async fn racing_candidates_never_both_lead() {
    let api = FakeApi::new();
    let stop = CancellationToken::new();
    let candidates: Vec<_> = (0..5).map(|i| elector(&api, &format!("c{i}"))).collect();
    let mut tasks = Vec::new();
    for c in &candidates {
        let (c, stop) = (Arc::clone(c), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Lead, lose (the test makes the leader lose), stand by again, until stopped.
            while c.acquire(&stop).await.unwrap() {
                if c.hold(&stop).await == HoldEnd::Shutdown {
                    c.release().await.unwrap();
                    return;
                }
            }
        }));
    }
    let mut leaders_seen = std::collections::BTreeSet::new();
    for step in 0..600 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let leading: Vec<_> = candidates.iter().filter(|c| c.is_leader()).collect();
        assert!(leading.len() <= 1, "two leaders at step {step}");
        if let Some(l) = leading.first() {
            leaders_seen.insert(l.config().identity.clone());
            // Right after the ghost write the old leader learns of it at its next
            // renewal; any other holder than the ghost must be the leader itself.
            let holder = api.holder();
            assert!(
                holder.as_deref() == Some(l.config().identity.as_str())
                    || holder.as_deref() == Some("ghost"),
                "{holder:?} holds the lease while {} leads",
                l.config().identity
            );
        }
        // Every 30s, hand the lease to a ghost so the leader loses and the rest race.
        if step % 120 == 119 {
            api.overwrite(|l| {
                let spec = l.spec.as_mut().unwrap();
                spec.holder_identity = Some("ghost".into());
            });
        }
    }
    assert!(leaders_seen.len() >= 2, "{leaders_seen:?}");
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(candidates.iter().all(|c| !c.is_leader()));
}

#[tokio::test(start_paused = true)]
async fn missing_rbac_is_fatal_and_shutdown_stops_waiting() {
    let api = FakeApi::new();
    api.set_mode(Mode::Forbid);
    let a = elector(&api, "a");
    let err = a.acquire(&CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(err, LeaderError::Forbidden { .. }) && err.is_fatal(),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("turnpike-system/turnpike-operator")
    );

    // A server that never answers: acquire keeps trying until shutdown.
    api.set_mode(Mode::Hang);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (a, stop) = (Arc::clone(&a), stop.clone());
        async move { a.acquire(&stop).await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    stop.cancel();
    assert!(!task.await.unwrap().unwrap());
}
