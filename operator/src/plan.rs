//! The pure part of a namespace reconcile: from what is (resources, key material, the
//! bundles as they are in the cluster) and the clock, what must be written.
//!
//! Keeping this pure lets tests check idempotence by construction: planning again on the
//! state a plan produced yields no writes.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use turnpike_api::{
    bundle::Sealed,
    compiler::{self, Inputs, KeyMaterial, Kind, Outcome},
    shard::{self, ShardError},
    signing::BundleSigner,
    types::{
        AccessPolicy, ApiKey, ApiKeyStatus, CorsPolicy, KeyPhase, PolicyStatus, RateLimitPolicy,
    },
};

use crate::material::Material;

/// Most owner references put on one bundle object. The operator deletes bundles of
/// vanished targets itself; owner references are the safety net for when it is not
/// running, and thousands of them would bloat every bundle.
pub const MAX_OWNERS: usize = 32;

/// What a namespace looks like now.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// ApiKeys.
    pub api_keys: &'a [ApiKey],
    /// AccessPolicies.
    pub access: &'a [AccessPolicy],
    /// RateLimitPolicies.
    pub rate: &'a [RateLimitPolicy],
    /// CorsPolicies.
    pub cors: &'a [CorsPolicy],
    /// Key material by ApiKey name.
    pub materials: &'a BTreeMap<String, Material>,
    /// Bundle objects as they are, by target.
    pub bundles: &'a BTreeMap<String, ExistingBundle>,
    /// Targets known from pods.
    pub extra_targets: &'a [String],
    /// The clock.
    pub now: Timestamp,
    /// Most bytes of JSON per key file ([`shard::SHARD_BUDGET`]; tests use less to
    /// shard a few keys).
    pub shard_budget: usize,
    /// The bundle signing key(s) (see [`turnpike_api::signing`]); `None` writes
    /// unsigned bundles (tests of everything else).
    pub signer: Option<&'a BundleSigner>,
}

/// A target's bundle objects as found in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExistingBundle {
    /// `keys.json` of the Secret, if it exists.
    pub keys: Option<String>,
    /// `policy.json` of the ConfigMap, if it exists.
    pub policy: Option<String>,
    /// Owner references of the Secret.
    pub secret_owners: Vec<OwnerReference>,
    /// Owner references of the ConfigMap.
    pub config_map_owners: Vec<OwnerReference>,
    /// Session epoch of the current key bundle.
    pub epoch: Option<u64>,
    /// Extra key shard Secrets found, by shard number (1-based).
    pub shards: BTreeMap<usize, ExistingShard>,
}

/// An extra key shard Secret as found in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExistingShard {
    /// Its `keys-<n>.json`, if present.
    pub keys: Option<String>,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
}

/// One target's bundle to write.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleWrite {
    /// Target.
    pub target: String,
    /// Secret `keys.json`.
    pub keys_json: String,
    /// ConfigMap `policy.json`.
    pub policy_json: String,
    /// Owner references for both objects.
    pub owners: Vec<OwnerReference>,
    /// Content hashes (keys, policy), for logs and Events.
    pub hashes: (String, String),
    /// Extra key shards whose Secret is missing or differs, to write *before* the
    /// primary Secret, so a primary never lists a shard the API server lacks.
    pub shards: Vec<ShardWrite>,
    /// Numbers of extra shard Secrets the new primary no longer lists, to delete
    /// *after* the primary is written (a sidecar that still sees the old primary keeps
    /// finding them meanwhile).
    pub stale_shards: Vec<usize>,
    /// Extra shards the target has in all, written or unchanged.
    pub shard_count: usize,
}

/// One extra key shard Secret to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardWrite {
    /// Shard number, 1-based: Secret `turnpike-<target>.keys-<n>`, data key `keys-<n>.json`.
    pub n: usize,
    /// Its JSON.
    pub json: String,
}

/// A status to write (the whole `status` object, for a merge patch of the subresource).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusWrite {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// New status.
    pub status: Value,
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

/// An Event to publish, regarding a Turnpike resource or a bundle ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWrite {
    /// Kind of the object regarded (`ConfigMap` for bundles).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Reason (`KeyRevoked`, ...).
    pub reason: &'static str,
    /// Note for `kubectl describe`; never a secret.
    pub note: String,
    /// Severity.
    pub severity: Severity,
}

/// Everything a reconcile must write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Bundles whose content or owners changed.
    pub writes: Vec<BundleWrite>,
    /// Targets whose bundles must go.
    pub deletes: Vec<String>,
    /// Statuses that changed.
    pub statuses: Vec<StatusWrite>,
    /// Events for transitions.
    pub events: Vec<EventWrite>,
    /// When to look again (an expiry or the end of a grace period).
    pub requeue_at: Option<i64>,
    /// Outcomes of the compile, for metrics.
    pub outcomes: Vec<compiler::ResourceOutcome>,
    /// Targets whose keys cannot be written (more Secrets than allowed), with the
    /// reason: their bundle is left as it is (sidecars keep enforcing the last one
    /// written).
    pub too_large: BTreeMap<String, ShardError>,
}

impl Plan {
    /// True when nothing needs writing.
    pub fn is_noop(&self) -> bool {
        self.writes.is_empty() && self.deletes.is_empty() && self.statuses.is_empty()
    }
}

fn owner<K: Resource<DynamicType = ()>>(r: &K) -> Option<OwnerReference> {
    let uid = r.meta().uid.clone()?;
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: r.name_any(),
        uid,
        block_owner_deletion: None,
        controller: None,
    })
}

/// Plans a namespace.
pub fn plan(s: &Snapshot<'_>) -> Plan {
    let now_s = s.now.as_second();
    let key_material: BTreeMap<String, KeyMaterial> = s
        .materials
        .iter()
        .map(|(name, m)| {
            let previous = m.previous.clone().filter(|p| p.not_after > now_s);
            (
                name.clone(),
                KeyMaterial {
                    key_id: m.key_id.clone(),
                    hash: m.hash.clone(),
                    previous,
                },
            )
        })
        .collect();
    let live_keys: Vec<ApiKey> = s
        .api_keys
        .iter()
        .filter(|k| k.meta().deletion_timestamp.is_none())
        .cloned()
        .collect();
    let epoch = s
        .bundles
        .values()
        .filter_map(|b| b.epoch)
        .max()
        .unwrap_or(1);
    let out = compiler::compile(&Inputs {
        namespace: s.namespace,
        api_keys: &live_keys,
        access_policies: s.access,
        rate_limit_policies: s.rate,
        cors_policies: s.cors,
        key_material: &key_material,
        extra_targets: s.extra_targets,
        epoch,
    });

    let mut plan = Plan::default();

    // Bundles.
    for (target, b) in &out.bundles {
        let mut owners: Vec<OwnerReference> = Vec::new();
        let src = &b.policy.sources;
        owners.extend(
            src.access_policy
                .as_ref()
                .and_then(|n| s.access.iter().find(|p| &p.name_any() == n))
                .and_then(owner),
        );
        owners.extend(
            src.rate_limit_policy
                .as_ref()
                .and_then(|n| s.rate.iter().find(|p| &p.name_any() == n))
                .and_then(owner),
        );
        owners.extend(
            src.cors_policy
                .as_ref()
                .and_then(|n| s.cors.iter().find(|p| &p.name_any() == n))
                .and_then(owner),
        );
        let names: BTreeSet<&str> = b.keys.keys.values().map(|k| k.name.as_str()).collect();
        let mut key_owners: Vec<OwnerReference> = live_keys
            .iter()
            .filter(|k| names.contains(k.name_any().as_str()))
            .filter_map(owner)
            .collect();
        key_owners.sort_by(|a, b| a.name.cmp(&b.name));
        owners.extend(
            key_owners
                .into_iter()
                .take(MAX_OWNERS.saturating_sub(owners.len())),
        );

        let mut sharded = match shard::split_with_budget(&b.keys, s.shard_budget) {
            Ok(sharded) => sharded,
            Err(e) => {
                // Nothing of this target is written, so its objects stay a consistent
                // pair; the statuses below and an Event say why.
                plan.too_large.insert(target.clone(), e);
                continue;
            }
        };
        let existing = s.bundles.get(target);
        let mut policy = b.policy.clone();
        if let Some(signer) = s.signer {
            // A shard's content hash leaves its signatures out, so the primary's pins
            // stay as they are.
            for shard in &mut sharded.shards {
                shard.sign(signer);
            }
            let old = |f: fn(&ExistingBundle) -> Option<&String>| {
                existing.and_then(f).map(String::as_str)
            };
            seal_signed(
                &mut sharded.primary,
                |k| &mut k.generation,
                old(|e| e.keys.as_ref()),
                signer,
                s.now,
            );
            seal_signed(
                &mut policy,
                |p| &mut p.generation,
                old(|e| e.policy.as_ref()),
                signer,
                s.now,
            );
        }
        let keys_json = sharded.primary.to_json();
        let policy_json = policy.to_json();
        let unchanged = existing.is_some_and(|e| {
            e.keys.as_deref() == Some(keys_json.as_str())
                && e.policy.as_deref() == Some(policy_json.as_str())
                && e.secret_owners == owners
                && e.config_map_owners == owners
        });
        let shards: Vec<ShardWrite> = sharded
            .shards
            .iter()
            .map(|k| ShardWrite {
                n: k.shard,
                json: k.to_json(),
            })
            .filter(|w| {
                let found = existing.and_then(|e| e.shards.get(&w.n));
                !found.is_some_and(|f| f.keys.as_deref() == Some(&w.json) && f.owners == owners)
            })
            .collect();
        let stale_shards: Vec<usize> = existing
            .map(|e| {
                e.shards
                    .keys()
                    .copied()
                    .filter(|n| *n > sharded.shards.len())
                    .collect()
            })
            .unwrap_or_default();
        if !unchanged || !shards.is_empty() || !stale_shards.is_empty() {
            if !unchanged && existing.is_some_and(|e| e.policy.is_some()) {
                plan.events.push(EventWrite {
                    kind: "ConfigMap".into(),
                    name: turnpike_api::bundle::object_name(target),
                    reason: "BundleUpdated",
                    note: format!(
                        "bundle for target {target} updated: {} keys in {} Secret(s), policy {}",
                        b.keys.keys.len(),
                        1 + sharded.shards.len(),
                        short(&policy.content_hash)
                    ),
                    severity: Severity::Normal,
                });
            }
            plan.writes.push(BundleWrite {
                target: target.clone(),
                keys_json,
                policy_json,
                owners,
                hashes: (
                    sharded.primary.content_hash.clone(),
                    policy.content_hash.clone(),
                ),
                shards,
                stale_shards,
                shard_count: sharded.shards.len(),
            });
        }
    }
    plan.deletes = s
        .bundles
        .keys()
        .filter(|t| !out.bundles.contains_key(*t))
        .cloned()
        .collect();

    // Statuses and Events.
    let mut newly_too_large: BTreeMap<String, String> = BTreeMap::new();
    for key in &live_keys {
        let name = key.name_any();
        let outcome = out.outcome(Kind::ApiKey, &name);
        let material = s.materials.get(&name);
        let (status, events) = api_key_status(key, outcome, material, &plan.too_large, s.now);
        let old = key.status.as_ref().map(|st| st.conditions.as_slice());
        if ready_reason(&status.conditions) == Some(TOO_LARGE)
            && old.and_then(ready_reason) != Some(TOO_LARGE)
            && let Some(Outcome::Accepted { targets }) = outcome
        {
            for t in targets.iter().filter(|t| plan.too_large.contains_key(*t)) {
                newly_too_large
                    .entry(t.clone())
                    .or_insert_with(|| name.clone());
            }
        }
        push_status(&mut plan, Kind::ApiKey, &name, key.status.as_ref(), &status);
        plan.events.extend(events);
        if let Some(at) = next_instant(key, material, now_s) {
            plan.requeue_at = Some(plan.requeue_at.map_or(at, |r| r.min(at)));
        }
    }
    policy_statuses(&mut plan, Kind::AccessPolicy, s.access, &out, s.now);
    policy_statuses(&mut plan, Kind::RateLimitPolicy, s.rate, &out, s.now);
    policy_statuses(&mut plan, Kind::CorsPolicy, s.cors, &out, s.now);
    // One Event per target when keys newly hit the limit (not one per key: a target
    // over the limit has tens of thousands), regarding the bundle ConfigMap when there
    // is one, else the first such ApiKey.
    for (target, first_key) in newly_too_large {
        let has_config_map = s.bundles.get(&target).is_some_and(|e| e.policy.is_some());
        let (kind, name) = if has_config_map {
            ("ConfigMap", turnpike_api::bundle::object_name(&target))
        } else {
            ("ApiKey", first_key)
        };
        plan.events.push(EventWrite {
            kind: kind.into(),
            name,
            reason: TOO_LARGE,
            note: too_large_note(&target, &plan.too_large[&target].to_string()),
            severity: Severity::Warning,
        });
    }
    plan.outcomes = out.outcomes;
    plan
}

/// Seals and signs `doc`, keeping the written file's generation when the content is
/// the same (so an unchanged bundle is byte for byte what is there: no write) and
/// raising it otherwise, to at least the clock in milliseconds: generations then grow
/// across operator restarts and leader changes, and a replayed old file is always
/// below the one a sidecar holds.
///
/// Only a written file that this operator's keys signed counts: a generation in a file
/// someone else wrote (say `u64::MAX`, to saturate the counter and make every later
/// bundle equal in generation, which sidecars accept) is ignored, and the clock
/// decides.
fn seal_signed<T>(
    doc: &mut T,
    generation: fn(&mut T) -> &mut u64,
    written: Option<&str>,
    signer: &BundleSigner,
    now: Timestamp,
) where
    T: Sealed + Clone + for<'de> serde::Deserialize<'de>,
{
    let ours = written
        .and_then(|w| turnpike_api::bundle::parse::<T>(w).ok())
        .filter(|w| w.verify(&signer.public()).is_ok());
    let (written_generation, written_hash) = match ours {
        Some(mut w) => (*generation(&mut w), w.content_hash().to_string()),
        None => (0, String::new()),
    };
    *generation(doc) = written_generation;
    doc.seal();
    if doc.content_hash() != written_hash {
        let clock = u64::try_from(now.as_millisecond()).unwrap_or(0);
        *generation(doc) = written_generation.saturating_add(1).max(clock);
        doc.seal();
    }
    doc.sign(signer);
}

/// Condition reason (and Event reason) of a resource whose target's keys need more
/// Secrets than allowed.
pub const TOO_LARGE: &str = "BundleTooLarge";

fn too_large_note(target: &str, why: &str) -> String {
    format!(
        "{why}; the bundle of target {target} is not updated, its sidecars keep enforcing the one last written"
    )
}

/// The reason as an ApiKey's status gives it: without counts, so that adding a key to
/// a target over the limit does not rewrite the status of every key it holds.
fn too_large_summary(target: &str, e: &ShardError) -> String {
    let why = match e {
        ShardError::EntryTooLarge { name, .. } => {
            format!("the entry of ApiKey {name} alone is larger than a key Secret may hold")
        }
        _ => format!(
            "its keys need more than the {} Secrets one target may use",
            turnpike_api::bundle::MAX_KEY_SHARDS
        ),
    };
    too_large_note(target, &format!("target {target}: {why}"))
}

fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    old_reason(conditions, "Ready")
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn push_status<S: serde::Serialize>(
    plan: &mut Plan,
    kind: Kind,
    name: &str,
    old: Option<&S>,
    new: &S,
) {
    let new_v = serde_json::to_value(new).unwrap_or(Value::Null);
    let old_v = old.map(|o| serde_json::to_value(o).unwrap_or(Value::Null));
    if old_v.as_ref() != Some(&new_v) {
        plan.statuses.push(StatusWrite {
            kind,
            name: name.to_string(),
            status: new_v,
        });
    }
}

/// The earliest future instant at which this key's state changes by itself.
fn next_instant(key: &ApiKey, material: Option<&Material>, now_s: i64) -> Option<i64> {
    let expiry = key
        .spec
        .expires_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.as_second())
        .filter(|t| *t > now_s && !key.spec.revoked);
    let grace_end = material
        .and_then(|m| m.previous.as_ref())
        .map(|p| p.not_after)
        .filter(|t| *t > now_s);
    match (expiry, grace_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Keeps `lastTransitionTime` when status and reason did not change.
fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status && c.reason == reason)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: last,
        observed_generation: generation,
    }
}

fn old_reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

fn api_key_status(
    key: &ApiKey,
    outcome: Option<&Outcome>,
    material: Option<&Material>,
    too_large: &BTreeMap<String, ShardError>,
    now: Timestamp,
) -> (ApiKeyStatus, Vec<EventWrite>) {
    let name = key.name_any();
    let old = key.status.clone().unwrap_or_default();
    let generation = key.meta().generation;
    let expired = key
        .spec
        .expires_at
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| t <= now);
    let blocked: Vec<&String> = match outcome {
        Some(Outcome::Accepted { targets }) => targets
            .iter()
            .filter(|t| too_large.contains_key(*t))
            .collect(),
        _ => Vec::new(),
    };
    let (phase, ready, reason, message) = match outcome {
        // The lifecycle phase stays; Ready says the change is not delivered (revocation
        // included), which matters more than anything else the key could report.
        Some(Outcome::Accepted { .. }) if !blocked.is_empty() => (
            if key.spec.revoked {
                KeyPhase::Revoked
            } else if expired {
                KeyPhase::Expired
            } else {
                KeyPhase::Active
            },
            false,
            TOO_LARGE,
            blocked
                .iter()
                .map(|t| too_large_summary(t, &too_large[*t]))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Some(Outcome::Invalid { message }) => {
            (KeyPhase::Pending, false, "Invalid", message.clone())
        }
        Some(Outcome::Conflicted { winner, .. }) => (
            KeyPhase::Pending,
            false,
            "Conflicted",
            format!("key id already belongs to ApiKey {winner}, which is older"),
        ),
        Some(Outcome::Pending) | None => (
            KeyPhase::Pending,
            false,
            "Pending",
            "waiting for the operator to issue the key".into(),
        ),
        Some(Outcome::Accepted { .. }) if key.spec.revoked => (
            KeyPhase::Revoked,
            false,
            "Revoked",
            "spec.revoked is true: every sidecar refuses this key".into(),
        ),
        Some(Outcome::Accepted { .. }) if expired => (
            KeyPhase::Expired,
            false,
            "Expired",
            format!(
                "expired at {}",
                key.spec.expires_at.as_deref().unwrap_or_default()
            ),
        ),
        Some(Outcome::Accepted { targets }) => (
            KeyPhase::Active,
            true,
            "Active",
            if targets.is_empty() {
                "accepted; no target in this namespace yet".into()
            } else {
                format!("accepted by targets: {}", targets.join(", "))
            },
        ),
    };
    let mut events = Vec::new();
    let was = old_reason(&old.conditions, "Ready");
    if was != Some(reason) {
        let event = match reason {
            "Revoked" => Some(("KeyRevoked", Severity::Normal)),
            "Expired" => Some(("KeyExpired", Severity::Normal)),
            "Invalid" => Some(("PolicyInvalid", Severity::Warning)),
            "Conflicted" => Some(("PolicyConflicted", Severity::Warning)),
            _ => None,
        };
        if let Some((reason, severity)) = event {
            events.push(EventWrite {
                kind: "ApiKey".into(),
                name: name.clone(),
                reason,
                note: message.clone(),
                severity,
            });
        }
    }
    let status = ApiKeyStatus {
        key_id: material
            .map(|m| m.key_id.to_string())
            .or_else(|| key.spec.key_id.clone()),
        phase: Some(phase),
        observed_generation: generation,
        issued_at: material.map(|m| Time(m.issued_at)),
        rotated_at: material.and_then(|m| m.rotated_at).map(Time),
        previous_secret_valid_until: material
            .and_then(|m| m.previous.as_ref())
            .filter(|p| p.not_after > now.as_second())
            .and_then(|p| Timestamp::from_second(p.not_after).ok())
            .map(Time),
        conditions: vec![condition(
            &old.conditions,
            "Ready",
            ready,
            reason,
            message,
            generation,
            now,
        )],
    };
    (status, events)
}

fn policy_statuses<K>(
    plan: &mut Plan,
    kind: Kind,
    items: &[K],
    out: &compiler::Output,
    now: Timestamp,
) where
    K: Resource<DynamicType = ()> + HasPolicyStatus,
{
    for item in items {
        let name = item.name_any();
        let old = item.policy_status().cloned().unwrap_or_default();
        let generation = item.meta().generation;
        let (accepted, reason, message, targets) = match out.outcome(kind, &name) {
            Some(Outcome::Accepted { targets })
                if targets.iter().any(|t| plan.too_large.contains_key(t)) =>
            {
                (
                    false,
                    TOO_LARGE,
                    targets
                        .iter()
                        .filter_map(|t| {
                            plan.too_large
                                .get(t)
                                .map(|why| too_large_note(t, &why.to_string()))
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    targets
                        .iter()
                        .filter(|t| !plan.too_large.contains_key(*t))
                        .cloned()
                        .collect(),
                )
            }
            Some(Outcome::Accepted { targets }) => (
                true,
                "Accepted",
                if targets.is_empty() {
                    "accepted; no target uses it yet".to_string()
                } else {
                    format!("in force for targets: {}", targets.join(", "))
                },
                targets.clone(),
            ),
            Some(Outcome::Conflicted { winner, targets }) => (
                false,
                "Conflicted",
                format!(
                    "{} {winner} is older and applies to the same {}; this policy is not in force",
                    kind.as_str(),
                    if targets.is_empty() {
                        "targets".to_string()
                    } else {
                        format!("targets ({})", targets.join(", "))
                    }
                ),
                Vec::new(),
            ),
            Some(Outcome::Invalid { message }) => (false, "Invalid", message.clone(), Vec::new()),
            Some(Outcome::Pending) | None => continue,
        };
        if old_reason(&old.conditions, "Accepted") != Some(reason) {
            let event = match reason {
                "Invalid" => Some(("PolicyInvalid", Severity::Warning)),
                "Conflicted" => Some(("PolicyConflicted", Severity::Warning)),
                TOO_LARGE => Some((TOO_LARGE, Severity::Warning)),
                _ => None,
            };
            if let Some((r, severity)) = event {
                plan.events.push(EventWrite {
                    kind: kind.as_str().into(),
                    name: name.clone(),
                    reason: r,
                    note: message.clone(),
                    severity,
                });
            }
        }
        let status = PolicyStatus {
            observed_generation: generation,
            targets,
            conditions: vec![condition(
                &old.conditions,
                "Accepted",
                accepted,
                reason,
                message,
                generation,
                now,
            )],
        };
        push_status(plan, kind, &name, item.policy_status(), &status);
    }
}

/// Access to the shared status of the policy kinds.
pub trait HasPolicyStatus {
    /// The status, if any.
    fn policy_status(&self) -> Option<&PolicyStatus>;
}

impl HasPolicyStatus for AccessPolicy {
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}
impl HasPolicyStatus for RateLimitPolicy {
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}
impl HasPolicyStatus for CorsPolicy {
    fn policy_status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
}
