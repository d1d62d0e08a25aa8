//! The certificate Secret against an in-process fake API (a tower-test mock behind a
//! real `kube::Client`): create-if-absent with a lost race, renewal guarded by
//! resourceVersion with a lost race, repair of unusable material, renewal only under
//! the `Renew` policy, and errors that say what was being done.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, client::Body};
use serde_json::{Value, json};
use turnpike_operator::webhook::{
    WebhookError,
    certs::{self, Material, ServingNames},
    secret::{self, Policy, SECRET_NAME, material_of},
};

const NS: &str = "turnpike-system";
const PATH: &str = "/api/v1/namespaces/turnpike-system/secrets";
const DAY: Duration = Duration::from_secs(86400);

/// One scripted answer: (method, path, status, body). Requests are checked in order.
type Step = (Method, String, u16, Value);

#[derive(Clone, Default)]
struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    /// Bodies of the writes received.
    writes: Arc<Mutex<Vec<(Method, Value)>>>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Arc::new(Mutex::new(steps.into())),
            writes: Arc::default(),
        }
    }

    fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let script = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let (m, p, code, value) = script
                    .steps
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| panic!("unexpected request {method} {path}"));
                assert_eq!((&method, path.as_str()), (&m, p.as_str()), "request order");
                if method != Method::GET {
                    script
                        .writes
                        .lock()
                        .unwrap()
                        .push((method, serde_json::from_slice(&body).unwrap()));
                }
                send.send_response(
                    Response::builder()
                        .status(StatusCode::from_u16(code).unwrap())
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&value).unwrap()))
                        .unwrap(),
                );
            }
        });
        Client::new(service, NS)
    }

    fn done(&self) {
        assert!(self.steps.lock().unwrap().is_empty(), "requests missing");
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
}

fn names() -> ServingNames {
    ServingNames::new("turnpike-operator-webhook", NS, Some("127.0.0.1"))
}

fn secret_json(m: &Material, rv: &str) -> Value {
    let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
    let mut data = json!({
        "ca.crt": b64(&m.ca_cert),
        "ca.key": b64(m.ca_key.expose()),
        "tls.crt": b64(&m.cert),
        "tls.key": b64(m.key.expose()),
    });
    if let Some(p) = &m.previous_ca_cert {
        data["ca-previous.crt"] = json!(b64(p));
    }
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": NS, "resourceVersion": rv},
        "type": "kubernetes.io/tls",
        "data": data,
    })
}

fn named() -> String {
    format!("{PATH}/{SECRET_NAME}")
}

async fn ensure(client: Client, policy: Policy, at: SystemTime) -> Result<Material, WebhookError> {
    let api: Api<Secret> = Api::namespaced(client, NS);
    secret::ensure(&api, NS, &names(), policy, move || at).await
}

#[tokio::test]
async fn the_first_replica_creates_the_secret() {
    let script = Script::new(vec![
        (Method::GET, named(), 404, status(404, "NotFound")),
        (
            Method::POST,
            PATH.into(),
            201,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET_NAME}}),
        ),
    ]);
    let m = ensure(script.client(), Policy::Repair, SystemTime::now())
        .await
        .unwrap();
    script.done();
    let writes = script.writes.lock().unwrap();
    let (_, body) = &writes[0];
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "turnpike-operator"
    );
    let stored: Secret = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(material_of(&stored), m, "what is stored is what is served");
    assert_eq!(
        m.assess(&names(), SystemTime::now()),
        certs::Assessment::Keep
    );
}

#[tokio::test]
async fn losing_the_create_race_reads_the_winner() {
    let now = SystemTime::now();
    let winner = certs::generate(&names(), None, now).unwrap();
    let script = Script::new(vec![
        (Method::GET, named(), 404, status(404, "NotFound")),
        (Method::POST, PATH.into(), 409, status(409, "AlreadyExists")),
        (Method::GET, named(), 200, secret_json(&winner, "5")),
    ]);
    let m = ensure(script.client(), Policy::Repair, now).await.unwrap();
    script.done();
    assert_eq!(m, winner);
}

#[tokio::test]
async fn only_the_renew_policy_renews_ahead_of_expiry() {
    let t0 = SystemTime::now();
    let stored = certs::generate(&names(), None, t0).unwrap();
    let later = t0 + 70 * DAY; // 20 days left: due for renewal, still usable

    // A replica (Repair) serves what is there.
    let script = Script::new(vec![(Method::GET, named(), 200, secret_json(&stored, "7"))]);
    assert_eq!(
        ensure(script.client(), Policy::Repair, later)
            .await
            .unwrap(),
        stored
    );
    script.done();

    // The leader (Renew) writes a new serving certificate from the same CA, guarded by
    // the resourceVersion it read.
    let script = Script::new(vec![
        (Method::GET, named(), 200, secret_json(&stored, "7")),
        (Method::PUT, named(), 200, secret_json(&stored, "8")),
    ]);
    let renewed = ensure(script.client(), Policy::Renew, later).await.unwrap();
    script.done();
    assert_eq!(renewed.ca_cert, stored.ca_cert);
    assert_ne!(renewed.cert, stored.cert);
    assert_eq!(renewed.assess(&names(), later), certs::Assessment::Keep);
    let writes = script.writes.lock().unwrap();
    assert_eq!(writes[0].1["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn losing_the_renewal_race_reads_the_winner() {
    let t0 = SystemTime::now();
    let stored = certs::generate(&names(), None, t0).unwrap();
    let later = t0 + 70 * DAY;
    let theirs = stored
        .renewed(
            &certs::Assessment::RenewServing("test".into()),
            &names(),
            later,
        )
        .unwrap()
        .unwrap();
    let script = Script::new(vec![
        (Method::GET, named(), 200, secret_json(&stored, "7")),
        (Method::PUT, named(), 409, status(409, "Conflict")),
        (Method::GET, named(), 200, secret_json(&theirs, "8")),
    ]);
    let m = ensure(script.client(), Policy::Renew, later).await.unwrap();
    script.done();
    assert_eq!(m, theirs, "the other writer's certificate, not a third one");
}

#[tokio::test]
async fn unusable_material_is_repaired_by_any_replica() {
    let now = SystemTime::now();
    let mut garbage = secret_json(&certs::generate(&names(), None, now).unwrap(), "3");
    garbage["data"]["tls.key"] = json!(data_encoding::BASE64.encode(b"not a key"));
    let script = Script::new(vec![
        (Method::GET, named(), 200, garbage.clone()),
        (Method::PUT, named(), 200, garbage),
    ]);
    let m = ensure(script.client(), Policy::Repair, now).await.unwrap();
    script.done();
    assert!(secret::usable(&m, now));
}

#[tokio::test]
async fn api_errors_say_what_was_being_done() {
    let script = Script::new(vec![(Method::GET, named(), 403, status(403, "Forbidden"))]);
    let err = ensure(script.client(), Policy::Repair, SystemTime::now())
        .await
        .unwrap_err();
    script.done();
    let text = err.to_string();
    assert!(
        text.starts_with("reading Secret turnpike-webhook-certs: "),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"));
}
