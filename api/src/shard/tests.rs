use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::{
    bundle::{self, SecretEntry},
    hash::PhcHash,
    signing::BundleSigner,
};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
const CROCKFORD: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn key_id(i: usize) -> KeyId {
    let mut s = String::with_capacity(12);
    let mut n = i;
    for _ in 0..12 {
        s.push(CROCKFORD[n % 32] as char);
        n /= 32;
    }
    KeyId::parse(&s).unwrap()
}

fn entry(i: usize) -> KeyEntry {
    let mut e = KeyEntry {
        name: format!("customer-{i:05}"),
        uid: None,
        owner: Some(format!("team-{}@example.com", i % 7)),
        secrets: vec![SecretEntry {
            hash: PhcHash::parse(HASH).unwrap(),
            not_after: None,
        }],
        scopes: vec!["orders:read".into()],
        rate_limit: None,
        daily_quota: Some(1000),
        expires_at: None,
        revoked: false,
        fingerprint: String::new(),
    };
    e.refresh_fingerprint();
    e
}

fn bundle_of(n: usize) -> KeyBundle {
    let mut b = KeyBundle {
        format: FORMAT,
        content_hash: String::new(),
        namespace: "shop".into(),
        target: "orders".into(),
        epoch: 3,
        generation: 0,
        shards: Vec::new(),
        keys: (0..n).map(|i| (key_id(i), entry(i))).collect(),
        signatures: Vec::new(),
    };
    b.seal();
    b
}

/// What a bundle directory holds after the operator wrote `s`.
fn files(s: &Sharded) -> BTreeMap<String, String> {
    s.shard_files().into_iter().collect()
}

/// Reads the written files back as a sidecar does.
fn read_back(s: &Sharded, files: &BTreeMap<String, String>) -> Result<KeyBundle, ShardError> {
    let primary: KeyBundle = bundle::parse(&s.primary.to_json()).unwrap();
    merge(primary, files)
}

const SMALL: usize = 8 * 1024;

#[test]
fn a_bundle_that_fits_is_left_as_it_was() {
    let b = bundle_of(20);
    let s = split(&b).unwrap();
    assert!(s.shards.is_empty());
    assert_eq!(s.primary.to_json(), b.to_json(), "byte-identical keys.json");
    assert!(!s.primary.to_json().contains("shards"));
    assert_eq!(read_back(&s, &BTreeMap::new()).unwrap(), b);
}

#[test]
fn keys_over_the_budget_spill_into_shards_that_merge_back() {
    let b = bundle_of(100);
    let s = split_with_budget(&b, SMALL).unwrap();
    assert!(s.shards.len() >= 2, "{} shards", s.shards.len());
    assert!(s.primary.to_json().len() <= SMALL);
    for (file, json) in s.shard_files() {
        assert!(json.len() <= SMALL, "{file}: {} bytes", json.len());
    }
    let listed: Vec<&str> = s.primary.shards.iter().map(|r| r.file.as_str()).collect();
    let expected: Vec<String> = (1..=s.shards.len()).map(shard_file).collect();
    assert_eq!(listed, expected);
    assert!(!s.primary.keys.is_empty(), "the primary holds keys too");

    let merged = read_back(&s, &files(&s)).unwrap();
    assert_eq!(merged.keys, b.keys);
    assert!(merged.shards.is_empty());
    assert_eq!(merged.content_hash, s.primary.content_hash);
    assert_eq!(
        (
            merged.namespace.as_str(),
            merged.target.as_str(),
            merged.epoch
        ),
        ("shop", "orders", 3)
    );
}

#[test]
fn a_bundle_exactly_at_the_budget_is_not_split() {
    let b = bundle_of(20);
    let len = b.to_json().len() + signing_room();
    assert!(split_with_budget(&b, len).unwrap().shards.is_empty());
    assert!(!split_with_budget(&b, len - 1).unwrap().shards.is_empty());
}

/// Signs every file as the operator does, with the most signatures a file may carry.
fn sign_all(s: &mut Sharded, signer: &BundleSigner) {
    for shard in &mut s.shards {
        shard.sign(signer);
    }
    s.primary.generation = u64::MAX;
    s.primary.seal();
    s.primary.sign(signer);
}

fn max_signer() -> BundleSigner {
    let seeds: Vec<[u8; 32]> = (1..=crate::signing::MAX_SIGNATURES as u8)
        .map(|i| [i; 32])
        .collect();
    BundleSigner::from_seeds(seeds.iter().map(|s| s.as_slice())).unwrap()
}

#[test]
fn signed_files_stay_within_the_budget_and_merge_when_every_shard_verifies() {
    let signer = max_signer();
    for n in [20, 100] {
        let mut s = split_with_budget(&bundle_of(n), SMALL).unwrap();
        sign_all(&mut s, &signer);
        assert!(
            s.primary.to_json().len() <= SMALL,
            "{n}: primary {}",
            s.primary.to_json().len()
        );
        for (file, json) in s.shard_files() {
            assert!(json.len() <= SMALL, "{n}: {file}: {} bytes", json.len());
        }
        let trust = signer.public();
        let primary: KeyBundle = bundle::parse(&s.primary.to_json()).unwrap();
        primary.verify(&trust).unwrap();
        let merged = merge_checked(primary, &files(&s), |shard| shard.verify(&trust)).unwrap();
        assert_eq!(merged.keys.len(), n);
    }
}

#[test]
fn an_unsigned_or_foreign_shard_fails_a_checked_merge() {
    let signer = max_signer();
    let mut s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    sign_all(&mut s, &signer);
    let trust = signer.public();
    let other = BundleSigner::from_seeds([[42u8; 32].as_slice()]).unwrap();
    // Shard 2 signed by another key, then shard 2 with no signature: the content hash
    // is the same either way, so only the signature check can tell.
    for resign in [Some(&other), None] {
        let mut bad = s.clone();
        match resign {
            Some(k) => bad.shards[1].sign(k),
            None => bad.shards[1].signatures.clear(),
        }
        let primary: KeyBundle = bundle::parse(&bad.primary.to_json()).unwrap();
        let err = merge_checked(primary, &files(&bad), |shard| shard.verify(&trust)).unwrap_err();
        assert!(matches!(err, ShardError::Signature(_)), "{err}");
        assert!(err.to_string().contains("keys-2.json"), "{err}");
    }
}

#[test]
fn splitting_is_deterministic() {
    let a = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let b = split_with_budget(&bundle_of(100), SMALL).unwrap();
    assert_eq!(a.primary.to_json(), b.primary.to_json());
    assert_eq!(a.shard_files(), b.shard_files());
}

#[test]
fn the_default_budget_leaves_room_under_the_secret_limit() {
    const MIB: usize = 1 << 20;
    const { assert!(SHARD_BUDGET <= MIB - 100 * 1024) };
    // 10,000 keys: several shards, each within the budget.
    let b = bundle_of(10_000);
    let s = split(&b).unwrap();
    assert!(s.shards.len() >= 2);
    assert!(s.primary.to_json().len() <= SHARD_BUDGET);
    assert!(s.shard_files().iter().all(|(_, j)| j.len() <= SHARD_BUDGET));
    assert_eq!(read_back(&s, &files(&s)).unwrap().keys.len(), 10_000);
}

#[test]
fn too_many_shards_is_an_error_naming_the_target_and_the_numbers() {
    let err = split_with_budget(&bundle_of(400), 3_000).unwrap_err();
    match &err {
        ShardError::TooManyShards {
            keys, needed, max, ..
        } => {
            assert_eq!((*keys, *max), (400, MAX_KEY_SHARDS));
            assert!(*needed > MAX_KEY_SHARDS);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("shop/orders") && msg.contains("400 keys") && msg.contains("16"),
        "{msg}"
    );
}

#[test]
fn an_entry_larger_than_the_budget_is_an_error() {
    let err = split_with_budget(&bundle_of(3), 600).unwrap_err();
    assert!(
        matches!(&err, ShardError::EntryTooLarge { name, .. } if name == "customer-00000"),
        "{err:?}"
    );
}

#[test]
fn a_missing_shard_is_reported_by_name() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let mut f = files(&s);
    f.remove("keys-2.json");
    assert_eq!(
        read_back(&s, &f).unwrap_err(),
        ShardError::Missing {
            file: "keys-2.json".into()
        }
    );
}

#[test]
fn a_shard_of_another_version_is_a_torn_update() {
    let old = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let new = split_with_budget(&bundle_of(101), SMALL).unwrap();
    // New primary, shards still old: the last shard differs.
    let last = shard_file(new.shards.len());
    let mut f = files(&new);
    let old_files = files(&old);
    f.insert(last.clone(), old_files[&last].clone());
    assert_eq!(
        read_back(&new, &f).unwrap_err(),
        ShardError::Stale { file: last }
    );
}

#[test]
fn a_damaged_shard_is_refused_without_echoing_it() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let mut f = files(&s);
    let text = f["keys-1.json"].replacen("orders:read", "orders:rEad", 1);
    f.insert("keys-1.json".into(), text);
    let err = read_back(&s, &f).unwrap_err();
    assert_eq!(
        err,
        ShardError::Hash {
            file: "keys-1.json".into()
        }
    );
    f.insert("keys-1.json".into(), format!("{{\"x\": \"{HASH}\"}}"));
    let err = read_back(&s, &f).unwrap_err();
    assert!(matches!(err, ShardError::Parse { .. }), "{err:?}");
    assert!(!err.to_string().contains("argon2"), "{err}");
}

/// Rewrites shard `n` with `change`, reseals it and the primary's list, as a buggy or
/// hostile writer could.
fn forge(s: &Sharded, n: usize, change: impl FnOnce(&mut KeyShard)) -> Sharded {
    let mut s = s.clone();
    let shard = &mut s.shards[n - 1];
    change(shard);
    shard.seal();
    s.primary.shards[n - 1].content_hash = shard.content_hash.clone();
    s.primary.seal();
    s
}

#[test]
fn a_key_id_in_two_files_is_refused() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let (id, entry) = s.primary.keys.iter().next().unwrap();
    let (id, entry) = (id.clone(), entry.clone());
    let forged = forge(&s, 2, |shard| {
        shard.keys.insert(id.clone(), entry);
    });
    assert_eq!(
        read_back(&forged, &files(&forged)).unwrap_err(),
        ShardError::Duplicate {
            id: id.to_string(),
            first: "keys.json".into(),
            second: "keys-2.json".into()
        }
    );
}

#[test]
fn a_shard_of_another_target_epoch_or_position_is_refused() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    type Change = Box<dyn Fn(&mut KeyShard)>;
    let cases: [(&str, Change); 3] = [
        ("namespace/target", Box::new(|k| k.target = "other".into())),
        ("epoch", Box::new(|k| k.epoch = 4)),
        ("shard", Box::new(|k| k.shard = 2)),
    ];
    for (field, change) in cases {
        let forged = forge(&s, 1, change);
        // Each shard under the file of its position, whatever it claims.
        let by_position = forged
            .shards
            .iter()
            .enumerate()
            .map(|(i, k)| (shard_file(i + 1), k.to_json()))
            .collect();
        let err = read_back(&forged, &by_position).unwrap_err();
        assert!(
            matches!(&err, ShardError::Mismatch { field: f, .. } if *f == field),
            "{field}: {err:?}"
        );
    }
}

#[test]
fn the_shard_list_may_only_name_shard_files_in_order() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let mut bad = s.primary.clone();
    bad.shards[0].file = "../../etc/passwd".into();
    bad.seal();
    assert!(matches!(
        listed(&bad),
        Err(ShardError::BadList { index: 1, .. })
    ));
    let mut swapped = s.primary.clone();
    swapped.shards.swap(0, 1);
    assert!(matches!(
        listed(&swapped),
        Err(ShardError::BadList { index: 1, .. })
    ));
    let mut long = s.primary.clone();
    long.shards = (1..=MAX_KEY_SHARDS)
        .map(|n| ShardRef {
            file: shard_file(n),
            content_hash: String::new(),
        })
        .collect();
    assert_eq!(
        listed(&long),
        Err(ShardError::TooManyListed {
            found: MAX_KEY_SHARDS
        })
    );
}

#[test]
fn no_error_message_carries_a_hash() {
    let s = split_with_budget(&bundle_of(100), SMALL).unwrap();
    let mut f = files(&s);
    f.insert("keys-1.json".into(), files(&s)["keys-2.json"].clone());
    let err = read_back(&s, &f).unwrap_err();
    let text = format!("{err} {err:?}");
    for h in s.primary.shards.iter().map(|r| r.content_hash.as_str()) {
        assert!(!text.contains(h), "{text}");
    }
    assert!(!text.contains(&s.primary.content_hash));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn split_then_merge_round_trips_within_the_budget(
        n in 0usize..300,
        budget in 1_500usize..40_000,
    ) {
        let b = bundle_of(n);
        match split_with_budget(&b, budget) {
            Ok(s) => {
                prop_assert!(s.shards.len() < MAX_KEY_SHARDS);
                prop_assert!(s.primary.to_json().len() <= budget);
                for (_, json) in s.shard_files() {
                    prop_assert!(json.len() <= budget);
                }
                if s.shards.is_empty() {
                    prop_assert_eq!(s.primary.to_json(), b.to_json());
                }
                let merged = read_back(&s, &files(&s)).unwrap();
                prop_assert_eq!(&merged.keys, &b.keys);
                // Signed with the most signatures a file may carry: still within.
                let mut signed = s.clone();
                sign_all(&mut signed, &max_signer());
                prop_assert!(signed.primary.to_json().len() <= budget);
                for (_, json) in signed.shard_files() {
                    prop_assert!(json.len() <= budget);
                }
                let again = split_with_budget(&b, budget).unwrap();
                prop_assert_eq!(again.primary.to_json(), s.primary.to_json());
                prop_assert_eq!(again.shard_files(), s.shard_files());
            }
            Err(ShardError::TooManyShards { needed, .. }) => {
                prop_assert!(needed > MAX_KEY_SHARDS);
            }
            // The primary's envelope (15 shard hashes, 4 signatures) is about 2.4 KB.
            Err(ShardError::EntryTooLarge { .. }) => prop_assert!(budget < 3_000),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
