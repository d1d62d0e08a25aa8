//! `kubectl turnpike list [-n NS | -A] [-o table|json|yaml]`: ApiKeys as a table, or
//! as a document for scripts.

use clap::Args;
use kube::{Client, ResourceExt};
use serde::Serialize;
use turnpike_api::types::ApiKey;

use super::{key_id, phase_text, refusal};
use crate::apikeys;
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::machine::{self, Format};
use crate::output::{NONE, Out, table};

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// List the ApiKeys of every namespace.
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Output format: a table, or JSON/YAML for scripts (never a hash or token).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// What `list -o json|yaml` prints: `{"items": [...]}`, one entry per ApiKey, sorted
/// by namespace and name. Absent values are `null`, so every entry has every field.
#[derive(Debug, Serialize)]
pub struct ListView {
    /// The ApiKeys.
    pub items: Vec<ListItem>,
}

/// One ApiKey in [`ListView`]: the table's columns, as data.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListItem {
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Public key id, once issued.
    pub key_id: Option<String>,
    /// `Pending`, `Active`, `Expired` or `Revoked`.
    pub phase: &'static str,
    /// `Invalid` or `Conflicted` when the operator refuses the key.
    pub refusal: Option<String>,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Targets; empty means every target of the namespace.
    pub targets: Vec<String>,
    /// Expiry (RFC 3339), as written in the spec.
    pub expires_at: Option<String>,
    /// Owner, as written in the spec.
    pub owner: Option<String>,
    /// `spec.revoked`.
    pub revoked: bool,
}

/// The document `list -o json|yaml` prints.
pub fn view(keys: &[ApiKey]) -> ListView {
    ListView {
        items: keys
            .iter()
            .map(|k| ListItem {
                namespace: k.namespace(),
                name: k.name_any(),
                key_id: key_id(k).map(str::to_owned),
                phase: phase_text(k),
                refusal: refusal(k).map(|(reason, _)| reason.to_owned()),
                scopes: k.spec.scopes.clone(),
                targets: k.spec.targets.clone(),
                expires_at: k.spec.expires_at.clone(),
                owner: k.spec.owner.clone(),
                revoked: k.spec.revoked,
            })
            .collect(),
    }
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

/// Runs `list` for one namespace, or for all of them when `namespace` is `None`. With
/// no ApiKeys, the table format says so on stderr; JSON and YAML print an empty
/// `items` list.
///
/// # Errors
/// API errors.
pub async fn run(
    client: &Client,
    namespace: Option<&str>,
    format: Format,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let keys = apikeys::list(client, namespace).await?;
    if format != Format::Table {
        return machine::write(&view(&keys), format, out.out);
    }
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

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

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
    fn json_and_yaml_carry_the_columns_as_data() {
        let mut keys = keys();
        keys[1].spec.hash = Some(HASH.to_owned());
        keys[1].spec.key_id = Some("7k2m9q4xw3ab".to_owned());
        let token = turnpike_api::token::Token::mint().unwrap();
        keys[0].spec.owner = Some(format!("pasted {}", token.expose_token()));
        for format in [Format::Json, Format::Yaml] {
            let text = machine::render(&view(&keys), format).unwrap();
            assert!(
                !text.contains("argon2") && !text.contains("c29tZXNhbHR"),
                "{text}"
            );
            assert!(!text.contains(token.expose_token()), "{text}");
            let v: serde_json::Value = match format {
                Format::Json => serde_json::from_str(&text).unwrap(),
                _ => serde_saphyr::from_str(&text).unwrap(),
            };
            assert_eq!(
                v["items"][0],
                serde_json::json!({
                    "namespace": "shop", "name": "billing", "keyId": "7k2m9q4xw3ab",
                    "phase": "Active", "refusal": null,
                    "scopes": ["orders:read", "orders:write"], "targets": [],
                    "expiresAt": "2027-06-30T00:00:00Z", "owner": "pasted tpk_***",
                    "revoked": false,
                }),
                "{format:?}"
            );
            assert_eq!(v["items"][1]["phase"], "Pending");
            assert_eq!(v["items"][1]["refusal"], "Conflicted");
            assert_eq!(v["items"][1]["keyId"], serde_json::Value::Null);
            assert_eq!(v["items"].as_array().unwrap().len(), 2);
        }
        let empty = machine::render(&view(&[]), Format::Json).unwrap();
        assert_eq!(empty, "{\n  \"items\": []\n}\n");
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
