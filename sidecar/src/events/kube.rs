//! Writes [`Write`]s as events.k8s.io/v1 Events.
//!
//! The Event's name is derived from (pod, regarding object, reason, start of the
//! series), so the writer needs no answer from a create to patch later: a create that
//! finds the Event already there (a retry) patches it, a patch that finds it gone
//! (Event TTL) creates it with the full count. Every call runs under a timeout.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::aggregate::{Op, Regarding, Write};

/// `reportingController` of every sidecar Event.
pub const REPORTING_CONTROLLER: &str = "turnpike.dev/sidecar";

/// The pod the sidecar runs in (`reportingInstance`, and `regarding` when no key is
/// known).
#[derive(Clone, Debug)]
pub struct PodRef {
    /// Pod name.
    pub name: String,
    /// Pod UID, when known (downward API).
    pub uid: Option<String>,
}

/// Why a write failed. Never holds a token or a hash (Events hold none).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused the request.
    #[error("Event {name}: {source}")]
    Api {
        /// Event name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No answer within the timeout.
    #[error("Event {name}: no answer from the API server within {timeout:?}")]
    Timeout {
        /// Event name.
        name: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The Event could not be built (not expected).
    #[error("Event {name}: {message}")]
    Build {
        /// Event name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// Writes Events with a kube client.
#[derive(Clone)]
pub struct KubeWriter {
    client: Client,
    pod: PodRef,
    timeout: Duration,
}

impl std::fmt::Debug for KubeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeWriter")
            .field("pod", &self.pod)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// RFC 3339 with microseconds, as `MicroTime` is written.
fn micro_time(unix_secs: i64) -> String {
    let ts = jiff::Timestamp::from_second(unix_secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()
}

/// The Event's name: the regarding object's name (shortened) and a hash of what makes
/// the series unique.
pub fn event_name(pod: &PodRef, w: &Write) -> String {
    let (kind, object) = match &w.regarding {
        Regarding::ApiKey { name, .. } => ("ApiKey", name.as_str()),
        Regarding::Pod => ("Pod", pod.name.as_str()),
    };
    let mut h = Sha256::new();
    for part in [
        pod.name.as_str(),
        kind,
        object,
        w.reason.as_str(),
        &w.first_unix.to_string(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = data_encoding::HEXLOWER.encode(&h.finalize()[..8]);
    let prefix: String = object.chars().take(200).collect();
    format!("{prefix}.{digest}")
}

impl KubeWriter {
    /// A writer for the Events of `pod`.
    pub fn new(client: Client, pod: PodRef, timeout: Duration) -> Self {
        Self {
            client,
            pod,
            timeout,
        }
    }

    /// Writes `w`; returns what it did (`create` or `patch`).
    ///
    /// # Errors
    /// The API server's refusal, or no answer within the timeout.
    pub async fn write(&self, w: &Write) -> Result<&'static str, WriteError> {
        let name = event_name(&self.pod, w);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &w.namespace);
        match w.op {
            Op::Create => match self.create(&api, w, &name).await {
                Err(WriteError::Api { source, .. }) if is_status(&source, 409) => {
                    self.patch(&api, w, &name).await
                }
                r => r,
            },
            Op::Patch => match self.patch(&api, w, &name).await {
                Err(WriteError::Api { source, .. }) if is_status(&source, 404) => {
                    self.create(&api, w, &name).await
                }
                r => r,
            },
        }
    }

    async fn create(
        &self,
        api: &Api<Event>,
        w: &Write,
        name: &str,
    ) -> Result<&'static str, WriteError> {
        let event: Event = serde_json::from_value(event_body(&self.pod, w, name)).map_err(|e| {
            WriteError::Build {
                name: name.into(),
                message: e.to_string(),
            }
        })?;
        self.timed(name, api.create(&PostParams::default(), &event))
            .await
            .map(|_| "create")
    }

    async fn patch(
        &self,
        api: &Api<Event>,
        w: &Write,
        name: &str,
    ) -> Result<&'static str, WriteError> {
        let body = json!({ "series": series(w) });
        self.timed(
            name,
            api.patch(name, &PatchParams::default(), &Patch::Merge(&body)),
        )
        .await
        .map(|_| "patch")
    }

    async fn timed<T>(
        &self,
        name: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(WriteError::Api {
                name: name.into(),
                source,
            }),
            Err(_) => Err(WriteError::Timeout {
                name: name.into(),
                timeout: self.timeout,
            }),
        }
    }
}

/// The Event a write creates.
pub fn event_body(pod: &PodRef, w: &Write, name: &str) -> Value {
    let regarding = match &w.regarding {
        Regarding::ApiKey { name, uid } => {
            let mut r = json!({
                "apiVersion": "turnpike.dev/v1alpha1",
                "kind": "ApiKey",
                "namespace": w.namespace,
                "name": name,
            });
            if let (Some(uid), Some(o)) = (uid, r.as_object_mut()) {
                o.insert("uid".into(), json!(uid));
            }
            r
        }
        Regarding::Pod => {
            let mut r = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": w.namespace,
                "name": pod.name,
            });
            if let (Some(uid), Some(o)) = (&pod.uid, r.as_object_mut()) {
                o.insert("uid".into(), json!(uid));
            }
            r
        }
    };
    let mut e = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": name,
            "namespace": w.namespace,
            "labels": {"app.kubernetes.io/managed-by": "turnpike-sidecar"},
        },
        "eventTime": micro_time(w.first_unix),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": pod.name.chars().take(128).collect::<String>(),
        "action": w.reason.action(),
        "reason": w.reason.as_str(),
        "type": "Warning",
        "note": w.note,
        "regarding": regarding,
    });
    if w.count > 1
        && let Some(o) = e.as_object_mut()
    {
        o.insert("series".into(), series(w));
    }
    e
}

fn series(w: &Write) -> Value {
    // The API server wants a series count of at least 2.
    json!({"count": w.count.max(2), "lastObservedTime": micro_time(w.last_unix)})
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::aggregate::Reason;
    use super::*;

    fn write(count: u64) -> Write {
        Write {
            op: Op::Create,
            namespace: "shop".into(),
            regarding: Regarding::ApiKey {
                name: "billing".into(),
                uid: Some("1234".into()),
            },
            reason: Reason::RevokedKeyUsed,
            note: "revoked key used: key 7k2m9q4xw3ab".into(),
            count,
            first_unix: 1_800_000_000,
            last_unix: 1_800_000_060,
        }
    }

    fn pod() -> PodRef {
        PodRef {
            name: "orders-7d9f".into(),
            uid: None,
        }
    }

    #[test]
    fn names_are_stable_per_series_and_valid() {
        let a = event_name(&pod(), &write(1));
        assert_eq!(a, event_name(&pod(), &write(7)));
        assert!(a.starts_with("billing."));
        let mut later = write(1);
        later.first_unix += 1;
        assert_ne!(a, event_name(&pod(), &later));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        );
    }

    #[test]
    fn the_event_is_what_events_k8s_io_v1_wants() {
        // Parsing into the typed Event checks the shape; the fields checked below are
        // the contract of DESIGN.md.
        let w = write(3);
        let e =
            serde_json::to_value(serde_json::from_value::<Event>(event_for(&w)).unwrap()).unwrap();
        assert_eq!(e["reportingController"], "turnpike.dev/sidecar");
        assert_eq!(e["reportingInstance"], "orders-7d9f");
        assert_eq!(e["reason"], "RevokedKeyUsed");
        assert_eq!(e["regarding"]["kind"], "ApiKey");
        assert_eq!(e["regarding"]["uid"], "1234");
        assert_eq!(e["series"]["count"], 3);
        assert_eq!(
            e["series"]["lastObservedTime"],
            "2027-01-15T08:01:00.000000Z"
        );
        assert_eq!(e["eventTime"], "2027-01-15T08:00:00.000000Z");
        assert!(e.get("deprecatedCount").is_none());
        let first = event_for(&write(1));
        assert!(first.get("series").is_none());
    }

    fn event_for(w: &Write) -> Value {
        let pod = pod();
        let name = event_name(&pod, w);
        event_body(&pod, w, &name)
    }
}
