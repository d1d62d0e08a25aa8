//! What the steps share (limits that refuse or only report, refunds, buckets,
//! failed authentications) and the assembly of the final [`Decision`].

use std::hash::{BuildHasher, Hash};

use super::super::audit::AuditEvent;
use super::super::buckets::{Gcra, Limit, Take};
use super::super::cors::CorsHeaders;
use super::super::decision::{
    Allow, CHALLENGE_API_KEY, CHALLENGE_BEARER, Decision, Identity, Preflight, Refused,
};
use super::super::headers::{RateItem, ms_to_secs_ceil};
use super::super::refusal::{DEFAULT_RETRY_AFTER_SECS, Refusal};
use super::super::table::Table;
use super::{Ctx, Exit, Flow, Taken};

impl<'a> Ctx<'a> {
    // ---- helpers -----------------------------------------------------------------

    /// A limit said no: refuse, or in dry run only report.
    pub(super) fn limit(&mut self, refusal: Refusal, retry_after_ms: u64) -> Flow<'a> {
        if self.bundle.limits.dry_run() {
            self.dry_run.get_or_insert(refusal);
            return Ok(());
        }
        self.refund();
        Err(Exit::Refuse(refusal, Some(retry_after_ms)))
    }

    pub(super) fn record_taken(&mut self, taken: Taken) {
        if let Some(slot) = self.taken.iter_mut().find(|t| t.is_none()) {
            *slot = Some(taken);
        }
    }

    /// Gives back what the current step took before a later check refused.
    pub(super) fn refund(&mut self) {
        let c = &self.engine.counters;
        let now = self.now;
        let ip = self.ip;
        let key_bits = self.key.map(|k| k.id_bits);
        for taken in self.taken.iter_mut().filter_map(Option::take) {
            match (taken, key_bits) {
                (Taken::Ip(l), _) => {
                    c.ip_buckets.update_existing(ip, |g| g.refund(&l));
                }
                (Taken::IpRoute(id, l), _) => {
                    c.ip_route_buckets
                        .update_existing((id, ip), |g| g.refund(&l));
                }
                (Taken::Key(l), Some(k)) => {
                    c.key_buckets.update_existing(k, |g| g.refund(&l));
                }
                (Taken::KeyRoute(id, l), Some(k)) => {
                    c.key_route_buckets
                        .update_existing((id, k), |g| g.refund(&l));
                }
                (Taken::Quota, Some(k)) => {
                    c.quotas.update_existing(k, |q| q.refund(now));
                }
                (_, None) => {}
            }
        }
    }

    /// Takes a token from the bucket of `key` in `table`.
    pub(super) fn bucket<K: Hash + Eq + Copy, S: BuildHasher + Default>(
        &mut self,
        table: &Table<K, Gcra, S>,
        key: K,
        limit: Limit,
        policy: &'static str,
        refusal: Refusal,
        taken: Taken,
    ) -> Flow<'a> {
        let ms = self.now.mono_ms;
        let item = |remaining, reset_ms| RateItem {
            policy,
            quota: limit.burst(),
            window_secs: limit.window_secs(),
            remaining,
            reset_secs: ms_to_secs_ceil(reset_ms),
        };
        match table.with(key, self.now, |g| g.take(&limit, ms)) {
            Take::Allowed {
                remaining,
                reset_ms,
            } => {
                self.rate.offer(item(remaining, reset_ms));
                self.record_taken(taken);
                Ok(())
            }
            Take::Limited {
                retry_after_ms,
                reset_ms,
            } => {
                if self.bundle.limits.dry_run() {
                    self.rate.offer(item(0, reset_ms));
                } else {
                    self.rate.force(item(0, reset_ms));
                }
                self.limit(refusal, retry_after_ms)
            }
        }
    }

    /// A failed authentication: counts for the client IP and, for a wrong secret of
    /// an existing key, for the key id (see [`super::lockout`]).
    pub(super) fn auth_failure(&mut self, refusal: Refusal, count_for_key: bool) -> Exit<'a> {
        if let Some(limit) = self.bundle.limits.lockout {
            let (c, now, ms) = (&self.engine.counters, self.now, self.now.mono_ms);
            self.triggered.ip_lockout = c
                .ip_lockouts
                .with(self.ip, now, |s| s.record_failure(&limit, ms));
            if count_for_key && let Some(key) = self.key {
                self.triggered.key_lockout = c
                    .key_lockouts
                    .with(key.id_bits, now, |s| s.record_failure(&limit, ms));
            }
        }
        Exit::Refuse(refusal, None)
    }

    // ---- outcomes ----------------------------------------------------------------

    pub(super) fn audit(&self, refusal: Refusal, enforced: bool) -> AuditEvent<'a> {
        let mut event = AuditEvent::of(
            refusal,
            enforced,
            self.facts.client_ip,
            self.token.map(|t| t.id()),
            self.key.map(|k| k.name.as_str()),
        );
        event.triggered = self.triggered;
        event
    }

    pub(super) fn cors(&self) -> Option<CorsHeaders<'a>> {
        self.bundle
            .cors
            .as_ref()
            .map(|c| c.decorate(self.facts.origin))
    }

    pub(super) fn allow(&mut self) -> Decision<'a> {
        let path = std::mem::take(&mut self.path);
        let in_flight = match self.guard.take() {
            Some(g) => g,
            None => self.engine.in_flight.acquire(None).0,
        };
        Decision::Allow(Allow {
            identity: self.key.map(|k| Identity {
                key_id: &k.id,
                name: &k.name,
                owner: k.owner.as_deref(),
                scopes: &k.scopes,
                scopes_header: &k.scopes_header,
            }),
            path,
            rate: self.rate,
            cors: self.cors(),
            dry_run: self.dry_run.map(|r| self.audit(r, false)),
            in_flight,
        })
    }

    pub(super) fn finish(&mut self, exit: Exit<'a>) -> Decision<'a> {
        match exit {
            Exit::Preflight(headers) => Decision::Preflight(Preflight {
                headers,
                dry_run: self.dry_run.map(|r| self.audit(r, false)),
            }),
            Exit::Refuse(refusal, retry_after_ms) => {
                let response = refusal.response();
                let mut rate = self.rate;
                if response.retry_after {
                    rate.retry_after_secs = Some(
                        retry_after_ms
                            .map_or(DEFAULT_RETRY_AFTER_SECS, ms_to_secs_ceil)
                            .max(1),
                    );
                }
                let www_authenticate =
                    response
                        .www_authenticate
                        .then_some(if self.bundle.sources.bearer {
                            CHALLENGE_BEARER
                        } else {
                            CHALLENGE_API_KEY
                        });
                Decision::Refuse(Refused {
                    refusal,
                    response,
                    rate,
                    www_authenticate,
                    cors: self.cors(),
                    audit: self.audit(refusal, true),
                })
            }
            // Not reachable from `finish` (the callers turn Verify into a Pending); a
            // refusal is the fail-closed answer.
            Exit::Verify => self.finish(Exit::Refuse(Refusal::Overloaded, None)),
        }
    }
}
