//! `--bundle-source api`: the bundle from the Kubernetes API.
//!
//! Two watches, each on one object by name (field selector `metadata.name`, which is
//! what RBAC `resourceNames` can authorise for `list` and `watch`): Secret
//! `turnpike-<target>` (`keys.json`) and ConfigMap `turnpike-<target>`
//! (`policy.json`). The extra key shards `turnpike-<target>.keys-<n>` that a
//! `keys.json` lists are read with one `get` each when the primary changes: the
//! operator writes the shards before the primary that lists them, so a primary never
//! names shard content the API server does not have yet; a set that still does not
//! match (a torn update, or a shard that is missing) is refused like any invalid
//! bundle and the shards are fetched again with backoff until it matches or the
//! primary changes.
//!
//! Validation is the directory source's ([`crate::source::compile_texts`]): content
//! hashes, shard set, namespace and target; a refused bundle never replaces the last
//! good one. kube-runtime's watcher re-lists when a watch expires (410 Gone) and backs
//! off on errors; while the API server is unreachable the last good bundle stays in
//! force and the sidecar stays ready.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use turnpike_api::bundle::{KEYS_FILE, POLICY_FILE, object_name, shard_object_name};
use turnpike_api::shard;

use crate::audit_log::AuditLog;
use crate::metrics::Metrics;
use crate::source::{BundleStore, LoadError, compile_texts};

/// Server-side timeout of one watch request; kube-runtime starts the next one.
pub const WATCH_TIMEOUT_SECS: u32 = 50;
/// Timeout of one `get` of a shard.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait before a refused shard set is fetched again.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the watch follows.
#[derive(Clone, Debug)]
pub struct Target {
    /// Namespace of the bundle objects.
    pub namespace: String,
    /// Target name.
    pub target: String,
}

enum Change {
    Keys(Option<String>),
    Policy(Option<String>),
    Error(String),
    Nothing,
}

fn data_of_secret(s: &Secret) -> Option<String> {
    let bytes = s.data.as_ref()?.get(KEYS_FILE)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn data_of_config_map(c: &ConfigMap) -> Option<String> {
    c.data.as_ref()?.get(POLICY_FILE).cloned()
}

/// Maps a watcher event of one named object to the change of its text. `Init` and
/// `InitDone` bracket a re-list: an `InitDone` without an `InitApply` means the
/// object does not exist.
fn change<K>(
    ev: Result<Event<K>, watcher::Error>,
    seen_in_init: &mut bool,
    text: impl Fn(&K) -> Option<String>,
    wrap: impl Fn(Option<String>) -> Change,
) -> Change {
    match ev {
        Ok(Event::Init) => {
            *seen_in_init = false;
            Change::Nothing
        }
        Ok(Event::InitApply(k)) => {
            *seen_in_init = true;
            wrap(text(&k))
        }
        Ok(Event::Apply(k)) => wrap(text(&k)),
        Ok(Event::Delete(_)) => wrap(None),
        Ok(Event::InitDone) if !*seen_in_init => wrap(None),
        Ok(Event::InitDone) => Change::Nothing,
        Err(e) => Change::Error(e.to_string()),
    }
}

/// Follows the bundle objects until `shutdown`; installs every valid bundle in
/// `store`.
pub async fn run(
    client: Client,
    t: Target,
    store: Arc<BundleStore>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    shutdown: CancellationToken,
) {
    let name = object_name(&t.target);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &t.namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client, &t.namespace);
    let cfg = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let (mut keys_init, mut policy_init) = (false, false);
    let mut keys_stream = watcher::watcher(secrets.clone(), cfg.clone())
        .default_backoff()
        .boxed();
    let mut policy_stream = watcher::watcher(maps, cfg).default_backoff().boxed();
    let describe = format!("API {}/{name}", t.namespace);

    let mut state = State::default();
    let mut retry: Option<Duration> = None;
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut api_errors = 0u64;
    loop {
        let ch = tokio::select! {
            () = shutdown.cancelled() => return,
            Some(ev) = keys_stream.next() => change(ev, &mut keys_init, data_of_secret, Change::Keys),
            Some(ev) = policy_stream.next() => change(ev, &mut policy_init, data_of_config_map, Change::Policy),
            () = &mut sleep, if retry.is_some() => Change::Nothing,
        };
        let retrying = matches!(ch, Change::Nothing) && retry.is_some();
        match ch {
            Change::Keys(k) => state.keys = k,
            Change::Policy(p) => state.policy = p,
            Change::Error(e) => {
                api_errors += 1;
                // The first error after a success is a warning, the repeats (the
                // watcher retries with backoff) are debug lines.
                if api_errors == 1 {
                    tracing::warn!(error = %e, source = %describe, kept_previous = store.current().is_some(), "bundle watch failed; retrying with backoff, the last good bundle stays in force");
                } else {
                    tracing::debug!(error = %e, source = %describe, "bundle watch failed again");
                }
                continue;
            }
            Change::Nothing if !retrying => continue,
            Change::Nothing => {}
        }
        api_errors = 0;
        let (Some(keys), Some(policy)) = (&state.keys, &state.policy) else {
            let missing = if state.keys.is_none() {
                format!("Secret/{name} (data key {KEYS_FILE})")
            } else {
                format!("ConfigMap/{name} (data key {POLICY_FILE})")
            };
            refused(
                &store,
                &metrics,
                &audit,
                &describe,
                &t,
                &LoadError::Object {
                    object: missing,
                    message: "missing".into(),
                },
                &mut state,
            );
            continue;
        };
        let digest: [u8; 32] = {
            let mut h = Sha256::new();
            h.update((keys.len() as u64).to_le_bytes());
            h.update(keys.as_bytes());
            h.update(policy.as_bytes());
            h.finalize().into()
        };
        if state.seen == Some(digest) && !retrying {
            continue;
        }
        if state.seen != Some(digest) {
            retry = None;
        }
        state.seen = Some(digest);
        let shards = fetch_shards(&secrets, &t.target, keys).await;
        let result = shards.and_then(|files| {
            compile_texts(
                keys,
                &files,
                policy,
                (&t.namespace, &t.target),
                store.admission(),
                store.current().as_deref(),
            )
        });
        match result {
            Ok(bundle) => {
                retry = None;
                let count = bundle.key_count();
                let (kh, ph) = (bundle.keys_hash.clone(), bundle.policy_hash.clone());
                let description = store.install(bundle);
                store.set_api_delivered();
                metrics.bundle_loaded(&kh, &ph, count);
                tracing::info!(bundle = %description, keys = count, source = %describe, "bundle loaded");
                audit.reload(&describe, &format!("{}/{}", t.namespace, t.target), None);
                state.last_error = None;
            }
            Err(e) => {
                // A shard set that does not match yet is fetched again, with backoff.
                if matches!(e, LoadError::Shard(_) | LoadError::Object { .. }) {
                    let next = retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX));
                    retry = Some(next);
                    sleep.as_mut().reset(crate::clock::deadline_after(next));
                } else {
                    // Invalid content: wait for the objects to change.
                    retry = None;
                }
                refused(&store, &metrics, &audit, &describe, &t, &e, &mut state);
            }
        }
    }
}

#[derive(Default)]
struct State {
    keys: Option<String>,
    policy: Option<String>,
    /// Digest of the texts last looked at.
    seen: Option<[u8; 32]>,
    /// The last refusal reported (each distinct one is reported once).
    last_error: Option<String>,
}

fn refused(
    store: &BundleStore,
    metrics: &Metrics,
    audit: &AuditLog,
    describe: &str,
    t: &Target,
    e: &LoadError,
    state: &mut State,
) {
    let message = e.to_string();
    if state.last_error.as_deref() == Some(message.as_str()) {
        return;
    }
    state.last_error = Some(message.clone());
    metrics.bundle_reload_failures.inc();
    let kept = store.current().is_some();
    tracing::warn!(error = %message, source = %describe, kept_previous = kept, "bundle refused");
    audit.reload(
        describe,
        &format!("{}/{}", t.namespace, t.target),
        Some(&message),
    );
    store.fail(message);
}

/// Gets the shards `keys` lists (file name -> text). A shard that does not exist is
/// left out, for the merge to report as missing.
async fn fetch_shards(
    secrets: &Api<Secret>,
    target: &str,
    keys: &str,
) -> Result<BTreeMap<String, String>, LoadError> {
    let primary = turnpike_api::bundle::parse(keys)?;
    let mut files = BTreeMap::new();
    for (n, file) in shard::listed(&primary)? {
        let name = shard_object_name(target, n);
        let object = format!("Secret/{name}");
        let got = tokio::time::timeout(GET_TIMEOUT, secrets.get_opt(&name))
            .await
            .map_err(|_| LoadError::Object {
                object: object.clone(),
                message: format!("no answer within {GET_TIMEOUT:?}"),
            })?
            .map_err(|e| LoadError::Object {
                object: object.clone(),
                message: e.to_string(),
            })?;
        let text = got.as_ref().and_then(|s| {
            let bytes = s.data.as_ref()?.get(&file)?;
            String::from_utf8(bytes.0.clone()).ok()
        });
        if let Some(text) = text {
            files.insert(file, text);
        }
    }
    Ok(files)
}

/// The client, found as every client does (in-cluster, else `KUBECONFIG`), with a
/// timeout on every call: connect 5 s, write 10 s, read 60 s (a watch request ends
/// after [`WATCH_TIMEOUT_SECS`]).
///
/// # Errors
/// No cluster configuration found.
pub async fn client() -> Result<Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.write_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(u64::from(WATCH_TIMEOUT_SECS) + 10));
    Client::try_from(config)
}
