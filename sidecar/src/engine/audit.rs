//! What the engine tells the proxy to record: an [`AuditEvent`] per refusal (and per
//! dry-run refusal), plus lockouts and cooldowns it triggered. The proxy turns them
//! into JSON audit lines, metrics and rate-limited Kubernetes Events.
//!
//! An event never holds a token, a secret or a hash: only the public key id (12
//! base32 characters, validated) and the key's resource name.

use std::net::IpAddr;

use super::refusal::Refusal;

/// Which lockout or cooldown a request started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Triggered {
    /// The client IP got locked out.
    pub ip_lockout: bool,
    /// The key id got locked out.
    pub key_lockout: bool,
    /// The client IP started a cooldown.
    pub ip_cooldown: bool,
    /// The key started a cooldown.
    pub key_cooldown: bool,
}

impl Triggered {
    /// True when anything was triggered.
    pub fn any(&self) -> bool {
        self.ip_lockout || self.key_lockout || self.ip_cooldown || self.key_cooldown
    }
}

/// One audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditEvent<'a> {
    /// Event name from the refusal table (`auth_failed`, `revoked_key_used`,
    /// `scope_denied`, `quota_exhausted`, `locked_out`, ...).
    pub event: &'static str,
    /// The precise reason (audit only, never sent to the client).
    pub reason: &'static str,
    /// What happened.
    pub refusal: Refusal,
    /// `true` when the request was refused; `false` in dry run (reported only).
    pub enforced: bool,
    /// Key id named by the credential, when it was a well-formed token (the key may
    /// not exist).
    pub key_id: Option<&'a str>,
    /// ApiKey resource name, when the key exists.
    pub key_name: Option<&'a str>,
    /// Client address.
    pub client_ip: IpAddr,
    /// Lockouts and cooldowns this request started.
    pub triggered: Triggered,
}

impl<'a> AuditEvent<'a> {
    /// The record of `refusal`.
    pub fn of(
        refusal: Refusal,
        enforced: bool,
        client_ip: IpAddr,
        key_id: Option<&'a str>,
        key_name: Option<&'a str>,
    ) -> Self {
        let row = refusal.response();
        Self {
            event: row.event,
            reason: row.reason,
            refusal,
            enforced,
            key_id,
            key_name,
            client_ip,
            triggered: Triggered::default(),
        }
    }
}
