//! The reconciler against an in-process fake API server (a tower-test mock service
//! behind a real `kube::Client`): exactly which objects a key issuance writes, that a
//! second pass writes nothing, that one failing write blocks nothing else, and the
//! retry backoff. The fake lives here, in the tests, never in the product.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::Method;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use turnpike_api::{
    bundle::{self, KeyBundle},
    hash::{PhcHash, verify},
    shard,
};
use turnpike_operator::reconcile::{Context, NoObserver, backoff, error_policy, reconcile};

mod fake_api;
use fake_api::{Fake, NS, ctx, namespace};

fn world() -> Fake {
    let fake = Fake::default();
    fake.put(
        "turnpike.dev/v1alpha1",
        "apikeys",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "gen"},
            "spec": {"targets": ["orders"], "scopes": ["orders:read"]}
        }),
    );
    fake.put(
        "turnpike.dev/v1alpha1",
        "accesspolicies",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "orders"},
            "spec": {"targetRef": {"name": "orders"}, "credentials": ["ApiKeyHeader"]}
        }),
    );
    fake
}

fn b64(v: &Value) -> String {
    String::from_utf8(
        data_encoding::BASE64
            .decode(v.as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn issuing_a_key_writes_exactly_the_expected_objects_and_a_second_pass_nothing() {
    let fake = world();
    let ctx = ctx(fake.client());
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert!(!fake.events().is_empty(), "KeyIssued Event published");
    let mut writes = fake.take_writes();
    writes.sort();
    assert_eq!(
        writes,
        [
            "PATCH accesspolicies/orders/status",
            "PATCH apikeys/gen/status",
            "PATCH configmaps/turnpike-orders",
            "PATCH rolebindings/turnpike-sidecar",
            "PATCH roles/turnpike-sidecar",
            "PATCH secrets/gen-token",
            "PATCH secrets/turnpike-key-gen",
            "PATCH secrets/turnpike-orders",
        ]
    );

    // The delivered token verifies against the recorded hash, which is in the bundle.
    let token_secret = fake.object("v1", "secrets", "gen-token").unwrap();
    let token = token_secret["stringData"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let material = fake.object("v1", "secrets", "turnpike-key-gen").unwrap();
    let hash = PhcHash::parse(&b64(&material["data"]["hash"])).unwrap();
    assert!(verify(&hash, &token));
    let keys_json =
        b64(&fake.object("v1", "secrets", "turnpike-orders").unwrap()["data"]["keys.json"]);
    assert!(keys_json.contains(hash.as_str()));
    assert!(
        !material.to_string().contains(&token),
        "the durable record never holds the token"
    );
    let owners = &material["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owners["kind"].as_str(), owners["name"].as_str()),
        (Some("ApiKey"), Some("gen"))
    );
    let status = &fake
        .object("turnpike.dev/v1alpha1", "apikeys", "gen")
        .unwrap()["status"];
    assert_eq!(status["phase"], "Active");

    // Idempotence, counted in writes.
    reconcile(namespace(), ctx).await.unwrap();
    assert_eq!(fake.take_writes(), Vec::<String>::new());
}

#[tokio::test]
async fn one_failing_write_blocks_nothing_else_and_retries_back_off() {
    let fake = world();
    fake.fail(
        Method::PATCH,
        &format!("/api/v1/namespaces/{NS}/configmaps/turnpike-orders"),
        500,
    );
    let ctx = ctx(fake.client());
    let err = reconcile(namespace(), ctx.clone()).await.unwrap_err();
    assert!(err.to_string().contains("turnpike-orders"), "{err}");
    let writes = fake.take_writes();
    assert!(
        writes.contains(&"PATCH apikeys/gen/status".to_string()),
        "{writes:?}"
    );
    assert!(
        writes.contains(&"PATCH accesspolicies/orders/status".to_string()),
        "{writes:?}"
    );

    let first = error_policy(namespace(), &err, ctx.clone());
    let second = error_policy(namespace(), &err, ctx.clone());
    assert_eq!(
        first,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        second,
        kube::runtime::controller::Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(backoff(20), Duration::from_secs(300));

    fake.clear_failures();
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let after = error_policy(namespace(), &err, ctx);
    assert_eq!(
        after,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5)),
        "a success resets the backoff"
    );
}

#[tokio::test]
async fn a_resource_deleted_during_the_reconcile_is_not_an_error() {
    let fake = world();
    fake.fail(
        Method::PATCH,
        &format!("/apis/turnpike.dev/v1alpha1/namespaces/{NS}/accesspolicies/orders/status"),
        404,
    );
    let ctx = ctx(fake.client());
    reconcile(namespace(), ctx).await.unwrap();
}

// ---- key shards ----------------------------------------------------------------------

/// Small enough that a few dozen keys need several Secrets (the operator uses 900 KiB).
const BUDGET: usize = 4 * 1024;
const HASH_A: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
const CROCKFORD: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn nth_id(i: usize) -> String {
    let mut s = String::from("k");
    let mut n = i;
    for _ in 0..11 {
        s.push(CROCKFORD[n % 32] as char);
        n /= 32;
    }
    s
}

/// ApiKeys `<target>-key-<i>` with keyId and hash given (GitOps: nothing to mint).
fn put_keys(fake: &Fake, target: &str, range: std::ops::Range<usize>) {
    for i in range {
        fake.put(
            "turnpike.dev/v1alpha1",
            "apikeys",
            json!({
                "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": format!("{target}-key-{i:03}")},
                "spec": {"targets": [target], "scopes": ["orders:read"], "keyId": nth_id(i), "hash": HASH_A}
            }),
        );
    }
}

fn put_policy(fake: &Fake, target: &str) {
    fake.put(
        "turnpike.dev/v1alpha1",
        "accesspolicies",
        json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": target},
            "spec": {"targetRef": {"name": target}, "credentials": ["ApiKeyHeader"]}
        }),
    );
}

fn sharded_ctx(fake: &Fake) -> Arc<Context> {
    let client = fake.client();
    let reporter = Reporter {
        controller: "turnpike-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(
        Context::new(
            client.clone(),
            Recorder::new(client, reporter),
            Arc::new(NoObserver),
        )
        .with_shard_budget(BUDGET),
    )
}

/// The bundle Secrets written for `target` (not key material), in write order.
fn bundle_writes(writes: &[String], target: &str) -> Vec<String> {
    writes
        .iter()
        .filter(|w| w.contains(&format!("secrets/turnpike-{target}")))
        .cloned()
        .collect()
}

/// Reads the keys of `target` back as a sidecar would from the projected Secrets.
fn read_back(fake: &Fake, target: &str) -> KeyBundle {
    let name = bundle::object_name(target);
    let primary = b64(&fake.object("v1", "secrets", &name).unwrap()["data"]["keys.json"]);
    let primary: KeyBundle = bundle::parse(&primary).unwrap();
    let mut files = BTreeMap::new();
    for n in 1..bundle::MAX_KEY_SHARDS {
        if let Some(s) = fake.object("v1", "secrets", &bundle::shard_object_name(target, n)) {
            let file = bundle::shard_file(n);
            files.insert(file.clone(), b64(&s["data"][file.as_str()]));
        }
    }
    shard::merge(primary, &files).unwrap()
}

#[tokio::test]
async fn a_target_over_one_secret_gets_shards_written_first_and_deleted_last() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    put_keys(&fake, "orders", 0..30);
    let ctx = sharded_ctx(&fake);
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let writes = bundle_writes(&fake.take_writes(), "orders");
    assert_eq!(
        writes,
        [
            "PATCH secrets/turnpike-orders.keys-1",
            "PATCH secrets/turnpike-orders.keys-2",
            "PATCH secrets/turnpike-orders",
        ],
        "shards before the primary that lists them"
    );
    assert_eq!(read_back(&fake, "orders").keys.len(), 30);

    // Shards look like the primary: labels, owners, field manager.
    let primary = fake.object("v1", "secrets", "turnpike-orders").unwrap();
    for n in [1, 2] {
        let name = bundle::shard_object_name("orders", n);
        let shard = fake.object("v1", "secrets", &name).unwrap();
        assert_eq!(shard["metadata"]["labels"], primary["metadata"]["labels"]);
        assert_eq!(
            shard["metadata"]["ownerReferences"],
            primary["metadata"]["ownerReferences"]
        );
        assert_eq!(shard["type"], "Opaque");
        let query = fake.0.lock().unwrap().patch_queries
            [&format!("/api/v1/namespaces/{NS}/secrets/{name}")]
            .clone();
        assert!(
            query.contains("fieldManager=turnpike-operator") && query.contains("force=true"),
            "{query}"
        );
    }

    // Idempotence, counted in writes.
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert_eq!(fake.take_writes(), Vec::<String>::new());

    // Shrinking: keys-1 changes before the primary, which stops listing keys-2 before
    // keys-2 goes.
    {
        let mut s = fake.0.lock().unwrap();
        s.objects.retain(|(c, name), _| {
            !(c.ends_with("/apikeys")
                && name.starts_with("orders-key-")
                && name.as_str() >= "orders-key-020")
        });
    }
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let writes = bundle_writes(&fake.take_writes(), "orders");
    assert_eq!(
        writes,
        [
            "PATCH secrets/turnpike-orders.keys-1",
            "PATCH secrets/turnpike-orders",
            "DELETE secrets/turnpike-orders.keys-2",
        ]
    );
    assert_eq!(read_back(&fake, "orders").keys.len(), 20);
    assert!(
        fake.object("v1", "secrets", "turnpike-orders.keys-1")
            .is_some()
    );
    reconcile(namespace(), ctx).await.unwrap();
    assert_eq!(fake.take_writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_target_over_the_maximum_is_reported_and_the_others_are_written() {
    let fake = Fake::default();
    put_policy(&fake, "big");
    put_keys(&fake, "big", 0..300);
    put_keys(&fake, "small", 500..501);
    let ctx = sharded_ctx(&fake);
    // Not a failure to retry: the status says what to change.
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let writes = fake.take_writes();
    assert!(bundle_writes(&writes, "big").is_empty(), "{writes:?}");
    assert!(
        writes.contains(&"PATCH secrets/turnpike-small".to_string())
            && writes.contains(&"PATCH configmaps/turnpike-small".to_string()),
        "{writes:?}"
    );
    assert!(fake.object("v1", "configmaps", "turnpike-big").is_none());

    let key = fake
        .object("turnpike.dev/v1alpha1", "apikeys", "big-key-123")
        .unwrap();
    let ready = &key["status"]["conditions"][0];
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("BundleTooLarge"))
    );
    assert!(
        ready["message"].as_str().unwrap().contains("target big"),
        "{ready}"
    );
    let small = fake
        .object("turnpike.dev/v1alpha1", "apikeys", "small-key-500")
        .unwrap();
    assert_eq!(small["status"]["conditions"][0]["reason"], "Active");
    let policy = fake
        .object("turnpike.dev/v1alpha1", "accesspolicies", "big")
        .unwrap();
    let accepted = &policy["status"]["conditions"][0];
    assert_eq!(accepted["reason"], "BundleTooLarge");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("300 keys need"),
        "{accepted}"
    );

    let events: Vec<Value> = fake
        .0
        .lock()
        .unwrap()
        .event_bodies
        .iter()
        .filter(|e| e["reason"] == "BundleTooLarge")
        .cloned()
        .collect();
    let regarding: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["regarding"]["kind"].as_str().unwrap().to_string(),
                e["regarding"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        regarding,
        [
            ("AccessPolicy".to_string(), "big".to_string()),
            ("ApiKey".to_string(), "big-key-000".to_string()),
        ],
        "one Event per target and policy, not one per key"
    );
    assert_eq!(events[0]["type"], "Warning");
    assert!(
        events[1]["note"].as_str().unwrap().contains("300 keys"),
        "{}",
        events[1]
    );

    reconcile(namespace(), ctx).await.unwrap();
    assert_eq!(fake.take_writes(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failed_shard_write_holds_the_primary_back_and_a_vanished_target_takes_its_shards() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    put_keys(&fake, "orders", 0..30);
    fake.fail(
        Method::PATCH,
        &format!("/api/v1/namespaces/{NS}/secrets/turnpike-orders.keys-2"),
        500,
    );
    let ctx = sharded_ctx(&fake);
    let err = reconcile(namespace(), ctx.clone()).await.unwrap_err();
    assert!(err.to_string().contains("turnpike-orders.keys-2"), "{err}");
    assert!(
        fake.object("v1", "secrets", "turnpike-orders").is_none(),
        "no primary listing a shard the API server lacks"
    );
    fake.take_writes();

    fake.clear_failures();
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let writes = bundle_writes(&fake.take_writes(), "orders");
    assert_eq!(
        writes,
        [
            "PATCH secrets/turnpike-orders.keys-2",
            "PATCH secrets/turnpike-orders",
        ],
        "the shard written before is not written again"
    );
    assert_eq!(read_back(&fake, "orders").keys.len(), 30);

    // Target gone: the primary first, then its shards, then (no target left) the
    // sidecars' binding and Role.
    fake.0
        .lock()
        .unwrap()
        .objects
        .retain(|(c, _), _| !c.ends_with("/apikeys") && !c.ends_with("/accesspolicies"));
    reconcile(namespace(), ctx).await.unwrap();
    let writes = fake.take_writes();
    let deletes: Vec<&String> = writes.iter().filter(|w| w.starts_with("DELETE")).collect();
    assert_eq!(
        deletes,
        [
            "DELETE secrets/turnpike-orders",
            "DELETE configmaps/turnpike-orders",
            "DELETE secrets/turnpike-orders.keys-1",
            "DELETE secrets/turnpike-orders.keys-2",
            "DELETE rolebindings/turnpike-sidecar",
            "DELETE roles/turnpike-sidecar",
        ]
    );
}

/// Key material and statuses of independent ApiKeys are written several at a time (a
/// sequential executor never has more than one request outstanding), but never more
/// than the executor's bound of 16, and every one of them lands.
#[tokio::test]
async fn independent_writes_overlap_within_the_bound_and_all_land() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    put_keys(&fake, "orders", 0..40);
    let peak = Arc::new(AtomicUsize::new(0));
    let ctx = ctx(fake.overlapping_client(peak.clone()));
    reconcile(namespace(), ctx).await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (2..=16).contains(&peak),
        "most requests outstanding at once: {peak}"
    );
    let writes = fake.take_writes();
    let statuses = writes
        .iter()
        .filter(|w| w.starts_with("PATCH apikeys/") && w.ends_with("/status"))
        .count();
    assert_eq!(statuses, 40, "{writes:#?}");
    for i in 0..40 {
        let key = fake
            .object(
                "turnpike.dev/v1alpha1",
                "apikeys",
                &format!("orders-key-{i:03}"),
            )
            .unwrap();
        assert_eq!(key["status"]["phase"], "Active", "orders-key-{i:03}");
    }
}
