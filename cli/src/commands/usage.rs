//! `kubectl turnpike usage NAME`: an ApiKey's live usage as each sidecar sees it (with
//! the `local` counters backend, every replica counts on its own): bucket level, quota
//! used today, lockout. Asks each sidecar's `GET /internal/api-keys/{id}` through the
//! API server's pod proxy with the namespace's admin token (Secret `turnpike.admin`),
//! or one sidecar URL with `--sidecar-url`. A sidecar that cannot answer is reported
//! in its row; the others still are, and the command then exits 1.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use kube::Client;
use serde_json::{Value, json};

use super::{key_id, phase_text};
use crate::apikeys::ApiKeys;
use crate::cluster::{self, ClusterArgs};
use crate::error::Error;
use crate::machine;
pub use crate::machine::Format;
use crate::output::{NONE, Out, table};
use crate::sidecars::{self, AdminToken, PodError, SidecarPod, Via};
use crate::validate;

/// Arguments of `usage`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("key").required(true).args(["name", "key_id"]))]
pub struct UsageArgs {
    /// ApiKey name.
    #[arg(value_parser = validate::resource_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask only this pod's sidecar.
    #[arg(long, value_name = "POD", conflicts_with = "sidecar_url")]
    pub pod: Option<String>,
    /// Ask one sidecar's admin server at this URL instead of the cluster's pods
    /// (`kubectl port-forward`, local mode): e.g. http://127.0.0.1:9901. The admin
    /// token then comes from --admin-token-file or TURNPIKE_ADMIN_TOKEN.
    #[arg(long, value_name = "URL")]
    pub sidecar_url: Option<String>,
    /// File holding the admin token for --sidecar-url.
    #[arg(long, value_name = "FILE", requires = "sidecar_url")]
    pub admin_token_file: Option<PathBuf>,
    /// The key id to ask for, instead of reading ApiKey NAME (no cluster needed with
    /// --sidecar-url).
    #[arg(long, value_name = "ID", value_parser = key_id_arg)]
    pub key_id: Option<String>,
    /// Output format: a table, or JSON/YAML for scripts with each sidecar's answer
    /// (masked: never a hash or token) or its error.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// How long each sidecar has to answer (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = validate::timeout)]
    pub timeout: Duration,
}

fn key_id_arg(s: &str) -> Result<String, String> {
    turnpike_api::token::KeyId::parse(s)
        .map(|id| id.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// One sidecar's report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Pod name, or the URL with `--sidecar-url`.
    pub source: String,
    /// The target the sidecar enforces, if known.
    pub target: Option<String>,
    /// The sidecar's answer, or why there is none.
    pub answer: Result<Value, PodError>,
}

/// What `usage` found.
#[derive(Debug, Clone)]
pub struct Usage {
    /// Namespace (None with `--sidecar-url --key-id`).
    pub namespace: Option<String>,
    /// ApiKey name, if known.
    pub api_key: Option<String>,
    /// The key id asked for.
    pub key_id: String,
    /// One report per sidecar.
    pub reports: Vec<Report>,
}

/// `1m30s`-style text for milliseconds (rounded up to the second).
fn remaining(ms: u64) -> String {
    turnpike_api::duration::Duration::from_millis(ms.div_ceil(1000) * 1000).to_string()
}

fn bucket_cell(usage: &Value) -> String {
    match (
        usage["bucket"]["available"].as_u64(),
        usage["bucket"]["burst"].as_u64(),
    ) {
        (Some(a), Some(b)) => format!("{a}/{b}"),
        _ => NONE.to_owned(),
    }
}

fn quota_cell(usage: &Value) -> String {
    let used = usage["quotaUsedToday"].as_u64().unwrap_or(0);
    match usage["dailyQuota"].as_u64() {
        Some(q) => format!("{used}/{q}"),
        None => format!("{used}/unlimited"),
    }
}

fn lockout_cell(usage: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = usage["lockedForMs"].as_u64() {
        parts.push(format!("locked {}", remaining(ms)));
    }
    if let Some(ms) = usage["cooldownForMs"].as_u64() {
        parts.push(format!("cooldown {}", remaining(ms)));
    }
    if parts.is_empty() {
        "no".to_owned()
    } else {
        parts.join(", ")
    }
}

fn status_cell(answer: &Value) -> String {
    let mut notes = vec!["ok"];
    if answer["revoked"] == true {
        notes.push("key revoked");
    }
    if answer["expired"] == true {
        notes.push("key expired");
    }
    notes.join(", ")
}

/// The table: one row per sidecar. Failed sidecars show their reason in STATUS; the
/// full messages are in [`problems`].
pub fn render_table(usage: &Usage) -> String {
    let rows: Vec<Vec<String>> = usage
        .reports
        .iter()
        .map(|r| {
            let target = r.target.clone().unwrap_or_else(|| NONE.to_owned());
            match &r.answer {
                Ok(answer) => {
                    let u = &answer["usage"];
                    let target = answer["target"].as_str().map_or(target, str::to_owned);
                    vec![
                        r.source.clone(),
                        target,
                        bucket_cell(u),
                        quota_cell(u),
                        lockout_cell(u),
                        status_cell(answer),
                    ]
                }
                Err(e) => vec![
                    r.source.clone(),
                    target,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    e.reason().into(),
                ],
            }
        })
        .collect();
    table(
        &[
            "POD",
            "TARGET",
            "BUCKET",
            "QUOTA TODAY",
            "LOCKOUT",
            "STATUS",
        ],
        &rows,
    )
}

/// One line per failed sidecar: `pod orders-1: <what to do>`.
pub fn problems(usage: &Usage) -> Vec<String> {
    usage
        .reports
        .iter()
        .filter_map(|r| {
            r.answer
                .as_ref()
                .err()
                .map(|e| crate::output::clean(&format!("{}: {e}", r.source)))
        })
        .collect()
}

/// The document `-o json|yaml` prints: each sidecar's answer as it is (masked
/// metadata and usage), or `{"reason", "message"}`. [`machine::write`] masks any
/// token or hash in it once more before printing.
pub fn render_json(usage: &Usage) -> Value {
    json!({
        "namespace": usage.namespace,
        "apiKey": usage.api_key,
        "keyId": usage.key_id,
        "sidecars": usage.reports.iter().map(|r| match &r.answer {
            Ok(answer) => json!({"pod": r.source, "target": r.target, "usage": answer, "error": null}),
            Err(e) => json!({
                "pod": r.source,
                "target": r.target,
                "usage": null,
                "error": {"reason": e.reason(), "message": e.to_string()},
            }),
        }).collect::<Vec<_>>(),
    })
}

/// Prints `usage` and fails when a running sidecar could not answer, or when none
/// runs. Pods that are not running (starting, terminating) are shown, not failures.
///
/// # Errors
/// Output errors; [`Error::State`] as above.
pub fn print(usage: &Usage, format: Format, out: &mut Out<'_>) -> Result<(), Error> {
    match format {
        Format::Table => out.out.write_all(render_table(usage).as_bytes())?,
        Format::Json | Format::Yaml => machine::write(&render_json(usage), format, out.out)?,
    }
    for p in problems(usage) {
        writeln!(out.err, "{p}")?;
    }
    let not_running = usage
        .reports
        .iter()
        .filter(|r| matches!(r.answer, Err(PodError::NotRunning(_))))
        .count();
    let failed = usage.reports.iter().filter(|r| r.answer.is_err()).count() - not_running;
    if not_running == usage.reports.len() {
        return Err(Error::State(
            "no sidecar is running: nothing counts this key's usage right now".to_owned(),
        ));
    }
    if failed > 0 {
        return Err(Error::State(format!(
            "{failed} of {} sidecar(s) could not report",
            usage.reports.len() - not_running
        )));
    }
    Ok(())
}

/// Reads ApiKey `name`: its key id and targets.
async fn key_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(String, Vec<String>), Error> {
    let key = ApiKeys::new(client, namespace).get(name).await?;
    let id = key_id(&key).ok_or_else(|| {
        Error::State(format!(
            "ApiKey {namespace}/{name} has no key id yet (phase {}): the operator has not issued it; see `kubectl turnpike describe {name} -n {namespace}`",
            phase_text(&key)
        ))
    })?;
    Ok((id.to_owned(), key.spec.targets.clone()))
}

/// Asks every sidecar serving the key, one after the other (each within `timeout`).
///
/// # Errors
/// API errors before any sidecar is asked (ApiKey, Secret, pods), and
/// [`Error::State`] when no pod has a sidecar serving the key.
pub async fn collect_from_cluster(
    client: &Client,
    namespace: &str,
    args: &UsageArgs,
) -> Result<Usage, Error> {
    let (key_id, targets) = match (&args.key_id, &args.name) {
        (Some(id), _) => (id.clone(), Vec::new()),
        (None, Some(name)) => key_of(client, namespace, name).await?,
        (None, None) => return Err(Error::State("name an ApiKey or give --key-id".into())),
    };
    let token = sidecars::admin_token_from_secret(client, namespace).await?;
    let pods = sidecars::find(client, namespace, &targets, args.pod.as_deref()).await?;
    if pods.is_empty() {
        let serving = if targets.is_empty() {
            "any target".to_owned()
        } else {
            format!("target(s) {}", targets.join(", "))
        };
        return Err(Error::State(format!(
            "no pods with a Turnpike sidecar serve {serving} in namespace {namespace}: usage is counted by the sidecars, so there is nothing to show yet (pods get a sidecar when they are created with the annotation turnpike.dev/inject=\"true\" or in a namespace labelled turnpike.dev/inject=enabled)"
        )));
    }
    let mut reports = Vec::with_capacity(pods.len());
    for pod in &pods {
        reports.push(Report {
            source: pod.name.clone(),
            target: pod.target.clone(),
            answer: ask_pod(client, namespace, pod, &key_id, &token, args.timeout).await,
        });
    }
    Ok(Usage {
        namespace: Some(namespace.to_owned()),
        api_key: args.name.clone(),
        key_id,
        reports,
    })
}

async fn ask_pod(
    client: &Client,
    namespace: &str,
    pod: &SidecarPod,
    key_id: &str,
    token: &AdminToken,
    timeout: Duration,
) -> Result<Value, PodError> {
    if pod.phase != "Running" || pod.terminating {
        let state = if pod.terminating {
            "terminating".to_owned()
        } else {
            pod.phase.clone()
        };
        return Err(PodError::NotRunning(state));
    }
    let path = sidecars::proxy_path(namespace, pod, key_id);
    sidecars::get_usage(client, Via::PodProxy, namespace, &path, token, timeout).await
}

/// Runs `usage`: connects to the cluster unless `--sidecar-url` and `--key-id` make it
/// unnecessary. `env_token` is the value of `TURNPIKE_ADMIN_TOKEN`.
///
/// # Errors
/// See [`collect_from_cluster`] and [`print`].
pub async fn run(
    args: &UsageArgs,
    env_token: Option<String>,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let usage = match &args.sidecar_url {
        Some(url) => {
            let token = sidecars::admin_token_from(args.admin_token_file.as_deref(), env_token)?;
            let sidecar = sidecars::direct_client(url, args.timeout)?;
            let (namespace, key_id) = match (&args.key_id, &args.name) {
                (Some(id), _) => (None, id.clone()),
                (None, Some(name)) => {
                    let (client, ns) = cluster::connect(&args.cluster).await?;
                    (Some(ns.clone()), key_of(&client, &ns, name).await?.0)
                }
                (None, None) => return Err(Error::State("name an ApiKey or give --key-id".into())),
            };
            let path = format!("/internal/api-keys/{key_id}");
            let answer = sidecars::get_usage(
                &sidecar,
                Via::Direct,
                namespace.as_deref().unwrap_or_default(),
                &path,
                &token,
                args.timeout,
            )
            .await;
            Usage {
                namespace,
                api_key: args.name.clone(),
                key_id,
                reports: vec![Report {
                    source: url.clone(),
                    target: None,
                    answer,
                }],
            }
        }
        None => {
            let (client, ns) = cluster::connect(&args.cluster).await?;
            collect_from_cluster(&client, &ns, args).await?
        }
    };
    print(&usage, args.output, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(usage: Value) -> Value {
        json!({
            "id": "7k2m9q4xw3ab", "name": "billing", "owner": "team-billing@example.com",
            "namespace": "shop", "target": "orders", "scopes": ["orders:read"],
            "expiresAt": null, "expired": false, "revoked": false, "secrets": 1,
            "usage": usage,
        })
    }

    fn sample() -> Usage {
        Usage {
            namespace: Some("shop".into()),
            api_key: Some("billing".into()),
            key_id: "7k2m9q4xw3ab".into(),
            reports: vec![
                Report {
                    source: "orders-7d9f-abcde".into(),
                    target: Some("orders".into()),
                    answer: Ok(answer(json!({
                        "quotaUsedToday": 42, "dailyQuota": 50000,
                        "bucket": {"available": 87, "burst": 100},
                        "lockedOut": false, "lockedForMs": null,
                        "coolingDown": false, "cooldownForMs": null,
                    }))),
                },
                Report {
                    source: "orders-7d9f-fghij".into(),
                    target: Some("orders".into()),
                    answer: Ok({
                        let mut a = answer(json!({
                            "quotaUsedToday": 3, "dailyQuota": null, "bucket": null,
                            "lockedOut": true, "lockedForMs": 899_001,
                            "coolingDown": true, "cooldownForMs": 60_000,
                        }));
                        a["revoked"] = json!(true);
                        a
                    }),
                },
                Report {
                    source: "orders-7d9f-zzzzz".into(),
                    target: Some("orders".into()),
                    answer: Err(PodError::TokenMismatch),
                },
            ],
        }
    }

    #[test]
    fn table_one_row_per_sidecar() {
        let expected = [
            "POD                 TARGET   BUCKET   QUOTA TODAY   LOCKOUT                   STATUS",
            "orders-7d9f-abcde   orders   87/100   42/50000      no                        ok",
            "orders-7d9f-fghij   orders   <none>   3/unlimited   locked 15m, cooldown 1m   ok, key revoked",
            "orders-7d9f-zzzzz   orders   -        -             -                         TokenMismatch",
        ];
        assert_eq!(render_table(&sample()), expected.join("\n") + "\n");
        let p = problems(&sample());
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("orders-7d9f-zzzzz: the sidecar refused the admin token (401)"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn json_keeps_answers_and_names_errors() {
        let v = render_json(&sample());
        assert_eq!(v["keyId"], "7k2m9q4xw3ab");
        assert_eq!(v["apiKey"], "billing");
        assert_eq!(v["sidecars"][0]["usage"]["usage"]["quotaUsedToday"], 42);
        assert!(v["sidecars"][0]["error"].is_null());
        assert_eq!(v["sidecars"][2]["error"]["reason"], "TokenMismatch");
        assert!(v["sidecars"][2]["usage"].is_null());
    }

    #[test]
    fn a_failed_sidecar_fails_the_command_after_printing_everything() {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut out = Out {
            out: &mut o,
            err: &mut e,
        };
        let err = print(&sample(), Format::Table, &mut out).unwrap_err();
        assert_eq!(err.to_string(), "1 of 3 sidecar(s) could not report");
        let text = String::from_utf8(o).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(String::from_utf8(e).unwrap().contains("orders-7d9f-zzzzz"));

        let mut ok = sample();
        ok.reports.pop();
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut out = Out {
            out: &mut o,
            err: &mut e,
        };
        print(&ok, Format::Json, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&o).unwrap();
        assert_eq!(v["sidecars"].as_array().unwrap().len(), 2);
        assert!(e.is_empty());
    }

    #[test]
    fn yaml_says_what_json_says_and_masks_what_a_sidecar_should_not_send() {
        let token = turnpike_api::token::Token::mint().unwrap();
        let mut usage = sample();
        usage.reports.pop();
        // A sidecar is not supposed to answer a hash or a token; if one ever did, the
        // plugin still would not print it.
        if let Ok(answer) = &mut usage.reports[0].answer {
            answer["owner"] = json!(token.expose_token());
            answer["hash"] = json!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$ZGlnZXN0ZGlnZXN0");
        }
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let mut out = Out {
            out: &mut o,
            err: &mut e,
        };
        print(&usage, Format::Yaml, &mut out).unwrap();
        let text = String::from_utf8(o).unwrap();
        for secret in [
            token.expose_token(),
            "$argon2id$",
            "c2FsdHNhbHQ",
            "ZGlnZXN0",
        ] {
            assert!(!text.contains(secret), "leaks {secret}: {text}");
        }
        let v: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["keyId"], "7k2m9q4xw3ab");
        assert_eq!(v["sidecars"][0]["pod"], "orders-7d9f-abcde");
        assert_eq!(v["sidecars"][0]["usage"]["owner"], "tpk_***");
        assert_eq!(v["sidecars"][0]["usage"]["hash"], "$argon2***");
        assert_eq!(v["sidecars"][1]["usage"]["usage"]["lockedForMs"], 899_001);
        assert_eq!(v, machine::redact(render_json(&usage)));
    }

    #[test]
    fn remaining_time_rounds_up_to_the_second() {
        assert_eq!(remaining(899_001), "15m");
        assert_eq!(remaining(1), "1s");
        assert_eq!(remaining(61_000), "1m1s");
    }
}
