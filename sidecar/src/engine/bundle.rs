//! The bundle as the engine enforces it: compiled once per load.
//!
//! [`CompiledBundle::compile`] turns the operator's [`KeyBundle`] and [`PolicyBundle`]
//! into what the request path needs without further work: path patterns parsed, keys
//! indexed by their numeric id, scopes sorted, buckets turned into integer limits,
//! CORS header values joined. A bundle that does not compile never replaces the last
//! good one (the proxy keeps the previous `Arc`).

use std::collections::HashMap;

use turnpike_api::bundle::{self as wire, BundleError, KeyBundle, PolicyBundle};
use turnpike_api::route::PatternError;
use turnpike_api::types::{Bucket, DefaultAction, Mode};

use super::abuse::AbuseLimit;
use super::buckets::Limit;
use super::cors::Cors;
use super::credential::Sources;
use super::keys::{Key, key_id_bits};
use super::lockout::LockoutLimit;
use super::routes::Route;
use super::scope::Rule;
use super::security::SecurityHeaders;
use super::table::KeyIdHasher;

/// Why a bundle pair cannot be enforced. Messages name the field, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Keys and policy are for different targets.
    #[error(transparent)]
    Mismatch(#[from] BundleError),
    /// A path pattern does not parse.
    #[error("{field}: {source}")]
    Pattern {
        /// Where the pattern is (`access.rules[3].match.path`).
        field: String,
        /// What is wrong.
        source: PatternError,
    },
    /// A bucket with a zero rate, period or burst.
    #[error("{field}: rate, per and burst must all be greater than zero")]
    Bucket {
        /// Where the bucket is (`rateLimit.perKey`, `keys.<id>.rateLimit`).
        field: String,
    },
    /// A security header name or value that is not valid HTTP.
    #[error("{field}: not a valid header")]
    Header {
        /// Where the header is (`access.securityHeaders.set[0]`).
        field: String,
    },
    /// Two keys with the same id (cannot happen with a map; kept for hand-made input).
    #[error("key id {0} appears twice")]
    DuplicateKey(String),
}

/// A per-route limit.
#[derive(Clone, Debug)]
pub struct RouteLimit {
    pub(crate) route: Route,
    pub(crate) per_key: Option<Limit>,
    pub(crate) per_ip: Option<Limit>,
}

/// Rate limits, quotas, lockout, abuse and overload settings.
#[derive(Clone, Debug)]
pub struct Limits {
    pub(crate) mode: Mode,
    pub(crate) per_key: Option<Limit>,
    pub(crate) per_ip: Option<Limit>,
    pub(crate) daily_quota: Option<u64>,
    pub(crate) routes: Box<[RouteLimit]>,
    pub(crate) lockout: Option<LockoutLimit>,
    pub(crate) abuse: Option<AbuseLimit>,
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) hide_headers: bool,
}

impl Limits {
    /// `DryRun`: limits are computed and reported, nothing is blocked.
    pub fn dry_run(&self) -> bool {
        self.mode == Mode::DryRun
    }
}

/// A loaded, compiled bundle. Immutable: a reload compiles a new one (the proxy swaps
/// an `Arc`); counters live in the [`crate::engine::Engine`] and survive reloads.
#[derive(Debug)]
pub struct CompiledBundle {
    /// Namespace of the target.
    pub namespace: String,
    /// Target name.
    pub target: String,
    /// Content hash of the keys file.
    pub keys_hash: String,
    /// Content hash of the policy file.
    pub policy_hash: String,
    /// Generation of the keys file (0: unsigned), see [`turnpike_api::signing`].
    pub keys_generation: u64,
    /// Generation of the policy file (0: unsigned).
    pub policy_generation: u64,
    pub(crate) epoch: u64,
    pub(crate) index: HashMap<u128, usize, KeyIdHasher>,
    pub(crate) keys: Box<[Key]>,
    pub(crate) sources: Sources,
    pub(crate) public: Box<[Route]>,
    pub(crate) rules: Box<[Rule]>,
    pub(crate) default_action: DefaultAction,
    pub(crate) limits: Limits,
    pub(crate) cors: Option<Cors>,
    /// Security headers of the target's answers.
    pub security_headers: SecurityHeaders,
    pub(crate) https_redirect: bool,
    pub(crate) https_exempt: Box<[Route]>,
}

fn limit(
    field: impl FnOnce() -> String,
    bucket: Option<&Bucket>,
) -> Result<Option<Limit>, CompileError> {
    match bucket {
        None => Ok(None),
        Some(b) => Limit::from_bucket(b)
            .map(Some)
            .ok_or_else(|| CompileError::Bucket { field: field() }),
    }
}

fn route(field: impl FnOnce() -> String, spec: &wire::RouteSpec) -> Result<Route, CompileError> {
    Route::compile(spec).map_err(|source| CompileError::Pattern {
        field: field(),
        source,
    })
}

impl CompiledBundle {
    /// Compiles a keys/policy pair.
    ///
    /// # Errors
    /// A [`CompileError`] naming the offending field.
    pub fn compile(keys: &KeyBundle, policy: &PolicyBundle) -> Result<Self, CompileError> {
        wire::check_pair(keys, policy)?;
        let mut index = HashMap::with_capacity_and_hasher(keys.keys.len(), KeyIdHasher::default());
        let mut compiled = Vec::with_capacity(keys.keys.len());
        for (id, entry) in &keys.keys {
            let key = Key::compile(id, entry)
                .ok_or_else(|| CompileError::DuplicateKey(id.to_string()))?;
            if entry.rate_limit.is_some() && key.rate_limit.is_none() {
                return Err(CompileError::Bucket {
                    field: format!("keys.{id}.rateLimit"),
                });
            }
            if index.insert(key.id_bits, compiled.len()).is_some() {
                return Err(CompileError::DuplicateKey(id.to_string()));
            }
            compiled.push(key);
        }

        let access = &policy.access;
        let public = access
            .public
            .iter()
            .enumerate()
            .map(|(i, r)| route(|| format!("access.public[{i}].path"), r))
            .collect::<Result<Box<[_]>, _>>()?;
        let rules = access
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Rule::compile(r).map_err(|source| CompileError::Pattern {
                    field: format!("access.rules[{i}].match.path"),
                    source,
                })
            })
            .collect::<Result<Box<[_]>, _>>()?;

        let https_exempt = access
            .https_redirect_exempt
            .iter()
            .enumerate()
            .map(|(i, r)| route(|| format!("access.httpsRedirectExempt[{i}].path"), r))
            .collect::<Result<Box<[_]>, _>>()?;
        let security_headers = match &access.security_headers {
            Some(c) => SecurityHeaders::compile(c)?,
            None => SecurityHeaders::defaults().clone(),
        };

        let rl = &policy.rate_limit;
        let routes = rl
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(RouteLimit {
                    route: route(|| format!("rateLimit.routes[{i}].match.path"), &r.matches)?,
                    per_key: limit(
                        || format!("rateLimit.routes[{i}].perKey"),
                        r.per_key.as_ref(),
                    )?,
                    per_ip: limit(|| format!("rateLimit.routes[{i}].perIp"), r.per_ip.as_ref())?,
                })
            })
            .collect::<Result<Box<[_]>, CompileError>>()?;
        let limits = Limits {
            mode: rl.mode,
            per_key: limit(|| "rateLimit.perKey".into(), rl.per_key.as_ref())?,
            per_ip: limit(|| "rateLimit.perIp".into(), rl.per_ip.as_ref())?,
            daily_quota: rl.daily_quota,
            routes,
            lockout: rl.lockout.as_ref().and_then(LockoutLimit::new),
            abuse: rl.abuse.as_ref().and_then(AbuseLimit::new),
            max_in_flight: rl.max_in_flight,
            hide_headers: rl.hide_limit_headers,
        };

        Ok(Self {
            namespace: keys.namespace.clone(),
            target: keys.target.clone(),
            keys_hash: keys.content_hash.clone(),
            policy_hash: policy.content_hash.clone(),
            keys_generation: keys.generation,
            policy_generation: policy.generation,
            epoch: keys.epoch,
            index,
            keys: compiled.into_boxed_slice(),
            sources: Sources::from_list(&access.credentials),
            public,
            rules,
            default_action: access.default_action,
            limits,
            cors: policy.cors.as_ref().map(Cors::compile),
            security_headers,
            https_redirect: access.https_redirect,
            https_exempt,
        })
    }

    /// The key with this id.
    pub fn key(&self, id: &str) -> Option<&Key> {
        let bits = key_id_bits(id)?;
        self.index.get(&bits).map(|&i| &self.keys[i])
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Session epoch of the keys.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The limit settings.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}
