//! What the engine answers: a [`Step`] (decided, or waiting for argon2) and the
//! [`Decision`] the proxy carries out.

use std::borrow::Cow;

use turnpike_api::token::KeyId;

use super::audit::AuditEvent;
use super::cors::{CorsHeaders, PreflightHeaders};
use super::decide::Pending;
use super::headers::RateHeaders;
use super::overload::InFlightGuard;
use super::refusal::{Refusal, RefusalResponse};

/// `WWW-Authenticate` when Bearer tokens are accepted.
pub const CHALLENGE_BEARER: &str = "Bearer realm=\"turnpike\"";
/// `WWW-Authenticate` when only the `X-API-Key` header is accepted.
pub const CHALLENGE_API_KEY: &str = "ApiKey realm=\"turnpike\", header=\"X-API-Key\"";

/// Result of [`super::Engine::decide`].
// The decision is returned by value: boxing it would allocate on every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<'a> {
    /// Decided without argon2 (cache hit, refusal, preflight, public route).
    Decided(Decision<'a>),
    /// The secret must be verified first: run [`Pending::job`] through
    /// [`super::verify`] on the blocking pool, then [`Pending::complete`]. Boxed: the
    /// request's state is large, and moving it on every cache hit would cost more than
    /// one allocation per argon2 run.
    Verify(Box<Pending<'a>>),
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<'a> {
    /// Forward it.
    Allow(Allow<'a>),
    /// Answer it with an error.
    Refuse(Refused<'a>),
    /// Answer the CORS preflight with 204 and these headers.
    Preflight(Preflight<'a>),
}

/// Who made an authenticated request (`X-Turnpike-Key-Id`, `X-Turnpike-Scopes`).
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    /// Public key id.
    pub key_id: &'a KeyId,
    /// ApiKey resource name.
    pub name: &'a str,
    /// Owner text.
    pub owner: Option<&'a str>,
    /// Scopes held, sorted.
    pub scopes: &'a [String],
    /// Scopes joined with spaces, ready for `X-Turnpike-Scopes`.
    pub scopes_header: &'a str,
}

/// A request to forward.
#[derive(Debug)]
pub struct Allow<'a> {
    /// The key, unless the route is public.
    pub identity: Option<Identity<'a>>,
    /// The normalised path: route and scope were decided on it, forward exactly it
    /// (with the original query string).
    pub path: Cow<'a, str>,
    /// Rate-limit headers for the response.
    pub rate: RateHeaders,
    /// CORS headers for the response.
    pub cors: Option<CorsHeaders<'a>>,
    /// In `DryRun`, the refusal that would have happened.
    pub dry_run: Option<AuditEvent<'a>>,
    /// The in-flight slot; hold it until the response is finished
    /// ([`InFlightGuard::detach`] moves it into a response body or a tunnel task).
    pub in_flight: InFlightGuard<'a>,
}

/// A request the sidecar answers itself with an error.
#[derive(Debug)]
pub struct Refused<'a> {
    /// Why.
    pub refusal: Refusal,
    /// Status, body and header needs, from the refusal table.
    pub response: RefusalResponse,
    /// Rate-limit headers, `Retry-After` included for 429 and 503.
    pub rate: RateHeaders,
    /// `WWW-Authenticate` value for 401.
    pub www_authenticate: Option<&'static str>,
    /// CORS headers, so a browser can read the error.
    pub cors: Option<CorsHeaders<'a>>,
    /// The audit record.
    pub audit: AuditEvent<'a>,
}

/// An allowed CORS preflight, answered 204 by the sidecar.
#[derive(Debug)]
pub struct Preflight<'a> {
    /// The `Access-Control-Allow-*` headers.
    pub headers: PreflightHeaders<'a>,
    /// In `DryRun`, the per-IP refusal that would have happened.
    pub dry_run: Option<AuditEvent<'a>>,
}
