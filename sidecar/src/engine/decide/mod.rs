//! The request path, in the order of DESIGN.md ("Sidecar request path"). This is the
//! one place the order is written; each step is a method of the per-request context
//! with the same shape (`&mut self -> Flow`), says why it is where it is, and either
//! lets the request continue or ends it early (refusal, preflight answer, or a wait
//! for argon2). The helpers the steps share and the assembly of the final decision
//! are in the `outcome` submodule.
//!
//! `DryRun` (RateLimitPolicy `mode`) turns every *limit* refusal (buckets, quota,
//! lockout, cooldown, overload) into a report: the decision carries the refusal that
//! would have happened (`dry_run`) and the request goes on. Authentication, scope,
//! path and CORS refusals are never dry-run.

use std::borrow::Cow;
use std::fmt;

use turnpike_api::token::{KeyId, ParsedToken};
use turnpike_api::types::Method;

use super::audit::Triggered;
use super::buckets::Limit;
use super::bundle::{CompiledBundle, RouteLimit};
use super::cache::{CacheScope, TokenDigest};
use super::clock::Now;
use super::cors::{Cors, PreflightHeaders};
use super::credential;
use super::decision::{Decision, Step};
use super::facts::RequestFacts;
use super::headers::{RateHeaders, RateItem};
use super::ip::IpKey;
use super::keys::{Key, VerifyJob, VerifyOutcome};
use super::overload::InFlightGuard;
use super::path;
use super::quota::QuotaTake;
use super::refusal::{DEFAULT_RETRY_AFTER_SECS, Refusal};
use super::scope;
use super::{Engine, quota};

mod outcome;

/// How a request leaves the pipeline early.
enum Exit<'a> {
    Refuse(Refusal, Option<u64>),
    Preflight(PreflightHeaders<'a>),
    Verify,
}

/// `Ok` continues with the next step.
type Flow<'a> = Result<(), Exit<'a>>;

/// A bucket token or quota unit taken, to give back if a later check of the same
/// step refuses the request.
#[derive(Clone, Copy)]
enum Taken {
    Ip(Limit),
    IpRoute(u64, Limit),
    Key(Limit),
    KeyRoute(u64, Limit),
    Quota,
}

/// Per-request state.
struct Ctx<'a> {
    engine: &'a Engine,
    bundle: &'a CompiledBundle,
    facts: RequestFacts<'a>,
    now: Now,
    ip: IpKey,
    method: Option<Method>,
    path: Cow<'a, str>,
    route_limit: Option<&'a RouteLimit>,
    token: Option<ParsedToken<'a>>,
    key: Option<&'a Key>,
    digest: Option<TokenDigest>,
    secret_index: usize,
    rate: RateHeaders,
    dry_run: Option<Refusal>,
    taken: [Option<Taken>; 3],
    guard: Option<InFlightGuard<'a>>,
    triggered: Triggered,
}

impl Engine {
    /// Decides a request up to secret verification (steps 2-12 when the verified-key
    /// cache has the token, 2-8 otherwise). Allocation-free unless the path needs
    /// rewriting or a client is seen for the first time.
    pub fn decide<'a>(
        &'a self,
        bundle: &'a CompiledBundle,
        facts: RequestFacts<'a>,
        now: Now,
    ) -> Step<'a> {
        let mut cx = Ctx {
            engine: self,
            bundle,
            facts,
            now,
            ip: IpKey::of(facts.client_ip),
            method: Method::from_wire(facts.method),
            path: Cow::Borrowed(facts.path),
            route_limit: None,
            token: None,
            key: None,
            digest: None,
            secret_index: 0,
            rate: RateHeaders {
                hidden: bundle.limits.hide_headers,
                ..RateHeaders::default()
            },
            dry_run: None,
            taken: [None; 3],
            guard: None,
            triggered: Triggered::default(),
        };
        match cx.request_path() {
            Ok(()) => Step::Decided(cx.allow()),
            Err(Exit::Verify) => match (cx.token, cx.key) {
                (Some(token), Some(key)) => Step::Verify(Box::new(Pending { cx, token, key })),
                _ => Step::Decided(cx.finish(Exit::Refuse(Refusal::MissingCredential, None))),
            },
            Err(exit) => Step::Decided(cx.finish(exit)),
        }
    }
}

/// A request waiting for argon2 verification of its secret. Holds the request's
/// state; `Debug` shows no token.
pub struct Pending<'a> {
    cx: Ctx<'a>,
    token: ParsedToken<'a>,
    key: &'a Key,
}

impl<'a> Pending<'a> {
    /// The verification work for the blocking pool (owned: `Send + 'static`).
    pub fn job(&self) -> VerifyJob {
        VerifyJob {
            secrets: self.key.secrets.clone(),
            token: self.token.to_token(),
        }
    }

    /// The key id being verified.
    pub fn key_id(&self) -> &'a KeyId {
        &self.key.id
    }

    /// Finishes the decision with the verification outcome (steps 8-12), at `now`
    /// (read again: verification took time).
    pub fn complete(self: Box<Self>, outcome: VerifyOutcome, now: Now) -> Decision<'a> {
        let mut cx = self.cx;
        cx.now = now;
        match cx.verified(outcome).and_then(|()| cx.after_verification()) {
            Ok(()) => cx.allow(),
            Err(exit) => cx.finish(exit),
        }
    }

    /// Refuses the request without verifying it (the verification pool's queue is
    /// full): 503 with `Retry-After`.
    pub fn overloaded(self: Box<Self>) -> Decision<'a> {
        let mut cx = self.cx;
        cx.finish(Exit::Refuse(Refusal::Overloaded, None))
    }
}

impl fmt::Debug for Pending<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("key_id", self.key_id())
            .field("path", &self.cx.path)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// Steps 1-8 and, on a cache hit, 9-12.
    fn request_path(&mut self) -> Flow<'a> {
        // 1. Hygiene: header counts and sizes, body size and read timeouts are the
        //    proxy's (it sees the bytes); the path is decided here, first, because
        //    every later decision is about it.
        self.normalize_path()?;
        //    `httpsRedirect`: plain HTTP is answered before anything reads a
        //    credential, so one sent in clear text is never accepted.
        self.https_only()?;
        // 2. CORS preflight: recognised before anything needs a credential (browsers
        //    never send one on a preflight), answered after the per-IP checks below,
        //    because a preflight is traffic too.
        let preflight = self.recognise_preflight();
        // 3. Public route: no credential is read, only the per-IP limits apply.
        let public = preflight.is_none() && self.is_public();
        // Per-route limits are chosen once, for the per-IP and the per-key buckets.
        self.route_limit = self
            .bundle
            .limits
            .routes
            .iter()
            .find(|r| r.route.matches(self.method, &self.path));
        // 4. Lockout and abuse cooldown of the client IP: the cheapest refusal for a
        //    client that already proved hostile, before it costs a bucket or a lookup.
        self.ip_lockout_and_cooldown()?;
        // 5. Per-IP buckets (general, then the route's): they bound the work any one
        //    address can cause, authenticated or not.
        self.ip_buckets()?;
        if let Some(answer) = preflight {
            return Err(match answer {
                Ok(headers) => Exit::Preflight(headers),
                Err(refusal) => Exit::Refuse(refusal, None),
            });
        }
        if public {
            // 12. Public traffic still reaches the workload: it counts in flight.
            return self.admit();
        }
        // 6. One credential, from the accepted sources, with a valid format and
        //    checksum: typos and made-up tokens stop here, before any lookup.
        self.credential()?;
        // 7. Key lookup by id, then that key's lockout and cooldown: a locked key is
        //    not worth an argon2 run.
        self.key_lookup()?;
        // 8. Secret verification, from the verified-key cache when possible; a miss
        //    leaves the engine (argon2 runs on the proxy's blocking pool).
        self.cached_verification()?;
        self.after_verification()
    }

    /// Steps 9-12, shared by the cache-hit path and [`Pending::complete`].
    fn after_verification(&mut self) -> Flow<'a> {
        // 9. Revoked, expired or rotated-out: only now, after verification, so an
        //    audit record "revoked key used" always means the real token was used.
        self.key_validity()?;
        // 10. Scope of the route: authorisation after authentication.
        self.scope()?;
        // 11. Per-key buckets (general or the key's override, then the route's) and
        //     the daily quota: only requests that would be forwarded consume them.
        self.key_buckets_and_quota()?;
        // 12. In-flight limit last: a slot is held only by requests that will be
        //     forwarded.
        self.admit()
    }

    // ---- steps -------------------------------------------------------------------

    fn normalize_path(&mut self) -> Flow<'a> {
        match path::normalize(self.facts.path) {
            Ok(p) => {
                self.path = p;
                Ok(())
            }
            Err(e) => Err(Exit::Refuse(Refusal::InvalidPath(e), None)),
        }
    }

    fn https_only(&self) -> Flow<'a> {
        let b = self.bundle;
        if !b.https_redirect
            || self.facts.https
            || b.https_exempt
                .iter()
                .any(|r| r.matches(self.method, &self.path))
        {
            return Ok(());
        }
        let refusal = match self.method {
            Some(Method::Get | Method::Head) => Refusal::HttpsRedirect,
            _ => Refusal::HttpsRequired,
        };
        Err(Exit::Refuse(refusal, None))
    }

    fn recognise_preflight(&self) -> Option<Result<PreflightHeaders<'a>, Refusal>> {
        let cors = self.bundle.cors.as_ref()?;
        let f = &self.facts;
        Cors::is_preflight(f.method, f.origin, f.access_control_request_method).then(|| {
            cors.preflight(
                f.origin,
                f.access_control_request_method,
                f.access_control_request_headers,
            )
        })
    }

    fn is_public(&self) -> bool {
        self.bundle
            .public
            .iter()
            .any(|r| r.matches(self.method, &self.path))
    }

    fn ip_lockout_and_cooldown(&mut self) -> Flow<'a> {
        let (c, ms) = (&self.engine.counters, self.now.mono_ms);
        if self.bundle.limits.lockout.is_some()
            && let Some(wait) = c
                .ip_lockouts
                .peek(self.ip, self.now, |s| s.and_then(|s| s.locked_for_ms(ms)))
        {
            self.limit(Refusal::IpLockedOut, wait)?;
        }
        if self.bundle.limits.abuse.is_some()
            && let Some(wait) = c
                .ip_abuse
                .peek(self.ip, self.now, |s| s.and_then(|s| s.cooldown_for_ms(ms)))
        {
            self.limit(Refusal::IpCooldown, wait)?;
        }
        Ok(())
    }

    fn ip_buckets(&mut self) -> Flow<'a> {
        let c = &self.engine.counters;
        if let Some(limit) = self.bundle.limits.per_ip {
            self.bucket(
                &c.ip_buckets,
                self.ip,
                limit,
                "ip",
                Refusal::IpRateLimited,
                Taken::Ip(limit),
            )?;
        }
        if let Some((id, limit)) = self
            .route_limit
            .and_then(|r| Some((r.route.id(), r.per_ip?)))
        {
            self.bucket(
                &c.ip_route_buckets,
                (id, self.ip),
                limit,
                "ip-route",
                Refusal::IpRouteRateLimited,
                Taken::IpRoute(id, limit),
            )?;
        }
        // Step 5 is complete: its tokens stay taken whatever happens later (failed
        // authentications must cost the address).
        self.taken = [None; 3];
        Ok(())
    }

    fn credential(&mut self) -> Flow<'a> {
        let f = &self.facts;
        let raw = credential::extract(self.bundle.sources, f.api_key, f.authorization)
            .map_err(|r| Exit::Refuse(r, None))?;
        let Some(raw) = raw else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        match credential::parse(raw) {
            Ok(token) => {
                self.token = Some(token);
                Ok(())
            }
            Err(refusal) => Err(self.auth_failure(refusal, false)),
        }
    }

    fn key_lookup(&mut self) -> Flow<'a> {
        let Some(token) = self.token else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        let Some(key) = self.bundle.key(token.id()) else {
            return Err(self.auth_failure(Refusal::UnknownKey, false));
        };
        self.key = Some(key);
        let (c, ms) = (&self.engine.counters, self.now.mono_ms);
        if self.bundle.limits.lockout.is_some()
            && let Some(wait) = c.key_lockouts.peek(key.id_bits, self.now, |s| {
                s.and_then(|s| s.locked_for_ms(ms))
            })
        {
            self.limit(Refusal::KeyLockedOut, wait)?;
        }
        if self.bundle.limits.abuse.is_some()
            && let Some(wait) = c.key_abuse.peek(key.id_bits, self.now, |s| {
                s.and_then(|s| s.cooldown_for_ms(ms))
            })
        {
            self.limit(Refusal::KeyCooldown, wait)?;
        }
        Ok(())
    }

    fn cache_scope(&self, key: &Key) -> CacheScope {
        CacheScope {
            key_bits: key.id_bits,
            fingerprint: key.fingerprint,
            epoch: self.bundle.epoch,
        }
    }

    fn cached_verification(&mut self) -> Flow<'a> {
        let (Some(token), Some(key)) = (self.token, self.key) else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        let digest = TokenDigest::of(token.expose_token());
        self.digest = Some(digest);
        match self
            .engine
            .cache
            .lookup(self.cache_scope(key), &digest, self.now)
        {
            Some(index) => {
                self.secret_index = index;
                Ok(())
            }
            None => Err(Exit::Verify),
        }
    }

    /// Step 8, second half: the outcome of argon2.
    fn verified(&mut self, outcome: VerifyOutcome) -> Flow<'a> {
        let (Some(key), Some(digest)) = (self.key, self.digest) else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        match outcome.matched {
            Some(index) => {
                self.engine
                    .cache
                    .insert(self.cache_scope(key), digest, index, self.now);
                self.secret_index = index;
                Ok(())
            }
            None => Err(self.auth_failure(Refusal::WrongSecret, true)),
        }
    }

    fn key_validity(&mut self) -> Flow<'a> {
        let Some(key) = self.key else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        match key.check_validity(self.secret_index, self.now.unix_secs) {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.auth_failure(refusal, false)),
        }
    }

    fn scope(&mut self) -> Flow<'a> {
        let Some(key) = self.key else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        scope::check(
            &self.bundle.rules,
            self.bundle.default_action,
            self.method,
            &self.path,
            &key.scopes,
        )
        .map_err(|r| Exit::Refuse(r, None))
    }

    fn key_buckets_and_quota(&mut self) -> Flow<'a> {
        let Some(key) = self.key else {
            return Err(Exit::Refuse(Refusal::MissingCredential, None));
        };
        let c = &self.engine.counters;
        let limits = &self.bundle.limits;
        if let Some(limit) = key.rate_limit.or(limits.per_key) {
            self.bucket(
                &c.key_buckets,
                key.id_bits,
                limit,
                "key",
                Refusal::KeyRateLimited,
                Taken::Key(limit),
            )?;
        }
        if let Some((id, limit)) = self
            .route_limit
            .and_then(|r| Some((r.route.id(), r.per_key?)))
        {
            self.bucket(
                &c.key_route_buckets,
                (id, key.id_bits),
                limit,
                "key-route",
                Refusal::KeyRouteRateLimited,
                Taken::KeyRoute(id, limit),
            )?;
        }
        if let Some(quota) = key.daily_quota.or(limits.daily_quota) {
            let now = self.now;
            let item = |remaining, reset_secs| RateItem {
                policy: "daily",
                quota,
                window_secs: super::clock::SECS_PER_DAY as u64,
                remaining,
                reset_secs,
            };
            match c
                .quotas
                .with(key.id_bits, now, |s: &mut quota::QuotaState| {
                    s.take(quota, now)
                }) {
                QuotaTake::Allowed {
                    remaining,
                    reset_secs,
                } => {
                    self.rate.quota = Some(item(remaining, reset_secs));
                    self.record_taken(Taken::Quota);
                }
                QuotaTake::Exhausted { retry_after_secs } => {
                    self.rate.quota = Some(item(0, retry_after_secs));
                    self.limit(
                        Refusal::QuotaExhausted,
                        retry_after_secs.saturating_mul(1000),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn admit(&mut self) -> Flow<'a> {
        let (guard, over) = self
            .engine
            .in_flight
            .acquire(self.bundle.limits.max_in_flight);
        if over && let Err(exit) = self.limit(Refusal::Overloaded, DEFAULT_RETRY_AFTER_SECS * 1000)
        {
            drop(guard);
            return Err(exit);
        }
        // Admitted (or over the limit in dry run): the slot is held like any other.
        self.guard = Some(guard);
        Ok(())
    }
}
