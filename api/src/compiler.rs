//! The compiler: the resources of one namespace (plus the key material the operator
//! keeps) in, one bundle per target and one outcome per resource out.
//!
//! Pure and deterministic: the same inputs in any order give byte-identical bundles.
//!
//! Targeting (DESIGN.md): a policy with `targetRef` applies to that target, one without
//! to every target of the namespace. More specific wins; among equals the oldest
//! (`creationTimestamp`, then name) wins and the others are `Conflicted`.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::{
    bundle::{
        AbuseSpec, AccessConfig, BackendSpec, CorsConfig, FORMAT, KeyBundle, KeyEntry, LockoutSpec,
        PolicyBundle, RateLimitConfig, RouteLimitSpec, RouteSpec, RuleSpec, Sealed, SecretEntry,
        Sources,
    },
    hash::PhcHash,
    token::KeyId,
    types::{
        AccessPolicy, ApiKey, BackendKind, CorsPolicy, FailureMode, Method, RateLimitPolicy,
        RouteMatch, TargetRef,
    },
    validate,
};

/// Key material the operator keeps for an ApiKey (in its own Secret): the id and hash of
/// a generated key, and a rotated-out secret still in its grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// Key id.
    pub key_id: KeyId,
    /// Current hash.
    pub hash: PhcHash,
    /// Previous secret during a rotation grace period.
    pub previous: Option<PreviousSecret>,
}

/// A rotated-out secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// Its hash.
    pub hash: PhcHash,
    /// Last instant (Unix seconds) it is accepted.
    pub not_after: i64,
}

/// Everything the compiler reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The namespace compiled.
    pub namespace: &'a str,
    /// ApiKeys of the namespace.
    pub api_keys: &'a [ApiKey],
    /// AccessPolicies of the namespace.
    pub access_policies: &'a [AccessPolicy],
    /// RateLimitPolicies of the namespace.
    pub rate_limit_policies: &'a [RateLimitPolicy],
    /// CorsPolicies of the namespace.
    pub cors_policies: &'a [CorsPolicy],
    /// Operator-kept key material by ApiKey name (generated keys, rotation).
    pub key_material: &'a BTreeMap<String, KeyMaterial>,
    /// Targets known from elsewhere (annotated pods, `--target` in local mode).
    pub extra_targets: &'a [String],
    /// Session epoch written into every key bundle.
    pub epoch: u64,
}

/// The kinds the compiler reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// ApiKey
    ApiKey,
    /// AccessPolicy
    AccessPolicy,
    /// RateLimitPolicy
    RateLimitPolicy,
    /// CorsPolicy
    CorsPolicy,
}

impl Kind {
    /// The Kubernetes kind name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "ApiKey",
            Kind::AccessPolicy => "AccessPolicy",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::CorsPolicy => "CorsPolicy",
        }
    }
}

/// What became of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In force for these targets (possibly none yet).
    Accepted {
        /// Targets it applies to.
        targets: Vec<String>,
    },
    /// Another resource of equal specificity wins.
    Conflicted {
        /// Name of the winner.
        winner: String,
        /// Targets on which it lost.
        targets: Vec<String>,
    },
    /// Refused; the message says why.
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// An ApiKey whose key has not been generated yet.
    Pending,
}

/// Outcome of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOutcome {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// What became of it.
    pub outcome: Outcome,
}

/// The two bundles of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetBundle {
    /// The Secret payload.
    pub keys: KeyBundle,
    /// The ConfigMap payload.
    pub policy: PolicyBundle,
}

/// Compiler output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Bundles by target name.
    pub bundles: BTreeMap<String, TargetBundle>,
    /// One outcome per resource, ordered by kind then name.
    pub outcomes: Vec<ResourceOutcome>,
}

impl Output {
    /// The outcome of one resource.
    pub fn outcome(&self, kind: Kind, name: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .map(|o| &o.outcome)
    }
}

/// Age order: creation time (absent sorts last), then name.
type AgeKey = (bool, i64, i128, String);

fn age_key<K: ResourceExt>(r: &K) -> AgeKey {
    let ts = r.meta().creation_timestamp.as_ref().map(|t| t.0);
    (
        ts.is_none(),
        ts.map(|t| t.as_second()).unwrap_or_default(),
        ts.map(|t| t.as_nanosecond()).unwrap_or_default(),
        r.name_any(),
    )
}

/// Compiles one namespace.
pub fn compile(inputs: &Inputs<'_>) -> Output {
    let mut outcomes = Vec::new();

    let access = validated(
        inputs.access_policies,
        Kind::AccessPolicy,
        check_access,
        &mut outcomes,
    );
    let rate = validated(
        inputs.rate_limit_policies,
        Kind::RateLimitPolicy,
        check_rate,
        &mut outcomes,
    );
    let cors = validated(
        inputs.cors_policies,
        Kind::CorsPolicy,
        check_cors,
        &mut outcomes,
    );
    let keys = compile_keys(inputs, &mut outcomes);

    // Every target the namespace knows about.
    let mut targets: BTreeSet<String> = inputs.extra_targets.iter().cloned().collect();
    targets.extend(
        access
            .iter()
            .filter_map(|(p, _)| p.spec.target_ref.as_ref())
            .map(|t| t.name.clone()),
    );
    targets.extend(
        rate.iter()
            .filter_map(|(p, _)| p.spec.target_ref.as_ref())
            .map(|t| t.name.clone()),
    );
    targets.extend(
        cors.iter()
            .filter_map(|(p, _)| p.spec.target_ref.as_ref())
            .map(|t| t.name.clone()),
    );
    for k in &keys {
        targets.extend(k.targets.iter().cloned());
    }
    targets.retain(|t| validate::target(t).is_ok());

    let access_pick = select(&access, &targets, |p| p.spec.target_ref.as_ref());
    let rate_pick = select(&rate, &targets, |p| p.spec.target_ref.as_ref());
    let cors_pick = select(&cors, &targets, |p| p.spec.target_ref.as_ref());
    access_pick.report(Kind::AccessPolicy, &access, &mut outcomes);
    rate_pick.report(Kind::RateLimitPolicy, &rate, &mut outcomes);
    cors_pick.report(Kind::CorsPolicy, &cors, &mut outcomes);

    let mut bundles = BTreeMap::new();
    for target in &targets {
        let mut sources = Sources::default();
        let access_cfg = match access_pick.winner(target) {
            Some(i) => {
                sources.access_policy = Some(access[i].0.name_any());
                access[i].1.clone()
            }
            None => AccessConfig::default(),
        };
        let rate_cfg = match rate_pick.winner(target) {
            Some(i) => {
                sources.rate_limit_policy = Some(rate[i].0.name_any());
                rate[i].1.clone()
            }
            None => RateLimitConfig::default(),
        };
        let cors_cfg = cors_pick.winner(target).map(|i| {
            sources.cors_policy = Some(cors[i].0.name_any());
            cors[i].1.clone()
        });
        let mut policy = PolicyBundle {
            format: FORMAT,
            content_hash: String::new(),
            namespace: inputs.namespace.to_string(),
            target: target.clone(),
            access: access_cfg,
            rate_limit: rate_cfg,
            cors: cors_cfg,
            sources,
            generation: 0,
            signatures: Vec::new(),
        };
        policy.seal();
        let mut key_bundle = KeyBundle {
            format: FORMAT,
            content_hash: String::new(),
            namespace: inputs.namespace.to_string(),
            target: target.clone(),
            epoch: inputs.epoch,
            generation: 0,
            shards: Vec::new(),
            keys: keys
                .iter()
                .filter(|k| k.all_targets || k.targets.contains(target))
                .map(|k| (k.id.clone(), k.entry.clone()))
                .collect(),
            signatures: Vec::new(),
        };
        key_bundle.seal();
        bundles.insert(
            target.clone(),
            TargetBundle {
                keys: key_bundle,
                policy,
            },
        );
    }

    // Now that the target set is known, fill in the targets of accepted keys.
    for k in &keys {
        let list: Vec<String> = if k.all_targets {
            targets.iter().cloned().collect()
        } else {
            k.targets
                .iter()
                .filter(|t| targets.contains(*t))
                .cloned()
                .collect()
        };
        outcomes.push(ResourceOutcome {
            kind: Kind::ApiKey,
            name: k.entry.name.clone(),
            outcome: Outcome::Accepted { targets: list },
        });
    }
    outcomes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Output { bundles, outcomes }
}

/// Validates each resource, reports the invalid ones and returns the rest (with their
/// compiled form) in age order.
fn validated<'a, R, C>(
    items: &'a [R],
    kind: Kind,
    check: impl Fn(&R) -> Result<C, String>,
    outcomes: &mut Vec<ResourceOutcome>,
) -> Vec<(&'a R, C)>
where
    R: ResourceExt,
{
    let mut ok: Vec<(&R, C)> = Vec::new();
    for item in items {
        match check(item) {
            Ok(c) => ok.push((item, c)),
            Err(message) => outcomes.push(ResourceOutcome {
                kind,
                name: item.name_any(),
                outcome: Outcome::Invalid { message },
            }),
        }
    }
    ok.sort_by_key(|(r, _)| age_key(*r));
    ok
}

/// Which policy wins where.
struct Selection {
    /// target -> index of the winning policy.
    winners: BTreeMap<String, usize>,
    /// index -> (winner index, targets lost) for policies beaten by an equal.
    losers: BTreeMap<usize, (usize, Vec<String>)>,
}

impl Selection {
    fn winner(&self, target: &str) -> Option<usize> {
        self.winners.get(target).copied()
    }

    fn report<R: ResourceExt, C>(
        &self,
        kind: Kind,
        items: &[(&R, C)],
        outcomes: &mut Vec<ResourceOutcome>,
    ) {
        for (i, (item, _)) in items.iter().enumerate() {
            let outcome = match self.losers.get(&i) {
                Some((w, lost)) => Outcome::Conflicted {
                    winner: items[*w].0.name_any(),
                    targets: lost.clone(),
                },
                None => Outcome::Accepted {
                    targets: self
                        .winners
                        .iter()
                        .filter(|(_, w)| **w == i)
                        .map(|(t, _)| t.clone())
                        .collect(),
                },
            };
            outcomes.push(ResourceOutcome {
                kind,
                name: item.name_any(),
                outcome,
            });
        }
    }
}

/// `items` are in age order, so the first candidate is the oldest.
fn select<R, C>(
    items: &[(&R, C)],
    targets: &BTreeSet<String>,
    target_ref: impl Fn(&R) -> Option<&TargetRef>,
) -> Selection {
    let mut winners = BTreeMap::new();
    let mut losers: BTreeMap<usize, (usize, Vec<String>)> = BTreeMap::new();
    for target in targets {
        let specific: Vec<usize> = (0..items.len())
            .filter(|&i| target_ref(items[i].0).is_some_and(|t| &t.name == target))
            .collect();
        let candidates = if specific.is_empty() {
            (0..items.len())
                .filter(|&i| target_ref(items[i].0).is_none())
                .collect()
        } else {
            specific
        };
        if let Some((&first, rest)) = candidates.split_first() {
            winners.insert(target.clone(), first);
            for &loser in rest {
                losers
                    .entry(loser)
                    .or_insert_with(|| (first, Vec::new()))
                    .1
                    .push(target.clone());
            }
        }
    }
    // A namespace-wide policy that loses to an older namespace-wide one loses
    // everywhere, even in a namespace without targets yet.
    let wide: Vec<usize> = (0..items.len())
        .filter(|&i| target_ref(items[i].0).is_none())
        .collect();
    if let Some((&first, rest)) = wide.split_first() {
        for &loser in rest {
            losers.entry(loser).or_insert_with(|| (first, Vec::new()));
        }
    }
    Selection { winners, losers }
}

fn check_target_ref(t: Option<&TargetRef>) -> Result<(), String> {
    match t {
        Some(t) => validate::target(&t.name).map_err(|e| format!("targetRef.name: {e}")),
        None => Ok(()),
    }
}

fn route(field: &str, m: &RouteMatch) -> Result<RouteSpec, String> {
    validate::path(&m.path).map_err(|e| format!("{field}.path: {e}"))?;
    let mut methods = m.methods.clone();
    methods.sort();
    methods.dedup();
    Ok(RouteSpec {
        methods,
        path: m.path.clone(),
    })
}

fn scopes(field: &str, list: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        validate::scope(s).map_err(|e| format!("{field}: {e}"))?;
        out.push(s.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_access(p: &AccessPolicy) -> Result<AccessConfig, String> {
    let s = &p.spec;
    check_target_ref(s.target_ref.as_ref())?;
    if s.credentials.is_empty() {
        return Err("credentials must name at least one source (ApiKeyHeader, Bearer)".into());
    }
    let mut credentials = s.credentials.clone();
    credentials.sort();
    credentials.dedup();
    let public = s
        .public
        .iter()
        .enumerate()
        .map(|(i, m)| route(&format!("public[{i}]"), m))
        .collect::<Result<_, _>>()?;
    let rules = s
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RuleSpec {
                matches: route(&format!("rules[{i}].match"), &r.matches)?,
                scopes: scopes(&format!("rules[{i}].scopes"), &r.scopes)?,
            })
        })
        .collect::<Result<_, String>>()?;
    let https_redirect_exempt = s
        .https_redirect_exempt
        .iter()
        .enumerate()
        .map(|(i, m)| route(&format!("httpsRedirectExempt[{i}]"), m))
        .collect::<Result<_, _>>()?;
    Ok(AccessConfig {
        credentials,
        public,
        rules,
        default_action: s.default_action,
        security_headers: crate::security_headers::compile(s.security_headers.as_ref())?,
        https_redirect: s.https_redirect,
        https_redirect_exempt,
    })
}

fn check_rate(p: &RateLimitPolicy) -> Result<RateLimitConfig, String> {
    let s = &p.spec;
    check_target_ref(s.target_ref.as_ref())?;
    if let Some(b) = &s.per_key {
        validate::bucket("perKey", b)?;
    }
    if let Some(b) = &s.per_ip {
        validate::bucket("perIp", b)?;
    }
    let routes = s
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if let Some(b) = &r.per_key {
                validate::bucket(&format!("routes[{i}].perKey"), b)?;
            }
            if let Some(b) = &r.per_ip {
                validate::bucket(&format!("routes[{i}].perIp"), b)?;
            }
            if r.per_key.is_none() && r.per_ip.is_none() {
                return Err(format!("routes[{i}] needs perKey, perIp or both"));
            }
            Ok(RouteLimitSpec {
                matches: route(&format!("routes[{i}].match"), &r.matches)?,
                per_key: r.per_key,
                per_ip: r.per_ip,
            })
        })
        .collect::<Result<_, String>>()?;
    let lockout = match &s.lockout {
        Some(l) => {
            if l.max_failures < 1 {
                return Err("lockout.maxFailures must be >= 1".into());
            }
            validate::window("lockout.window", l.window)?;
            validate::window("lockout.duration", l.duration)?;
            Some(LockoutSpec {
                max_failures: l.max_failures,
                window: l.window,
                duration: l.duration,
            })
        }
        None => None,
    };
    let abuse = match &s.abuse {
        Some(a) => {
            if a.max_not_found.is_none() && a.max_bad_request.is_none() {
                return Err("abuse needs maxNotFound, maxBadRequest or both".into());
            }
            if a.max_not_found == Some(0) || a.max_bad_request == Some(0) {
                return Err("abuse.maxNotFound and abuse.maxBadRequest must be >= 1".into());
            }
            validate::window("abuse.window", a.window)?;
            validate::window("abuse.cooldown", a.cooldown)?;
            Some(AbuseSpec {
                max_not_found: a.max_not_found,
                max_bad_request: a.max_bad_request,
                window: a.window,
                cooldown: a.cooldown,
            })
        }
        None => None,
    };
    let max_in_flight = match &s.overload {
        Some(o) if o.max_in_flight < 1 => return Err("overload.maxInFlight must be >= 1".into()),
        Some(o) => Some(o.max_in_flight),
        None => None,
    };
    let backend = match &s.backend {
        None => BackendSpec::default(),
        Some(b) => {
            if b.kind == BackendKind::Redis && b.secret_ref.is_none() {
                return Err("a Redis backend needs secretRef naming the Secret (and key) that holds the redis:// URL".into());
            }
            BackendSpec {
                kind: b.kind,
                secret_name: b.secret_ref.as_ref().map(|r| r.name.clone()),
                secret_key: b
                    .secret_ref
                    .as_ref()
                    .map(|r| r.key.clone().unwrap_or_else(|| "url".into())),
                failure_mode: b.failure_mode.unwrap_or(FailureMode::Open),
            }
        }
    };
    Ok(RateLimitConfig {
        mode: s.mode,
        per_key: s.per_key,
        per_ip: s.per_ip,
        daily_quota: s.daily_quota,
        routes,
        lockout,
        abuse,
        max_in_flight,
        backend,
        hide_limit_headers: s.hide_limit_headers,
    })
}

fn check_cors(p: &CorsPolicy) -> Result<CorsConfig, String> {
    let s = &p.spec;
    check_target_ref(s.target_ref.as_ref())?;
    if s.allow_origins.is_empty() {
        return Err("allowOrigins must list at least one origin".into());
    }
    for o in &s.allow_origins {
        validate::origin(o).map_err(|e| format!("allowOrigins: {e}"))?;
    }
    if s.allow_credentials && s.allow_origins.iter().any(|o| o == "*") {
        return Err("allowOrigins may not contain \"*\" when allowCredentials is true: browsers refuse it, and it would let any site make credentialed requests; list the origins instead".into());
    }
    let headers = |field: &str, list: &[String]| -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for h in list {
            validate::header(h).map_err(|e| format!("{field}: {e}"))?;
            out.push(h.to_ascii_lowercase());
        }
        out.sort();
        out.dedup();
        Ok(out)
    };
    let mut allow_methods = if s.allow_methods.is_empty() {
        vec![Method::Get, Method::Head, Method::Post]
    } else {
        s.allow_methods.clone()
    };
    allow_methods.sort();
    allow_methods.dedup();
    let mut allow_origins = s.allow_origins.clone();
    allow_origins.sort();
    allow_origins.dedup();
    Ok(CorsConfig {
        allow_origins,
        allow_methods,
        allow_headers: headers("allowHeaders", &s.allow_headers)?,
        expose_headers: headers("exposeHeaders", &s.expose_headers)?,
        allow_credentials: s.allow_credentials,
        max_age_secs: s.max_age.map(|d| d.as_secs()),
    })
}

/// A key that made it into the bundles.
struct CompiledKey {
    id: KeyId,
    all_targets: bool,
    targets: BTreeSet<String>,
    entry: KeyEntry,
}

fn compile_keys(inputs: &Inputs<'_>, outcomes: &mut Vec<ResourceOutcome>) -> Vec<CompiledKey> {
    let mut sorted: Vec<&ApiKey> = inputs.api_keys.iter().collect();
    sorted.sort_by_key(|k| age_key(*k));
    let mut by_id: BTreeMap<KeyId, String> = BTreeMap::new();
    let mut out = Vec::new();
    for key in sorted {
        let name = key.name_any();
        let mut report = |outcome| {
            outcomes.push(ResourceOutcome {
                kind: Kind::ApiKey,
                name: name.clone(),
                outcome,
            })
        };
        match compile_key(key, inputs.key_material.get(&name)) {
            Ok(None) => report(Outcome::Pending),
            Err(message) => report(Outcome::Invalid { message }),
            Ok(Some(compiled)) => {
                if let Some(winner) = by_id.get(&compiled.id) {
                    report(Outcome::Conflicted {
                        winner: winner.clone(),
                        targets: Vec::new(),
                    });
                    continue;
                }
                by_id.insert(compiled.id.clone(), name.clone());
                out.push(compiled);
            }
        }
    }
    out
}

fn compile_key(
    key: &ApiKey,
    material: Option<&KeyMaterial>,
) -> Result<Option<CompiledKey>, String> {
    let s = &key.spec;
    let mut targets = BTreeSet::new();
    for t in &s.targets {
        validate::target(t).map_err(|e| format!("targets: {e}"))?;
        targets.insert(t.clone());
    }
    let scopes = scopes("scopes", &s.scopes)?;
    if let Some(b) = &s.rate_limit {
        validate::bucket("rateLimit", b)?;
    }
    if s.owner.as_ref().is_some_and(|o| o.len() > 256) {
        return Err("owner is longer than 256 characters".into());
    }
    let expires_at = match &s.expires_at {
        Some(text) => Some(
            text.parse::<jiff::Timestamp>()
                .map_err(|_| {
                    "expiresAt must be an RFC 3339 timestamp such as 2027-06-30T00:00:00Z"
                        .to_string()
                })?
                .as_second(),
        ),
        None => None,
    };
    let (id, current, previous) = match (&s.key_id, &s.hash) {
        (Some(id), Some(hash)) => {
            let id = KeyId::parse(id).map_err(|_| {
                "keyId must be 12 lower-case Crockford base32 characters (digits and letters except i, l, o, u)".to_string()
            })?;
            let hash = PhcHash::parse(hash).map_err(|e| format!("hash: {e}"))?;
            // After a GitOps hash change the operator keeps the replaced hash, with its
            // grace period, as the previous secret of the same key id.
            let previous = material
                .filter(|m| m.key_id == id)
                .and_then(|m| m.previous.clone());
            (id, hash, previous)
        }
        (None, None) => match material {
            Some(m) => (m.key_id.clone(), m.hash.clone(), m.previous.clone()),
            None => return Ok(None),
        },
        _ => {
            return Err("keyId and hash must be set together (both from `kubectl turnpike key new`), or both left out so the operator generates the key".into());
        }
    };
    let mut secrets = vec![SecretEntry {
        hash: current,
        not_after: None,
    }];
    if let Some(p) = previous {
        secrets.push(SecretEntry {
            hash: p.hash,
            not_after: Some(p.not_after),
        });
    }
    let mut entry = KeyEntry {
        name: key.name_any(),
        uid: key.metadata.uid.clone(),
        owner: s.owner.clone(),
        secrets,
        scopes,
        rate_limit: s.rate_limit,
        daily_quota: s.daily_quota,
        expires_at,
        revoked: s.revoked,
        fingerprint: String::new(),
    };
    entry.refresh_fingerprint();
    Ok(Some(CompiledKey {
        id,
        all_targets: s.targets.is_empty(),
        targets,
        entry,
    }))
}
