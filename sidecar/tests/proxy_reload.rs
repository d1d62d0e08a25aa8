//! Component tests of the real binary: hot reload of a bundle directory (a broken
//! bundle never replaces the good one) and local mode (`--manifests`).
#![allow(clippy::unwrap_used)]

mod proxy_common;

use proxy_common::*;
use turnpike_api::bundle::{KEYS_FILE, POLICY_FILE};

#[tokio::test(flavor = "multi_thread")]
async fn bundle_dir_hot_reload_keeps_the_last_good_bundle() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup {
        with_reader: false,
        ..Setup::default()
    });
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.billing.text())
            .await
            .status,
        200
    );
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        401
    );

    // A new bundle with the reader key: picked up without a restart.
    write_bundle(dir.path(), &Setup::default());
    status_eventually(
        &sidecar,
        c.reader.text(),
        200,
        "the new bundle was not loaded",
    )
    .await;
    sidecar
        .wait_for_output(&["\"event\":\"policy_reloaded\""])
        .await;

    // A broken keys file: refused, counted, and the last good bundle stays.
    let before = metric(
        &sidecar.metrics().await,
        "turnpike_sidecar_bundle_reload_failures_total",
    );
    write_atomic(&dir.path().join(KEYS_FILE), "{\"format\": 1, \"keys\": ");
    sidecar.wait_for_output(&["bundle refused"]).await;
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "turnpike_sidecar_bundle_reload_failures_total"),
        before + 1.0
    );
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_loaded"), 1.0);
    for token in [c.billing.text(), c.reader.text()] {
        assert_eq!(get_with_key(&sidecar, "/orders/1", token).await.status, 200);
    }
    let ready = sidecar.wait_ready(200).await;
    assert!(ready.contains("last reload failed"), "{ready}");
    sidecar
        .wait_for_output(&["\"event\":\"policy_rejected\"", "\"result\":\"rejected\""])
        .await;

    // A policy for another target next to these keys: refused too.
    let (keys, policy) = compile_bundle(&manifests(&Setup::default()));
    write_atomic(&dir.path().join(KEYS_FILE), &keys);
    write_atomic(
        &dir.path().join(POLICY_FILE),
        &policy.replace("\"target\":\"orders\"", "\"target\":\"other\""),
    );
    eventually(|| sidecar.output().matches("bundle refused").count() >= 2).await;
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_mode_compiles_manifests_and_reloads() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("turnpike.yaml");
    write_atomic(&file, &manifests(&Setup::default()));
    // A document of another namespace is ignored; other kinds are skipped.
    write_atomic(
        &dir.path().join("other.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: CorsPolicy\nmetadata: {name: elsewhere, namespace: other}\nspec: {allowOrigins: ['*']}\n",
    );
    let sidecar = Sidecar::start(&[
        "--manifests",
        dir.path().to_str().unwrap(),
        "--target",
        "orders",
        "--namespace",
        "shop",
        "--upstream",
        &upstream.url(),
    ]);
    sidecar.wait_ready(200).await;
    let c = creds();
    let r = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("x-turnpike-key-id"), [c.billing.id()]);

    // Revoke billing in the manifest: the sidecar follows.
    let revoked = manifests(&Setup {
        billing_extra: "  revoked: true\n".into(),
        ..Setup::default()
    });
    write_atomic(&file, &revoked);
    status_eventually(
        &sidecar,
        c.billing.text(),
        401,
        "the revoked key was still accepted",
    )
    .await;
    sidecar
        .wait_for_output(&["\"event\":\"revoked_key_used\""])
        .await;

    // An invalid resource is reported by the compiler and ignored.
    write_atomic(
        &dir.path().join("bad.yaml"),
        "apiVersion: turnpike.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: broken, namespace: shop}\nspec:\n  perKey: {rate: 0, per: 1s, burst: 1}\n",
    );
    sidecar
        .wait_for_output(&["resource invalid and ignored", "broken"])
        .await;
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        200
    );
}

/// DESIGN.md's local-mode command, on the repository's `examples/` as they are: the
/// namespace comes from the manifests.
#[tokio::test(flavor = "multi_thread")]
async fn design_local_mode_command_runs_the_examples() {
    let upstream = start_upstream().await;
    let examples = crate_path("../examples");
    let sidecar = Sidecar::start(&[
        "--manifests",
        examples.to_str().unwrap(),
        "--target",
        "orders",
        "--upstream",
        &upstream.url(),
    ]);
    let ready = sidecar.wait_ready(200).await;
    assert!(ready.contains("ready: shop/orders"), "{ready}");
    assert_eq!(
        send(&sidecar.url("/healthz"), "GET", &[], "").await.status,
        200
    );
    let r = send(&sidecar.url("/orders/1"), "GET", &[], "").await;
    assert_eq!(r.status, 401);
    let m = sidecar.metrics().await;
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_keys"), 1.0);
}
