//! The MutatingWebhookConfiguration `turnpike-injector`: built as a pure function of the
//! settings and the CA bundle (snapshot-tested), applied by the leader with server-side
//! apply.
//!
//! # Which pods the API server sends, and the failure policy
//!
//! Label selectors cannot see annotations, but `matchConditions` (CEL, GA since
//! Kubernetes 1.30, below our minimum of 1.33) can. So the configuration has two
//! webhooks, each narrow enough for `failurePolicy: Fail`:
//!
//! - `namespaces.injector.turnpike.dev`: pods in namespaces labelled
//!   `turnpike.dev/inject=enabled`, except those annotated `turnpike.dev/inject: "false"`;
//! - `pods.injector.turnpike.dev`: pods in other namespaces that carry the annotation
//!   `turnpike.dev/inject` with any value but `"false"` (a typo such as `"True"` reaches
//!   the webhook and is refused with a message, instead of silently running unprotected).
//!
//! Both exclude `kube-system` and the operator's own namespace by the immutable
//! `kubernetes.io/metadata.name` label, so the operator can always start its own pods
//! and the cluster's system pods never wait on it.
//!
//! `Fail` by default (`--webhook-failure-policy`) because a pod that asked for
//! protection must never start without it: with `Ignore`, an operator outage would
//! silently create unprotected workloads. Pods that did not opt in never reach the
//! webhook, so an outage only delays the opted-in pods (their controllers retry), never
//! the rest of the cluster. The handler re-checks everything the selectors and
//! conditions say, and is the one that decides. `Ignore` exists for clusters that
//! prefer availability of opted-in workloads over their protection during an outage
//! (for example while adopting Turnpike); it applies to both webhooks.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use super::{
    WebhookError,
    inject::{INJECT_ANNOTATION, NAMESPACE_LABEL, NAMESPACE_LABEL_ENABLED},
    server::MUTATE_PODS_PATH,
};
use crate::{material::MANAGED_BY, reconcile::FIELD_MANAGER};

/// The configuration's name (RBAC limits the operator to it).
pub const CONFIGURATION_NAME: &str = "turnpike-injector";
/// The webhook for labelled namespaces.
pub const NAMESPACE_WEBHOOK: &str = "namespaces.injector.turnpike.dev";
/// The webhook for annotated pods elsewhere.
pub const POD_WEBHOOK: &str = "pods.injector.turnpike.dev";
/// How long the API server waits for an answer.
pub const TIMEOUT_SECONDS: i32 = 5;
/// The Service port the configuration names (the Service maps it to `--webhook-listen`).
pub const SERVICE_PORT: i32 = 443;
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// `--webhook-url`: scheme `https`, host and optional port, optionally a path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    base: String,
    host: String,
}

impl WebhookUrl {
    /// Parses and checks a base URL such as `https://127.0.0.1:8443`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("--webhook-url {text:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "--webhook-url {text:?} must use https (the API server calls webhooks only over TLS)"
            ));
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(format!("--webhook-url {text:?} has no host"));
        };
        if uri.query().is_some() || text.contains('#') || text.contains('@') {
            return Err(format!(
                "--webhook-url {text:?} must be scheme, host, port and at most a path prefix (no user, query or fragment)"
            ));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let prefix = uri.path().trim_end_matches('/');
        Ok(Self {
            base: format!("https://{authority}{prefix}"),
            host: host.to_owned(),
        })
    }

    /// The host, for the serving certificate's names.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The full URL of the pod mutation endpoint.
    pub fn mutate_pods(&self) -> String {
        format!("{}{MUTATE_PODS_PATH}", self.base)
    }
}

/// `failurePolicy` of both webhooks: what the API server does when it cannot get an
/// answer (module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Refuse the pod: an opted-in pod never starts without the sidecar (default).
    #[default]
    Fail,
    /// Admit the pod unchanged: it starts without the sidecar, unprotected.
    Ignore,
}

impl FailurePolicy {
    /// The value the API expects.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL (local control planes, development).
    Url(WebhookUrl),
    /// The Service `name` in `namespace`, port 443.
    Service {
        /// Namespace (the operator's).
        namespace: String,
        /// Service name.
        name: String,
    },
}

fn client_config(endpoint: &Endpoint, ca_bundle_pem: &str) -> Value {
    let ca = data_encoding::BASE64.encode(ca_bundle_pem.as_bytes());
    match endpoint {
        Endpoint::Url(u) => json!({"url": u.mutate_pods(), "caBundle": ca}),
        Endpoint::Service { namespace, name } => json!({
            "service": {"namespace": namespace, "name": name, "port": SERVICE_PORT, "path": MUTATE_PODS_PATH},
            "caBundle": ca,
        }),
    }
}

/// CEL: the pod does not opt out.
fn not_opted_out() -> String {
    format!(
        "!has(object.metadata.annotations) || !('{INJECT_ANNOTATION}' in object.metadata.annotations) || object.metadata.annotations['{INJECT_ANNOTATION}'] != 'false'"
    )
}

/// CEL: the pod carries the inject annotation with a value other than "false".
fn annotated() -> String {
    format!(
        "has(object.metadata.annotations) && '{INJECT_ANNOTATION}' in object.metadata.annotations && object.metadata.annotations['{INJECT_ANNOTATION}'] != 'false'"
    )
}

/// The configuration, as the JSON applied.
pub fn configuration(
    endpoint: &Endpoint,
    own_namespace: &str,
    ca_bundle_pem: &str,
    failure_policy: FailurePolicy,
) -> Value {
    let never = json!({
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": ["kube-system", own_namespace],
    });
    let webhook = |name: &str, namespace_rule: Value, condition: (&str, String)| {
        json!({
            "name": name,
            "clientConfig": client_config(endpoint, ca_bundle_pem),
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchExpressions": [never, namespace_rule]},
            "matchConditions": [{"name": condition.0, "expression": condition.1}],
            "matchPolicy": "Equivalent",
            "failurePolicy": failure_policy.as_str(),
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": TIMEOUT_SECONDS,
            "reinvocationPolicy": "Never",
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": CONFIGURATION_NAME,
            "labels": {
                (MANAGED_BY.0): MANAGED_BY.1,
                "app.kubernetes.io/part-of": "turnpike",
                "app.kubernetes.io/component": "webhook",
            },
        },
        "webhooks": [
            webhook(
                NAMESPACE_WEBHOOK,
                json!({"key": NAMESPACE_LABEL, "operator": "In", "values": [NAMESPACE_LABEL_ENABLED]}),
                ("not-opted-out", not_opted_out()),
            ),
            webhook(
                POD_WEBHOOK,
                json!({"key": NAMESPACE_LABEL, "operator": "NotIn", "values": [NAMESPACE_LABEL_ENABLED]}),
                ("annotated", annotated()),
            ),
        ],
    })
}

/// Creates or updates the configuration (server-side apply, field manager
/// `turnpike-operator`, taking ownership of the fields it sets).
pub async fn apply(client: &Client, configuration: &Value) -> Result<(), WebhookError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    match tokio::time::timeout(
        API_TIMEOUT,
        api.patch(CONFIGURATION_NAME, &pp, &Patch::Apply(configuration)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(WebhookError::Api {
            what: "applying MutatingWebhookConfiguration turnpike-injector",
            source,
        }),
        Err(_) => Err(WebhookError::Timeout {
            what: "applying MutatingWebhookConfiguration turnpike-injector",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("https://127.0.0.1:8443").unwrap();
        assert_eq!(u.mutate_pods(), "https://127.0.0.1:8443/mutate-pods");
        assert_eq!(u.host(), "127.0.0.1");
        let u = WebhookUrl::parse("https://hooks.example.com/turnpike/").unwrap();
        assert_eq!(
            u.mutate_pods(),
            "https://hooks.example.com/turnpike/mutate-pods"
        );
        let u = WebhookUrl::parse("https://[::1]:9443").unwrap();
        assert_eq!(u.mutate_pods(), "https://[::1]:9443/mutate-pods");
        for bad in [
            "http://127.0.0.1:8443",
            "127.0.0.1:8443",
            "https://",
            "https://h/x?y=1",
            "https://u@h",
            "not a url",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_is_narrow_and_fails_closed() {
        let c = configuration(
            &Endpoint::Service {
                namespace: "turnpike-system".into(),
                name: "turnpike-operator-webhook".into(),
            },
            "turnpike-system",
            "PEM",
            FailurePolicy::default(),
        );
        // It deserialises into the typed object (no misspelt field).
        let typed: MutatingWebhookConfiguration = serde_json::from_value(c.clone()).unwrap();
        assert_eq!(typed.webhooks.as_ref().unwrap().len(), 2);
        for w in c["webhooks"].as_array().unwrap() {
            assert_eq!(w["failurePolicy"], "Fail");
            assert_eq!(w["sideEffects"], "None");
            assert_eq!(w["timeoutSeconds"], 5);
            assert_eq!(w["reinvocationPolicy"], "Never");
            assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
            assert_eq!(w["rules"][0]["operations"], json!(["CREATE"]));
            assert_eq!(
                w["namespaceSelector"]["matchExpressions"][0]["values"],
                json!(["kube-system", "turnpike-system"])
            );
            assert_eq!(
                w["clientConfig"]["service"],
                json!({"namespace": "turnpike-system", "name": "turnpike-operator-webhook", "port": 443, "path": "/mutate-pods"})
            );
            assert_eq!(w["clientConfig"]["caBundle"], "UEVN");
        }
        let u = configuration(
            &Endpoint::Url(WebhookUrl::parse("https://127.0.0.1:9443").unwrap()),
            "ns",
            "PEM",
            FailurePolicy::Ignore,
        );
        assert_eq!(
            u["webhooks"][1]["clientConfig"],
            json!({"url": "https://127.0.0.1:9443/mutate-pods", "caBundle": "UEVN"})
        );
        for w in u["webhooks"].as_array().unwrap() {
            assert_eq!(w["failurePolicy"], "Ignore");
        }
    }
}
