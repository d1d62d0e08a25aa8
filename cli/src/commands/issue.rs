//! `kubectl turnpike issue NAME --scopes ...`: create an ApiKey without key material,
//! wait until the operator has issued it, print the token once and delete the
//! delivery Secret.

use clap::Args;
use jiff::Timestamp;
use kube::{Client, ResourceExt};
use turnpike_api::types::{ApiKey, ApiKeySpec, KeyPhase};

use super::{OPERATOR_HINT, finish_delivery, key_id, phase, refusal, state_line};
use crate::apikeys::{ApiKeys, token_secret_name};
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::key::{dedup, print_token};
use crate::output::{Out, clean};
use crate::validate;
use crate::wait::Deadline;

/// Arguments of `issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// ApiKey name (lowercase letters, digits, '-' and '.'; at most 240 characters).
    #[arg(value_parser = validate::api_key_name)]
    pub name: String,
    /// Scopes granted to the key, comma-separated (e.g. orders:read,orders:write).
    #[arg(long, required = true, value_delimiter = ',', value_parser = validate::scope)]
    pub scopes: Vec<String>,
    /// Targets the key is valid for, comma-separated; default: every target of the
    /// namespace.
    #[arg(long, value_delimiter = ',', value_parser = validate::dns_label)]
    pub targets: Vec<String>,
    /// Expiry: RFC 3339 (e.g. 2027-06-30T00:00:00Z) or a duration from now (e.g. 720h).
    #[arg(long, value_parser = validate::expires)]
    pub expires: Option<Timestamp>,
    /// Owner recorded for audit (free text, e.g. a team or an email address).
    #[arg(long, value_parser = validate::owner)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Keep Secret NAME-token after printing the token (default: delete it, so the
    /// token exists only where you store it).
    #[arg(long)]
    pub keep_secret: bool,
    /// How long to wait for the operator to issue the key (e.g. 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = validate::timeout)]
    pub timeout: std::time::Duration,
}

/// The ApiKey `issue` creates: no `keyId`/`hash`, so the operator generates the key.
pub fn manifest(args: &IssueArgs, namespace: &str) -> ApiKey {
    let mut key = ApiKey::new(
        &args.name,
        ApiKeySpec {
            targets: dedup(args.targets.clone()),
            scopes: dedup(args.scopes.clone()),
            owner: args.owner.clone(),
            expires_at: args.expires.map(|at| at.to_string()),
            revoked: false,
            daily_quota: None,
            rate_limit: None,
            key_id: None,
            hash: None,
            rotation: None,
        },
    );
    key.metadata.namespace = Some(namespace.to_owned());
    key
}

/// Runs `issue`.
///
/// # Errors
/// API errors; [`Error::AlreadyExists`]; [`Error::NotIssued`] when the operator
/// refuses the key and [`Error::Timeout`] when it does not act in time (in both cases
/// the ApiKey is deleted again, so nothing is left half-issued).
pub async fn run(
    client: &Client,
    namespace: &str,
    args: &IssueArgs,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let keys = ApiKeys::new(client, namespace);
    let name = args.name.as_str();
    let what = format!("ApiKey {namespace}/{name}");
    let created = keys
        .create(&manifest(args, namespace))
        .await
        .map_err(|e| match e {
            Error::AlreadyExists { what, .. } => Error::AlreadyExists {
                what,
                hint: format!(
                    "; choose another name, or run `kubectl turnpike rotate {name} -n {namespace}` for a new token"
                ),
            },
            e => e,
        })?;
    let uid = created.uid();
    let deadline = Deadline::after(args.timeout);
    writeln!(
        out.err,
        "{what} created; waiting up to {} for the operator to issue it",
        deadline.timeout_text()
    )?;

    let key = loop {
        let key = match keys.get(name).await {
            Ok(key) if key.uid() == uid => key,
            Ok(_) | Err(Error::NotFound { .. }) => {
                return Err(Error::State(format!(
                    "{what} was deleted while waiting for it to be issued"
                )));
            }
            Err(e) => return Err(e),
        };
        if let Some((reason, message)) = refusal(&key) {
            return Err(Error::NotIssued {
                what,
                reason: reason.to_owned(),
                message: clean(message),
                cleanup: withdraw(&keys, name, uid.as_deref()).await,
            });
        }
        match phase(&key) {
            Some(KeyPhase::Active) if key_id(&key).is_some() => break key,
            Some(p @ (KeyPhase::Expired | KeyPhase::Revoked)) => {
                return Err(Error::State(format!(
                    "{what} became {p:?} before its token was collected{}",
                    withdraw(&keys, name, uid.as_deref()).await
                )));
            }
            _ => {}
        }
        if !deadline.tick().await {
            return Err(Error::Timeout {
                what: format!("{what} to become Active"),
                waited: deadline.timeout_text(),
                last: state_line(&key),
                hint: format!(
                    "{OPERATOR_HINT}{}",
                    withdraw(&keys, name, uid.as_deref()).await
                ),
            });
        }
    };

    let key_id = key_id(&key).unwrap_or_default();
    let secret = format!("Secret {namespace}/{}", token_secret_name(name));
    let Some(delivered) = keys.token(name).await? else {
        return Err(Error::State(format!(
            "{what} is Active but {secret} is missing: someone else collected the token; run `kubectl turnpike rotate {name} -n {namespace}` for a new one"
        )));
    };
    if delivered.token.id() != key_id {
        return Err(Error::State(format!(
            "{secret} holds a token for key id {}, but {what} has key id {key_id}; run `kubectl turnpike rotate {name} -n {namespace}` for a new token",
            delivered.token.id()
        )));
    }
    writeln!(out.out, "{what} issued: key id {key_id}, phase Active")?;
    print_token(out.out, &delivered.token)?;
    finish_delivery(&keys, &delivered, args.keep_secret, out).await
}

/// Deletes the ApiKey `issue` created (and only that object) after a failure, and
/// says what happened, for the end of the error message.
async fn withdraw(keys: &ApiKeys, name: &str, uid: Option<&str>) -> String {
    let ns = keys.namespace();
    match keys.delete(name, uid).await {
        Ok(()) => "; the ApiKey was deleted again, so nothing is left half-issued".to_owned(),
        Err(e) => format!(
            "; deleting the ApiKey failed too ({e}): delete it with `kubectl delete apikey {name} -n {ns}`"
        ),
    }
}
