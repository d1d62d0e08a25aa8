//! `kubectl turnpike rotate NAME`: ask the operator for a new secret (same key id),
//! print the new token once and say until when the previous one keeps working.

use std::time::Duration;

use clap::Args;
use jiff::Timestamp;
use kube::Client;
use serde_json::json;
use turnpike_api::types::{ApiKey, KeyPhase};

use super::{OPERATOR_HINT, finish_delivery, key_id, phase, refusal, state_line};
use crate::apikeys::{ApiKeys, Delivered, ROTATE_ANNOTATION, token_secret_name};
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::key::print_token;
use crate::output::{Out, clean};
use crate::validate;
use crate::wait::Deadline;

/// How long a new token may sit in the Secret before the status shows the rotation
/// time. The operator writes the status right after the token; only two rotations
/// within the same second leave `rotatedAt` unchanged, and then this bounds the wait.
const STATUS_SETTLE: Duration = Duration::from_secs(2);

/// Arguments of `rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// ApiKey name.
    #[arg(value_parser = validate::resource_name)]
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Keep Secret NAME-token after printing the new token.
    #[arg(long)]
    pub keep_secret: bool,
    /// How long to wait for the operator to rotate the key (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = validate::timeout)]
    pub timeout: Duration,
}

fn rotated_at(key: &ApiKey) -> Option<Timestamp> {
    key.status
        .as_ref()
        .and_then(|s| s.rotated_at.as_ref())
        .map(|t| t.0)
}

/// Why the operator would not rotate this key, if it would not.
fn not_rotatable(key: &ApiKey, what: &str) -> Option<String> {
    if key.spec.key_id.is_some() || key.spec.hash.is_some() {
        return Some(format!(
            "{what} carries spec.keyId and spec.hash (made with `kubectl turnpike key new`); the operator rotates only keys it generated. Rotate it where its manifest lives: a new spec.hash for the same keyId keeps the previous hash working for the grace period"
        ));
    }
    if key.spec.revoked {
        return Some(format!(
            "{what} is revoked; a revoked key is never rotated (issue a new one)"
        ));
    }
    if phase(key) != Some(KeyPhase::Active) || key_id(key).is_none() {
        return Some(format!(
            "{what} is not Active ({}); only an issued, Active key can be rotated",
            state_line(key)
        ));
    }
    None
}

/// Runs `rotate`.
///
/// # Errors
/// API errors; [`Error::State`] for keys the operator does not rotate;
/// [`Error::Timeout`] when the new token does not appear in time.
pub async fn run(
    client: &Client,
    namespace: &str,
    args: &RotateArgs,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let keys = ApiKeys::new(client, namespace);
    let name = args.name.as_str();
    let what = format!("ApiKey {namespace}/{name}");
    let secret = format!("Secret {namespace}/{}", token_secret_name(name));

    let key = keys.get(name).await?;
    if let Some(why) = not_rotatable(&key, &what) {
        return Err(Error::State(why));
    }
    let previous_token = keys.token(name).await?;
    let previous_rotation = rotated_at(&key);

    let request = Timestamp::now().to_string();
    keys.merge_patch(
        name,
        &json!({ "metadata": { "annotations": { ROTATE_ANNOTATION: request } } }),
    )
    .await?;
    let deadline = Deadline::after(args.timeout);
    writeln!(
        out.err,
        "rotation requested ({ROTATE_ANNOTATION}={request}); waiting up to {} for the new token",
        deadline.timeout_text()
    )?;

    let mut new_since: Option<tokio::time::Instant> = None;
    let (key, delivered) = loop {
        // Token first: the operator writes it before the status.
        let fresh = keys.token(name).await?.filter(|d: &Delivered| {
            previous_token
                .as_ref()
                .is_none_or(|before| !before.same_token(d))
        });
        let key = keys.get(name).await?;
        if let Some((reason, message)) = refusal(&key) {
            return Err(Error::State(format!(
                "{what} is not Active any more ({reason}: {}); the rotation request stays on it",
                clean(message)
            )));
        }
        if let Some(delivered) = fresh {
            let status_caught_up =
                rotated_at(&key).is_some() && rotated_at(&key) != previous_rotation;
            let since = *new_since.get_or_insert_with(tokio::time::Instant::now);
            if status_caught_up || since.elapsed() >= STATUS_SETTLE {
                break (key, delivered);
            }
        }
        if !deadline.tick().await {
            return Err(Error::Timeout {
                what: format!("a new token in {secret}"),
                waited: deadline.timeout_text(),
                last: state_line(&key),
                hint: format!(
                    "{OPERATOR_HINT}; the rotation request stays on the ApiKey, and once the operator acts the new token is in {secret}"
                ),
            });
        }
    };

    let key_id = key_id(&key).unwrap_or_default();
    if delivered.token.id() != key_id {
        return Err(Error::State(format!(
            "{secret} holds a token for key id {}, but {what} has key id {key_id}",
            delivered.token.id()
        )));
    }
    writeln!(out.out, "{what} rotated: key id {key_id} (unchanged)")?;
    print_token(out.out, &delivered.token)?;
    match key
        .status
        .as_ref()
        .and_then(|s| s.previous_secret_valid_until.as_ref())
    {
        Some(until) => writeln!(
            out.out,
            "The previous token keeps working until {} (status.previousSecretValidUntil).",
            until.0
        )?,
        None => writeln!(out.out, "The previous token no longer works.")?,
    }
    finish_delivery(&keys, &delivered, args.keep_secret, out).await
}
