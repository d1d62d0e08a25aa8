//! The sidecars' admin-token Secret (`turnpike.admin`) against an in-process fake API
//! server (the shared fake of `fake_api/`, a tower-test mock behind a real `kube::Client`):
//! created once where a bundle exists, never rewritten, an existing one left alone
//! and never read beyond its metadata, and its token in no log, Event or error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use http::Method;
use serde_json::{Value, json};
use turnpike_operator::admin_secret::{self, Outcome, TOKEN_CHARS};

const SECRETS: &str = "/api/v1/namespaces/shop/secrets";
const CONFIGMAPS: &str = "/api/v1/namespaces/shop/configmaps";
const ADMIN_PATH: &str = "/api/v1/namespaces/shop/secrets/turnpike.admin";
mod fake_api;
use fake_api::{Fake, NS, ctx, namespace};

/// The token in the fake's `turnpike.admin`.
fn admin_token(fake: &Fake) -> String {
    let secret = fake
        .object_in(SECRETS, "turnpike.admin")
        .expect("no Secret");
    let b64 = secret["data"]["token"].as_str().expect("no token key");
    String::from_utf8(data_encoding::BASE64.decode(b64.as_bytes()).unwrap()).unwrap()
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
    fake.put_in(
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
    fake.put_in(
        "/apis/turnpike.dev/v1alpha1/namespaces/shop/apikeys",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "gen"},
            "spec": {"targets": ["orders"], "scopes": ["orders:read"]}
        }),
    );
    fake.put_in(
        "/apis/turnpike.dev/v1alpha1/namespaces/shop/accesspolicies",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "orders"},
            "spec": {"targetRef": {"name": "orders"}, "credentials": ["ApiKeyHeader"]}
        }),
    );
    fake
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
    let token = admin_token(&fake);
    assert_eq!(token.len(), TOKEN_CHARS);
    assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    let secret = fake.object_in(SECRETS, "turnpike.admin").unwrap();
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
    assert_eq!(admin_token(&fake), token);
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
    fake.put_in(
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
    assert_eq!(admin_token(&fake), "made-by-a-person");
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
    assert!(fake.object_in(SECRETS, "turnpike.admin").is_none());
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
    fake.put_in(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "turnpike.admin"},
               "data": {"token": data_encoding::BASE64.encode(b"theirs")}}),
    );
    let client = fake.client();
    assert_eq!(
        admin_secret::ensure(&client, NS).await.unwrap(),
        Outcome::Exists
    );
    assert_eq!(admin_token(&fake), "theirs");
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
    assert!(fake.object_in(SECRETS, "turnpike-orders").is_some());
}
