//! The cluster commands. Each takes a client (or a namespace's [`ApiKeys`]), its
//! arguments and an [`Out`](crate::output::Out), so tests drive them against a mocked
//! API server.
//!
//! [`ApiKeys`]: crate::apikeys::ApiKeys

pub mod describe;
pub mod issue;
pub mod list;
pub mod revoke;
pub mod rotate;
pub mod usage;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use turnpike_api::types::{ApiKey, KeyPhase};

/// Where to look when the operator does not answer.
pub(crate) const OPERATOR_HINT: &str =
    "is the Turnpike operator running? Check `kubectl get pods -n turnpike-system` and its logs";

/// The ApiKey's phase, if the operator has written one.
pub(crate) fn phase(key: &ApiKey) -> Option<KeyPhase> {
    key.status.as_ref().and_then(|s| s.phase)
}

/// The phase as text (`Pending` when the operator has not written a status yet).
pub(crate) fn phase_text(key: &ApiKey) -> &'static str {
    match phase(key).unwrap_or_default() {
        KeyPhase::Pending => "Pending",
        KeyPhase::Active => "Active",
        KeyPhase::Expired => "Expired",
        KeyPhase::Revoked => "Revoked",
    }
}

/// The `Ready` condition.
pub(crate) fn ready(key: &ApiKey) -> Option<&Condition> {
    key.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
}

/// `(reason, message)` when the operator refuses the key: condition `Ready` with
/// reason `Invalid` or `Conflicted`.
pub(crate) fn refusal(key: &ApiKey) -> Option<(&str, &str)> {
    ready(key)
        .filter(|c| matches!(c.reason.as_str(), "Invalid" | "Conflicted"))
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// One line on the key's state for progress and timeout messages:
/// `phase Pending (Pending: waiting for the operator to issue the key)`.
pub(crate) fn state_line(key: &ApiKey) -> String {
    match ready(key) {
        Some(c) => format!(
            "phase {} ({}: {})",
            phase_text(key),
            crate::output::clean(&c.reason),
            crate::output::clean(&c.message)
        ),
        None if key.status.is_none() => "no status yet".to_owned(),
        None => format!("phase {}", phase_text(key)),
    }
}

/// The public key id from the status.
pub(crate) fn key_id(key: &ApiKey) -> Option<&str> {
    key.status.as_ref().and_then(|s| s.key_id.as_deref())
}

/// After printing a token: delete the delivery Secret (unless `keep`), so the token
/// exists only where its owner stored it. Only the version the token was read from is
/// deleted.
pub(crate) async fn finish_delivery(
    keys: &crate::apikeys::ApiKeys,
    delivered: &crate::apikeys::Delivered,
    keep: bool,
    out: &mut crate::output::Out<'_>,
) -> Result<(), crate::Error> {
    let ns = keys.namespace();
    let place = format!("Secret {ns}/{}", delivered.secret);
    if keep {
        writeln!(
            out.out,
            "{place} kept (--keep-secret): whoever may read Secrets in namespace {ns} can read this token"
        )?;
        return Ok(());
    }
    match keys.delete_token(delivered).await {
        Ok(true) => writeln!(out.out, "{place} deleted: this token cannot be shown again")?,
        Ok(false) => writeln!(
            out.err,
            "warning: {place} changed after the token was read (another rotation?); it was left in place"
        )?,
        Err(e) => {
            return Err(crate::Error::State(format!(
                "the token above is valid, but {place} could not be deleted: {e}; delete it yourself: kubectl delete secret {} -n {ns}",
                delivered.secret
            )));
        }
    }
    Ok(())
}
