//! Component tests of the real binary with `--bundle-trust`: only bundles signed by a
//! trusted key, for this sidecar's target, and not older than the one in force, are
//! enforced. The attack they stand for: someone who may write Secrets in the
//! namespace (but not the operator's signing key) edits `turnpike-<target>`.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use proxy_common::*;
use turnpike_api::bundle::{self, KEYS_FILE, KeyBundle, POLICY_FILE, PolicyBundle, Sealed};
use turnpike_api::signing::BundleSigner;

fn signer(seed: u8) -> BundleSigner {
    BundleSigner::from_seeds([[seed; 32].as_slice()]).unwrap()
}

/// The bundle of `setup`, at `generation`, signed by `signer` (as the operator writes it).
fn signed(setup: &Setup, generation: u64, signer: &BundleSigner) -> (KeyBundle, PolicyBundle) {
    let (keys, policy) = compile_bundle(&manifests(setup));
    let mut keys: KeyBundle = bundle::parse(&keys).unwrap();
    let mut policy: PolicyBundle = bundle::parse(&policy).unwrap();
    keys.generation = generation;
    policy.generation = generation;
    keys.seal();
    policy.seal();
    keys.sign(signer);
    policy.sign(signer);
    (keys, policy)
}

fn write(dir: &std::path::Path, keys: &KeyBundle, policy: &PolicyBundle) {
    write_atomic(&dir.join(POLICY_FILE), &policy.to_json());
    write_atomic(&dir.join(KEYS_FILE), &keys.to_json());
}

fn no_reader() -> Setup {
    Setup {
        with_reader: false,
        ..Setup::default()
    }
}

async fn refusals(sidecar: &Sidecar) -> f64 {
    metric(
        &sidecar.metrics().await,
        "turnpike_sidecar_bundle_reload_failures_total",
    )
}

/// Waits for the `n`th refused reload (its audit line) and returns the output.
async fn refused(sidecar: &Sidecar, n: usize) -> String {
    eventually(|| {
        sidecar
            .output()
            .matches("\"event\":\"policy_rejected\"")
            .count()
            >= n
    })
    .await;
    sidecar.output()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_editor_cannot_add_a_key_replay_an_old_bundle_or_move_one_between_targets() {
    let upstream = start_upstream().await;
    let operator = signer(1);
    let trust = operator.public().to_env();
    let dir = tempfile::tempdir().unwrap();
    let (keys1, policy1) = signed(&no_reader(), 10, &operator);
    write(dir.path(), &keys1, &policy1);
    let sidecar = Sidecar::with_bundle(
        dir.path(),
        &upstream,
        &[
            "--bundle-trust",
            &trust,
            "--target",
            "orders",
            "--namespace",
            "shop",
        ],
    );
    let c = creds();
    assert!(sidecar.wait_ready(200).await.contains("shop/orders"));
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

    // 1. The editor adds the reader key's entry (their own key) to the signed keys,
    //    re-computes the content hash (anyone can) and keeps the operator's signature.
    let (with_reader, _) = compile_bundle(&manifests(&Setup::default()));
    let with_reader: KeyBundle = bundle::parse(&with_reader).unwrap();
    let mut forged = keys1.clone();
    let reader_id = with_reader
        .keys
        .keys()
        .find(|id| !keys1.keys.contains_key(*id))
        .unwrap()
        .clone();
    forged
        .keys
        .insert(reader_id.clone(), with_reader.keys[&reader_id].clone());
    forged.seal();
    assert_eq!(
        forged.signatures, keys1.signatures,
        "the signature is kept as it was"
    );
    let before = refusals(&sidecar).await;
    write_atomic(&dir.path().join(KEYS_FILE), &forged.to_json());
    let out = refused(&sidecar, 1).await;
    assert!(out.contains("no valid signature by a trusted key"), "{out}");
    assert_eq!(refusals(&sidecar).await, before + 1.0);
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        401
    );
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.billing.text())
            .await
            .status,
        200
    );
    let ready = sidecar.wait_ready(200).await;
    assert!(ready.contains("last reload failed"), "{ready}");

    // 2. The same edit, signatures dropped: unsigned is refused too.
    let mut unsigned = forged.clone();
    unsigned.signatures.clear();
    write_atomic(&dir.path().join(KEYS_FILE), &unsigned.to_json());
    let out = refused(&sidecar, 2).await;
    assert!(out.contains("not signed"), "{out}");
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        401
    );

    // 3. Signed by a key of their own.
    let (mine, mine_policy) = signed(&Setup::default(), 11, &signer(66));
    write(dir.path(), &mine, &mine_policy);
    refused(&sidecar, 3).await;
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        401
    );

    // The operator's next bundle (generation 12, with the reader) is taken.
    let (keys12, policy12) = signed(&Setup::default(), 12, &operator);
    write(dir.path(), &keys12, &policy12);
    status_eventually(
        &sidecar,
        c.reader.text(),
        200,
        "the operator's new bundle was not loaded",
    )
    .await;

    // 4. Replaying the older, validly signed bundle (without the reader) is refused.
    write(dir.path(), &keys1, &policy1);
    let out = refused(&sidecar, 4).await;
    assert!(
        out.contains("generation 10 is older than the 12 in force"),
        "{out}"
    );
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        200
    );

    // 5. A validly signed, newer bundle of another target.
    let (mut other_keys, mut other_policy) = signed(&Setup::default(), 13, &operator);
    for t in [&mut other_keys.target, &mut other_policy.target] {
        *t = "payments".into();
    }
    other_keys.seal();
    other_policy.seal();
    other_keys.sign(&operator);
    other_policy.sign(&operator);
    write(dir.path(), &other_keys, &other_policy);
    let out = refused(&sidecar, 5).await;
    assert!(
        out.contains("bundle is for shop/payments, this sidecar enforces shop/orders"),
        "{out}"
    );
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.reader.text())
            .await
            .status,
        200
    );

    // Each refusal is an audit line; none carries a token, a hash or key material.
    let rejected = sidecar
        .audit_lines()
        .into_iter()
        .filter(|l| l["result"] == "rejected")
        .count();
    assert!(rejected >= 5, "{rejected} rejected reload audit lines");
    let out = sidecar.output();
    for secret in [c.billing.text(), c.reader.text(), c.reader.secret()] {
        assert!(!out.contains(secret), "a token reached the output");
    }
    assert!(!out.contains("$argon2id$"), "a hash reached the output");
    assert!(!out.contains(&trust), "the output names key ids, not keys");
    assert!(out.contains(&operator.current_id()), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_bundle_at_start_keeps_the_sidecar_unready_and_refusing() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let trust = signer(1).public().to_env();
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--bundle-trust", &trust]);
    let why = sidecar.wait_ready(503).await;
    assert!(why.contains("not signed"), "{why}");
    let c = creds();
    let r = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // The operator's signed bundle arrives: ready, enforcing.
    let (keys, policy) = signed(&Setup::default(), 1, &signer(1));
    write(dir.path(), &keys, &policy);
    sidecar.wait_ready(200).await;
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.billing.text())
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_overlap_signs_twice_and_both_old_and_new_sidecars_accept() {
    let upstream = start_upstream().await;
    let (old, new) = (signer(1), signer(2));
    let both = BundleSigner::from_seeds([[2u8; 32].as_slice(), [1u8; 32].as_slice()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (keys, policy) = signed(&Setup::default(), 5, &both);
    write(dir.path(), &keys, &policy);
    let c = creds();
    // A sidecar started before the rotation trusts the old key only, one started
    // during the overlap trusts both, one after it the new key only.
    for trust in [
        old.public().to_env(),
        both.public().to_env(),
        new.public().to_env(),
    ] {
        let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--bundle-trust", &trust]);
        sidecar.wait_ready(200).await;
        assert_eq!(
            get_with_key(&sidecar, "/orders/1", c.billing.text())
                .await
                .status,
            200
        );
    }
}
