//! The sidecars' Role and RoleBinding, reconciled against the in-process fake API
//! server: written with the namespace's bundle objects by name, rewritten when the
//! targets change, repaired after drift, left alone when current, removed after the
//! last bundle or when sidecars get no token, and never someone else's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Method;
use serde_json::{Value, json};
use turnpike_api::bundle::MAX_KEY_SHARDS;
use turnpike_operator::{reconcile::reconcile, sidecar_rbac::Mode};

mod fake_api;
use fake_api::{Fake, NS, ctx, namespace};

const RBAC: &str = "rbac.authorization.k8s.io/v1";

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

fn role(fake: &Fake) -> Option<Value> {
    fake.object(RBAC, "roles", "turnpike-sidecar")
}

fn binding(fake: &Fake) -> Option<Value> {
    fake.object(RBAC, "rolebindings", "turnpike-sidecar")
}

fn names(role: &Value, rule: usize) -> Vec<String> {
    role["rules"][rule]["resourceNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

fn rbac_writes(fake: &Fake) -> Vec<String> {
    fake.take_writes()
        .into_iter()
        .filter(|w| w.contains("roles/") || w.contains("rolebindings/"))
        .collect()
}

#[tokio::test]
async fn the_role_follows_the_targets_and_is_written_only_when_it_differs() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    let ctx = ctx(fake.client());
    reconcile(namespace(), ctx.clone()).await.unwrap();
    let r = role(&fake).expect("Role written");
    let secrets = names(&r, 0);
    assert_eq!(secrets.len(), MAX_KEY_SHARDS);
    assert_eq!(secrets[0], "turnpike-orders");
    assert!(
        secrets[1..]
            .iter()
            .enumerate()
            .all(|(i, s)| *s == format!("turnpike-orders.keys-{}", i + 1))
    );
    assert_eq!(r["rules"][0]["resources"], json!(["secrets"]));
    assert_eq!(r["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    assert_eq!(names(&r, 1), ["turnpike-orders"]);
    assert_eq!(r["rules"][1]["resources"], json!(["configmaps"]));
    assert_eq!(r["rules"][2]["apiGroups"], json!(["events.k8s.io"]));
    assert_eq!(r["rules"][2]["verbs"], json!(["create", "patch"]));
    assert_eq!(r["rules"].as_array().unwrap().len(), 3);
    assert_eq!(r["metadata"]["labels"]["turnpike.dev/sidecar-rbac"], "true");
    let b = binding(&fake).expect("RoleBinding written");
    assert_eq!(
        b["subjects"],
        json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": format!("system:serviceaccounts:{NS}")}])
    );
    assert_eq!(
        b["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "turnpike-sidecar"})
    );
    // Server-side apply as the operator's field manager.
    let requests = fake.requests();
    let apply = requests
        .iter()
        .find(|r| r.method == Method::PATCH && r.path.ends_with("/roles/turnpike-sidecar"))
        .unwrap();
    assert!(
        apply.query.contains("fieldManager=turnpike-operator"),
        "{}",
        apply.query
    );
    fake.take_writes();

    // Nothing changed: read, not written.
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert_eq!(rbac_writes(&fake), Vec::<String>::new());

    // A second target: the Role grows, the binding stays.
    put_policy(&fake, "catalog");
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert_eq!(rbac_writes(&fake), ["PATCH roles/turnpike-sidecar"]);
    let r = role(&fake).unwrap();
    assert_eq!(names(&r, 1), ["turnpike-catalog", "turnpike-orders"]);
    assert_eq!(names(&r, 0).len(), 2 * MAX_KEY_SHARDS);

    // Drift: a hand edit that widens the Role is put back.
    {
        let mut s = fake.0.lock().unwrap();
        let key = (
            format!("/apis/{RBAC}/namespaces/{NS}/roles"),
            "turnpike-sidecar".to_owned(),
        );
        let r = s.objects.get_mut(&key).unwrap();
        r["rules"][0]["resourceNames"] = Value::Null;
    }
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert_eq!(rbac_writes(&fake), ["PATCH roles/turnpike-sidecar"]);
    assert_eq!(names(&role(&fake).unwrap(), 0).len(), 2 * MAX_KEY_SHARDS);

    // One target gone: the Role shrinks.
    fake.0
        .lock()
        .unwrap()
        .objects
        .retain(|(c, n), _| !(c.ends_with("/accesspolicies") && n == "catalog"));
    reconcile(namespace(), ctx.clone()).await.unwrap();
    assert_eq!(names(&role(&fake).unwrap(), 1), ["turnpike-orders"]);
}

#[tokio::test]
async fn without_api_tokens_for_sidecars_there_is_no_role_and_an_old_one_goes() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    reconcile(namespace(), ctx(fake.client())).await.unwrap();
    assert!(role(&fake).is_some() && binding(&fake).is_some());
    fake.take_writes();

    let files_only = std::sync::Arc::new(
        std::sync::Arc::try_unwrap(ctx(fake.client()))
            .ok()
            .unwrap()
            .with_sidecar_rbac(Mode::Off),
    );
    reconcile(namespace(), files_only.clone()).await.unwrap();
    assert!(role(&fake).is_none() && binding(&fake).is_none());
    assert!(
        fake.object("v1", "configmaps", "turnpike-orders").is_some(),
        "the bundle stays"
    );
    assert_eq!(
        rbac_writes(&fake),
        [
            "DELETE rolebindings/turnpike-sidecar",
            "DELETE roles/turnpike-sidecar"
        ]
    );
    reconcile(namespace(), files_only).await.unwrap();
    assert_eq!(rbac_writes(&fake), Vec::<String>::new());
}

#[tokio::test]
async fn someone_elses_role_of_that_name_is_never_deleted() {
    let fake = Fake::default();
    let theirs = json!({
        "apiVersion": RBAC, "kind": "Role",
        "metadata": {"name": "turnpike-sidecar", "labels": {"team": "platform"}},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    });
    fake.put(RBAC, "roles", theirs.clone());
    // No bundle in the namespace: nothing of ours to remove.
    reconcile(namespace(), ctx(fake.client())).await.unwrap();
    assert_eq!(rbac_writes(&fake), Vec::<String>::new());
    assert_eq!(role(&fake).unwrap()["rules"], theirs["rules"]);
}

#[tokio::test]
async fn a_failed_role_write_blocks_no_bundle_and_fails_the_reconcile() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    fake.fail(
        Method::PATCH,
        &format!("/apis/{RBAC}/namespaces/{NS}/roles/turnpike-sidecar"),
        500,
    );
    let ctx = ctx(fake.client());
    let err = reconcile(namespace(), ctx.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("writing Role shop/turnpike-sidecar"),
        "{err}"
    );
    assert!(fake.object("v1", "configmaps", "turnpike-orders").is_some());
    assert!(fake.object("v1", "secrets", "turnpike-orders").is_some());
    fake.clear_failures();
    reconcile(namespace(), ctx).await.unwrap();
    assert!(role(&fake).is_some() && binding(&fake).is_some());
}

#[tokio::test]
async fn with_role_only_the_role_is_kept_current_and_our_binding_goes() {
    let fake = Fake::default();
    put_policy(&fake, "orders");
    reconcile(namespace(), ctx(fake.client())).await.unwrap();
    assert!(binding(&fake).is_some());
    fake.take_writes();

    let role_only = std::sync::Arc::new(
        std::sync::Arc::try_unwrap(ctx(fake.client()))
            .ok()
            .unwrap()
            .with_sidecar_rbac(Mode::RoleOnly),
    );
    reconcile(namespace(), role_only.clone()).await.unwrap();
    assert_eq!(rbac_writes(&fake), ["DELETE rolebindings/turnpike-sidecar"]);
    assert!(binding(&fake).is_none());
    // The platform team's own binding (another name) is theirs; the Role follows the
    // targets as before.
    fake.put(
        RBAC,
        "rolebindings",
        json!({
            "apiVersion": RBAC, "kind": "RoleBinding",
            "metadata": {"name": "orders-sidecar"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "turnpike-sidecar"},
            "subjects": [{"kind": "ServiceAccount", "name": "orders", "namespace": NS}]
        }),
    );
    put_policy(&fake, "catalog");
    reconcile(namespace(), role_only.clone()).await.unwrap();
    assert_eq!(rbac_writes(&fake), ["PATCH roles/turnpike-sidecar"]);
    assert_eq!(
        names(&role(&fake).unwrap(), 1),
        ["turnpike-catalog", "turnpike-orders"]
    );
    assert!(
        fake.object(RBAC, "rolebindings", "orders-sidecar")
            .is_some()
    );
    reconcile(namespace(), role_only).await.unwrap();
    assert_eq!(rbac_writes(&fake), Vec::<String>::new());
}
