//! `kubectl turnpike describe NAME`: an ApiKey's spec (never its hash), status,
//! conditions and the Events regarding it; as text, or JSON/YAML for scripts.

use std::fmt::Write as _;

use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{Client, ResourceExt};
use serde::Serialize;
use turnpike_api::types::ApiKey;

use super::{key_id, phase_text};
use crate::apikeys::{ApiKeys, ROTATE_ANNOTATION, event_time};
use crate::cluster::ClusterArgs;
use crate::error::Error;
use crate::machine::{self, Format};
use crate::output::{NONE, Out, age, clean, table};
use crate::validate;

/// At most this many Events are shown, the most recent ones.
pub const MAX_EVENTS: usize = 20;

/// Arguments of `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// ApiKey name.
    #[arg(value_parser = validate::resource_name)]
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format: labelled fields, or JSON/YAML for scripts (never a hash or token).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// What `describe -o json|yaml` prints. Absent values are `null`; times are RFC 3339.
/// Unlike the text, it carries every Event found, oldest first.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeView {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Public key id, once issued.
    pub key_id: Option<String>,
    /// `Pending`, `Active`, `Expired` or `Revoked`.
    pub phase: &'static str,
    /// `offline` (`spec.keyId` + `spec.hash` from `kubectl turnpike key new`) or
    /// `generated` (by the operator).
    pub key_source: &'static str,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Targets; empty means every target of the namespace.
    pub targets: Vec<String>,
    /// Owner.
    pub owner: Option<String>,
    /// Expiry (RFC 3339) as written in the spec; `null`: never.
    pub expires_at: Option<String>,
    /// `spec.revoked`.
    pub revoked: bool,
    /// Requests per UTC day; `null`: the RateLimitPolicy's default.
    pub daily_quota: Option<u64>,
    /// The key's own bucket; `null`: the RateLimitPolicy's `perKey`.
    pub rate_limit: Option<RateLimitView>,
    /// `spec.rotation.gracePeriod`; `null`: the default (24h).
    pub rotation_grace_period: Option<String>,
    /// When the current secret was issued.
    pub issued_at: Option<Timestamp>,
    /// When the key was last rotated.
    pub rotated_at: Option<Timestamp>,
    /// Until when the previous secret still works.
    pub previous_secret_valid_until: Option<Timestamp>,
    /// The last value of annotation `turnpike.dev/rotate`.
    pub last_rotation_request: Option<String>,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<Timestamp>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The generation the operator's status describes.
    pub observed_generation: Option<i64>,
    /// Status conditions.
    pub conditions: Vec<ConditionView>,
    /// Events regarding the key, oldest first (empty when they could not be listed).
    pub events: Vec<EventView>,
    /// Why the Events could not be listed, if so.
    pub events_error: Option<String>,
}

/// A token bucket in [`DescribeView`].
#[derive(Debug, Serialize)]
pub struct RateLimitView {
    /// Tokens added every `per`.
    pub rate: u32,
    /// Refill period, e.g. `1s`.
    pub per: String,
    /// Capacity.
    pub burst: u32,
}

/// A condition in [`DescribeView`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// `Ready`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// What it means.
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: Timestamp,
    /// The generation the condition describes.
    pub observed_generation: Option<i64>,
}

/// An Event in [`DescribeView`].
#[derive(Debug, Serialize)]
pub struct EventView {
    /// When it last happened.
    pub time: Option<Timestamp>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Machine-readable reason.
    pub reason: Option<String>,
    /// The reporting controller.
    pub from: Option<String>,
    /// What happened.
    pub note: Option<String>,
}

/// Who reported an Event: its reporting controller, else the deprecated source.
fn reporter(e: &Event) -> Option<String> {
    e.reporting_controller.clone().or_else(|| {
        e.deprecated_source
            .as_ref()
            .and_then(|s| s.component.clone())
    })
}

/// The document `describe -o json|yaml` prints.
pub fn view(key: &ApiKey, events: Result<&[Event], &Error>) -> DescribeView {
    let spec = &key.spec;
    let status = key.status.clone().unwrap_or_default();
    let (events, events_error) = match events {
        Ok(events) => (
            events
                .iter()
                .map(|e| EventView {
                    time: event_time(e),
                    type_: e.type_.clone(),
                    reason: e.reason.clone(),
                    from: reporter(e),
                    note: e.note.clone(),
                })
                .collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    DescribeView {
        name: key.name_any(),
        namespace: key.namespace(),
        key_id: key_id(key).map(str::to_owned),
        phase: phase_text(key),
        key_source: if spec.key_id.is_some() || spec.hash.is_some() {
            "offline"
        } else {
            "generated"
        },
        scopes: spec.scopes.clone(),
        targets: spec.targets.clone(),
        owner: spec.owner.clone(),
        expires_at: spec.expires_at.clone(),
        revoked: spec.revoked,
        daily_quota: spec.daily_quota,
        rate_limit: spec.rate_limit.map(|b| RateLimitView {
            rate: b.rate,
            per: b.per.to_string(),
            burst: b.burst,
        }),
        rotation_grace_period: spec
            .rotation
            .as_ref()
            .and_then(|r| r.grace_period)
            .map(|d| d.to_string()),
        issued_at: status.issued_at.map(|t| t.0),
        rotated_at: status.rotated_at.map(|t| t.0),
        previous_secret_valid_until: status.previous_secret_valid_until.map(|t| t.0),
        last_rotation_request: key.annotations().get(ROTATE_ANNOTATION).cloned(),
        created_at: key.metadata.creation_timestamp.as_ref().map(|t| t.0),
        generation: key.metadata.generation,
        observed_generation: status.observed_generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionView {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.0,
                observed_generation: c.observed_generation,
            })
            .collect(),
        events,
        events_error,
    }
}

fn when(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| NONE.to_owned(), |t| format!("{t} ({} ago)", age(t, now)))
}

/// The text `describe` prints. `events` is what listing Events gave: a failure there
/// (RBAC, say) is shown in place of the Events, the rest still prints.
pub fn render(key: &ApiKey, events: Result<&[Event], &Error>, now: Timestamp) -> String {
    let spec = &key.spec;
    let status = key.status.clone().unwrap_or_default();
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", key.name_any()),
        ("Namespace", key.namespace().unwrap_or_default()),
        ("Key ID", key_id(key).unwrap_or(NONE).to_owned()),
        ("Phase", phase_text(key).to_owned()),
        (
            "Key source",
            if spec.key_id.is_some() || spec.hash.is_some() {
                "spec.keyId + spec.hash (kubectl turnpike key new)".to_owned()
            } else {
                "generated by the operator".to_owned()
            },
        ),
        ("Scopes", spec.scopes.join(", ")),
        (
            "Targets",
            if spec.targets.is_empty() {
                "<every target in the namespace>".to_owned()
            } else {
                spec.targets.join(", ")
            },
        ),
        (
            "Owner",
            spec.owner.clone().unwrap_or_else(|| NONE.to_owned()),
        ),
        (
            "Expires",
            spec.expires_at
                .clone()
                .unwrap_or_else(|| "<never>".to_owned()),
        ),
        ("Revoked", spec.revoked.to_string()),
        (
            "Daily quota",
            spec.daily_quota
                .map_or_else(|| "<policy default>".to_owned(), |q| q.to_string()),
        ),
        (
            "Rate limit",
            spec.rate_limit.map_or_else(
                || "<policy default>".to_owned(),
                |b| format!("{} per {}, burst {}", b.rate, b.per, b.burst),
            ),
        ),
        (
            "Rotation grace",
            spec.rotation
                .as_ref()
                .and_then(|r| r.grace_period)
                .map_or_else(|| "24h (default)".to_owned(), |d| d.to_string()),
        ),
        ("Issued", when(status.issued_at.map(|t| t.0), now)),
        ("Rotated", when(status.rotated_at.map(|t| t.0), now)),
    ];
    if let Some(until) = status.previous_secret_valid_until {
        fields.push(("Previous token valid until", until.0.to_string()));
    }
    if let Some(request) = key.annotations().get(ROTATE_ANNOTATION) {
        fields.push(("Last rotation request", request.clone()));
    }
    fields.push((
        "Created",
        when(key.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
    ));
    if let (Some(seen), Some(generation)) = (status.observed_generation, key.metadata.generation)
        && seen < generation
    {
        fields.push((
            "Observed generation",
            format!(
                "{seen} of {generation} (the operator has not processed the latest change yet)"
            ),
        ));
    }

    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 2;
    let mut text = String::new();
    for (label, value) in &fields {
        let label = format!("{label}:");
        let _ = writeln!(text, "{label:<width$}{}", clean(value));
    }

    text.push_str("Conditions:\n");
    if status.conditions.is_empty() {
        text.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(c.last_transition_time.0, now),
                    c.message.clone(),
                ]
            })
            .collect();
        indent(
            &mut text,
            &table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows),
        );
    }

    text.push_str("Events:\n");
    match events {
        Err(e) => {
            let _ = writeln!(text, "  <cannot list Events: {}>", clean(&e.to_string()));
        }
        Ok([]) => text.push_str("  <none>\n"),
        Ok(events) => {
            let skipped = events.len().saturating_sub(MAX_EVENTS);
            if skipped > 0 {
                let _ = writeln!(text, "  ({skipped} older Events not shown)");
            }
            let rows: Vec<Vec<String>> = events[skipped..]
                .iter()
                .map(|e| {
                    vec![
                        event_time(e).map_or_else(|| NONE.to_owned(), |t| age(t, now)),
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        reporter(e).unwrap_or_default(),
                        e.note.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            indent(
                &mut text,
                &table(&["LAST SEEN", "TYPE", "REASON", "FROM", "NOTE"], &rows),
            );
        }
    }
    text
}

fn indent(text: &mut String, block: &str) {
    for line in block.lines() {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
}

/// Runs `describe`.
///
/// # Errors
/// API errors reading the ApiKey (a failure to list Events is shown, not returned).
pub async fn run(
    client: &Client,
    namespace: &str,
    name: &str,
    format: Format,
    now: Timestamp,
    out: &mut Out<'_>,
) -> Result<(), Error> {
    let keys = ApiKeys::new(client, namespace);
    let key = keys.get(name).await?;
    let events = keys.events(&key).await;
    if format != Format::Table {
        return machine::write(&view(&key, events.as_deref()), format, out.out);
    }
    let text = render(&key, events.as_deref(), now);
    out.out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

    fn key() -> ApiKey {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "turnpike.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {
                "name": "billing", "namespace": "shop", "uid": "u1", "generation": 3,
                "creationTimestamp": "2026-11-23T09:00:00Z",
                "annotations": {"turnpike.dev/rotate": "r1"},
            },
            "spec": {
                "scopes": ["orders:read"], "targets": ["orders"],
                "owner": "evil\u{1b}[2J", "keyId": "7k2m9q4xw3ab", "hash": HASH,
                "rateLimit": {"rate": 50, "per": "1s", "burst": 100},
            },
            "status": {
                "keyId": "7k2m9q4xw3ab", "phase": "Active", "observedGeneration": 2,
                "issuedAt": "2026-11-23T09:00:05Z",
                "rotatedAt": "2026-11-23T11:00:00Z",
                "previousSecretValidUntil": "2026-11-24T11:00:00Z",
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Active",
                    "message": "accepted by targets: orders",
                    "lastTransitionTime": "2026-11-23T09:00:05Z",
                }],
            },
        }))
        .unwrap()
    }

    fn event(reason: &str, at: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("billing.{reason}"), "namespace": "shop"},
            "eventTime": at,
            "reason": reason, "type": "Normal", "note": format!("{reason} note"),
            "reportingController": "turnpike.dev/operator",
            "reportingInstance": "op-a",
            "action": "Reconcile",
            "regarding": {"kind": "ApiKey", "name": "billing", "apiVersion": "turnpike.dev/v1alpha1"},
        }))
        .unwrap()
    }

    #[test]
    fn shows_spec_status_conditions_and_events_but_no_hash() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let events = [
            event("KeyIssued", "2026-11-23T09:00:05.000000Z"),
            event("KeyRotated", "2026-11-23T11:00:00.000000Z"),
        ];
        let text = render(&key(), Ok(&events), now);
        assert!(!text.contains("argon2"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "terminal escape passed through: {text}"
        );
        let field = |label: &str, value: &str| format!("{:<28}{value}\n", format!("{label}:"));
        for expected in [
            field("Name", "billing"),
            field("Key ID", "7k2m9q4xw3ab"),
            field("Phase", "Active"),
            field(
                "Key source",
                "spec.keyId + spec.hash (kubectl turnpike key new)",
            ),
            field("Rate limit", "50 per 1s, burst 100"),
            field("Issued", "2026-11-23T09:00:05Z (179m ago)"),
            field("Rotated", "2026-11-23T11:00:00Z (60m ago)"),
            field("Previous token valid until", "2026-11-24T11:00:00Z"),
            field("Last rotation request", "r1"),
            field(
                "Observed generation",
                "2 of 3 (the operator has not processed the latest change yet)",
            ),
            field("Owner", "evil?[2J"),
            "  TYPE    STATUS   REASON   AGE    MESSAGE\n  Ready   True     Active   179m   accepted by targets: orders\n".to_owned(),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
        }
        let issued = text.find("KeyIssued").unwrap();
        let rotated = text.find("KeyRotated").unwrap();
        assert!(issued < rotated, "Events oldest first:\n{text}");
        assert!(text.contains("  LAST SEEN   TYPE     REASON"), "{text}");
    }

    #[test]
    fn json_and_yaml_have_the_fields_and_no_secret() {
        let token = turnpike_api::token::Token::mint().unwrap();
        let mut key = key();
        key.status.as_mut().unwrap().conditions[0].message =
            format!("token {} seen", token.expose_token());
        let mut leaky = event("KeyIssued", "2026-11-23T09:00:05.000000Z");
        leaky.note = Some(format!("hash {HASH}"));
        let events = [leaky, event("KeyRotated", "2026-11-23T11:00:00.000000Z")];
        for format in [Format::Json, Format::Yaml] {
            let text = machine::render(&view(&key, Ok(&events)), format).unwrap();
            for secret in [
                token.expose_token(),
                "$argon2id$",
                "c29tZXNhbHR",
                "aGFzaGhh",
            ] {
                assert!(!text.contains(secret), "{format:?} leaks {secret}: {text}");
            }
            assert!(!text.contains('\u{1b}'), "{text}");
            let v: serde_json::Value = match format {
                Format::Json => serde_json::from_str(&text).unwrap(),
                _ => serde_saphyr::from_str(&text).unwrap(),
            };
            assert_eq!(v["name"], "billing");
            assert_eq!(v["namespace"], "shop");
            assert_eq!(v["keyId"], "7k2m9q4xw3ab");
            assert_eq!(v["phase"], "Active");
            assert_eq!(v["keySource"], "offline");
            assert_eq!(v["scopes"], serde_json::json!(["orders:read"]));
            assert_eq!(v["targets"], serde_json::json!(["orders"]));
            assert_eq!(
                v["rateLimit"],
                serde_json::json!({"rate": 50, "per": "1s", "burst": 100})
            );
            assert_eq!(v["dailyQuota"], serde_json::Value::Null);
            assert_eq!(v["expiresAt"], serde_json::Value::Null);
            assert_eq!(v["issuedAt"], "2026-11-23T09:00:05Z");
            assert_eq!(v["previousSecretValidUntil"], "2026-11-24T11:00:00Z");
            assert_eq!(v["lastRotationRequest"], "r1");
            assert_eq!(v["generation"], 3);
            assert_eq!(v["observedGeneration"], 2);
            assert_eq!(v["conditions"][0]["type"], "Ready");
            assert_eq!(v["conditions"][0]["message"], "token tpk_*** seen");
            assert_eq!(v["events"][0]["reason"], "KeyIssued");
            assert_eq!(v["events"][0]["note"], "hash $argon2***");
            assert_eq!(v["events"][1]["from"], "turnpike.dev/operator");
            assert_eq!(v["eventsError"], serde_json::Value::Null);
            // No field of the spec that could hold a secret is carried at all.
            assert!(v.get("hash").is_none() && v.get("spec").is_none());
        }
        let err = Error::State("forbidden: no".into());
        let v = view(&key, Err(&err));
        assert_eq!(v.events_error.as_deref(), Some("forbidden: no"));
        assert!(v.events.is_empty());
    }

    #[test]
    fn event_failures_and_absences_are_shown_in_place() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let text = render(&key(), Ok(&[]), now);
        assert!(text.ends_with("Events:\n  <none>\n"), "{text}");
        let err = Error::State("forbidden: no".into());
        let text = render(&key(), Err(&err), now);
        assert!(
            text.ends_with("Events:\n  <cannot list Events: forbidden: no>\n"),
            "{text}"
        );
    }

    #[test]
    fn only_the_most_recent_events() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let events: Vec<Event> = (0..25)
            .map(|i| {
                event(
                    &format!("R{i:02}"),
                    &format!("2026-11-23T11:{i:02}:00.000000Z"),
                )
            })
            .collect();
        let text = render(&key(), Ok(&events), now);
        assert!(text.contains("(5 older Events not shown)"), "{text}");
        assert!(!text.contains("R04 ") && text.contains("R05") && text.contains("R24"));
    }
}
