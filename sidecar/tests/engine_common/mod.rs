//! Fixtures shared by the engine tests: tokens and their argon2 hashes (made once per
//! test binary: each hash costs tens of milliseconds), bundles like the canonical
//! example of DESIGN.md, and a driver that runs verification inline and counts it.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use turnpike_api::bundle::{
    AbuseSpec, AccessConfig, BackendSpec, CorsConfig, FORMAT, KeyBundle, KeyEntry, LockoutSpec,
    PolicyBundle, RateLimitConfig, RouteLimitSpec, RouteSpec, RuleSpec, Sealed, SecretEntry,
    Sources,
};
use turnpike_api::duration::Duration;
use turnpike_api::hash::{PhcHash, hash_token};
use turnpike_api::token::{KeyId, Token};
use turnpike_api::types::{Bucket, CredentialSource, DefaultAction, Method, Mode};
use turnpike_sidecar::engine::{
    CompiledBundle, Decision, Engine, HeaderValues, Now, RequestFacts, Step, verify,
};

/// 2027-01-15T00:00:00Z.
pub const DAY0_UNIX: i64 = 1_800_000_000 - 1_800_000_000 % 86_400;
/// 08:00 UTC that day, monotonic clock at 10 s.
pub const T0: Now = Now::new(10_000, DAY0_UNIX + 8 * 3600);

/// A token with its hash.
pub struct Cred {
    pub token: Token,
    pub hash: PhcHash,
}

impl Cred {
    fn mint(id: Option<&KeyId>) -> Cred {
        let token = match id {
            Some(id) => Token::mint_with_id(id).unwrap(),
            None => Token::mint().unwrap(),
        };
        let hash = hash_token(&token).unwrap();
        Cred { token, hash }
    }

    pub fn id(&self) -> KeyId {
        self.token.key_id()
    }

    pub fn text(&self) -> &str {
        self.token.expose_token()
    }
}

/// Every credential the tests use.
pub struct Creds {
    /// `billing`: scopes orders:read, orders:write.
    pub billing: Cred,
    /// A rotated-out secret of `billing`.
    pub billing_old: Cred,
    /// `reader`: scope orders:read.
    pub reader: Cred,
    /// `admin`: scope admin.
    pub admin: Cred,
}

pub fn creds() -> &'static Creds {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    CREDS.get_or_init(|| {
        let billing = Cred::mint(None);
        let billing_old = Cred::mint(Some(&billing.id()));
        Creds {
            billing,
            billing_old,
            reader: Cred::mint(None),
            admin: Cred::mint(None),
        }
    })
}

pub fn bucket(rate: u32, per_secs: u64, burst: u32) -> Bucket {
    Bucket {
        rate,
        per: Duration::from_secs(per_secs),
        burst,
    }
}

pub fn entry(name: &str, secrets: Vec<SecretEntry>, scopes: &[&str]) -> KeyEntry {
    let mut e = KeyEntry {
        name: name.into(),
        uid: None,
        owner: Some(format!("team-{name}@example.com")),
        secrets,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rate_limit: None,
        daily_quota: None,
        expires_at: None,
        revoked: false,
        fingerprint: String::new(),
    };
    e.refresh_fingerprint();
    e
}

pub fn secret(c: &Cred) -> SecretEntry {
    SecretEntry {
        hash: c.hash.clone(),
        not_after: None,
    }
}

/// The keys of the canonical example and two more.
pub fn keys() -> KeyBundle {
    let c = creds();
    let mut keys = BTreeMap::new();
    keys.insert(
        c.billing.id(),
        entry(
            "billing",
            vec![secret(&c.billing)],
            &["orders:read", "orders:write"],
        ),
    );
    keys.insert(
        c.reader.id(),
        entry("reader", vec![secret(&c.reader)], &["orders:read"]),
    );
    keys.insert(
        c.admin.id(),
        entry("admin", vec![secret(&c.admin)], &["admin"]),
    );
    let mut k = KeyBundle {
        format: FORMAT,
        content_hash: String::new(),
        namespace: "shop".into(),
        target: "orders".into(),
        epoch: 1,
        generation: 0,
        shards: Vec::new(),
        keys,
        signatures: Vec::new(),
    };
    k.seal();
    k
}

/// Changes one key entry and refreshes its fingerprint, as the operator does.
pub fn edit_key(keys: &mut KeyBundle, id: &KeyId, f: impl FnOnce(&mut KeyEntry)) {
    let e = keys.keys.get_mut(id).unwrap();
    f(e);
    e.refresh_fingerprint();
    keys.seal();
}

fn route(methods: &[Method], path: &str) -> RouteSpec {
    RouteSpec {
        methods: methods.to_vec(),
        path: path.into(),
    }
}

/// The canonical policy of DESIGN.md, with generous limits unless a test tightens
/// them.
pub fn policy() -> PolicyBundle {
    use Method::*;
    let mut p = PolicyBundle {
        generation: 0,
        signatures: Vec::new(),
        format: FORMAT,
        content_hash: String::new(),
        namespace: "shop".into(),
        target: "orders".into(),
        access: AccessConfig {
            credentials: vec![CredentialSource::ApiKeyHeader, CredentialSource::Bearer],
            public: vec![route(&[], "/healthz")],
            rules: vec![
                RuleSpec {
                    matches: route(&[Get, Head], "/orders/**"),
                    scopes: vec!["orders:read".into()],
                },
                RuleSpec {
                    matches: route(&[Post, Put, Patch, Delete], "/orders/**"),
                    scopes: vec!["orders:write".into()],
                },
                RuleSpec {
                    matches: route(&[], "/admin/**"),
                    scopes: vec!["admin".into()],
                },
            ],
            default_action: DefaultAction::Deny,
            ..AccessConfig::default()
        },
        rate_limit: RateLimitConfig {
            mode: Mode::Enforce,
            per_key: Some(bucket(10, 1, 20)),
            per_ip: Some(bucket(50, 1, 100)),
            daily_quota: Some(10_000),
            routes: vec![RouteLimitSpec {
                matches: route(&[Post], "/orders"),
                per_key: Some(bucket(1, 1, 5)),
                per_ip: None,
            }],
            lockout: Some(LockoutSpec {
                max_failures: 5,
                window: Duration::from_secs(300),
                duration: Duration::from_secs(900),
            }),
            abuse: Some(AbuseSpec {
                max_not_found: Some(50),
                max_bad_request: Some(20),
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(300),
            }),
            max_in_flight: Some(512),
            backend: BackendSpec::default(),
            hide_limit_headers: false,
        },
        cors: Some(CorsConfig {
            allow_origins: vec![
                "https://shop.example.com".into(),
                "https://*.shop.example.com".into(),
            ],
            allow_methods: vec![Get, Post, Put, Delete],
            allow_headers: vec![
                "content-type".into(),
                "authorization".into(),
                "x-api-key".into(),
            ],
            expose_headers: vec!["X-RateLimit-Limit".into(), "Retry-After".into()],
            allow_credentials: true,
            max_age_secs: Some(600),
        }),
        sources: Sources::default(),
    };
    p.seal();
    p
}

pub fn compile(keys: &KeyBundle, policy: &PolicyBundle) -> CompiledBundle {
    CompiledBundle::compile(keys, policy).unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A request from 192.0.2.1 without credentials.
pub fn req<'a>(method: &'a str, path: &'a str) -> RequestFacts<'a> {
    RequestFacts::new(method, path, ip("192.0.2.1"))
}

/// The same request with `X-API-Key: token`.
pub fn with_key<'a>(mut f: RequestFacts<'a>, token: &'a str) -> RequestFacts<'a> {
    f.api_key = HeaderValues::one(token);
    f
}

thread_local! {
    static VERIFICATIONS: Cell<u32> = const { Cell::new(0) };
}

/// argon2 verifications run by [`decide`] on this thread so far.
pub fn verifications() -> u32 {
    VERIFICATIONS.with(Cell::get)
}

/// Runs a request through the engine as the proxy would, verifying inline.
pub fn decide<'a>(
    engine: &'a Engine,
    bundle: &'a CompiledBundle,
    facts: RequestFacts<'a>,
    now: Now,
) -> Decision<'a> {
    match engine.decide(bundle, facts, now) {
        Step::Decided(d) => d,
        Step::Verify(pending) => {
            let job = pending.job();
            VERIFICATIONS.with(|v| v.set(v.get() + 1));
            let outcome = verify(&job);
            pending.complete(outcome, now)
        }
    }
}

/// The status the proxy would answer with (200 for a forwarded request).
pub fn status(d: &Decision<'_>) -> u16 {
    match d {
        Decision::Allow(_) => 200,
        Decision::Preflight(_) => 204,
        Decision::Refuse(r) => r.response.status,
    }
}

/// The audit reason of a refusal.
pub fn reason(d: &Decision<'_>) -> &'static str {
    match d {
        Decision::Refuse(r) => r.audit.reason,
        _ => "",
    }
}

/// Runs a request and returns its status and audit reason, dropping the decision
/// (and its in-flight slot).
pub fn run(
    engine: &Engine,
    bundle: &CompiledBundle,
    facts: RequestFacts<'_>,
    now: Now,
) -> (u16, &'static str) {
    let d = decide(engine, bundle, facts, now);
    (status(&d), reason(&d))
}

/// The response headers of a decision's rate-limit part, as (name, value) pairs.
pub fn rate_headers(d: &Decision<'_>) -> Vec<(String, String)> {
    let rate = match d {
        Decision::Allow(a) => a.rate,
        Decision::Refuse(r) => r.rate,
        Decision::Preflight(_) => return Vec::new(),
    };
    let mut out = Vec::new();
    rate.for_each(|n, v| out.push((n.to_string(), v.to_string())));
    out
}

pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
