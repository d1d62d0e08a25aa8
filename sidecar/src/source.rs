//! Bundle sources and the store the request path reads the bundle from.
//!
//! - [`Source::Dir`] (`--bundle-dir`): `keys.json` and `policy.json` as the kubelet
//!   projects the Secret and ConfigMap `turnpike-<target>` into one volume, plus the
//!   extra key shards `keys-<n>.json` that a `keys.json` lists when a target's keys do
//!   not fit in one Secret (see `turnpike_api::shard`). The kubelet replaces the files
//!   by swapping a `..data` symlink, which file-change notifications report
//!   unreliably; the [`Reloader`] instead reads `keys.json` and `policy.json` every
//!   `--reload-interval` (at most about 1 MiB each), checks the shard files' size and
//!   modification time, and reloads when any of that changed. The shards are read
//!   only then, and must match the hashes `keys.json` lists: a torn set (a shard
//!   missing, older or newer than `keys.json`) is refused like any invalid bundle and
//!   retried when the files change again.
//! - [`Source::Manifests`] (`--manifests DIR --target NAME`): the YAML you would
//!   `kubectl apply`, compiled in process by the same compiler the operator uses,
//!   reloaded the same way.
//!
//! A bundle that fails to read, parse or compile never replaces the last good one:
//! the failure is logged (the error never quotes the files' values), counted in
//! `turnpike_sidecar_bundle_reload_failures_total`, audited, and shown on `/readyz`.
//! Until a first bundle loads the sidecar is not ready and refuses every request
//! with 503 (fail closed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use turnpike_api::bundle::{
    self, KEYS_FILE, KeyBundle, MAX_KEY_SHARDS, POLICY_FILE, PolicyBundle, shard_file,
};
use turnpike_api::compiler::{self, Inputs, Outcome};
use turnpike_api::manifest::{self, ManifestError, Resource};
use turnpike_api::shard::{self, ShardError};
use turnpike_api::signing::{SignatureError, TrustedKeys};

use crate::audit_log::AuditLog;
use crate::engine::{CompileError, CompiledBundle};
use crate::metrics::Metrics;

/// Where the bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A mounted bundle directory.
    Dir(PathBuf),
    /// The Kubernetes API (`--bundle-source api`, see [`crate::watch`]): the target's
    /// Secret(s) and ConfigMap, watched by name. A mounted directory, when given, is
    /// read at start-up and followed until the API has delivered a valid bundle.
    Api {
        /// Namespace of the bundle objects.
        namespace: String,
        /// Target name.
        target: String,
        /// The mounted bundle, for start-up and as the fallback.
        fallback_dir: Option<PathBuf>,
    },
    /// Local mode.
    Manifests {
        /// Directory of `*.yaml` / `*.yml` files.
        dir: PathBuf,
        /// Target to enforce.
        target: String,
        /// Namespace of the resources (`None`: the one the manifests name, else
        /// `default`).
        namespace: Option<String>,
    },
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Dir(d) => format!("bundle dir {}", d.display()),
            Source::Api {
                namespace, target, ..
            } => format!("API {namespace}/{}", bundle::object_name(target)),
            Source::Manifests { dir, .. } => format!("manifests {}", dir.display()),
        }
    }
}

/// What a bundle must satisfy, beyond being whole and valid, before it is installed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// Keys whose signature a bundle must carry (`--bundle-trust`); `None` accepts
    /// unsigned bundles (`--insecure-unsigned-bundles`, local mode, tests).
    pub trust: Option<TrustedKeys>,
    /// `namespace`/`target` the bundle must name (the injector passes both); `None`:
    /// whatever the mounted bundle names.
    pub expect: Option<(String, String)>,
}

/// Why a bundle could not be loaded. Messages name files and fields, never values.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// The OS error kind.
        message: String,
    },
    /// A bundle file is not valid.
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    /// The key shards do not match `keys.json` (torn update) or are not valid.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The pair does not compile for enforcement.
    #[error("bundle refused: {0}")]
    Compile(#[from] CompileError),
    /// A manifest is not valid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The objects name another namespace or target than the sidecar enforces.
    #[error("bundle is for {found}, this sidecar enforces {expected}")]
    WrongTarget {
        /// `namespace/target` the sidecar enforces.
        expected: String,
        /// `namespace/target` the bundle names.
        found: String,
    },
    /// Not signed by a trusted key.
    #[error("bundle refused: {0}")]
    Signature(#[from] SignatureError),
    /// Validly signed, but older than the bundle in force: a replay.
    #[error(
        "bundle refused: {file} generation {found} is older than the {held} in force (a replayed bundle)"
    )]
    Replay {
        /// `keys.json` or `policy.json`.
        file: &'static str,
        /// Generation offered.
        found: u64,
        /// Generation in force.
        held: u64,
    },
    /// A bundle object is missing a data key, or the API server could not be asked.
    #[error("{object}: {message}")]
    Object {
        /// `Secret/name` or `ConfigMap/name`.
        object: String,
        /// What is wrong (never a value).
        message: String,
    },
}

/// Readiness as `/readyz` shows it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// `namespace/target` and hash prefixes of the loaded bundle.
    pub loaded: Option<String>,
    /// The last load error, cleared by a successful load.
    pub last_error: Option<String>,
    /// Shutting down: not ready, so endpoints stop routing here.
    pub shutting_down: bool,
}

/// The current bundle: read lock-free on every request, swapped on reload.
#[derive(Debug, Default)]
pub struct BundleStore {
    current: ArcSwapOption<CompiledBundle>,
    admission: Admission,
    status: Mutex<Status>,
    /// The API source has installed a bundle: the mounted fallback stops installing.
    api_delivered: std::sync::atomic::AtomicBool,
}

impl BundleStore {
    /// An empty store (not ready) that accepts unsigned bundles of any target.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store (not ready) whose bundles must pass `admission`.
    pub fn with_admission(admission: Admission) -> Self {
        Self {
            admission,
            ..Self::default()
        }
    }

    /// What bundles must satisfy.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The loaded bundle, if any.
    pub fn current(&self) -> Option<Arc<CompiledBundle>> {
        self.current.load_full()
    }

    fn status_mut(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status_mut().clone()
    }

    /// `Ok(description)` when ready, else why not.
    pub fn readiness(&self) -> Result<String, String> {
        let s = self.status();
        if s.shutting_down {
            return Err("shutting down".into());
        }
        match (s.loaded, s.last_error) {
            (Some(loaded), None) => Ok(format!("ready: {loaded}")),
            (Some(loaded), Some(err)) => Ok(format!(
                "ready: {loaded} (the last reload failed and was ignored: {err})"
            )),
            (None, Some(err)) => Err(format!("no valid bundle loaded yet: {err}")),
            (None, None) => Err("no bundle loaded yet".into()),
        }
    }

    /// Marks the sidecar as shutting down.
    pub fn set_shutting_down(&self) {
        self.status_mut().shutting_down = true;
    }

    /// The API source has delivered a bundle.
    pub fn api_delivered(&self) -> bool {
        self.api_delivered
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the API source as the one in force.
    pub(crate) fn set_api_delivered(&self) {
        self.api_delivered
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn install(&self, bundle: CompiledBundle) -> String {
        let description = format!(
            "{}/{} keys={} policy={}",
            bundle.namespace,
            bundle.target,
            short(&bundle.keys_hash),
            short(&bundle.policy_hash)
        );
        self.current.store(Some(Arc::new(bundle)));
        let mut s = self.status_mut();
        s.loaded = Some(description.clone());
        s.last_error = None;
        description
    }

    pub(crate) fn fail(&self, error: String) {
        self.status_mut().last_error = Some(error);
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Reads the source when it changed and installs what it yields.
#[derive(Debug)]
pub struct Reloader {
    source: Source,
    store: Arc<BundleStore>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    /// Digest of the bytes last looked at (loaded or refused): unchanged input is
    /// neither reloaded nor reported again.
    seen: Option<[u8; 32]>,
}

/// The raw input of one poll.
enum Snapshot {
    Dir {
        dir: PathBuf,
        keys: Vec<u8>,
        policy: Vec<u8>,
    },
    Manifests,
}

impl Reloader {
    /// A reloader for `source` installing into `store`.
    pub fn new(
        source: Source,
        store: Arc<BundleStore>,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            source,
            store,
            metrics,
            audit,
            seen: None,
        }
    }

    /// Checks the source once; reloads when it changed. Blocking file I/O: call it
    /// from a blocking thread. A mounted fallback of the API source stops once the
    /// API has delivered a bundle.
    pub fn poll(&mut self) {
        if matches!(self.source, Source::Api { .. }) && self.store.api_delivered() {
            return;
        }
        let (digest, snapshot) = match self.fingerprint() {
            Ok(v) => v,
            Err(e) => {
                // Unreadable input is reported once per distinct error.
                let digest: [u8; 32] = Sha256::digest(e.to_string().as_bytes()).into();
                if self.seen != Some(digest) {
                    self.seen = Some(digest);
                    self.refused(&e);
                }
                return;
            }
        };
        if self.seen == Some(digest) {
            return;
        }
        self.seen = Some(digest);
        match self.load(snapshot) {
            Ok(bundle) => {
                let keys = bundle.key_count();
                let (kh, ph) = (bundle.keys_hash.clone(), bundle.policy_hash.clone());
                let ns_target = format!("{}/{}", bundle.namespace, bundle.target);
                let description = self.store.install(bundle);
                self.metrics.bundle_loaded(&kh, &ph, keys);
                tracing::info!(bundle = %description, keys, source = %self.source.describe(), "bundle loaded");
                self.audit.reload(&self.source.describe(), &ns_target, None);
            }
            Err(e) => self.refused(&e),
        }
    }

    fn refused(&self, e: &LoadError) {
        let message = e.to_string();
        self.metrics.bundle_reload_failures.inc();
        let kept = self.store.current().is_some();
        tracing::warn!(
            error = %message,
            source = %self.source.describe(),
            kept_previous = kept,
            "bundle refused; {}",
            if kept { "the last good bundle stays in force" } else { "requests are refused until a valid bundle loads" }
        );
        let ns_target = match &self.source {
            Source::Manifests {
                target, namespace, ..
            } => format!("{}/{target}", namespace.as_deref().unwrap_or("-")),
            Source::Api {
                namespace, target, ..
            } => format!("{namespace}/{target}"),
            Source::Dir(_) => self
                .store
                .current()
                .map(|b| format!("{}/{}", b.namespace, b.target))
                .unwrap_or_else(|| "-".into()),
        };
        self.audit
            .reload(&self.source.describe(), &ns_target, Some(&message));
        self.store.fail(message);
    }

    fn fingerprint(&self) -> Result<([u8; 32], Snapshot), LoadError> {
        match &self.source {
            Source::Api {
                fallback_dir: None, ..
            } => Err(LoadError::Read {
                file: "-".into(),
                message: "no mounted bundle".into(),
            }),
            Source::Dir(dir)
            | Source::Api {
                fallback_dir: Some(dir),
                ..
            } => {
                let keys = read(dir, KEYS_FILE)?;
                let policy = read(dir, POLICY_FILE)?;
                let mut h = Sha256::new();
                h.update((keys.len() as u64).to_le_bytes());
                h.update(&keys);
                h.update(&policy);
                // Shards are up to 15 x 900 KiB: their metadata says whether they
                // changed (the kubelet writes new files, never in place).
                for n in 1..MAX_KEY_SHARDS {
                    if let Ok(meta) = std::fs::metadata(dir.join(shard_file(n))) {
                        let modified = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        h.update((n as u64).to_le_bytes());
                        h.update(meta.len().to_le_bytes());
                        h.update(modified.to_le_bytes());
                    }
                }
                Ok((
                    h.finalize().into(),
                    Snapshot::Dir {
                        dir: dir.clone(),
                        keys,
                        policy,
                    },
                ))
            }
            Source::Manifests { dir, .. } => {
                let mut h = Sha256::new();
                for (name, bytes) in manifest_files(dir)? {
                    h.update((name.len() as u64).to_le_bytes());
                    h.update(name.as_bytes());
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
                Ok((h.finalize().into(), Snapshot::Manifests))
            }
        }
    }

    fn load(&self, snapshot: Snapshot) -> Result<CompiledBundle, LoadError> {
        match (snapshot, &self.source) {
            (Snapshot::Dir { dir, keys, policy }, source) => {
                let admission = self.store.admission();
                let keys: KeyBundle = bundle::parse(&utf8(KEYS_FILE, keys)?)?;
                match source {
                    Source::Api {
                        namespace, target, ..
                    } => check_target(&keys, namespace, target)?,
                    _ => expected_target(admission, &keys)?,
                }
                verify(admission, &keys)?;
                let keys = merge_shards(&dir, keys, admission)?;
                let policy: PolicyBundle = bundle::parse(&utf8(POLICY_FILE, policy)?)?;
                verify(admission, &policy)?;
                bundle::check_pair(&keys, &policy)?;
                not_older(self.store.current().as_deref(), &keys, &policy)?;
                Ok(CompiledBundle::compile(&keys, &policy)?)
            }
            (
                Snapshot::Manifests,
                Source::Manifests {
                    dir,
                    target,
                    namespace,
                },
            ) => {
                let (keys, policy) = compile_local(dir, target, namespace.as_deref())?;
                Ok(CompiledBundle::compile(&keys, &policy)?)
            }
            (Snapshot::Manifests, Source::Dir(_) | Source::Api { .. }) => Err(LoadError::Read {
                file: "-".into(),
                message: "source changed kind".into(),
            }),
        }
    }
}

/// Refuses a bundle of another namespace or target than `namespace`/`target`.
pub(crate) fn check_target(
    keys: &KeyBundle,
    namespace: &str,
    target: &str,
) -> Result<(), LoadError> {
    if keys.namespace != namespace || keys.target != target {
        return Err(LoadError::WrongTarget {
            expected: format!("{namespace}/{target}"),
            found: format!("{}/{}", keys.namespace, keys.target),
        });
    }
    Ok(())
}

/// Refuses a bundle of another namespace or target than the admission expects.
fn expected_target(admission: &Admission, keys: &KeyBundle) -> Result<(), LoadError> {
    match &admission.expect {
        Some((namespace, target)) => check_target(keys, namespace, target),
        None => Ok(()),
    }
}

/// With a trust list, refuses a file not signed by a trusted key.
fn verify<T: bundle::Sealed>(admission: &Admission, file: &T) -> Result<(), LoadError> {
    match &admission.trust {
        Some(trust) => Ok(file.verify(trust)?),
        None => Ok(()),
    }
}

/// Refuses keys or policy older than those in force: signed bundles only grow in
/// generation (unsigned ones are all 0, so this never refuses them).
fn not_older(
    current: Option<&CompiledBundle>,
    keys: &KeyBundle,
    policy: &PolicyBundle,
) -> Result<(), LoadError> {
    let Some(cur) = current else {
        return Ok(());
    };
    if cur.namespace != keys.namespace || cur.target != keys.target {
        return Ok(());
    }
    for (file, found, held) in [
        (KEYS_FILE, keys.generation, cur.keys_generation),
        (POLICY_FILE, policy.generation, cur.policy_generation),
    ] {
        if found < held {
            return Err(LoadError::Replay { file, found, held });
        }
    }
    Ok(())
}

/// The API source's validation, the same as the directory's: `keys.json` text, the
/// texts of the shards it lists (file name -> text; a missing one is reported as
/// missing) and `policy.json` text, for `namespace`/`target`, checked against
/// `admission` and the bundle in force (`current`).
pub(crate) fn compile_texts(
    keys: &str,
    shards: &BTreeMap<String, String>,
    policy: &str,
    (namespace, target): (&str, &str),
    admission: &Admission,
    current: Option<&CompiledBundle>,
) -> Result<CompiledBundle, LoadError> {
    let keys: KeyBundle = bundle::parse(keys)?;
    check_target(&keys, namespace, target)?;
    verify(admission, &keys)?;
    let keys = merge_verified(keys, shards, admission)?;
    let policy: PolicyBundle = bundle::parse(policy)?;
    verify(admission, &policy)?;
    bundle::check_pair(&keys, &policy)?;
    not_older(current, &keys, &policy)?;
    Ok(CompiledBundle::compile(&keys, &policy)?)
}

fn merge_verified(
    keys: KeyBundle,
    files: &BTreeMap<String, String>,
    admission: &Admission,
) -> Result<KeyBundle, ShardError> {
    match &admission.trust {
        Some(trust) => shard::merge_checked(keys, files, |s| {
            use turnpike_api::bundle::Sealed as _;
            s.verify(trust)
        }),
        None => shard::merge(keys, files),
    }
}

/// Reads the shards `keys` lists (names checked first, so a bundle never picks a path)
/// and merges them into one bundle; a listed file that is absent is left for
/// [`shard::merge`] to report as missing.
fn merge_shards(
    dir: &Path,
    keys: KeyBundle,
    admission: &Admission,
) -> Result<KeyBundle, LoadError> {
    let mut files = BTreeMap::new();
    for (_, file) in shard::listed(&keys)? {
        match std::fs::read(dir.join(&file)) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| LoadError::Read {
                    file: file.clone(),
                    message: "not UTF-8".into(),
                })?;
                files.insert(file, text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LoadError::Read {
                    file: dir.join(&file).display().to_string(),
                    message: e.kind().to_string(),
                });
            }
        }
    }
    Ok(merge_verified(keys, &files, admission)?)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(dir.join(name)).map_err(|e| LoadError::Read {
        file: dir.join(name).display().to_string(),
        message: e.kind().to_string(),
    })
}

fn utf8(file: &'static str, bytes: Vec<u8>) -> Result<String, LoadError> {
    String::from_utf8(bytes).map_err(|_| LoadError::Read {
        file: file.into(),
        message: "not UTF-8".into(),
    })
}

/// The manifest files of `dir` with their bytes, in name order (what
/// `manifest::read_dir` reads).
fn manifest_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, LoadError> {
    let io = |e: std::io::Error| LoadError::Read {
        file: dir.display().to_string(),
        message: e.kind().to_string(),
    };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            let bytes = std::fs::read(&path).map_err(io)?;
            out.insert(path.display().to_string(), bytes);
        }
    }
    Ok(out.into_iter().collect())
}

/// The namespace a resource names, if any.
fn namespace_of(r: &Resource) -> Option<&str> {
    match r {
        Resource::ApiKey(k) => k.metadata.namespace.as_deref(),
        Resource::AccessPolicy(p) => p.metadata.namespace.as_deref(),
        Resource::RateLimitPolicy(p) => p.metadata.namespace.as_deref(),
        Resource::CorsPolicy(p) => p.metadata.namespace.as_deref(),
    }
}

/// Without `--namespace`: the one namespace the manifests name (as `kubectl apply -f`
/// would use them), `default` when they name none.
fn only_namespace(dir: &Path, resources: &[Resource]) -> Result<String, LoadError> {
    let named: std::collections::BTreeSet<&str> =
        resources.iter().filter_map(namespace_of).collect();
    match named.len() {
        0 => Ok("default".into()),
        1 => Ok(named.into_iter().next().unwrap_or("default").to_string()),
        _ => Err(LoadError::Read {
            file: dir.display().to_string(),
            message: format!(
                "the manifests name several namespaces ({}); choose one with --namespace",
                named.into_iter().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Local mode: reads the manifests, keeps the resources of the namespace (or without
/// one), compiles them with `target` as a known target and no operator-kept key
/// material (keys need `keyId` and `hash`, as `kubectl turnpike key new` writes),
/// and logs what the compiler said about each resource.
fn compile_local(
    dir: &Path,
    target: &str,
    namespace: Option<&str>,
) -> Result<(KeyBundle, PolicyBundle), LoadError> {
    let resources = manifest::read_dir(dir)?;
    let namespace = match namespace {
        Some(ns) => ns.to_string(),
        None => only_namespace(dir, &resources)?,
    };
    let namespace = namespace.as_str();
    let ours = |ns: &Option<String>| ns.as_deref().is_none_or(|n| n == namespace);
    let (mut keys, mut access, mut rate, mut cors) = (vec![], vec![], vec![], vec![]);
    let mut skipped = 0usize;
    for r in resources {
        match r {
            Resource::ApiKey(k) if ours(&k.metadata.namespace) => keys.push(k),
            Resource::AccessPolicy(p) if ours(&p.metadata.namespace) => access.push(p),
            Resource::RateLimitPolicy(p) if ours(&p.metadata.namespace) => rate.push(p),
            Resource::CorsPolicy(p) if ours(&p.metadata.namespace) => cors.push(p),
            _ => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::info!(skipped, namespace, "manifests of other namespaces ignored");
    }
    let material = BTreeMap::new();
    let targets = [target.to_string()];
    let output = compiler::compile(&Inputs {
        namespace,
        api_keys: &keys,
        access_policies: &access,
        rate_limit_policies: &rate,
        cors_policies: &cors,
        key_material: &material,
        extra_targets: &targets,
        epoch: 1,
    });
    for o in &output.outcomes {
        let (kind, name) = (o.kind.as_str(), o.name.as_str());
        match &o.outcome {
            Outcome::Accepted { targets } => {
                tracing::debug!(kind, name, ?targets, "resource accepted");
            }
            Outcome::Conflicted { winner, targets } => {
                tracing::warn!(kind, name, winner = %winner, ?targets, "resource conflicted: an older resource of the same specificity wins");
            }
            Outcome::Invalid { message } => {
                tracing::warn!(kind, name, error = %message, "resource invalid and ignored");
            }
            Outcome::Pending => {
                tracing::warn!(
                    kind,
                    name,
                    "ApiKey has no keyId/hash; local mode cannot generate keys (use `kubectl turnpike key new`)"
                );
            }
        }
    }
    let bundle = output
        .bundles
        .into_iter()
        .find(|(t, _)| t == target)
        .map(|(_, b)| b)
        .ok_or_else(|| LoadError::Read {
            file: dir.display().to_string(),
            message: format!("the compiler produced no bundle for target {target}"),
        })?;
    Ok((bundle.keys, bundle.policy))
}
