//! The bundle format: what the operator writes per target and the sidecar enforces.
//!
//! Per target, two objects named `turnpike-<target>`:
//! - a Secret whose data key [`KEYS_FILE`] holds a [`KeyBundle`] (key id -> argon2id
//!   hash, scopes, limits, quota, expiry, revoked flag), and
//! - a ConfigMap whose data key [`POLICY_FILE`] holds a [`PolicyBundle`] (the merged
//!   access, rate-limit and CORS policy).
//!
//! Both are JSON with a format version and a content hash (SHA-256 of the canonical
//! serialisation), so a sidecar can tell a torn or corrupted file from a new bundle. The
//! two data keys differ so both objects can be projected into one volume.
//!
//! Keys that do not fit in one Secret spill into extra Secrets ([`shard_object_name`],
//! data key [`shard_file`]) listed by the primary `keys.json`: see [`crate::shard`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    duration::Duration,
    hash::PhcHash,
    shard::ShardRef,
    signing::{BundleSignature, BundleSigner, SignatureError, TrustedKeys},
    token::KeyId,
    types::{BackendKind, Bucket, CredentialSource, DefaultAction, FailureMode, Method, Mode},
};

/// Version of the bundle format. A sidecar refuses bundles of another format.
pub const FORMAT: u32 = 1;
/// Secret data key holding the [`KeyBundle`].
pub const KEYS_FILE: &str = "keys.json";
/// ConfigMap data key holding the [`PolicyBundle`].
pub const POLICY_FILE: &str = "policy.json";

/// Name of the Secret and ConfigMap of a target.
pub fn object_name(target: &str) -> String {
    format!("turnpike-{target}")
}

/// Most Secrets one target's keys may span: the primary Secret ([`object_name`], data key
/// [`KEYS_FILE`]) and up to `MAX_KEY_SHARDS - 1` extra shards. A Secret holds at most
/// 1 MiB; the operator fills each to [`crate::shard::SHARD_BUDGET`] (900 KiB, about
/// 3,000 keys), so a target holds about 48,000 keys. The injector projects
/// every possible shard into the sidecar's volume as an optional source, so shards can
/// appear and disappear without touching the pod.
pub const MAX_KEY_SHARDS: usize = 16;

/// Secret data key of extra key shard `n` (1-based): `keys-<n>.json`.
pub fn shard_file(n: usize) -> String {
    format!("keys-{n}.json")
}

/// Name of the Secret holding extra key shard `n` (1-based) of a target:
/// `turnpike-<target>.keys-<n>`. Target names are DNS labels, so the dot means a shard
/// name never equals another target's object name.
pub fn shard_object_name(target: &str, n: usize) -> String {
    format!("turnpike-{target}.keys-{n}")
}

/// Name of the Secret, one per namespace, holding the token that guards the sidecars'
/// `/internal/...` admin endpoints (data key [`ADMIN_TOKEN_KEY`]). The operator creates
/// it; the injector mounts it (optional) into every sidecar; `kubectl turnpike usage`
/// reads it. The dot keeps it apart from every target's `turnpike-<target>`.
pub const ADMIN_SECRET: &str = "turnpike.admin";
/// Data key of [`ADMIN_SECRET`].
pub const ADMIN_TOKEN_KEY: &str = "token";
/// Request header a caller may use instead of `Authorization: Bearer` to present the
/// admin token. The API server's pod proxy consumes `Authorization` itself, so callers
/// that go through it (`kubectl turnpike usage`) need another header.
pub const ADMIN_TOKEN_HEADER: &str = "x-turnpike-admin-token";

/// The keys a target accepts (the Secret payload).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyBundle {
    /// [`FORMAT`].
    pub format: u32,
    /// SHA-256 (hex) of this bundle serialised with an empty `contentHash`.
    pub content_hash: String,
    /// Namespace of the target.
    pub namespace: String,
    /// Target name.
    pub target: String,
    /// Session epoch: raising it invalidates every sidecar's verified-key cache at once.
    pub epoch: u64,
    /// Grows with every change of this file the operator signs (see
    /// [`crate::signing`]): a sidecar refuses a signed bundle older than the one it
    /// holds, so an old, validly signed bundle cannot be replayed. 0 (not serialised)
    /// in unsigned bundles.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Extra key shards this `keys.json` needs, in order (see [`crate::shard`]). Empty,
    /// and then not serialised, when every key fits here: such a bundle is byte for byte
    /// what it was before sharding existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardRef>,
    /// Keys by id (with shards: the first ones; the rest are in the shards).
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// Signatures over this file (not covered by the content hash, see
    /// [`Sealed::seal`]); empty, and not serialised, when unsigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<BundleSignature>,
}

/// One key as the sidecar sees it. Never holds a token; `Debug` of the hashes is masked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyEntry {
    /// Name of the ApiKey resource (for audit records and Events).
    pub name: String,
    /// UID of the ApiKey resource: the sidecar's Events name it in `regarding`, which
    /// `kubectl describe apikey` matches on. Absent in local mode (no API server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Owner text from the ApiKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Accepted secrets: the current one first, then a rotated-out one during its grace
    /// period.
    pub secrets: Vec<SecretEntry>,
    /// Scopes held, sorted and without duplicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Per-key bucket override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Bucket>,
    /// Daily quota override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    /// Expiry, seconds since the Unix epoch (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Revoked keys are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// Fingerprint of this entry (SHA-256 prefix, hex): a sidecar drops cached
    /// verifications of a key whose fingerprint changed.
    pub fingerprint: String,
}

/// One accepted secret of a key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretEntry {
    /// argon2id PHC string.
    pub hash: PhcHash,
    /// For a rotated-out secret: last instant it is accepted (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
}

/// Policy of a target (the ConfigMap payload).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyBundle {
    /// [`FORMAT`].
    pub format: u32,
    /// SHA-256 (hex) of this bundle serialised with an empty `contentHash`.
    pub content_hash: String,
    /// Namespace of the target.
    pub namespace: String,
    /// Target name.
    pub target: String,
    /// Credentials, public routes and scope rules.
    pub access: AccessConfig,
    /// Limits, quotas, lockout, abuse and overload settings.
    pub rate_limit: RateLimitConfig,
    /// CORS, if a CorsPolicy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
    /// Names of the policies this bundle was compiled from, by kind.
    pub sources: Sources,
    /// As [`KeyBundle::generation`], for this file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// As [`KeyBundle::signatures`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<BundleSignature>,
}

/// Which policy of each kind is in force for the target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sources {
    /// AccessPolicy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<String>,
    /// RateLimitPolicy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_policy: Option<String>,
    /// CorsPolicy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<String>,
}

/// A route match in compiled form.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Methods; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Path pattern (see [`crate::route::PathPattern`]); validated by the compiler.
    pub path: String,
}

/// Access settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessConfig {
    /// Accepted credential sources.
    pub credentials: Vec<CredentialSource>,
    /// Routes that need no key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public: Vec<RouteSpec>,
    /// Rules in order; the first match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// Authenticated requests matching no rule.
    pub default_action: DefaultAction,
    /// Security headers; absent: [`SecurityHeadersConfig::owasp`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<SecurityHeadersConfig>,
    /// Plain-HTTP requests get 308 (GET, HEAD) or 403 `https_required`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Routes exempt from `https_redirect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub https_redirect_exempt: Vec<RouteSpec>,
}

/// The security headers of a target's answers, merged with the defaults and checked by
/// the compiler ([`crate::security_headers`]). Names are lower-case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    /// Removed from the workload's answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// Set, replacing the workload's value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderSpec>,
    /// Set where the workload did not set the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_if_missing: Vec<HeaderSpec>,
    /// The `Strict-Transport-Security` value, sent on requests that arrived over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
}

/// A header and its value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// Lower-case name.
    pub name: String,
    /// Value.
    pub value: String,
}

impl Default for AccessConfig {
    /// Without an AccessPolicy: both credential sources, no public route, no rules,
    /// deny by default (DESIGN.md: routes matching no rule are denied).
    fn default() -> Self {
        Self {
            credentials: vec![CredentialSource::ApiKeyHeader, CredentialSource::Bearer],
            public: Vec::new(),
            rules: Vec::new(),
            default_action: DefaultAction::Deny,
            security_headers: None,
            https_redirect: false,
            https_redirect_exempt: Vec::new(),
        }
    }
}

/// A scope rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// What the rule matches.
    #[serde(rename = "match")]
    pub matches: RouteSpec,
    /// Scopes required (all), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// Rate-limit settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Enforce or dry run.
    pub mode: Mode,
    /// Default per-key bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Bucket>,
    /// Per-IP bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Bucket>,
    /// Default daily quota per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    /// Per-route buckets, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteLimitSpec>,
    /// Lockout settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout: Option<LockoutSpec>,
    /// Abuse cooldown settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse: Option<AbuseSpec>,
    /// In-flight limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Counters backend.
    pub backend: BackendSpec,
    /// Hide `X-RateLimit-*`/`RateLimit*` headers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hide_limit_headers: bool,
}

/// A per-route limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteLimitSpec {
    /// What the limit matches.
    #[serde(rename = "match")]
    pub matches: RouteSpec,
    /// Per-key bucket on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Bucket>,
    /// Per-IP bucket on this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Bucket>,
}

/// Lockout.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockoutSpec {
    /// Failures that lock.
    pub max_failures: u32,
    /// Counting window.
    pub window: Duration,
    /// Lock duration.
    pub duration: Duration,
}

/// Abuse cooldown.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbuseSpec {
    /// 404s tolerated per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_not_found: Option<u32>,
    /// 400s tolerated per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bad_request: Option<u32>,
    /// Counting window.
    pub window: Duration,
    /// Cooldown length.
    pub cooldown: Duration,
}

/// Counters backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    /// Local or Redis.
    #[serde(rename = "type")]
    pub kind: BackendKind,
    /// For Redis: Secret name and data key holding the URL. The URL itself is never in
    /// the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Data key in that Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Behaviour when the backend is unreachable.
    pub failure_mode: FailureMode,
}

impl Default for BackendSpec {
    fn default() -> Self {
        Self {
            kind: BackendKind::Local,
            secret_name: None,
            secret_key: None,
            failure_mode: FailureMode::Open,
        }
    }
}

/// CORS settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact, `https://*.example.com`, or `*`.
    pub allow_origins: Vec<String>,
    /// Allowed methods.
    pub allow_methods: Vec<Method>,
    /// Allowed request headers (lower case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Exposed response headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Credentials allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    /// Preflight cache lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

/// Why a bundle file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not JSON of the expected shape.
    #[error("{file}: not a valid bundle: {message}")]
    Parse {
        /// Which data key.
        file: &'static str,
        /// What is wrong (no values echoed).
        message: String,
    },
    /// Another format version.
    #[error("{file}: bundle format {found} is not supported (this build reads format {FORMAT})")]
    Format {
        /// Which data key.
        file: &'static str,
        /// Format found.
        found: u32,
    },
    /// Content hash does not match (torn write or tampering).
    #[error("{file}: content hash mismatch (torn or modified file)")]
    Hash {
        /// Which data key.
        file: &'static str,
    },
    /// Keys and policy belong to different targets.
    #[error("keys are for {keys} but the policy is for {policy}")]
    Mismatch {
        /// namespace/target of the keys.
        keys: String,
        /// namespace/target of the policy.
        policy: String,
    },
}

/// Bundles that carry a content hash (and may carry signatures).
pub trait Sealed: Serialize + Sized {
    /// Data key the bundle lives under.
    const FILE: &'static str;
    /// Mutable access to the content hash field.
    fn content_hash_mut(&mut self) -> &mut String;
    /// The content hash field.
    fn content_hash(&self) -> &str;
    /// The format field.
    fn format(&self) -> u32;
    /// The signatures.
    fn signatures(&self) -> &[BundleSignature];
    /// Mutable access to the signatures.
    fn signatures_mut(&mut self) -> &mut Vec<BundleSignature>;
    /// The file name signatures are bound to (a shard's own `keys-<n>.json`).
    fn signed_file(&self) -> String {
        Self::FILE.to_string()
    }
    /// Namespace and target the bundle names.
    fn scope(&self) -> (&str, &str);

    /// Computes and stores the content hash: SHA-256 of the canonical JSON with an
    /// empty `contentHash` and no signatures (so signing never changes the hash, and
    /// the hash is what is signed).
    fn seal(&mut self) {
        *self.content_hash_mut() = String::new();
        let signatures = std::mem::take(self.signatures_mut());
        let digest = digest_json(self);
        *self.content_hash_mut() = digest;
        *self.signatures_mut() = signatures;
    }

    /// Replaces the signatures with `signer`'s over the current content hash (seal
    /// first).
    fn sign(&mut self, signer: &BundleSigner) {
        let (namespace, target) = self.scope();
        let signatures = signer.sign(&self.signed_file(), namespace, target, self.content_hash());
        *self.signatures_mut() = signatures;
    }

    /// Checks that a trusted key signed this file (as parsed: its content hash was
    /// checked by [`parse`]).
    ///
    /// # Errors
    /// Unsigned, or no valid signature by a key of `trust`.
    fn verify(&self, trust: &TrustedKeys) -> Result<(), SignatureError> {
        let (namespace, target) = self.scope();
        trust.verify(
            self.signatures(),
            &self.signed_file(),
            namespace,
            target,
            self.content_hash(),
        )
    }

    /// Canonical JSON (what the operator writes).
    fn to_json(&self) -> String {
        // Serialising plain data structures with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn digest_json<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Parses and checks a bundle file: shape, format, content hash.
pub fn parse<T>(text: &str) -> Result<T, BundleError>
where
    T: Sealed + for<'de> Deserialize<'de> + Clone,
{
    let value: T = parse_as(text).map_err(|message| BundleError::Parse {
        file: T::FILE,
        message,
    })?;
    if value.format() != FORMAT {
        return Err(BundleError::Format {
            file: T::FILE,
            found: value.format(),
        });
    }
    let mut copy = value.clone();
    copy.seal();
    if copy.content_hash() != value.content_hash() {
        return Err(BundleError::Hash { file: T::FILE });
    }
    Ok(value)
}

/// Deserialises JSON; the error says where and what kind of problem, never quoting
/// the input.
pub(crate) fn parse_as<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
    serde_json::from_str(text)
        .map_err(|e| format!("line {} column {}: {}", e.line(), e.column(), category(&e)))
}

fn category(e: &serde_json::Error) -> String {
    // serde_json messages may quote input ("invalid value: string \"...\""); keep only
    // the category so a hash in a malformed file never reaches a log line.
    match e.classify() {
        serde_json::error::Category::Io => "I/O error".into(),
        serde_json::error::Category::Syntax => "syntax error".into(),
        serde_json::error::Category::Eof => "unexpected end of file".into(),
        serde_json::error::Category::Data => "unexpected field or value".into(),
    }
}

impl Sealed for KeyBundle {
    const FILE: &'static str = KEYS_FILE;
    fn content_hash_mut(&mut self) -> &mut String {
        &mut self.content_hash
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn signatures(&self) -> &[BundleSignature] {
        &self.signatures
    }
    fn signatures_mut(&mut self) -> &mut Vec<BundleSignature> {
        &mut self.signatures
    }
    fn scope(&self) -> (&str, &str) {
        (&self.namespace, &self.target)
    }
}

impl Sealed for PolicyBundle {
    const FILE: &'static str = POLICY_FILE;
    fn content_hash_mut(&mut self) -> &mut String {
        &mut self.content_hash
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn signatures(&self) -> &[BundleSignature] {
        &self.signatures
    }
    fn signatures_mut(&mut self) -> &mut Vec<BundleSignature> {
        &mut self.signatures
    }
    fn scope(&self) -> (&str, &str) {
        (&self.namespace, &self.target)
    }
}

impl KeyEntry {
    /// Recomputes [`KeyEntry::fingerprint`] from the other fields.
    pub fn refresh_fingerprint(&mut self) {
        self.fingerprint = String::new();
        let full = digest_json(self);
        self.fingerprint = full.chars().take(16).collect();
    }
}

/// Checks that keys and policy belong to the same target.
pub fn check_pair(keys: &KeyBundle, policy: &PolicyBundle) -> Result<(), BundleError> {
    if keys.namespace != policy.namespace || keys.target != policy.target {
        return Err(BundleError::Mismatch {
            keys: format!("{}/{}", keys.namespace, keys.target),
            policy: format!("{}/{}", policy.namespace, policy.target),
        });
    }
    Ok(())
}
