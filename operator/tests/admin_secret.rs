//! The sidecars' admin-token Secret (`turnpike.admin`) against an in-process fake API
//! server (a tower-test mock behind a real `kube::Client`, as in `reconcile_fake.rs`):
//! created once where a bundle exists, never rewritten, an existing one left alone
//! and never read beyond its metadata, and its token in no log, Event or error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Client,
    client::Body,
    runtime::events::{Recorder, Reporter},
};
use serde_json::{Value, json};
use turnpike_operator::{
    admin_secret::{self, Outcome, TOKEN_CHARS},
    reconcile::{Context, NoObserver},
};

const NS: &str = "shop";
const SECRETS: &str = "/api/v1/namespaces/shop/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/shop/configmaps";
const ADMIN_PATH: &str = "/api/v1/namespaces/shop/secrets/turnpike.admin";

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    accept: String,
    body: String,
}

#[derive(Default)]
struct State {
    /// (collection path, name) -> object
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<Seen>,
    /// (method, path) -> status code to fail with
    failures: BTreeMap<(Method, String), u16>,
    next_uid: u64,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn selector_matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &obj["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k] == v,
            None => !labels[term].is_null(),
        }
    })
}

fn label_selector(query: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "labelSelector")
        .map(|(_, v)| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        })
        .unwrap_or_default()
}

impl Fake {
    fn put(&self, collection: &str, mut obj: Value) {
        let mut s = self.0.lock().unwrap();
        s.next_uid += 1;
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
        obj["metadata"]["namespace"] = json!(NS);
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        s.objects.insert((collection.to_string(), name), obj);
    }

    fn object(&self, collection: &str, name: &str) -> Option<Value> {
        let s = self.0.lock().unwrap();
        s.objects
            .get(&(collection.to_string(), name.to_string()))
            .cloned()
    }

    fn fail(&self, method: Method, path: &str, code: u16) {
        let mut s = self.0.lock().unwrap();
        s.failures.insert((method, path.to_string()), code);
    }

    fn requests(&self) -> Vec<Seen> {
        self.0.lock().unwrap().requests.clone()
    }

    fn clear_requests(&self) {
        self.0.lock().unwrap().requests.clear();
    }

    fn handle(&self, seen: Seen, query: &str) -> (u16, Value) {
        let mut s = self.0.lock().unwrap();
        s.requests.push(seen.clone());
        let Seen {
            method, path, body, ..
        } = seen;
        if let Some(code) = s.failures.get(&(method.clone(), path.clone())) {
            return status(*code, "InternalError", "injected failure");
        }
        if path.ends_with("/events") && method == Method::POST {
            return (201, serde_json::from_str(&body).unwrap_or(json!({})));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let ns_at = parts.iter().position(|p| *p == "namespaces").unwrap();
        let collection = parts[..ns_at + 3].join("/");
        let name = parts.get(ns_at + 3).map(|s| s.to_string());
        let is_status = parts.get(ns_at + 4) == Some(&"status");
        match (method, name) {
            (Method::GET, None) => {
                let sel = label_selector(query);
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((c, _), o)| *c == collection && selector_matches(o, &sel))
                    .map(|(_, o)| o.clone())
                    .collect();
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (Method::GET, Some(n)) => match s.objects.get(&(collection, n.clone())) {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", &format!("{n} not found")),
            },
            (Method::POST, None) => {
                let mut obj: Value = serde_json::from_str(&body).unwrap();
                let n = obj["metadata"]["name"].as_str().unwrap().to_string();
                if s.objects.contains_key(&(collection.clone(), n.clone())) {
                    return status(409, "AlreadyExists", &format!("{n} already exists"));
                }
                s.next_uid += 1;
                obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
                s.objects.insert((collection, n), obj.clone());
                (201, obj)
            }
            (Method::PATCH, Some(n)) if is_status => {
                let patch: Value = serde_json::from_str(&body).unwrap();
                match s.objects.get_mut(&(collection, n.clone())) {
                    Some(o) => {
                        o["status"] = patch["status"].clone();
                        (200, o.clone())
                    }
                    None => status(404, "NotFound", &format!("{n} not found")),
                }
            }
            (Method::PATCH, Some(n)) => {
                // Server-side apply: the fake stores the applied object as it is.
                let mut obj: Value = serde_json::from_str(&body).unwrap();
                s.next_uid += 1;
                obj["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
                s.objects.insert((collection, n), obj.clone());
                (200, obj)
            }
            (Method::DELETE, Some(n)) => match s.objects.remove(&(collection, n.clone())) {
                Some(o) => (200, o),
                None => status(404, "NotFound", &format!("{n} not found")),
            },
            (m, _) => status(405, "MethodNotAllowed", &format!("{m} not supported")),
        }
    }

    fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let accept = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = req.into_body().collect_bytes().await.unwrap_or_default();
                let seen = Seen {
                    method,
                    path,
                    accept,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let (code, value) = fake.handle(seen, &query);
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        Client::new(service, NS)
    }

    /// The token in the fake's `turnpike.admin`.
    fn admin_token(&self) -> String {
        let secret = self.object(SECRETS, "turnpike.admin").expect("no Secret");
        let b64 = secret["data"]["token"].as_str().expect("no token key");
        String::from_utf8(data_encoding::BASE64.decode(b64.as_bytes()).unwrap()).unwrap()
    }
}

/// Everything the operator logs, from every test of this binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(Arc::clone(&writer)))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn bundle_config_map(fake: &Fake) {
    fake.put(
        CONFIGMAPS,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "turnpike-orders", "labels": {
                "app.kubernetes.io/managed-by": "turnpike-operator",
                "turnpike.dev/target": "orders",
            }},
            "data": {"policy.json": "{}"},
        }),
    );
}

/// A namespace with a key and a policy for target `orders`: the reconciler writes
/// its bundle.
fn world() -> Fake {
    let fake = Fake::default();
    fake.put(
        "/apis/turnpike.dev/v1alpha1/namespaces/shop/apikeys",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "gen"},
            "spec": {"targets": ["orders"], "scopes": ["orders:read"]}
        }),
    );
    fake.put(
        "/apis/turnpike.dev/v1alpha1/namespaces/shop/accesspolicies",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "orders"},
            "spec": {"targetRef": {"name": "orders"}, "credentials": ["ApiKeyHeader"]}
        }),
    );
    fake
}

fn ctx(client: Client) -> Arc<Context> {
    let reporter = Reporter {
        controller: "turnpike-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(Context::new(
        client.clone(),
        Recorder::new(client, reporter),
        Arc::new(NoObserver),
    ))
}

fn namespace() -> Arc<Namespace> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.into());
    Arc::new(ns)
}

fn writes_to_admin_secret(fake: &Fake) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r.method != Method::GET
                && (r.path == ADMIN_PATH
                    || (r.path == SECRETS && r.body.contains("\"turnpike.admin\"")))
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Every GET of the Secret asked for metadata only: the operator never reads the token
/// back.
fn assert_only_metadata_read(fake: &Fake) {
    for r in fake.requests() {
        if r.method == Method::GET && r.path == ADMIN_PATH {
            assert!(
                r.accept.contains("as=PartialObjectMetadata"),
                "a full read of the Secret: {r:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_first_reconcile_creates_it_once_and_the_second_leaves_it() {
    logs();
    let fake = world();
    let ctx = ctx(fake.client());
    admin_secret::reconcile(namespace(), Arc::clone(&ctx))
        .await
        .unwrap();
    assert_eq!(writes_to_admin_secret(&fake), [format!("POST {SECRETS}")]);
    let token = fake.admin_token();
    assert_eq!(token.len(), TOKEN_CHARS);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    let secret = fake.object(SECRETS, "turnpike.admin").unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "turnpike-operator"
    );
    assert_eq!(
        secret["metadata"]["labels"]["turnpike.dev/admin-token"],
        "true"
    );
    assert_eq!(secret["type"], "Opaque");
    assert!(
        secret["metadata"]["ownerReferences"].is_null(),
        "it outlives the resources"
    );

    // A second pass (the Secret's own watch event triggers one): nothing written.
    fake.clear_requests();
    admin_secret::reconcile(namespace(), ctx).await.unwrap();
    assert!(writes_to_admin_secret(&fake).is_empty());
    assert_eq!(fake.admin_token(), token);
    assert_only_metadata_read(&fake);

    // The token went only into the create request: no Event, no log line holds it.
    for r in fake.requests() {
        assert!(!r.body.contains(&token), "{r:?}");
    }
    assert!(log_text().contains("created the sidecars' admin-token Secret"));
    assert!(!log_text().contains(&token));
}

#[tokio::test]
async fn an_existing_secret_is_left_alone_whoever_made_it() {
    logs();
    let fake = Fake::default();
    bundle_config_map(&fake);
    fake.put(
        SECRETS,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "turnpike.admin"},
            "data": {"token": data_encoding::BASE64.encode(b"made-by-a-person")},
        }),
    );
    let client = fake.client();
    for _ in 0..2 {
        assert_eq!(
            admin_secret::ensure(&client, NS).await.unwrap(),
            Outcome::Exists
        );
    }
    assert!(writes_to_admin_secret(&fake).is_empty());
    assert_eq!(fake.admin_token(), "made-by-a-person");
    assert_only_metadata_read(&fake);
    assert!(!log_text().contains("made-by-a-person"));
}

#[tokio::test]
async fn a_namespace_without_a_bundle_gets_nothing() {
    logs();
    let fake = Fake::default();
    let client = fake.client();
    assert_eq!(
        admin_secret::ensure(&client, NS).await.unwrap(),
        Outcome::NotNeeded
    );
    assert!(fake.object(SECRETS, "turnpike.admin").is_none());
    assert!(fake.requests().iter().all(|r| r.method == Method::GET));
}

#[tokio::test]
async fn a_failed_create_is_an_error_without_the_token_and_a_lost_race_is_fine() {
    logs();
    let fake = Fake::default();
    bundle_config_map(&fake);
    fake.fail(Method::POST, SECRETS, 500);
    let client = fake.client();
    let err = admin_secret::ensure(&client, NS).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("creating Secret shop/turnpike.admin"),
        "{text}"
    );
    let sent: Value = fake
        .requests()
        .iter()
        .rev()
        .find(|r| r.method == Method::POST)
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .unwrap();
    let token = String::from_utf8(
        data_encoding::BASE64
            .decode(sent["data"]["token"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(token.len(), TOKEN_CHARS);
    assert!(!text.contains(&token));
    assert!(!log_text().contains(&token));

    // Another writer created it between our read and our create: theirs stands.
    let fake = Fake::default();
    bundle_config_map(&fake);
    fake.fail(Method::GET, ADMIN_PATH, 404);
    fake.put(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "turnpike.admin"},
               "data": {"token": data_encoding::BASE64.encode(b"theirs")}}),
    );
    let client = fake.client();
    assert_eq!(
        admin_secret::ensure(&client, NS).await.unwrap(),
        Outcome::Exists
    );
    assert_eq!(fake.admin_token(), "theirs");
}

#[tokio::test]
async fn a_failing_admin_step_fails_the_reconcile_so_it_is_retried() {
    logs();
    let fake = world();
    fake.fail(Method::POST, SECRETS, 500);
    let ctx = ctx(fake.client());
    let err = admin_secret::reconcile(namespace(), Arc::clone(&ctx))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("turnpike.admin"), "{err}");
    // The bundle was still written: the admin step never blocks enforcement.
    assert!(fake.object(SECRETS, "turnpike-orders").is_some());
}
