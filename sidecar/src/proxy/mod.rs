//! The request path around the engine (DESIGN.md, "Sidecar request path"). This is
//! the one place the proxy's order is written; [`Proxy::handle`] reads as the list
//! of steps:
//!
//! 1. hygiene the engine cannot see: strict HTTP/1.1 framing against request
//!    smuggling, checked on the bytes before hyper parses them ([`framing`], 400 and
//!    the connection closed), header count and bytes (431), request target
//!    length (414), `Content-Length` over the body limit (413, before reading a
//!    byte), `CONNECT` (405). The header read timeout (slowloris) is the HTTP
//!    server's (see [`crate::server`]); the body limit and idle timeout are enforced
//!    while the body streams ([`body::RequestBody`]);
//! 2. fail closed: without a valid bundle, 503;
//! 3. the engine decides (steps 2-12) on facts borrowed from the request, with the
//!    client IP from [`crate::engine::client_ip`] (trusted proxies only) and `now`
//!    from the clock adapter; a cache miss verifies on the bounded pool
//!    ([`crate::verify_pool`]), a full queue is a 503;
//! 4. refusals and preflights are answered from the engine's tables, audited and
//!    counted;
//! 5. an allowed request is forwarded (step 13) with the normalised path the engine
//!    decided on, the credential and client-sent `X-Turnpike-*` removed, identity
//!    and `X-Forwarded-*` added ([`headers::forward`]); upgrades are tunnelled;
//! 6. on the response (step 14): abuse counters, security, CORS and rate-limit
//!    headers; the in-flight slot is held until the response body is done.

pub mod body;
pub mod framing;
pub mod headers;
pub mod respond;
pub mod upgrade;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, CONTENT_LENGTH,
    HeaderMap, HeaderName, ORIGIN,
};
use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::task::TaskTracker;

use crate::audit_log::{AuditLog, Resource};
use crate::clock::Clock;
use crate::config::{Config, Timeouts, Upstream};
use crate::engine::{
    Allow, CompiledBundle, Decision, Engine, HeaderValues, HygieneLimits, Now, Pending, Preflight,
    Refusal, Refused, RequestFacts, SecurityHeaders, Step, Triggered, TrustedProxies, client_ip,
};
use crate::events::EventRecorder;
use crate::metrics::{
    LimitLabels, Metrics, ReasonLabels, ResultLabels, SubjectLabels, UpstreamErrorLabels,
};
use crate::source::BundleStore;
use crate::verify_pool::VerifyPool;
use body::{BodyError, RequestBody, ResponseBody};
use headers::{Forwarding, X_API_KEY, X_FORWARDED_FOR};
use respond::{Decor, ProxyRefusal};

/// Most body bytes read from an HTTP/2 request answered early (beyond: the stream is
/// reset).
const LINGER_BYTES: usize = 64 * 1024;

/// The upstream HTTP client (connection pool).
type UpstreamClient = Client<HttpConnector, RequestBody>;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    engine: Engine,
    store: Arc<BundleStore>,
    trusted: TrustedProxies,
    clock: Clock,
    pool: VerifyPool,
    client: UpstreamClient,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    audit: Arc<AuditLog>,
    events: EventRecorder,
    hygiene: HygieneLimits,
    timeouts: Timeouts,
    /// Security headers on (not `--disable-security-headers`).
    security_headers: bool,
    /// The proxy listener serves TLS.
    tls: bool,
    tunnels: TaskTracker,
}

fn values<'h>(headers: &'h HeaderMap, name: &HeaderName) -> HeaderValues<'h> {
    HeaderValues::collect(headers.get_all(name).iter().map(|v| v.as_bytes()))
}

impl Proxy {
    /// Builds the proxy from the configuration.
    pub fn new(
        config: &Config,
        engine: Engine,
        store: Arc<BundleStore>,
        clock: Clock,
        metrics: Arc<Metrics>,
        audit: Arc<AuditLog>,
        tunnels: TaskTracker,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.upstream_connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            engine,
            store,
            trusted: config.trusted_proxies.clone(),
            clock,
            pool: VerifyPool::new(config.verify_threads, config.verify_queue, clock),
            client,
            upstream: config.upstream.clone(),
            events: EventRecorder::disabled(Arc::clone(&metrics)),
            metrics,
            audit,
            hygiene: config.hygiene,
            timeouts: config.timeouts,
            security_headers: config.security_headers,
            tls: config.tls.is_some(),
            tunnels,
        }
    }

    fn decor<'a>(&self, plan: &'a SecurityHeaders, https: bool) -> Decor<'a> {
        Decor {
            plan: self.security_headers.then_some(plan),
            https,
        }
    }

    /// The same proxy reporting Kubernetes Events (or their audit lines) to `events`.
    pub fn with_events(mut self, events: EventRecorder) -> Self {
        self.events = events;
        self
    }

    /// The engine (admin endpoints read live usage from it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Handles one request from `peer`.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<ResponseBody> {
        // After an HTTP/1 upgrade request the connection's framing is no longer
        // checked (see [`framing`]): unless it was switched, it ends with this answer.
        let close = req.version() <= Version::HTTP_11
            && (req.headers().contains_key(UPGRADE) || req.method() == Method::CONNECT);
        let mut resp = self.answer(peer, req).await;
        if close && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn answer(&self, peer: SocketAddr, mut req: Request<Incoming>) -> Response<ResponseBody> {
        let https =
            self.tls || (self.trusted.contains(peer.ip()) && forwarded_https(req.headers()));
        let early = self.decor(SecurityHeaders::defaults(), https);
        // 1. Hygiene the engine cannot see.
        if let Err(p) = self.hygiene(&req) {
            self.metrics.request("refused", p.row().metric);
            let h2 = req.version() == Version::HTTP_2;
            self.linger(req.into_body(), h2);
            return respond::proxy_refusal(p, None, None, early);
        }
        // 2. Fail closed.
        let Some(bundle) = self.store.current() else {
            self.metrics
                .request("refused", Refusal::NotReady.response().metric);
            let h2 = req.version() == Version::HTTP_2;
            self.linger(req.into_body(), h2);
            return respond::not_ready(early);
        };
        let on_upgrade =
            headers::is_upgrade_request(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();

        // 3. The engine decides.
        let client_ip = client_ip(
            peer.ip(),
            parts
                .headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| v.as_bytes()),
            &self.trusted,
        );
        let h = &parts.headers;
        let facts = RequestFacts {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            client_ip,
            api_key: values(h, &X_API_KEY),
            authorization: values(h, &AUTHORIZATION),
            origin: values(h, &ORIGIN),
            access_control_request_method: values(h, &ACCESS_CONTROL_REQUEST_METHOD),
            access_control_request_headers: values(h, &ACCESS_CONTROL_REQUEST_HEADERS),
            https,
        };
        let now = self.clock.now();
        let decision = match self.engine.decide(&bundle, facts, now) {
            Step::Decided(d) => {
                self.count_cache_hit(&d);
                d
            }
            Step::Verify(pending) => {
                self.metrics
                    .key_cache
                    .get_or_create(&ResultLabels { result: "miss" })
                    .inc();
                self.verify(pending).await
            }
        };

        // 4-6.
        let request = RequestInfo {
            bundle: &bundle,
            parts: &parts,
            peer: peer.ip(),
            client_ip,
            now,
            decor: self.decor(&bundle.security_headers, https),
        };
        match decision {
            Decision::Refuse(r) => {
                self.linger(body, parts.version == Version::HTTP_2);
                self.refused(&request, r)
            }
            Decision::Preflight(p) => {
                self.linger(body, parts.version == Version::HTTP_2);
                self.preflight(&request, p)
            }
            Decision::Allow(a) => self.forward(&request, body, on_upgrade, a).await,
        }
    }

    /// The body of a request answered before it was read. An HTTP/2 stream stays open
    /// while the body is read (a bounded amount, for a bounded time), so frames the
    /// client sends after the early answer are still checked by the HTTP/2 layer
    /// (RFC 9113 §5.1, §8.1: a DATA frame after RST_STREAM, a second HEADERS, a
    /// pseudo-header in trailers are errors) instead of being ignored on a stream
    /// reset at once. HTTP/1 bodies are left to hyper (read or the connection closed).
    fn linger(&self, body: Incoming, h2: bool) {
        if !h2 || hyper::body::Body::is_end_stream(&body) {
            return;
        }
        let within = self.timeouts.body_idle;
        tokio::spawn(async move {
            let mut body = std::pin::pin!(body);
            let mut left = LINGER_BYTES;
            let _ = tokio::time::timeout(within, async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len());
                    match left.checked_sub(n) {
                        Some(l) => left = l,
                        None => break,
                    }
                }
            })
            .await;
        });
    }

    /// Step 1, the proxy's part.
    fn hygiene(&self, req: &Request<Incoming>) -> Result<(), ProxyRefusal> {
        if req.method() == Method::CONNECT {
            return Err(ProxyRefusal::MethodNotAllowed);
        }
        let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if target > self.hygiene.max_uri_bytes {
            return Err(ProxyRefusal::UriTooLong);
        }
        let headers = req.headers();
        if headers.len() > self.hygiene.max_header_count {
            return Err(ProxyRefusal::HeadersTooLarge);
        }
        let bytes: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if bytes > self.hygiene.max_header_bytes {
            return Err(ProxyRefusal::HeadersTooLarge);
        }
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.hygiene.max_body_bytes) {
            return Err(ProxyRefusal::BodyTooLarge);
        }
        Ok(())
    }

    /// Step 8 on a cache miss: argon2id on the bounded pool.
    async fn verify<'a>(&self, pending: Box<Pending<'a>>) -> Decision<'a> {
        match self.pool.run(pending.job()).await {
            Ok(v) => {
                let result = if v.outcome.is_match() {
                    "match"
                } else {
                    "no_match"
                };
                self.metrics
                    .verifications
                    .get_or_create(&ResultLabels { result })
                    .inc();
                self.metrics
                    .verify_queue_wait
                    .observe(v.queued.as_secs_f64());
                self.metrics.verify_duration.observe(v.took.as_secs_f64());
                pending.complete(v.outcome, self.clock.now())
            }
            Err(_) => {
                self.metrics
                    .verifications
                    .get_or_create(&ResultLabels {
                        result: "overloaded",
                    })
                    .inc();
                pending.overloaded()
            }
        }
    }

    fn count_cache_hit(&self, d: &Decision<'_>) {
        let hit = match d {
            Decision::Allow(a) => a.identity.is_some(),
            // A refusal after step 8 of a request whose key exists was decided from
            // the cache (lockouts and cooldowns refuse before it).
            Decision::Refuse(r) => {
                r.audit.key_name.is_some()
                    && !matches!(
                        r.refusal,
                        Refusal::KeyLockedOut | Refusal::KeyCooldown | Refusal::UnknownKey
                    )
            }
            Decision::Preflight(_) => false,
        };
        if hit {
            self.metrics
                .key_cache
                .get_or_create(&ResultLabels { result: "hit" })
                .inc();
        }
    }

    fn refused(&self, rq: &RequestInfo<'_>, r: Refused<'_>) -> Response<ResponseBody> {
        let row = r.response;
        self.metrics.request("refused", row.metric);
        self.count_limit(r.refusal);
        let path = crate::engine::path::normalize(rq.parts.uri.path());
        let resource = rq.resource(path.as_deref().unwrap_or(rq.parts.uri.path()));
        tracing::debug!(request = %resource, status = row.status, reason = row.reason, "refused");
        self.audit.refusal(&r.audit, resource);
        self.events.refusal(rq.bundle, &r.audit, resource);
        // Only ids of existing keys are counted per key (an unknown id would create
        // table entries for made-up ids).
        let key_id = r.audit.key_name.and(r.audit.key_id);
        self.triggered(rq, r.audit.triggered, key_id, resource);
        let t = self
            .engine
            .observe_response(rq.bundle, rq.client_ip, key_id, row.status, rq.now);
        self.triggered(rq, t, key_id, resource);
        let location = (r.refusal == Refusal::HttpsRedirect)
            .then(|| https_location(rq.parts))
            .flatten();
        if r.refusal == Refusal::HttpsRedirect && location.is_none() {
            // No host to redirect to: refuse like any other plain-HTTP request.
            let row = Refusal::HttpsRequired.response();
            return respond::proxy_refusal_row(row.status, row.body, rq.decor);
        }
        respond::refused(&r, location, rq.decor)
    }

    fn preflight(&self, rq: &RequestInfo<'_>, p: Preflight<'_>) -> Response<ResponseBody> {
        self.metrics.request("preflight", "ok");
        if let Some(dry) = &p.dry_run {
            let resource = rq.resource(rq.parts.uri.path());
            self.dry_run(rq.bundle, dry, resource);
        }
        respond::preflight(&p, rq.decor)
    }

    fn dry_run(
        &self,
        bundle: &CompiledBundle,
        e: &crate::engine::AuditEvent<'_>,
        resource: Resource<'_>,
    ) {
        self.metrics
            .dry_run
            .get_or_create(&ReasonLabels {
                reason: e.refusal.response().metric,
            })
            .inc();
        self.audit.refusal(e, resource);
        self.events.refusal(bundle, e, resource);
    }

    /// Steps 13-14.
    async fn forward(
        &self,
        rq: &RequestInfo<'_>,
        body: Incoming,
        on_upgrade: Option<hyper::upgrade::OnUpgrade>,
        a: Allow<'_>,
    ) -> Response<ResponseBody> {
        let reason = if a.identity.is_some() {
            "authenticated"
        } else {
            "public"
        };
        self.metrics.request("allowed", reason);
        let resource = rq.resource(&a.path);
        if let Some(dry) = &a.dry_run {
            self.dry_run(rq.bundle, dry, resource);
        }
        let refuse =
            |p: ProxyRefusal| respond::proxy_refusal(p, Some(&a.rate), a.cors.as_ref(), rq.decor);

        let Ok(uri) = self.upstream_uri(rq.parts, &a.path) else {
            return refuse(ProxyRefusal::BadRequest);
        };
        let forwarding = Forwarding {
            peer: rq.peer,
            peer_trusted: self.trusted.contains(rq.peer),
            tls: self.tls,
            identity: a.identity,
            upgrade: on_upgrade.is_some(),
            authority: rq.parts.uri.authority(),
        };
        let mut out = Request::new(RequestBody::new(
            body,
            self.hygiene.max_body_bytes,
            self.timeouts.body_idle,
        ));
        *out.method_mut() = rq.parts.method.clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = headers::forward(&rq.parts.headers, &forwarding);

        let started = self.clock.instant();
        let sent = tokio::time::timeout(self.timeouts.upstream, self.client.request(out)).await;
        let mut resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                let refusal = match BodyError::find(&e) {
                    Some(BodyError::TooLarge) => ProxyRefusal::BodyTooLarge,
                    Some(BodyError::Idle) => ProxyRefusal::BodyTimeout,
                    Some(BodyError::Client(_)) => ProxyRefusal::BadRequest,
                    None => {
                        let kind = if e.is_connect() { "connect" } else { "other" };
                        self.metrics
                            .upstream_errors
                            .get_or_create(&UpstreamErrorLabels { kind })
                            .inc();
                        tracing::warn!(error = %e, kind, "upstream request failed");
                        ProxyRefusal::UpstreamUnavailable
                    }
                };
                return refuse(refusal);
            }
            Err(_) => {
                self.metrics
                    .upstream_errors
                    .get_or_create(&UpstreamErrorLabels { kind: "timeout" })
                    .inc();
                return refuse(ProxyRefusal::UpstreamTimeout);
            }
        };
        self.metrics
            .upstream_duration
            .observe(self.clock.secs_since(started));

        let status = resp.status();
        let key_id = a.identity.map(|i| i.key_id.as_str());
        tracing::debug!(request = %resource, status = status.as_u16(), key_id, "forwarded");
        let t = self.engine.observe_response(
            rq.bundle,
            rq.client_ip,
            key_id,
            status.as_u16(),
            self.clock.now(),
        );
        self.triggered(rq, t, key_id, resource);

        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        let slot = a.in_flight.detach();
        let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
        let (mut head, body) = resp.into_parts();
        headers::clean_response(&mut head.headers, switching);
        head.version = rq.parts.version;
        rq.decor.apply(&mut head.headers);
        if let Some(cors) = &a.cors {
            cors.for_each(|n, v| headers::put(&mut head.headers, n, v));
        }
        a.rate
            .for_each(|n, v| headers::put(&mut head.headers, n, v));

        match (switching, on_upgrade, upstream_upgrade) {
            (true, Some(client), Some(upstream)) => {
                upgrade::tunnel(&self.tunnels, client, upstream, slot);
                Response::from_parts(head, ResponseBody::empty())
            }
            // A 101 the client did not ask for cannot be passed on.
            (true, _, _) => refuse(ProxyRefusal::UpstreamUnavailable),
            _ => Response::from_parts(head, ResponseBody::upstream(body, slot)),
        }
    }

    /// The workload's URI for the decided path, with the original query string.
    fn upstream_uri(&self, parts: &Parts, path: &str) -> Result<Uri, http::Error> {
        let path_and_query = match (parts.uri.path_and_query(), parts.uri.query()) {
            // The path was already normal: the request's own bytes (no copy).
            (Some(pq), _) if pq.path() == path => pq.clone(),
            (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}"))?,
            (_, None) => PathAndQuery::try_from(path)?,
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.upstream.scheme.clone());
        uri.authority = Some(self.upstream.authority.clone());
        uri.path_and_query = Some(path_and_query);
        Ok(Uri::from_parts(uri)?)
    }

    fn count_limit(&self, refusal: Refusal) {
        let limit = match refusal {
            Refusal::IpRateLimited => "ip",
            Refusal::IpRouteRateLimited => "ip_route",
            Refusal::KeyRateLimited => "key",
            Refusal::KeyRouteRateLimited => "key_route",
            Refusal::QuotaExhausted => {
                self.metrics.quota_exceeded.inc();
                return;
            }
            _ => return,
        };
        self.metrics
            .rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// Lockouts and cooldowns a request started: metrics, audit and Events.
    /// `key_id` is the id of an existing key named by the request, if any.
    fn triggered(
        &self,
        rq: &RequestInfo<'_>,
        t: Triggered,
        key_id: Option<&str>,
        resource: Resource<'_>,
    ) {
        if !t.any() {
            return;
        }
        let ip = rq.client_ip;
        self.events.triggered(rq.bundle, t, key_id, ip, resource);
        for (on, family, event, subject) in [
            (
                t.ip_lockout,
                &self.metrics.lockouts,
                "lockout_triggered",
                "ip",
            ),
            (
                t.key_lockout,
                &self.metrics.lockouts,
                "lockout_triggered",
                "key",
            ),
            (
                t.ip_cooldown,
                &self.metrics.cooldowns,
                "cooldown_triggered",
                "ip",
            ),
            (
                t.key_cooldown,
                &self.metrics.cooldowns,
                "cooldown_triggered",
                "key",
            ),
        ] {
            if on {
                family.get_or_create(&SubjectLabels { subject }).inc();
                self.audit.triggered(event, subject, key_id, ip, resource);
            }
        }
    }
}

/// The parts of a request the response side needs.
struct RequestInfo<'a> {
    bundle: &'a CompiledBundle,
    parts: &'a Parts,
    peer: IpAddr,
    client_ip: IpAddr,
    now: Now,
    decor: Decor<'a>,
}

/// `X-Forwarded-Proto: https` (the last value: the nearest proxy's), to be believed
/// only from a trusted peer.
fn forwarded_https(h: &HeaderMap) -> bool {
    h.get_all(headers::X_FORWARDED_PROTO)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|p| p.trim_ascii().eq_ignore_ascii_case(b"https"))
}

/// The `https://` URL of a plain-HTTP request (its host without the port, its path and
/// query as sent); `None` without a valid host.
fn https_location(parts: &Parts) -> Option<HeaderValue> {
    let authority = match parts.uri.authority() {
        Some(a) => a.clone(),
        None => {
            let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            host.parse::<http::uri::Authority>().ok()?
        }
    };
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    HeaderValue::from_str(&format!("https://{}{pq}", authority.host())).ok()
}

impl<'a> RequestInfo<'a> {
    fn resource<'p>(&self, path: &'p str) -> Resource<'p>
    where
        'a: 'p,
    {
        Resource {
            namespace: &self.bundle.namespace,
            target: &self.bundle.target,
            method: self.parts.method.as_str(),
            path,
        }
    }
}
