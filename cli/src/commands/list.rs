//! `kubectl turnpike list [-n NS | -A]`: ApiKeys as a table.

use clap::Args;
use kube::{Client, ResourceExt};
use turnpike_api::types::ApiKey;

use super::{key_id, phase_text, refusal};
use crate::apikeys;
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::output::{NONE, Out, table};

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// List the ApiKeys of every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

/// The PHASE column: the phase, and the reason when the operator refuses the key.
fn phase_cell(key: &ApiKey) -> String {
    match refusal(key) {
        Some((reason, _)) => format!("{} ({reason})", phase_text(key)),
        None => phase_text(key).to_owned(),
    }
}

/// The table `list` prints; with a NAMESPACE column first for `-A`.
pub fn render(keys: &[ApiKey], with_namespace: bool) -> String {
    let mut headers = vec!["NAME", "KEY ID", "PHASE", "SCOPES", "EXPIRES", "OWNER"];
    if with_namespace {
        headers.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let mut row = vec![
                k.name_any(),
                key_id(k).unwrap_or(NONE).to_owned(),
                phase_cell(k),
                if k.spec.scopes.is_empty() {
                    NONE.to_owned()
                } else {
                    k.spec.scopes.join(",")
                },
                k.spec.expires_at.clone().unwrap_or_else(|| NONE.to_owned()),
                k.spec.owner.clone().unwrap_or_else(|| NONE.to_owned()),
            ];
            if with_namespace {
                row.insert(0, k.namespace().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// Runs `list` for one namespace, or for all of them when `namespace` is `None`.
///
/// # Errors
/// API errors.
pub async fn run(client: &Client, namespace: Option<&str>, out: &mut Out<'_>) -> Result<(), Error> {
    let keys = apikeys::list(client, namespace).await?;
    if keys.is_empty() {
        match namespace {
            Some(ns) => writeln!(out.err, "No ApiKeys found in namespace {ns}.")?,
            None => writeln!(out.err, "No ApiKeys found.")?,
        }
        return Ok(());
    }
    out.out
        .write_all(render(&keys, namespace.is_none()).as_bytes())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str, status: serde_json::Value, spec: serde_json::Value) -> ApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "turnpike.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn keys() -> Vec<ApiKey> {
        vec![
            key(
                "shop",
                "billing",
                serde_json::json!({"keyId": "7k2m9q4xw3ab", "phase": "Active"}),
                serde_json::json!({
                    "scopes": ["orders:read", "orders:write"],
                    "owner": "team-billing@example.com",
                    "expiresAt": "2027-06-30T00:00:00Z",
                }),
            ),
            key(
                "web",
                "ci",
                serde_json::json!({
                    "phase": "Pending",
                    "conditions": [{
                        "type": "Ready", "status": "False", "reason": "Conflicted",
                        "message": "key id already belongs to ApiKey billing, which is older",
                        "lastTransitionTime": "2026-11-23T10:00:00Z",
                    }],
                }),
                serde_json::json!({"scopes": ["read"]}),
            ),
        ]
    }

    #[test]
    fn one_namespace() {
        let expected = [
            "NAME      KEY ID         PHASE                  SCOPES                     EXPIRES                OWNER",
            "billing   7k2m9q4xw3ab   Active                 orders:read,orders:write   2027-06-30T00:00:00Z   team-billing@example.com",
            "ci        <none>         Pending (Conflicted)   read                       <none>                 <none>",
        ];
        assert_eq!(render(&keys(), false), expected.join("\n") + "\n");
    }

    #[test]
    fn all_namespaces_adds_a_column() {
        let text = render(&keys(), true);
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("NAMESPACE   NAME      KEY ID")
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("shop        billing   7k2m9q4xw3ab")
        );
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("web         ci        <none>")
        );
    }

    #[test]
    fn status_and_optional_fields_may_be_missing() {
        let bare = key(
            "shop",
            "new",
            serde_json::Value::Null,
            serde_json::json!({}),
        );
        assert_eq!(
            render(&[bare], false),
            "NAME   KEY ID   PHASE     SCOPES   EXPIRES   OWNER\n\
             new    <none>   Pending   <none>   <none>    <none>\n"
        );
    }
}
