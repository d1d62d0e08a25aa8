//! `kubectl turnpike revoke NAME`: set `spec.revoked: true`; with `--wait`, wait until
//! the operator reports phase Revoked.

use std::time::Duration;

use clap::Args;
use kube::Client;
use serde_json::json;
use turnpike_api::types::{ApiKey, KeyPhase};

use super::{OPERATOR_HINT, key_id, phase, phase_text, state_line};
use crate::apikeys::ApiKeys;
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::output::Out;
use crate::validate;
use crate::wait::Deadline;

/// Arguments of `revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// ApiKey name.
    #[arg(value_parser = validate::resource_name)]
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Wait until the operator reports phase Revoked.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = validate::timeout, requires = "wait")]
    pub timeout: Duration,
}

fn id_note(key: &ApiKey) -> String {
    key_id(key).map_or_else(String::new, |id| format!(" (key id {id})"))
}

/// Runs `revoke`.
///
/// # Errors
/// API errors; [`Error::Timeout`] when `--wait` runs out.
pub async fn run(
    client: &Client,
    namespace: &str,
    args: &RevokeArgs,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let keys = ApiKeys::new(client, namespace);
    let name = args.name.as_str();
    let what = format!("ApiKey {namespace}/{name}");

    let key = keys.get(name).await?;
    let key = if key.spec.revoked {
        writeln!(
            out.out,
            "{what}{} was already revoked (phase {})",
            id_note(&key),
            phase_text(&key)
        )?;
        key
    } else {
        let key = keys
            .merge_patch(name, &json!({ "spec": { "revoked": true } }))
            .await?;
        writeln!(
            out.out,
            "{what}{} revoked: spec.revoked is true, and every sidecar refuses the key from its next bundle update",
            id_note(&key)
        )?;
        key
    };
    if phase(&key) == Some(KeyPhase::Revoked) {
        return Ok(());
    }
    if !args.wait {
        writeln!(
            out.out,
            "phase {} until the operator records the revocation (--wait waits for phase Revoked)",
            phase_text(&key)
        )?;
        return Ok(());
    }
    let deadline = Deadline::after(args.timeout);
    let mut last = key;
    loop {
        if !deadline.tick().await {
            return Err(Error::Timeout {
                what: format!("{what} to reach phase Revoked"),
                waited: deadline.timeout_text(),
                last: state_line(&last),
                hint: format!(
                    "{OPERATOR_HINT}; spec.revoked stays true and the operator records the revocation when it runs"
                ),
            });
        }
        last = keys.get(name).await?;
        if phase(&last) == Some(KeyPhase::Revoked) {
            writeln!(out.out, "{what} is Revoked")?;
            return Ok(());
        }
    }
}
