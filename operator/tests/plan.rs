//! The reconcile planner: key issuance decisions, rotation grace, revocation, expiry
//! requeue, conflicts, owner references, and idempotence (a second plan on the state the
//! first one produced writes nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use turnpike_api::{
    bundle::{self, KeyBundle, PolicyBundle, Sealed as _},
    compiler::Kind,
    hash::PhcHash,
    shard::{self, SHARD_BUDGET},
    signing::{BundleSigner, TrustedKeys},
    token::KeyId,
    types::*,
};
use turnpike_operator::{
    keys::{self, KeyAction, ROTATE_ANNOTATION},
    material::{Material, Origin},
    plan::{ExistingBundle, ExistingShard, Plan, Snapshot, TOO_LARGE, plan},
};

const HASH_A: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
const HASH_B: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0b3RoZXJzYWx0$b3RoZXJoYXNob3RoZXJoYXNob3RoZXJoYXNob3RoZXI";

fn now() -> Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn meta<K: Resource>(r: &mut K, name: &str, created: i64) {
    let m = r.meta_mut();
    m.name = Some(name.into());
    m.namespace = Some("shop".into());
    m.uid = Some(format!("uid-{name}"));
    m.generation = Some(1);
    m.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
}

fn api_key(name: &str, spec: ApiKeySpec) -> ApiKey {
    let mut k = ApiKey::new(name, spec);
    meta(&mut k, name, 1_000);
    k
}

fn spec(targets: &[&str]) -> ApiKeySpec {
    ApiKeySpec {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        scopes: vec!["orders:read".into()],
        owner: None,
        expires_at: None,
        revoked: false,
        daily_quota: None,
        rate_limit: None,
        key_id: None,
        hash: None,
        rotation: None,
    }
}

fn access(name: &str, target: Option<&str>, created: i64) -> AccessPolicy {
    let mut p = AccessPolicy::new(
        name,
        AccessPolicySpec {
            target_ref: target.map(|t| TargetRef { name: t.into() }),
            credentials: vec![CredentialSource::ApiKeyHeader],
            public: vec![],
            rules: vec![],
            default_action: DefaultAction::AllowAuthenticated,
            security_headers: None,
            https_redirect: false,
            https_redirect_exempt: vec![],
        },
    );
    meta(&mut p, name, created);
    p
}

fn material(id: &str, hash: &str) -> Material {
    Material {
        key_id: KeyId::parse(id).unwrap(),
        hash: PhcHash::parse(hash).unwrap(),
        previous: None,
        origin: Origin::Generated,
        rotation: None,
        issued_at: now(),
        rotated_at: None,
    }
}

struct World {
    keys: Vec<ApiKey>,
    access: Vec<AccessPolicy>,
    materials: BTreeMap<String, Material>,
    bundles: BTreeMap<String, ExistingBundle>,
    now: Timestamp,
    budget: usize,
    signer: Option<BundleSigner>,
}

impl World {
    fn new() -> Self {
        World {
            keys: vec![],
            access: vec![],
            materials: BTreeMap::new(),
            bundles: BTreeMap::new(),
            now: now(),
            budget: SHARD_BUDGET,
            signer: None,
        }
    }

    fn plan(&self) -> Plan {
        plan(&Snapshot {
            namespace: "shop",
            api_keys: &self.keys,
            access: &self.access,
            rate: &[],
            cors: &[],
            materials: &self.materials,
            bundles: &self.bundles,
            extra_targets: &[],
            now: self.now,
            shard_budget: self.budget,
            signer: self.signer.as_ref(),
        })
    }

    /// Applies a plan the way the executor does: bundles written, statuses stored.
    fn apply(&mut self, p: &Plan) {
        for w in &p.writes {
            let b = self.bundles.entry(w.target.clone()).or_default();
            for s in &w.shards {
                b.shards.insert(
                    s.n,
                    ExistingShard {
                        keys: Some(s.json.clone()),
                        owners: w.owners.clone(),
                    },
                );
            }
            b.keys = Some(w.keys_json.clone());
            b.policy = Some(w.policy_json.clone());
            b.secret_owners = w.owners.clone();
            b.config_map_owners = w.owners.clone();
            b.epoch = Some(1);
            for n in &w.stale_shards {
                b.shards.remove(n);
            }
        }
        for t in &p.deletes {
            self.bundles.remove(t);
        }
        for s in &p.statuses {
            match s.kind {
                Kind::ApiKey => {
                    let k = self
                        .keys
                        .iter_mut()
                        .find(|k| k.name_any() == s.name)
                        .unwrap();
                    k.status = Some(serde_json::from_value(s.status.clone()).unwrap());
                }
                Kind::AccessPolicy => {
                    let k = self
                        .access
                        .iter_mut()
                        .find(|k| k.name_any() == s.name)
                        .unwrap();
                    k.status = Some(serde_json::from_value(s.status.clone()).unwrap());
                }
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn a_generated_key_is_issued_once() {
    let keys = vec![api_key("gen", spec(&["orders"]))];
    let actions = keys::plan(&keys, &BTreeMap::new(), now());
    assert_eq!(
        actions,
        [KeyAction::Issue {
            api_key: "gen".into()
        }]
    );
    // With material present (even if the token Secret was deleted since), nothing more.
    let materials = BTreeMap::from([("gen".to_string(), material("aaaaaaaaaaaa", HASH_A))]);
    assert!(keys::plan(&keys, &materials, now()).is_empty());
}

#[test]
fn issue_and_rotate_mint_verifiable_tokens_and_keep_the_old_hash_for_the_grace_period() {
    let (token, m) = keys::issue(now()).unwrap();
    assert_eq!(m.key_id, token.key_id());
    assert!(turnpike_api::hash::verify(&m.hash, token.expose_token()));
    let not_after = now().as_second() + 3600;
    let (new_token, rotated) = keys::rotate(&m, "r1", not_after, now()).unwrap();
    assert_eq!(rotated.key_id, m.key_id, "rotation keeps the key id");
    assert!(turnpike_api::hash::verify(
        &rotated.hash,
        new_token.expose_token()
    ));
    let prev = rotated.previous.as_ref().unwrap();
    assert_eq!(
        (prev.hash.as_str(), prev.not_after),
        (m.hash.as_str(), not_after)
    );
    assert_eq!(rotated.rotation.as_deref(), Some("r1"));
}

#[test]
fn rotation_is_requested_by_a_new_annotation_value_only() {
    let mut key = api_key("gen", spec(&[]));
    key.spec.rotation = Some(Rotation {
        grace_period: Some("1h".parse().unwrap()),
    });
    key.annotations_mut()
        .insert(ROTATE_ANNOTATION.into(), "r1".into());
    let mut m = material("aaaaaaaaaaaa", HASH_A);
    let mut materials = BTreeMap::from([("gen".to_string(), m.clone())]);
    let actions = keys::plan(std::slice::from_ref(&key), &materials, now());
    assert_eq!(
        actions,
        [KeyAction::Rotate {
            api_key: "gen".into(),
            rotation: "r1".into(),
            not_after: now().as_second() + 3600
        }]
    );
    m.rotation = Some("r1".into());
    materials.insert("gen".into(), m);
    assert!(
        keys::plan(&[key], &materials, now()).is_empty(),
        "the same value twice rotates once"
    );
}

#[test]
fn the_previous_secret_is_dropped_when_its_grace_ends() {
    let mut w = World::new();
    w.keys.push(api_key("gen", spec(&["orders"])));
    let mut m = material("aaaaaaaaaaaa", HASH_A);
    m.previous = Some(turnpike_api::compiler::PreviousSecret {
        hash: PhcHash::parse(HASH_B).unwrap(),
        not_after: now().as_second() + 60,
    });
    w.materials.insert("gen".into(), m.clone());
    let p = w.plan();
    let keys_json = &p.writes[0].keys_json;
    assert!(
        keys_json.contains(HASH_B),
        "old secret still accepted during the grace period"
    );
    assert_eq!(
        p.requeue_at,
        Some(now().as_second() + 60),
        "requeue at the end of the grace period"
    );

    w.now = Timestamp::from_second(now().as_second() + 60).unwrap();
    let actions = keys::plan(&w.keys, &w.materials, w.now);
    assert!(
        matches!(&actions[..], [KeyAction::Record { material, .. }] if material.previous.is_none())
    );
    // Even before the material is rewritten, the compiled bundle no longer has it.
    let p = w.plan();
    assert!(!p.writes[0].keys_json.contains(HASH_B));
}

#[test]
fn a_manifest_hash_change_is_a_gitops_rotation() {
    let mut s = spec(&[]);
    s.key_id = Some("aaaaaaaaaaaa".into());
    s.hash = Some(HASH_B.into());
    let key = api_key("git", s);
    let mut old = material("aaaaaaaaaaaa", HASH_A);
    old.origin = Origin::Manifest;
    let materials = BTreeMap::from([("git".to_string(), old)]);
    let actions = keys::plan(&[key], &materials, now());
    match &actions[..] {
        [
            KeyAction::Record {
                material,
                rotated: true,
                ..
            },
        ] => {
            assert_eq!(material.hash.as_str(), HASH_B);
            let prev = material.previous.as_ref().unwrap();
            assert_eq!(prev.hash.as_str(), HASH_A);
            assert_eq!(
                prev.not_after,
                now().as_second() + 24 * 3600,
                "default grace 24h"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reconcile_is_idempotent() {
    let mut w = World::new();
    w.keys.push(api_key("gen", spec(&["orders"])));
    w.materials
        .insert("gen".into(), material("aaaaaaaaaaaa", HASH_A));
    w.access.push(access("orders", Some("orders"), 1));
    let first = w.plan();
    assert_eq!(first.writes.len(), 1);
    assert_eq!(first.statuses.len(), 2);
    w.apply(&first);
    let second = w.plan();
    assert!(second.is_noop(), "second pass writes nothing: {second:?}");
    assert!(second.events.is_empty());
}

#[test]
fn owner_references_name_the_contributing_resources() {
    let mut w = World::new();
    w.keys.push(api_key("gen", spec(&["orders"])));
    w.materials
        .insert("gen".into(), material("aaaaaaaaaaaa", HASH_A));
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    let owners: Vec<(&str, &str, &str)> = p.writes[0]
        .owners
        .iter()
        .map(|o| (o.kind.as_str(), o.name.as_str(), o.uid.as_str()))
        .collect();
    assert_eq!(
        owners,
        [
            ("AccessPolicy", "orders", "uid-orders"),
            ("ApiKey", "gen", "uid-gen")
        ]
    );
    assert!(
        p.writes[0]
            .owners
            .iter()
            .all(|o| o.api_version == "turnpike.dev/v1alpha1")
    );
}

#[test]
fn bundles_of_vanished_targets_are_deleted() {
    let mut w = World::new();
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    w.apply(&p);
    w.access.clear();
    let p = w.plan();
    assert_eq!(p.deletes, ["orders"]);
}

#[test]
fn revocation_and_expiry_set_the_phase_emit_one_event_and_requeue_at_expiry() {
    let mut w = World::new();
    let mut s = spec(&["orders"]);
    s.expires_at = Some("2026-11-23T13:00:00Z".into());
    w.keys.push(api_key("gen", s));
    w.materials
        .insert("gen".into(), material("aaaaaaaaaaaa", HASH_A));
    let p = w.plan();
    assert_eq!(p.requeue_at, Some(now().as_second() + 3600));
    let st: ApiKeyStatus = serde_json::from_value(p.statuses[0].status.clone()).unwrap();
    assert_eq!(st.phase, Some(KeyPhase::Active));
    assert_eq!(st.key_id.as_deref(), Some("aaaaaaaaaaaa"));
    assert_eq!(st.conditions[0].reason, "Active");
    assert_eq!(st.observed_generation, Some(1));
    w.apply(&p);

    w.now = Timestamp::from_second(now().as_second() + 3600).unwrap();
    let p = w.plan();
    let st: ApiKeyStatus = serde_json::from_value(p.statuses[0].status.clone()).unwrap();
    assert_eq!(st.phase, Some(KeyPhase::Expired));
    assert_eq!(
        p.events.iter().filter(|e| e.reason == "KeyExpired").count(),
        1
    );
    assert!(
        p.writes.is_empty(),
        "expiry changes no bundle: the compile does not read the clock"
    );
    let stored = w.bundles["orders"].keys.as_deref().unwrap();
    assert!(
        stored.contains("\"expiresAt\":"),
        "the sidecar knows the expiry, to refuse and audit it"
    );
    w.apply(&p);
    assert!(
        w.plan().events.is_empty(),
        "the event fires on the transition only"
    );

    w.keys[0].spec.revoked = true;
    let p = w.plan();
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "KeyRevoked" && e.name == "gen")
    );
    assert!(p.writes[0].keys_json.contains("\"revoked\":true"));
}

#[test]
fn conflicts_are_reported_with_the_winner_and_an_event() {
    let mut w = World::new();
    w.access.push(access("young", Some("orders"), 2_000));
    w.access.push(access("old", Some("orders"), 1_000));
    let p = w.plan();
    let young = p.statuses.iter().find(|s| s.name == "young").unwrap();
    let st: PolicyStatus = serde_json::from_value(young.status.clone()).unwrap();
    assert_eq!(st.conditions[0].reason, "Conflicted");
    assert_eq!(st.conditions[0].status, "False");
    assert!(
        st.conditions[0]
            .message
            .contains("AccessPolicy old is older"),
        "{}",
        st.conditions[0].message
    );
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == "PolicyConflicted" && e.name == "young")
    );
    let old = p.statuses.iter().find(|s| s.name == "old").unwrap();
    let st: PolicyStatus = serde_json::from_value(old.status.clone()).unwrap();
    assert_eq!(
        (st.conditions[0].status.as_str(), st.targets.as_slice()),
        ("True", &["orders".to_string()][..])
    );
}

#[test]
fn nothing_in_a_plan_carries_a_token_or_hash_outside_the_key_bundle() {
    let mut w = World::new();
    w.keys.push(api_key("gen", spec(&["orders"])));
    w.materials
        .insert("gen".into(), material("aaaaaaaaaaaa", HASH_A));
    let p = w.plan();
    for s in &p.statuses {
        assert!(!s.status.to_string().contains("argon2"), "{}", s.status);
    }
    for e in &p.events {
        assert!(!e.note.contains("argon2"));
    }
    let debug = format!("{:?}", w.materials);
    assert!(
        !debug.contains("aGFzaGhh"),
        "material Debug masks the hash: {debug}"
    );
}

// ---- key shards ----------------------------------------------------------------------

/// Small enough that a few dozen keys need several Secrets (the operator uses 900 KiB).
const BUDGET: usize = 4 * 1024;
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

/// A world whose `count` generated keys (`key-000`, ...) all target `target`.
fn add_keys(w: &mut World, target: &str, from: usize, count: usize) {
    for i in from..from + count {
        let name = format!("{target}-key-{i:03}");
        w.keys.push(api_key(&name, spec(&[target])));
        w.materials.insert(name, material(&nth_id(i), HASH_A));
    }
}

/// What a sidecar would read from the bundle of `target` in `w`.
fn read_back(w: &World, target: &str) -> KeyBundle {
    let b = &w.bundles[target];
    let primary: KeyBundle = bundle::parse(b.keys.as_deref().unwrap()).unwrap();
    let files = b
        .shards
        .iter()
        .map(|(n, s)| (bundle::shard_file(*n), s.keys.clone().unwrap()))
        .collect();
    shard::merge(primary, &files).unwrap()
}

#[test]
fn a_target_over_one_secret_gets_shards_and_a_second_pass_writes_nothing() {
    let mut w = World::new();
    w.budget = BUDGET;
    add_keys(&mut w, "orders", 0, 30);
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    assert_eq!(p.writes.len(), 1);
    let write = &p.writes[0];
    let numbers: Vec<usize> = write.shards.iter().map(|s| s.n).collect();
    assert!(numbers.len() >= 2, "{numbers:?}");
    assert_eq!(numbers, (1..=numbers.len()).collect::<Vec<_>>());
    assert_eq!(write.shard_count, numbers.len());
    assert!(write.keys_json.len() <= BUDGET);
    assert!(write.shards.iter().all(|s| s.json.len() <= BUDGET));
    assert!(
        write
            .keys_json
            .contains("\"shards\":[{\"file\":\"keys-1.json\"")
    );
    assert!(write.stale_shards.is_empty());
    w.apply(&p);
    let merged = read_back(&w, "orders");
    assert_eq!(merged.keys.len(), 30);

    let second = w.plan();
    assert!(second.is_noop(), "second pass writes nothing: {second:?}");
    assert!(second.events.is_empty());

    // A shard Secret deleted behind the operator's back is written again, alone.
    w.bundles.get_mut("orders").unwrap().shards.remove(&2);
    let repair = w.plan();
    assert_eq!(repair.writes.len(), 1);
    let numbers: Vec<usize> = repair.writes[0].shards.iter().map(|s| s.n).collect();
    assert_eq!(numbers, [2]);
    assert!(
        repair.events.is_empty(),
        "same bundle: no BundleUpdated Event"
    );
}

#[test]
fn a_bundle_that_fits_has_no_shards() {
    let mut w = World::new();
    add_keys(&mut w, "orders", 0, 30);
    let p = w.plan();
    assert!(p.writes[0].shards.is_empty());
    assert_eq!(p.writes[0].shard_count, 0);
    assert!(!p.writes[0].keys_json.contains("shards"));
}

#[test]
fn shrinking_deletes_the_shards_the_primary_no_longer_lists() {
    let mut w = World::new();
    w.budget = BUDGET;
    add_keys(&mut w, "orders", 0, 45);
    let p = w.plan();
    let before = p.writes[0].shards.len();
    w.apply(&p);

    // Fewer keys: one shard fewer.
    let keep = 25;
    w.keys.truncate(keep);
    let p = w.plan();
    let write = &p.writes[0];
    assert!(
        write.shard_count < before,
        "{} < {before}",
        write.shard_count
    );
    assert_eq!(
        write.stale_shards,
        ((write.shard_count + 1)..=before).collect::<Vec<_>>()
    );
    w.apply(&p);
    assert_eq!(read_back(&w, "orders").keys.len(), keep);

    // Down to what fits in keys.json: every shard goes, keys.json is plain again.
    let remaining: Vec<usize> = w.bundles["orders"].shards.keys().copied().collect();
    assert!(!remaining.is_empty());
    w.keys.truncate(2);
    let p = w.plan();
    let write = &p.writes[0];
    assert_eq!(write.shard_count, 0);
    assert!(!write.keys_json.contains("shards"));
    assert_eq!(write.stale_shards, remaining);
    w.apply(&p);
    assert!(w.bundles["orders"].shards.is_empty());
    assert!(w.plan().is_noop());

    // A vanished target takes its shards along (the executor deletes them).
    w.keys.clear();
    let p = w.plan();
    assert_eq!(p.deletes, ["orders"]);
}

#[test]
fn a_target_over_the_maximum_is_left_as_it_was_and_reported() {
    let mut w = World::new();
    w.budget = BUDGET;
    add_keys(&mut w, "big", 0, 40);
    add_keys(&mut w, "small", 500, 2);
    w.access.push(access("big", Some("big"), 1));
    let p = w.plan();
    w.apply(&p);
    let written_before = w.bundles["big"].clone();

    // Far more keys than 16 Secrets of 4 KiB hold.
    add_keys(&mut w, "big", 40, 260);
    w.keys.retain(|k| k.name_any() != "small-key-501");
    let p = w.plan();
    let targets: Vec<&str> = p.writes.iter().map(|w| w.target.as_str()).collect();
    assert_eq!(targets, ["small"], "the other target is still written");
    assert!(p.deletes.is_empty(), "the bundle in place stays");
    let why = p.too_large["big"].to_string();
    assert!(
        why.contains("shop/big") && why.contains("300 keys") && why.contains("16"),
        "{why}"
    );

    // Every key of the target says why, none of the other target's does.
    let ready = |name: &str| -> (String, String) {
        let st = p.statuses.iter().find(|s| s.name == name).unwrap();
        let st: ApiKeyStatus = serde_json::from_value(st.status.clone()).unwrap();
        let c = &st.conditions[0];
        (c.reason.clone(), c.message.clone())
    };
    let (reason, message) = ready("big-key-299");
    assert_eq!(reason, TOO_LARGE);
    assert!(
        message.contains("target big") && message.contains("16"),
        "{message}"
    );
    assert_eq!(ready("big-key-000").0, TOO_LARGE);
    assert!(p.statuses.iter().all(|s| !s.name.starts_with("small")));
    let policy = p.statuses.iter().find(|s| s.name == "big").unwrap();
    let policy: PolicyStatus = serde_json::from_value(policy.status.clone()).unwrap();
    assert_eq!(
        (
            policy.conditions[0].status.as_str(),
            policy.conditions[0].reason.as_str()
        ),
        ("False", TOO_LARGE)
    );
    assert!(policy.conditions[0].message.contains("300 keys"));

    // One Event for the target (regarding its bundle ConfigMap), one for the policy:
    // not one per key.
    let events: Vec<(&str, &str)> = p
        .events
        .iter()
        .filter(|e| e.reason == TOO_LARGE)
        .map(|e| (e.kind.as_str(), e.name.as_str()))
        .collect();
    assert_eq!(
        events,
        [("AccessPolicy", "big"), ("ConfigMap", "turnpike-big")]
    );

    w.apply(&p);
    assert_eq!(w.bundles["big"], written_before);
    let again = w.plan();
    assert!(again.is_noop(), "{again:?}");
    assert!(again.events.is_empty(), "Events on the transition only");

    // Back under the limit: written again, statuses recover.
    w.keys.retain(|k| {
        let name = k.name_any();
        !name.starts_with("big-key-") || name.as_str() < "big-key-050"
    });
    let p = w.plan();
    assert_eq!(p.writes.len(), 1);
    assert!(p.too_large.is_empty());
    w.apply(&p);
    let (reason, _) = {
        let k = w
            .keys
            .iter()
            .find(|k| k.name_any() == "big-key-045")
            .unwrap();
        let c = &k.status.as_ref().unwrap().conditions[0];
        (c.reason.clone(), c.message.clone())
    };
    assert_eq!(reason, "Active");
    assert_eq!(read_back(&w, "big").keys.len(), 50);
}

fn signer(seeds: &[u8]) -> BundleSigner {
    let seeds: Vec<[u8; 32]> = seeds.iter().map(|b| [*b; 32]).collect();
    BundleSigner::from_seeds(seeds.iter().map(|s| s.as_slice())).unwrap()
}

/// Checks every file of `target`'s bundle as a sidecar trusting `trust` does, and
/// returns (keys generation, policy generation).
fn verify_written(w: &World, target: &str, trust: &TrustedKeys) -> (u64, u64) {
    let b = &w.bundles[target];
    let primary: KeyBundle = bundle::parse(b.keys.as_deref().unwrap()).unwrap();
    primary.verify(trust).unwrap();
    let policy: PolicyBundle = bundle::parse(b.policy.as_deref().unwrap()).unwrap();
    policy.verify(trust).unwrap();
    let files = b
        .shards
        .iter()
        .map(|(n, s)| (bundle::shard_file(*n), s.keys.clone().unwrap()))
        .collect();
    shard::merge_checked(primary.clone(), &files, |s| s.verify(trust)).unwrap();
    (primary.generation, policy.generation)
}

#[test]
fn signed_bundles_verify_keep_their_generation_while_unchanged_and_grow_on_change() {
    let mut w = World::new();
    w.budget = BUDGET;
    w.signer = Some(signer(&[1]));
    let trust = signer(&[1]).public();
    add_keys(&mut w, "orders", 0, 30);
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    w.apply(&p);
    assert!(
        !w.bundles["orders"].shards.is_empty(),
        "the test covers shards"
    );
    let (k1, p1) = verify_written(&w, "orders", &trust);
    let clock = u64::try_from(w.now.as_millisecond()).unwrap();
    assert_eq!(
        (k1, p1),
        (clock, clock),
        "a first signed write takes the clock"
    );

    // Unchanged: a second pass, even an hour later, writes nothing.
    w.now += jiff::SignedDuration::from_hours(1);
    assert!(w.plan().writes.is_empty(), "{:?}", w.plan().writes);

    // A new key: the keys file's generation grows, the policy's stays.
    add_keys(&mut w, "orders", 30, 1);
    let p = w.plan();
    assert_eq!(p.writes.len(), 1);
    w.apply(&p);
    let (k2, p2) = verify_written(&w, "orders", &trust);
    assert!(k2 > k1, "{k2} > {k1}");
    assert_eq!(p2, p1);

    // A clock stepped back a day still never lowers a generation.
    w.now -= jiff::SignedDuration::from_hours(24);
    add_keys(&mut w, "orders", 31, 1);
    let p = w.plan();
    w.apply(&p);
    let (k3, _) = verify_written(&w, "orders", &trust);
    assert_eq!(k3, k2 + 1);
    assert!(w.plan().writes.is_empty());
}

#[test]
fn a_rotation_re_signs_every_file_with_both_keys_without_a_new_generation() {
    let mut w = World::new();
    w.signer = Some(signer(&[1]));
    add_keys(&mut w, "orders", 0, 3);
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    w.apply(&p);
    let before = verify_written(&w, "orders", &signer(&[1]).public());

    // Overlap: new key 2 first, old key 1 still signing.
    w.signer = Some(signer(&[2, 1]));
    let p = w.plan();
    assert_eq!(
        p.writes.len(),
        1,
        "the signatures changed, so the files are written"
    );
    w.apply(&p);
    for trust in [signer(&[1]).public(), signer(&[2]).public()] {
        assert_eq!(
            verify_written(&w, "orders", &trust),
            before,
            "same content, same generation"
        );
    }
    assert!(w.plan().writes.is_empty());

    // After the overlap only the new key signs: old-only sidecars would refuse.
    w.signer = Some(signer(&[2]));
    let p = w.plan();
    w.apply(&p);
    verify_written(&w, "orders", &signer(&[2]).public());
    let primary: KeyBundle = bundle::parse(w.bundles["orders"].keys.as_deref().unwrap()).unwrap();
    assert!(primary.verify(&signer(&[1]).public()).is_err());
}

#[test]
fn an_unsigned_plan_writes_no_generation_or_signature_field() {
    let mut w = World::new();
    add_keys(&mut w, "orders", 0, 3);
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    assert!(!p.writes[0].keys_json.contains("signatures"));
    assert!(!p.writes[0].keys_json.contains("generation"));
    assert!(!p.writes[0].policy_json.contains("signatures"));
}

#[test]
fn a_generation_in_a_file_the_operator_did_not_sign_is_ignored() {
    let mut w = World::new();
    w.signer = Some(signer(&[1]));
    add_keys(&mut w, "orders", 0, 3);
    w.access.push(access("orders", Some("orders"), 1));
    let p = w.plan();
    w.apply(&p);
    let trust = signer(&[1]).public();
    let (ours, _) = verify_written(&w, "orders", &trust);

    // Someone rewrites keys.json with a saturated generation (resealed, unsigned, or
    // signed by their own key).
    for forger in [None, Some(signer(&[9]))] {
        let b = w.bundles.get_mut("orders").unwrap();
        let mut forged: KeyBundle = bundle::parse(b.keys.as_deref().unwrap()).unwrap();
        forged.generation = u64::MAX - 1;
        forged.seal();
        match &forger {
            Some(k) => forged.sign(k),
            None => forged.signatures.clear(),
        }
        b.keys = Some(forged.to_json());
        let p = w.plan();
        assert_eq!(p.writes.len(), 1, "the operator writes its own bundle back");
        w.apply(&p);
        let (restored, _) = verify_written(&w, "orders", &trust);
        assert!(
            restored < u64::MAX / 2,
            "{restored}: the forged generation was taken"
        );
        assert!(restored >= ours, "{restored} >= {ours}");
        assert!(w.plan().writes.is_empty());
    }
}
