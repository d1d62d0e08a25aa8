//! The reconcile planner: key issuance decisions, rotation grace, revocation, expiry
//! requeue, conflicts, owner references, and idempotence (a second plan on the state the
//! first one produced writes nothing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};
use turnpike_api::{compiler::Kind, hash::PhcHash, token::KeyId, types::*};
use turnpike_operator::{
    keys::{self, KeyAction, ROTATE_ANNOTATION},
    material::{Material, Origin},
    plan::{ExistingBundle, Plan, Snapshot, plan},
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
}

impl World {
    fn new() -> Self {
        World {
            keys: vec![],
            access: vec![],
            materials: BTreeMap::new(),
            bundles: BTreeMap::new(),
            now: now(),
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
        })
    }

    /// Applies a plan the way the executor does: bundles written, statuses stored.
    fn apply(&mut self, p: &Plan) {
        for w in &p.writes {
            self.bundles.insert(
                w.target.clone(),
                ExistingBundle {
                    keys: Some(w.keys_json.clone()),
                    policy: Some(w.policy_json.clone()),
                    secret_owners: w.owners.clone(),
                    config_map_owners: w.owners.clone(),
                    epoch: Some(1),
                },
            );
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
