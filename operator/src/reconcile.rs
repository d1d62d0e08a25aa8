//! The namespace reconciler: reads a namespace's Turnpike resources, key material and
//! bundles, carries out key issuance and rotation, and writes what [`crate::plan`]
//! decides. One namespace is one unit of work: the compiler needs all of it, and
//! writing only the bundles whose bytes changed keeps "recompile only what it touches".

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{StreamExt as _, stream::FuturesUnordered};
use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Namespace, ObjectReference, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType, Recorder},
    },
};
use serde_json::json;
use tracing::{info, warn};
use turnpike_api::{
    bundle::{KEYS_FILE, MAX_KEY_SHARDS, POLICY_FILE, object_name, shard_file, shard_object_name},
    compiler::Kind,
    shard::SHARD_BUDGET,
    token::Token,
    types::{AccessPolicy, ApiKey, CorsPolicy, RateLimitPolicy},
};

use crate::{
    keys::{self, KeyAction},
    material::{self, MANAGED_BY, MATERIAL_LABEL, Material, TARGET_LABEL},
    plan::{
        self, BundleWrite, EventWrite, ExistingBundle, ExistingShard, Plan, Severity, Snapshot,
    },
};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "turnpike-operator";
/// Resync period when nothing is scheduled sooner.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Label on the key-material Secret naming its ApiKey.
pub const API_KEY_LABEL: &str = "turnpike.dev/api-key";

/// What every reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder (events.k8s.io/v1).
    pub recorder: Recorder,
    /// Hooks for metrics.
    pub observer: Arc<dyn Observer>,
    /// Consecutive failures per namespace, for the retry backoff.
    pub failures: std::sync::Mutex<BTreeMap<String, u32>>,
    /// Most bytes of JSON per key Secret ([`SHARD_BUDGET`]).
    pub shard_budget: usize,
    /// What to write of the sidecars' Role and RoleBinding ([`crate::sidecar_rbac`]):
    /// nothing unless the injector gives sidecars an API token
    /// (`--sidecar-bundle-source api`).
    pub sidecar_rbac: crate::sidecar_rbac::Mode,
    /// The bundle signing key(s); `None` writes unsigned bundles.
    pub signer: Option<Arc<turnpike_api::signing::BundleSigner>>,
}

impl Context {
    /// A context with no failures recorded.
    pub fn new(client: Client, recorder: Recorder, observer: Arc<dyn Observer>) -> Self {
        Self {
            client,
            recorder,
            observer,
            failures: std::sync::Mutex::new(BTreeMap::new()),
            shard_budget: SHARD_BUDGET,
            sidecar_rbac: crate::sidecar_rbac::Mode::RoleAndBinding,
            signer: None,
        }
    }

    /// The same context signing every bundle with `signer`.
    pub fn with_signer(mut self, signer: Arc<turnpike_api::signing::BundleSigner>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// The same context with another [`crate::sidecar_rbac::Mode`] (what it no longer
    /// writes, it removes).
    pub fn with_sidecar_rbac(mut self, mode: crate::sidecar_rbac::Mode) -> Self {
        self.sidecar_rbac = mode;
        self
    }

    /// The same context with another key-shard budget (tests shard a few keys with a
    /// small one).
    pub fn with_shard_budget(mut self, budget: usize) -> Self {
        self.shard_budget = budget;
        self
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        // The map only holds counters: a panic elsewhere cannot leave it inconsistent.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// First retry delay after a failed reconcile; doubled per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Retry delay after `failures` consecutive failures (1 = the first).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// Receives what reconciles did, for metrics. Never gets secrets.
pub trait Observer: Send + Sync {
    /// A reconcile finished.
    fn reconciled(&self, _ok: bool, _seconds: f64) {}
    /// Bundles written and deleted.
    fn bundles(&self, _written: usize, _deleted: usize) {}
    /// Keys issued or rotated.
    fn key_minted(&self, _rotated: bool) {}
    /// Keys by phase in a namespace: Pending, Active, Expired, Revoked.
    fn key_phases(&self, _namespace: &str, _counts: [u64; 4]) {}
}

/// An observer that ignores everything (tests, tools).
pub struct NoObserver;
impl Observer for NoObserver {}

/// Why a reconcile failed. Messages carry no secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },
    /// Minting or hashing a key failed.
    #[error("ApiKey {api_key}: {source}")]
    Mint {
        /// Which ApiKey.
        api_key: String,
        /// Why.
        source: keys::MintError,
    },
    /// Several independent steps failed; the rest was done.
    #[error("{} step(s) failed; first: {first}", count)]
    Partial {
        /// How many.
        count: usize,
        /// The first failure.
        first: Box<Error>,
    },
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

fn labels(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())]);
    for (k, v) in extra {
        l.insert((*k).into(), (*v).into());
    }
    l
}

/// Everything read from one namespace.
struct Loaded {
    api_keys: Vec<ApiKey>,
    access: Vec<AccessPolicy>,
    rate: Vec<RateLimitPolicy>,
    cors: Vec<CorsPolicy>,
    materials: BTreeMap<String, Material>,
    bundles: BTreeMap<String, ExistingBundle>,
    config_map_uids: BTreeMap<String, String>,
}

/// Writes of independent objects (key material and token Secrets, statuses) in flight
/// at once in one reconcile. Sequential writes took 267 s to bring 10,000 ApiKeys to
/// Active against the local API server (scripts/bench-operator-api); the API server
/// handles many requests at once, and 16 keeps one namespace from monopolising it.
const WRITE_CONCURRENCY: usize = 16;

async fn list<K>(client: &Client, ns: &str, lp: &ListParams) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(lp)
        .await
        .map_err(kube_err(format!("listing {} in {ns}", K::plural(&()))))?;
    Ok(list.items)
}

async fn load(client: &Client, ns: &str) -> Result<Loaded, Error> {
    let all = ListParams::default();
    let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let api_keys = list::<ApiKey>(client, ns, &all).await?;
    let access = list::<AccessPolicy>(client, ns, &all).await?;
    let rate = list::<RateLimitPolicy>(client, ns, &all).await?;
    let cors = list::<CorsPolicy>(client, ns, &all).await?;

    let material_secrets = list::<Secret>(
        client,
        ns,
        &ListParams::default().labels(&format!("{managed},{MATERIAL_LABEL}=true")),
    )
    .await?;
    let mut materials = BTreeMap::new();
    for s in material_secrets {
        let Some(owner) = s.labels().get(API_KEY_LABEL).cloned() else {
            continue;
        };
        match Material::from_data(
            s.data
                .as_ref()
                .map(|d| {
                    d.iter()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect::<BTreeMap<_, _>>()
                })
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
        ) {
            Ok(m) => {
                materials.insert(owner, m);
            }
            // Never re-mint over an unreadable record: the key stays Pending and the
            // log says why (the message names the field, never its value).
            Err(e) => warn!(namespace = ns, api_key = %owner, error = %e, "skipping key material"),
        }
    }

    let bundle_selector = ListParams::default().labels(&format!("{managed},{TARGET_LABEL}"));
    let mut bundles: BTreeMap<String, ExistingBundle> = BTreeMap::new();
    for s in list::<Secret>(client, ns, &bundle_selector).await? {
        let Some(target) = s.labels().get(TARGET_LABEL).cloned() else {
            continue;
        };
        // The primary and the extra key shards carry the same labels; the name tells
        // them apart.
        let name = s.name_any();
        let shard = shard_number(&target, &name);
        if shard.is_none() && name != object_name(&target) {
            continue;
        }
        let file = shard.map_or_else(|| KEYS_FILE.to_string(), shard_file);
        let keys = s
            .data
            .as_ref()
            .and_then(|d| d.get(&file))
            .and_then(|b| String::from_utf8(b.0.clone()).ok());
        let owners = s.metadata.owner_references.clone().unwrap_or_default();
        let e = bundles.entry(target).or_default();
        if let Some(n) = shard {
            e.shards.insert(n, ExistingShard { keys, owners });
            continue;
        }
        e.epoch = keys
            .as_deref()
            .and_then(|k| serde_json::from_str::<serde_json::Value>(k).ok())
            .and_then(|v| v["epoch"].as_u64());
        e.keys = keys;
        e.secret_owners = owners;
    }
    let mut config_map_uids = BTreeMap::new();
    for c in list::<ConfigMap>(client, ns, &bundle_selector).await? {
        let Some(target) = c.labels().get(TARGET_LABEL).cloned() else {
            continue;
        };
        if let Some(uid) = c.metadata.uid.clone() {
            config_map_uids.insert(target.clone(), uid);
        }
        let e = bundles.entry(target).or_default();
        e.policy = c.data.as_ref().and_then(|d| d.get(POLICY_FILE)).cloned();
        e.config_map_owners = c.metadata.owner_references.clone().unwrap_or_default();
    }
    Ok(Loaded {
        api_keys,
        access,
        rate,
        cors,
        materials,
        bundles,
        config_map_uids,
    })
}

fn api_key_owner(key: &ApiKey) -> Option<OwnerReference> {
    let mut o = key.controller_owner_ref(&())?;
    o.block_owner_deletion = Some(true);
    Some(o)
}

async fn write_material(
    client: &Client,
    ns: &str,
    key: &ApiKey,
    m: &Material,
) -> Result<(), Error> {
    let name = material::secret_name(&key.name_any());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels(&[
                (MATERIAL_LABEL, "true"),
                (API_KEY_LABEL, &key.name_any()),
            ])),
            owner_references: api_key_owner(key).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(
            m.to_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    apply_secret(client, ns, &name, &secret, "key material").await
}

/// Writes the token once to `<name>-token`. The operator never reads it back.
async fn deliver_token(
    client: &Client,
    ns: &str,
    key: &ApiKey,
    token: &Token,
) -> Result<(), Error> {
    let name = material::token_secret_name(&key.name_any());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels(&[(API_KEY_LABEL, &key.name_any())])),
            owner_references: api_key_owner(key).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([
            ("token".to_string(), token.expose_token().to_string()),
            ("keyId".to_string(), token.id().to_string()),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    apply_secret(client, ns, &name, &secret, "token").await
}

/// Server-side applies a Secret the operator owns; `what` names it in errors.
async fn apply_secret(
    client: &Client,
    ns: &str,
    name: &str,
    secret: &Secret,
    what: &str,
) -> Result<(), Error> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .map_err(kube_err(format!("writing {what} Secret {ns}/{name}")))?;
    Ok(())
}

/// The shard number of Secret `name` if it is one of `target`'s extra key shards.
fn shard_number(target: &str, name: &str) -> Option<usize> {
    let prefix = format!("{}.keys-", object_name(target));
    let n: usize = name.strip_prefix(&prefix)?.parse().ok()?;
    (1..MAX_KEY_SHARDS)
        .contains(&n)
        .then_some(n)
        .filter(|n| shard_object_name(target, *n) == name)
}

/// Writes a target's bundle in the order that keeps sidecars safe: the extra key shards
/// first (so the primary never lists a shard the API server lacks), then the primary
/// Secret and the ConfigMap, then the deletion of shards the new primary no longer
/// lists. A failure stops the sequence; the next reconcile resumes it. Meanwhile a
/// sidecar that sees a primary and shards that do not match keeps its last good bundle.
async fn write_bundle(client: &Client, ns: &str, w: &BundleWrite) -> Result<Option<String>, Error> {
    let name = object_name(&w.target);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.into()),
        labels: Some(labels(&[(TARGET_LABEL, &w.target)])),
        owner_references: Some(w.owners.clone()),
        ..ObjectMeta::default()
    };
    let keys_secret = |name: &str, file: String, json: &str| Secret {
        metadata: meta(name),
        data: Some(BTreeMap::from([(
            file,
            ByteString(json.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    };
    for shard in &w.shards {
        let shard_name = shard_object_name(&w.target, shard.n);
        let secret = keys_secret(&shard_name, shard_file(shard.n), &shard.json);
        apply_secret(client, ns, &shard_name, &secret, "bundle key shard").await?;
    }
    let secret = keys_secret(&name, KEYS_FILE.to_string(), &w.keys_json);
    apply_secret(client, ns, &name, &secret, "bundle").await?;
    let cm = ConfigMap {
        metadata: meta(&name),
        data: Some(BTreeMap::from([(
            POLICY_FILE.to_string(),
            w.policy_json.clone(),
        )])),
        ..ConfigMap::default()
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let written = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(&name, &pp, &Patch::Apply(&cm))
        .await
        .map_err(kube_err(format!("writing bundle ConfigMap {ns}/{name}")))?;
    for n in &w.stale_shards {
        delete_secret(client, ns, &shard_object_name(&w.target, *n)).await?;
    }
    Ok(written.metadata.uid)
}

/// Deletes a Secret; one already gone is fine.
async fn delete_secret(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(format!("deleting Secret {ns}/{name}"))(e)),
    }
}

/// Deletes a vanished target's bundle: the primary first, so no primary ever lists a
/// deleted shard, then its extra key shards.
async fn delete_bundle(
    client: &Client,
    ns: &str,
    target: &str,
    shards: impl Iterator<Item = usize>,
) -> Result<(), Error> {
    let name = object_name(target);
    delete_secret(client, ns, &name).await?;
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .delete(&name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(kube_err(format!("deleting bundle {ns}/{name}"))(e)),
    }
    for n in shards {
        delete_secret(client, ns, &shard_object_name(target, n)).await?;
    }
    Ok(())
}

async fn write_status(
    client: &Client,
    ns: &str,
    kind: Kind,
    name: &str,
    status: &serde_json::Value,
) -> Result<(), Error> {
    let patch = Patch::Merge(json!({ "status": status }));
    let pp = PatchParams::default();
    let c = client.clone();
    let r = match kind {
        Kind::ApiKey => Api::<ApiKey>::namespaced(c, ns)
            .patch_status(name, &pp, &patch)
            .await
            .map(|_| ()),
        Kind::AccessPolicy => Api::<AccessPolicy>::namespaced(c, ns)
            .patch_status(name, &pp, &patch)
            .await
            .map(|_| ()),
        Kind::RateLimitPolicy => Api::<RateLimitPolicy>::namespaced(c, ns)
            .patch_status(name, &pp, &patch)
            .await
            .map(|_| ()),
        Kind::CorsPolicy => Api::<CorsPolicy>::namespaced(c, ns)
            .patch_status(name, &pp, &patch)
            .await
            .map(|_| ()),
    };
    match r {
        // Deleted meanwhile: nothing to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map_err(kube_err(format!(
            "writing status of {} {ns}/{name}",
            kind.as_str()
        ))),
    }
}

fn reference<K: Resource<DynamicType = ()>>(r: &K) -> ObjectReference {
    r.object_ref(&())
}

async fn publish(ctx: &Context, e: &EventWrite, regarding: ObjectReference) {
    let ev = Event {
        type_: match e.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        },
        reason: e.reason.to_string(),
        note: Some(e.note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // Events are best effort: a failure to record one must not fail the reconcile.
    if let Err(err) = ctx.recorder.publish(&ev, &regarding).await {
        warn!(reason = e.reason, error = %err, "could not publish Event");
    }
}

/// Reconciles one namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&ns, &ctx).await;
    ctx.observer
        .reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures().remove(&ns.name_any());
    }
    result
}

async fn reconcile_inner(ns_obj: &Namespace, ctx: &Context) -> Result<Action, Error> {
    let ns = ns_obj.name_any();
    if ns_obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let mut loaded = load(client, &ns).await?;
    let now = Timestamp::now();
    let mut failures: Vec<Error> = Vec::new();

    // Keys first: issuance and rotation change the material the compile reads. Each
    // action touches only its own key's objects, so up to WRITE_CONCURRENCY run at once.
    let mut outcomes: Vec<(String, Result<Material, Error>)> = Vec::new();
    {
        let by_name: BTreeMap<String, &ApiKey> =
            loaded.api_keys.iter().map(|k| (k.name_any(), k)).collect();
        let actions = keys::plan(&loaded.api_keys, &loaded.materials, now);
        // A FuturesUnordered refilled by hand: stream combinators with closures over
        // borrowed data make the reconcile future lose `Send` (rustc's higher-ranked
        // lifetime limitation), which the controller needs.
        let mut todo = actions
            .iter()
            .filter_map(|action| by_name.get(action.api_key()).map(|key| (action, *key)));
        let mut running = FuturesUnordered::new();
        loop {
            while running.len() < WRITE_CONCURRENCY {
                let Some((action, key)) = todo.next() else {
                    break;
                };
                running.push(key_action(ctx, &ns, key, action, &loaded.materials, now));
            }
            match running.next().await {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
    }
    for (name, outcome) in outcomes {
        match outcome {
            Ok(m) => {
                loaded.materials.insert(name, m);
            }
            Err(e) => {
                warn!(namespace = %ns, api_key = %name, error = %e, "key action failed");
                failures.push(e);
            }
        }
    }

    let plan = plan::plan(&Snapshot {
        namespace: &ns,
        api_keys: &loaded.api_keys,
        access: &loaded.access,
        rate: &loaded.rate,
        cors: &loaded.cors,
        materials: &loaded.materials,
        bundles: &loaded.bundles,
        extra_targets: &[],
        now,
        shard_budget: ctx.shard_budget,
        signer: ctx.signer.as_deref(),
    });
    // The sidecars' Role before the bundles, so a new target's (or shard's) sidecar is
    // authorised by the time its objects exist; its removal after them, so running
    // sidecars keep reading until their bundle is gone. A failure blocks no bundle write.
    let rbac_targets = if ctx.sidecar_rbac == crate::sidecar_rbac::Mode::Off {
        std::collections::BTreeSet::new()
    } else {
        bundle_targets(&loaded, &plan)
    };
    let rbac_first = !rbac_targets.is_empty();
    if rbac_first {
        sidecar_rbac(ctx, &ns, &rbac_targets, &mut failures).await;
    }
    execute(ctx, &ns, &plan, &loaded, &mut failures).await;
    if !rbac_first {
        sidecar_rbac(ctx, &ns, &rbac_targets, &mut failures).await;
    }

    let mut phases = [0u64; 4];
    for k in &loaded.api_keys {
        if let Some(phase) = k.status.as_ref().and_then(|s| s.phase) {
            phases[phase as usize] += 1;
        }
    }
    for s in plan.statuses.iter().filter(|s| s.kind == Kind::ApiKey) {
        if let Ok(p) =
            serde_json::from_value::<turnpike_api::types::KeyPhase>(s.status["phase"].clone())
        {
            let old = loaded
                .api_keys
                .iter()
                .find(|k| k.name_any() == s.name)
                .and_then(|k| k.status.as_ref().and_then(|st| st.phase));
            if let Some(o) = old {
                phases[o as usize] = phases[o as usize].saturating_sub(1);
            }
            phases[p as usize] += 1;
        }
    }
    ctx.observer.key_phases(&ns, phases);

    if !plan.is_noop() {
        info!(
            namespace = %ns,
            bundles_written = plan.writes.len(),
            bundles_deleted = plan.deletes.len(),
            statuses = plan.statuses.len(),
            "reconciled"
        );
    }
    if let Some(first) = failures.pop() {
        let count = failures.len() + 1;
        return Err(if count == 1 {
            first
        } else {
            Error::Partial {
                count,
                first: Box::new(first),
            }
        });
    }
    let next = plan
        .requeue_at
        .map(|at| Duration::from_secs(u64::try_from(at - now.as_second()).unwrap_or(0).max(1)))
        .map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(next))
}

async fn sidecar_rbac(
    ctx: &Context,
    ns: &str,
    targets: &std::collections::BTreeSet<String>,
    failures: &mut Vec<Error>,
) {
    match crate::sidecar_rbac::ensure(&ctx.client, ns, targets, ctx.sidecar_rbac).await {
        Ok(crate::sidecar_rbac::Outcome::Written) => {
            info!(
                namespace = ns,
                targets = targets.len(),
                "sidecar Role and RoleBinding written"
            );
        }
        Ok(crate::sidecar_rbac::Outcome::Removed) => {
            info!(namespace = ns, "sidecar Role and RoleBinding removed");
        }
        Ok(_) => {}
        Err(e) => {
            warn!(namespace = ns, error = %e, "sidecar Role step failed");
            failures.push(e);
        }
    }
}

/// The targets that have a bundle once `plan` is carried out: those found plus those
/// written, less those deleted.
fn bundle_targets(loaded: &Loaded, plan: &Plan) -> std::collections::BTreeSet<String> {
    let mut targets: std::collections::BTreeSet<String> = loaded.bundles.keys().cloned().collect();
    targets.extend(plan.writes.iter().map(|w| w.target.clone()));
    for t in &plan.deletes {
        targets.remove(t);
    }
    targets
}

/// [`carry_out`] with the name of its ApiKey, for running several at once.
async fn key_action(
    ctx: &Context,
    ns: &str,
    key: &ApiKey,
    action: &KeyAction,
    materials: &BTreeMap<String, Material>,
    now: Timestamp,
) -> (String, Result<Material, Error>) {
    let name = action.api_key().to_string();
    let result = carry_out(ctx, ns, key, action, materials.get(&name), now).await;
    (name, result)
}

async fn carry_out(
    ctx: &Context,
    ns: &str,
    key: &ApiKey,
    action: &KeyAction,
    current: Option<&Material>,
    now: Timestamp,
) -> Result<Material, Error> {
    let client = &ctx.client;
    let name = key.name_any();
    let mint_err = |source| Error::Mint {
        api_key: name.clone(),
        source,
    };
    match action {
        KeyAction::Issue { .. } => {
            // argon2 is CPU-heavy: keep it off the async workers.
            let (token, m) = tokio::task::spawn_blocking(move || keys::issue(now))
                .await
                .map_err(|_| mint_err(keys::MintError::Cancelled))?
                .map_err(mint_err)?;
            // Token first: if the process dies before the material is written, the next
            // reconcile issues a fresh key and overwrites the token, so the delivered
            // token always matches the recorded hash.
            deliver_token(client, ns, key, &token).await?;
            write_material(client, ns, key, &m).await?;
            ctx.observer.key_minted(false);
            publish(
                ctx,
                &EventWrite {
                    kind: "ApiKey".into(),
                    name: name.clone(),
                    reason: "KeyIssued",
                    note: format!(
                        "issued key {}; the token was written once to Secret {}",
                        m.key_id,
                        material::token_secret_name(&name)
                    ),
                    severity: Severity::Normal,
                },
                reference(key),
            )
            .await;
            Ok(m)
        }
        KeyAction::Rotate {
            rotation,
            not_after,
            ..
        } => {
            let Some(current) = current.cloned() else {
                return Err(mint_err(keys::MintError::NoCurrentKey));
            };
            let (rotation, not_after) = (rotation.clone(), *not_after);
            let (token, m) = tokio::task::spawn_blocking(move || {
                keys::rotate(&current, &rotation, not_after, now)
            })
            .await
            .map_err(|_| mint_err(keys::MintError::Cancelled))?
            .map_err(mint_err)?;
            deliver_token(client, ns, key, &token).await?;
            write_material(client, ns, key, &m).await?;
            ctx.observer.key_minted(true);
            let until = Timestamp::from_second(not_after)
                .map(|t| t.to_string())
                .unwrap_or_default();
            publish(ctx, &EventWrite {
                kind: "ApiKey".into(),
                name: name.clone(),
                reason: "KeyRotated",
                note: format!("rotated key {}: the new token is in Secret {}; the previous secret works until {until}", m.key_id, material::token_secret_name(&name)),
                severity: Severity::Normal,
            }, reference(key)).await;
            Ok(m)
        }
        KeyAction::Record {
            material: m,
            rotated,
            ..
        } => {
            write_material(client, ns, key, m).await?;
            if *rotated {
                publish(ctx, &EventWrite {
                    kind: "ApiKey".into(),
                    name: name.clone(),
                    reason: "KeyRotated",
                    note: format!("spec.hash of key {} changed; the previous hash works for the grace period", m.key_id),
                    severity: Severity::Normal,
                }, reference(key)).await;
            }
            Ok((**m).clone())
        }
    }
}

async fn execute(ctx: &Context, ns: &str, plan: &Plan, loaded: &Loaded, failures: &mut Vec<Error>) {
    let client = &ctx.client;
    let mut uids = loaded.config_map_uids.clone();
    let mut written = 0;
    for w in &plan.writes {
        match write_bundle(client, ns, w).await {
            Ok(uid) => {
                written += 1;
                if let Some(uid) = uid {
                    uids.insert(w.target.clone(), uid);
                }
                info!(namespace = ns, target = %w.target, keys_hash = %&w.hashes.0[..12.min(w.hashes.0.len())], policy_hash = %&w.hashes.1[..12.min(w.hashes.1.len())], key_shards = w.shard_count, shards_written = w.shards.len(), shards_deleted = w.stale_shards.len(), "bundle written");
            }
            Err(e) => failures.push(e),
        }
    }
    let mut deleted = 0;
    for (target, why) in &plan.too_large {
        warn!(namespace = ns, target = %target, error = %why, "bundle not written");
    }
    for t in &plan.deletes {
        let shards = loaded
            .bundles
            .get(t)
            .map(|b| b.shards.keys().copied().collect::<Vec<_>>())
            .unwrap_or_default();
        match delete_bundle(client, ns, t, shards.into_iter()).await {
            Ok(()) => deleted += 1,
            Err(e) => failures.push(e),
        }
    }
    ctx.observer.bundles(written, deleted);
    // Statuses are independent of each other: WRITE_CONCURRENCY at a time.
    let mut todo = plan.statuses.iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < WRITE_CONCURRENCY {
            let Some(s) = todo.next() else {
                break;
            };
            running.push(write_status(client, ns, s.kind, &s.name, &s.status));
        }
        match running.next().await {
            Some(Err(e)) => failures.push(e),
            Some(Ok(())) => {}
            None => break,
        }
    }
    for e in &plan.events {
        let regarding = match e.kind.as_str() {
            "ApiKey" => loaded
                .api_keys
                .iter()
                .find(|k| k.name_any() == e.name)
                .map(reference),
            "AccessPolicy" => loaded
                .access
                .iter()
                .find(|k| k.name_any() == e.name)
                .map(reference),
            "RateLimitPolicy" => loaded
                .rate
                .iter()
                .find(|k| k.name_any() == e.name)
                .map(reference),
            "CorsPolicy" => loaded
                .cors
                .iter()
                .find(|k| k.name_any() == e.name)
                .map(reference),
            "ConfigMap" => {
                let target = e.name.strip_prefix("turnpike-").unwrap_or(&e.name);
                uids.get(target).map(|uid| ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("ConfigMap".into()),
                    name: Some(e.name.clone()),
                    namespace: Some(ns.into()),
                    uid: Some(uid.clone()),
                    ..ObjectReference::default()
                })
            }
            _ => None,
        };
        if let Some(r) = regarding {
            publish(ctx, e, r).await;
        }
    }
}

/// Retry after a failure, with an exponential backoff per namespace (5 s, 10 s, ... up
/// to 5 min); a success resets it.
pub fn error_policy(ns: Arc<Namespace>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = ns.name_any();
    let n = {
        let mut f = ctx.failures();
        let n = f.entry(name.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    warn!(namespace = %name, error = %error, failures = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

impl Observer for crate::metrics::Metrics {
    fn reconciled(&self, ok: bool, seconds: f64) {
        let result = if ok {
            crate::metrics::ReconcileResult::Ok
        } else {
            crate::metrics::ReconcileResult::Error
        };
        crate::metrics::Metrics::reconciled(
            self,
            crate::metrics::ResourceKind::Namespace,
            result,
            Duration::from_secs_f64(seconds.max(0.0)),
        );
    }
    fn bundles(&self, written: usize, deleted: usize) {
        self.bundles_written(written as u64);
        self.bundles_deleted(deleted as u64);
    }
    fn key_minted(&self, rotated: bool) {
        if rotated {
            self.key_rotated();
        } else {
            self.key_issued();
        }
    }
    fn key_phases(&self, namespace: &str, counts: [u64; 4]) {
        self.set_keys_in_namespace(namespace, counts);
    }
}
