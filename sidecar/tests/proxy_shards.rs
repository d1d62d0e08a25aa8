//! Component tests of the real binary on a sharded bundle directory: `keys.json` lists
//! extra key shards `keys-<n>.json` (a target whose keys do not fit in one Secret). A
//! key that lives in shard 2 authenticates; a torn set (`keys.json` newer than a shard)
//! is refused and the last good bundle stays until the set is whole again.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use proxy_common::*;
use turnpike_api::bundle::{self, KEYS_FILE, KeyBundle, POLICY_FILE, Sealed, shard_file};
use turnpike_api::hash::hash_token;
use turnpike_api::shard::{Sharded, split_with_budget};
use turnpike_api::token::{KeyId, Token};

/// Small enough that [`FILLERS`] keys need three files (the operator uses 900 KiB).
const BUDGET: usize = 8 * 1024;
/// Keys added to the canonical two (and `deep`) to fill `keys.json` and `keys-1.json`.
const FILLERS: usize = 60;
/// Sorts after every other id, so the key lands in the last shard.
const DEEP_ID: &str = "zzzzzzzzzzzz";

struct Deep {
    token: Token,
}

/// The canonical bundle plus [`FILLERS`] keys (ids `0000000000xx`, sorting first) and
/// the `deep` key (id [`DEEP_ID`]), split with [`BUDGET`].
fn sharded(deep: &Deep, deep_revoked: bool) -> (Sharded, String) {
    let (keys, policy) = compile_bundle(&manifests(&Setup::default()));
    let mut keys: KeyBundle = bundle::parse(&keys).unwrap();
    let template = keys
        .keys
        .values()
        .find(|e| e.name == "billing")
        .unwrap()
        .clone();
    for i in 0..FILLERS {
        let mut e = template.clone();
        e.name = format!("filler-{i:02}");
        e.refresh_fingerprint();
        keys.keys
            .insert(KeyId::parse(&format!("0000000000{i:02}")).unwrap(), e);
    }
    let mut e = template.clone();
    e.name = "deep".into();
    e.secrets[0].hash = hash_token(&deep.token).unwrap();
    e.revoked = deep_revoked;
    e.refresh_fingerprint();
    keys.keys.insert(KeyId::parse(DEEP_ID).unwrap(), e);
    keys.seal();
    let s = split_with_budget(&keys, BUDGET).unwrap();
    assert_eq!(s.shards.len(), 2, "primary + 2 shards");
    assert!(
        s.shards[1].keys.keys().any(|id| id.as_str() == DEEP_ID),
        "the deep key is in keys-2.json"
    );
    (s, policy)
}

fn write_primary(dir: &std::path::Path, s: &Sharded) {
    write_atomic(&dir.join(KEYS_FILE), &s.primary.to_json());
}

fn write_shard(dir: &std::path::Path, s: &Sharded, n: usize) {
    write_atomic(&dir.join(shard_file(n)), &s.shards[n - 1].to_json());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_in_shard_two_authenticates_and_a_torn_set_keeps_the_last_good_bundle() {
    let upstream = start_upstream().await;
    let deep = Deep {
        token: Token::mint_with_id(&KeyId::parse(DEEP_ID).unwrap()).unwrap(),
    };
    let (good, policy) = sharded(&deep, false);
    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path(), &good, 1);
    write_shard(dir.path(), &good, 2);
    write_primary(dir.path(), &good);
    write_atomic(&dir.path().join(POLICY_FILE), &policy);

    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    sidecar.wait_ready(200).await;
    let c = creds();
    let r = get_with_key(&sidecar, "/orders/1", deep.token.expose_token()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.echoed_header("x-turnpike-key-id"), [DEEP_ID]);
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.billing.text())
            .await
            .status,
        200
    );
    let m = sidecar.metrics().await;
    let all = (FILLERS + 3) as f64;
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_keys"), all);

    // The deep key is revoked: keys.json arrives first, keys-2.json still old.
    let (revoked, _) = sharded(&deep, true);
    assert_eq!(
        revoked.shards[0].to_json(),
        good.shards[0].to_json(),
        "only the last shard changes"
    );
    let before = metric(&m, "turnpike_sidecar_bundle_reload_failures_total");
    write_primary(dir.path(), &revoked);
    sidecar
        .wait_for_output(&["bundle refused", "keys-2.json", "torn update"])
        .await;
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "turnpike_sidecar_bundle_reload_failures_total"),
        before + 1.0
    );
    let all = (FILLERS + 3) as f64;
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_keys"), all);
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", deep.token.expose_token())
            .await
            .status,
        200,
        "the last good bundle stays in force"
    );
    let ready = sidecar.wait_ready(200).await;
    assert!(
        ready.contains("last reload failed") && ready.contains("keys-2.json"),
        "{ready}"
    );

    // The shard catches up: the whole new set loads, the revocation applies.
    write_shard(dir.path(), &revoked, 2);
    status_eventually(&sidecar, deep.token.expose_token(), 401, "after the reload").await;
    assert!(!sidecar.wait_ready(200).await.contains("last reload failed"));

    // A missing shard is torn too.
    std::fs::remove_file(dir.path().join(shard_file(1))).unwrap();
    let (good_again, _) = sharded(&deep, false);
    write_primary(dir.path(), &good_again);
    write_shard(dir.path(), &good_again, 2);
    sidecar
        .wait_for_output(&["bundle refused", "keys-1.json", "missing"])
        .await;
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", deep.token.expose_token())
            .await
            .status,
        401,
        "still the revoked set"
    );
    write_shard(dir.path(), &good_again, 1);
    status_eventually(&sidecar, deep.token.expose_token(), 200, "after the reload").await;

    // Shrinking to one file: shard files left behind are ignored.
    write_bundle(dir.path(), &Setup::default());
    status_eventually(&sidecar, deep.token.expose_token(), 401, "after the reload").await;
    assert_eq!(
        metric(&sidecar.metrics().await, "turnpike_sidecar_bundle_keys"),
        2.0
    );
    assert!(dir.path().join(shard_file(2)).exists());

    let out = sidecar.output();
    assert!(!out.contains("argon2"), "no hash in the logs");
    assert!(
        !out.contains(&revoked.primary.shards[1].content_hash),
        "no content hash of a shard in the logs"
    );
}
