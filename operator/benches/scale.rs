//! Scale of the compile-and-plan path: 10,000 ApiKeys across 100 targets in one
//! namespace, planned from a cold start (no bundles yet), then again with every bundle in
//! place (the idempotent pass). Prints times, key Secrets per target (keys that do not fit
//! in one Secret are sharded) and file sizes; asserts nothing about time.
//!
//! Run: `cargo bench -p turnpike-operator --bench scale`

use std::{collections::BTreeMap, time::Instant};

use jiff::Timestamp;
use kube::Resource;
use turnpike_api::{hash::PhcHash, shard::SHARD_BUDGET, token::KeyId, types::*};
use turnpike_operator::{
    material::{Material, Origin},
    plan::{ExistingBundle, ExistingShard, Snapshot, plan},
};

const KEYS: usize = 10_000;
const TARGETS: usize = 100;
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$J1BSSI2Hsqt5ogWa9yiWRA$oQFiwl50xY2lQyo1W3NOpsYkIh6p47sWRMjlbeu5p7Q";
const CROCKFORD: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn key_id(i: usize) -> KeyId {
    let mut s = String::with_capacity(12);
    let mut n = i;
    for _ in 0..12 {
        s.push(CROCKFORD[n % 32] as char);
        n /= 32;
    }
    KeyId::parse(&s).expect("valid id")
}

fn world(all_targets: bool) -> (Vec<ApiKey>, Vec<AccessPolicy>, BTreeMap<String, Material>) {
    let now: Timestamp = "2026-11-23T12:00:00Z".parse().expect("time");
    let mut keys = Vec::with_capacity(KEYS);
    let mut materials = BTreeMap::new();
    for i in 0..KEYS {
        let name = format!("customer-{i:05}");
        let mut k = ApiKey::new(
            &name,
            ApiKeySpec {
                targets: if all_targets {
                    vec![]
                } else {
                    vec![format!("svc-{:03}", i % TARGETS)]
                },
                scopes: vec!["orders:read".into(), "orders:write".into()],
                owner: Some(format!("team-{}@example.com", i % 50)),
                expires_at: Some("2027-06-30T00:00:00Z".into()),
                revoked: false,
                daily_quota: Some(10_000),
                rate_limit: None,
                key_id: None,
                hash: None,
                rotation: None,
            },
        );
        let m = k.meta_mut();
        m.namespace = Some("shop".into());
        m.uid = Some(format!("uid-{i}"));
        m.generation = Some(1);
        materials.insert(
            name,
            Material {
                key_id: key_id(i),
                hash: PhcHash::parse(HASH).expect("hash"),
                previous: None,
                origin: Origin::Generated,
                rotation: None,
                issued_at: now,
                rotated_at: None,
            },
        );
        keys.push(k);
    }
    let access = (0..TARGETS)
        .map(|t| {
            let mut p = AccessPolicy::new(
                &format!("svc-{t:03}"),
                AccessPolicySpec {
                    target_ref: Some(TargetRef {
                        name: format!("svc-{t:03}"),
                    }),
                    credentials: vec![CredentialSource::ApiKeyHeader],
                    public: vec![],
                    rules: vec![],
                    default_action: DefaultAction::AllowAuthenticated,
                    security_headers: None,
                    https_redirect: false,
                    https_redirect_exempt: vec![],
                },
            );
            p.meta_mut().uid = Some(format!("uid-p{t}"));
            p
        })
        .collect();
    (keys, access, materials)
}

fn run(label: &str, all_targets: bool) {
    let (keys, access, materials) = world(all_targets);
    let now: Timestamp = "2026-11-23T12:00:00Z".parse().expect("time");
    let empty = BTreeMap::new();
    // Signed, as the operator writes them (one Ed25519 signature per file).
    let signer = turnpike_api::signing::BundleSigner::from_seeds([[7u8; 32].as_slice()])
        .expect("a 32-byte seed");
    let snap = |bundles| Snapshot {
        namespace: "shop",
        api_keys: &keys,
        access: &access,
        rate: &[],
        cors: &[],
        materials: &materials,
        bundles,
        extra_targets: &[],
        now,
        shard_budget: SHARD_BUDGET,
        signer: Some(&signer),
    };
    let started = Instant::now();
    let cold = plan(&snap(&empty));
    let cold_time = started.elapsed();
    // Every key file: keys.json and each keys-<n>.json.
    let files: Vec<&str> = cold
        .writes
        .iter()
        .flat_map(|w| {
            std::iter::once(w.keys_json.as_str()).chain(w.shards.iter().map(|s| s.json.as_str()))
        })
        .collect();
    let max = files.iter().map(|f| f.len()).max().unwrap_or(0);
    let per_key = files
        .iter()
        .map(|f| f.len() as f64 / keys_in(f) as f64)
        .fold(0.0_f64, f64::max);
    let secrets_per_target = cold
        .writes
        .iter()
        .map(|w| 1 + w.shard_count)
        .max()
        .unwrap_or(0);
    let existing: BTreeMap<String, ExistingBundle> = cold
        .writes
        .iter()
        .map(|w| {
            (
                w.target.clone(),
                ExistingBundle {
                    keys: Some(w.keys_json.clone()),
                    policy: Some(w.policy_json.clone()),
                    secret_owners: w.owners.clone(),
                    config_map_owners: w.owners.clone(),
                    epoch: Some(1),
                    shards: w
                        .shards
                        .iter()
                        .map(|s| {
                            (
                                s.n,
                                ExistingShard {
                                    keys: Some(s.json.clone()),
                                    owners: w.owners.clone(),
                                },
                            )
                        })
                        .collect(),
                },
            )
        })
        .collect();
    let started = Instant::now();
    let warm = plan(&snap(&existing));
    let warm_time = started.elapsed();
    println!(
        "{label}: {} keys, {} targets | cold plan {:.0} ms: {} bundle writes, {} key Secrets, {} status writes | key Secrets per target {} | largest key file {} bytes ({:.0} bytes/key), {} over 1 MiB, {} targets over the shard limit | second pass {:.0} ms: {} bundle writes",
        KEYS,
        TARGETS,
        cold_time.as_secs_f64() * 1000.0,
        cold.writes.len(),
        files.len(),
        cold.statuses.len(),
        secrets_per_target,
        max,
        per_key,
        files.iter().filter(|f| f.len() > 1 << 20).count(),
        cold.too_large.len(),
        warm_time.as_secs_f64() * 1000.0,
        warm.writes.len(),
    );
}

fn keys_in(json: &str) -> usize {
    json.matches("\"fingerprint\"").count().max(1)
}

fn main() {
    run("each key for one target", false);
    run("each key for every target", true);
}
