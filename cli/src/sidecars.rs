//! Reaching the sidecars' admin endpoints: the namespace's admin token (Secret
//! [`ADMIN_SECRET`]), the pods an injected sidecar runs in, and one
//! `GET /internal/api-keys/{id}` per sidecar, through the API server's pod proxy or
//! straight to a URL. Every answer is sorted into [`Answer`] or a [`PodError`] a
//! person can act on. The token is never printed: [`AdminToken`] shows `***`, and the
//! header carrying it is marked sensitive.
//!
//! What an injected pod looks like is the injector's contract
//! (`operator/src/webhook/inject.rs`): a container or native-sidecar init container
//! named [`SIDECAR_CONTAINER`] with a port named [`ADMIN_PORT_NAME`]; its target is
//! the annotation `turnpike.dev/target`, else the label `app.kubernetes.io/name`, else
//! the label `app` (DESIGN.md).

use std::{fmt, path::Path, time::Duration};

use http::{HeaderValue, Request, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::{Api, Client, ResourceExt, api::ListParams, client::Body};
use serde_json::Value;
use turnpike_api::bundle::{ADMIN_SECRET, ADMIN_TOKEN_HEADER, ADMIN_TOKEN_KEY};

use crate::error::{Error, Kind, Op, chain, from_kube, is_object_not_found};

pub use turnpike_api::pod::{ADMIN_PORT_NAME, CONTAINER_NAME as SIDECAR_CONTAINER};
use turnpike_api::pod::{APP_LABEL, DEFAULT_ADMIN_PORT, NAME_LABEL, TARGET_ANNOTATION};
/// Environment variable holding the admin token for `--sidecar-url`.
pub const ADMIN_TOKEN_ENV: &str = "TURNPIKE_ADMIN_TOKEN";
/// Largest answer read from a sidecar.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The sidecars' admin token. `Debug` and `Display` print `***`.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token read from a file, the environment or the Secret; trimmed, and
    /// refused when empty or not a valid header value.
    pub fn new(text: &str) -> Option<AdminToken> {
        let t = text.trim();
        (!t.is_empty() && HeaderValue::from_str(t).is_ok()).then(|| AdminToken(t.to_owned()))
    }

    fn header(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&self.0).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads the token from Secret [`ADMIN_SECRET`] of `namespace`.
///
/// # Errors
/// [`Error::Forbidden`] naming `get secrets`, [`Error::State`] when the Secret is
/// missing or holds no token (the message never quotes its content).
pub async fn admin_token_from_secret(
    client: &Client,
    namespace: &str,
) -> Result<AdminToken, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get(ADMIN_SECRET).await {
        Ok(s) => s,
        Err(e) if is_object_not_found(&e) => {
            return Err(Error::State(format!(
                "Secret {namespace}/{ADMIN_SECRET} does not exist: the operator creates it once it has written a bundle in namespace {namespace}; is the Turnpike operator running (and recent enough)? `kubectl get configmaps -n {namespace} -l turnpike.dev/target` lists the bundles"
            )));
        }
        Err(e) => {
            return Err(from_kube(
                &Op::object("get", Kind::Secret, namespace, ADMIN_SECRET),
                e,
            ));
        }
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(ADMIN_TOKEN_KEY))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .and_then(AdminToken::new)
        .ok_or_else(|| {
            Error::State(format!(
                "Secret {namespace}/{ADMIN_SECRET} has no usable `{ADMIN_TOKEN_KEY}` key; delete it and the operator creates a new one"
            ))
        })
}

/// Reads the token for `--sidecar-url`: `file`, else `env` (the value of
/// [`ADMIN_TOKEN_ENV`]).
///
/// # Errors
/// [`Error::State`] naming the file or variable (never its content).
pub fn admin_token_from(file: Option<&Path>, env: Option<String>) -> Result<AdminToken, Error> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::State(format!(
                "--admin-token-file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        return AdminToken::new(&text).ok_or_else(|| {
            Error::State(format!(
                "--admin-token-file {}: holds no token",
                path.display()
            ))
        });
    }
    match env {
        Some(v) => AdminToken::new(&v)
            .ok_or_else(|| Error::State(format!("{ADMIN_TOKEN_ENV} is set but holds no token"))),
        None => Err(Error::State(format!(
            "--sidecar-url needs the sidecar's admin token: --admin-token-file FILE or {ADMIN_TOKEN_ENV}"
        ))),
    }
}

/// A pod with a Turnpike sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarPod {
    /// Pod name.
    pub name: String,
    /// The target its sidecar enforces (`None` when the pod does not say).
    pub target: Option<String>,
    /// The sidecar's admin port.
    pub admin_port: i32,
    /// `Running`, `Pending`, ...
    pub phase: String,
    /// The pod is being deleted.
    pub terminating: bool,
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    })
}

/// The target a pod's sidecar enforces: annotation `turnpike.dev/target`, else label
/// `app.kubernetes.io/name`, else label `app`.
pub fn pod_target(pod: &Pod) -> Option<String> {
    pod.annotations()
        .get(TARGET_ANNOTATION)
        .or_else(|| pod.labels().get(NAME_LABEL))
        .or_else(|| pod.labels().get(APP_LABEL))
        .cloned()
}

/// The pod as a [`SidecarPod`], or `None` when it has no Turnpike sidecar.
pub fn sidecar_pod(pod: &Pod) -> Option<SidecarPod> {
    let sidecar = all_containers(pod).find(|c| c.name == SIDECAR_CONTAINER)?;
    let admin_port = sidecar
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(ADMIN_PORT_NAME))
        .map_or(i32::from(DEFAULT_ADMIN_PORT), |p| p.container_port);
    Some(SidecarPod {
        name: pod.name_any(),
        target: pod_target(pod),
        admin_port,
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

/// The pods of `namespace` whose sidecar serves one of `targets` (all sidecars when
/// `targets` is empty: the key is valid for every target), sorted by name; or only
/// pod `only`.
///
/// # Errors
/// API errors (`get`/`list pods`); [`Error::State`] when `only` has no sidecar.
pub async fn find(
    client: &Client,
    namespace: &str,
    targets: &[String],
    only: Option<&str>,
) -> Result<Vec<SidecarPod>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Some(name) = only {
        let pod = api
            .get(name)
            .await
            .map_err(|e| from_kube(&Op::object("get", Kind::Pod, namespace, name), e))?;
        return sidecar_pod(&pod).map(|p| vec![p]).ok_or_else(|| {
            Error::State(format!(
                "pod {namespace}/{name} has no Turnpike sidecar (no container named {SIDECAR_CONTAINER})"
            ))
        });
    }
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube(&Op::list(Kind::Pod, Some(namespace)), e))?;
    let mut found: Vec<SidecarPod> = pods
        .items
        .iter()
        .filter_map(sidecar_pod)
        .filter(|p| targets.is_empty() || p.target.as_ref().is_some_and(|t| targets.contains(t)))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Why one sidecar could not report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The pod is not running: nothing to ask.
    #[error("pod is {0}: no sidecar to ask")]
    NotRunning(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection (or the API server's proxy to the pod) failed.
    #[error("sidecar not reachable: {0}")]
    Unreachable(String),
    /// RBAC refused the pod proxy.
    #[error(
        "forbidden: your credentials may not get pods/proxy in namespace {namespace}; ask for an RBAC Role that grants it (API server: {message})"
    )]
    ProxyForbidden {
        /// The namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
    /// The sidecar refused the admin token.
    #[error(
        "the sidecar refused the admin token (401): its token differs from Secret {ADMIN_SECRET} (recreated recently? the kubelet refreshes the mounted copy within a minute or two)"
    )]
    TokenMismatch,
    /// The sidecar has no admin token (yet).
    #[error(
        "the sidecar has no admin token yet (503): Secret {ADMIN_SECRET} is not mounted into it yet; the kubelet adds it within a minute or two (pods injected by an older operator never get it: restart them)"
    )]
    NoTokenYet,
    /// The sidecar's bundle does not hold the key.
    #[error(
        "the sidecar does not know this key (404): its bundle does not hold it (yet), or it has no bundle"
    )]
    KeyUnknown,
    /// Any other answer.
    #[error("unexpected answer {code}: {message}")]
    Other {
        /// HTTP status.
        code: u16,
        /// What it said.
        message: String,
    },
}

impl PodError {
    /// A short, stable name for tables and JSON.
    pub fn reason(&self) -> &'static str {
        match self {
            PodError::NotRunning(_) => "NotRunning",
            PodError::Timeout(_) => "Timeout",
            PodError::Unreachable(_) => "Unreachable",
            PodError::ProxyForbidden { .. } => "Forbidden",
            PodError::TokenMismatch => "TokenMismatch",
            PodError::NoTokenYet => "NoTokenYet",
            PodError::KeyUnknown => "KeyUnknown",
            PodError::Other { .. } => "Error",
        }
    }
}

/// Where a request goes: through the API server's pod proxy, or straight to a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The API server (answers may be its own `Status` objects).
    PodProxy,
    /// The sidecar itself.
    Direct,
}

/// Sorts one HTTP answer: `Ok` with the sidecar's JSON, or why not.
pub fn classify(
    via: Via,
    namespace: &str,
    code: StatusCode,
    body: &[u8],
) -> Result<Value, PodError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let from_api_server =
        via == Via::PodProxy && json.as_ref().is_some_and(|v| v["kind"] == "Status");
    let message = || {
        json.as_ref()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or_else(|| v["error"]["message"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
    };
    if from_api_server {
        return Err(match code.as_u16() {
            403 => PodError::ProxyForbidden {
                namespace: namespace.to_owned(),
                message: message(),
            },
            500 | 502 | 503 | 504 => PodError::Unreachable(message()),
            c => PodError::Other {
                code: c,
                message: message(),
            },
        });
    }
    let sidecar_code = json
        .as_ref()
        .and_then(|v| v["error"]["code"].as_str())
        .unwrap_or_default();
    match (code.as_u16(), sidecar_code) {
        (200, _) => json
            .filter(Value::is_object)
            .ok_or_else(|| PodError::Other {
                code: 200,
                message: "the answer is not a JSON object".to_owned(),
            }),
        (401, _) => Err(PodError::TokenMismatch),
        (503, "admin_token_unavailable") => Err(PodError::NoTokenYet),
        (404, "not_found") => Err(PodError::KeyUnknown),
        (502..=504, _) if via == Via::PodProxy => Err(PodError::Unreachable(message())),
        (c, _) => Err(PodError::Other {
            code: c,
            message: message(),
        }),
    }
}

/// `GET path` with the token, within `timeout`, sorted by [`classify`].
pub async fn get_usage(
    client: &Client,
    via: Via,
    namespace: &str,
    path: &str,
    token: &AdminToken,
    timeout: Duration,
) -> Result<Value, PodError> {
    let call = async {
        let mut req = Request::get(path)
            .body(Body::empty())
            .map_err(|e| PodError::Other {
                code: 0,
                message: e.to_string(),
            })?;
        if let Some(v) = token.header() {
            req.headers_mut().insert(ADMIN_TOKEN_HEADER, v);
        }
        let res = client
            .send(req)
            .await
            .map_err(|e| PodError::Unreachable(chain(&e)))?;
        let code = res.status();
        let body = res
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| PodError::Unreachable(chain(&e)))?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(PodError::Other {
                code: code.as_u16(),
                message: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        classify(via, namespace, code, &body)
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(PodError::Timeout(timeout)))
}

/// The pod proxy path of a sidecar's key usage endpoint.
pub fn proxy_path(namespace: &str, pod: &SidecarPod, key_id: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{}:{}/proxy/internal/api-keys/{key_id}",
        pod.name, pod.admin_port
    )
}

/// A client for one sidecar's admin URL (`http://127.0.0.1:9901`), no credentials of
/// the kubeconfig: the admin token is the only one sent.
///
/// # Errors
/// [`Error::State`] for a URL that is not `http(s)://host[:port][/prefix]`.
pub fn direct_client(url: &str, timeout: Duration) -> Result<Client, Error> {
    let bad = |why: &str| Error::State(format!("--sidecar-url {url:?}: {why}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad("expected http://HOST:PORT, e.g. http://127.0.0.1:9901"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| bad(&chain(&e)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn injected_pods_their_target_and_admin_port() {
        let native = pod(json!({
            "metadata": {"name": "orders-1", "labels": {"app": "orders"}},
            "spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "turnpike-sidecar", "ports": [
                    {"name": "turnpike", "containerPort": 9080},
                    {"name": "turnpike-admin", "containerPort": 9911},
                ]}],
            },
            "status": {"phase": "Running"},
        }));
        assert_eq!(
            sidecar_pod(&native).unwrap(),
            SidecarPod {
                name: "orders-1".into(),
                target: Some("orders".into()),
                admin_port: 9911,
                phase: "Running".into(),
                terminating: false,
            }
        );
        let plain = pod(json!({
            "metadata": {"name": "p", "annotations": {"turnpike.dev/target": "billing"},
                         "labels": {"app.kubernetes.io/name": "web", "app": "x"}},
            "spec": {"containers": [{"name": "app"}, {"name": "turnpike-sidecar"}]},
        }));
        let p = sidecar_pod(&plain).unwrap();
        assert_eq!(p.target.as_deref(), Some("billing"));
        assert_eq!((p.admin_port, p.phase.as_str()), (9901, "Unknown"));
        let bare =
            pod(json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "app"}]}}));
        assert!(sidecar_pod(&bare).is_none());
        assert_eq!(
            proxy_path("shop", &p, "7k2m9q4xw3ab"),
            "/api/v1/namespaces/shop/pods/p:9901/proxy/internal/api-keys/7k2m9q4xw3ab"
        );
    }

    #[test]
    fn answers_are_sorted_into_what_to_do() {
        let status = |code: u16, message: &str| {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message})
                .to_string()
        };
        let sidecar = |code: &str| json!({"error": {"code": code, "message": "m"}}).to_string();
        let c = |via, code: u16, body: &str| {
            classify(
                via,
                "shop",
                StatusCode::from_u16(code).unwrap(),
                body.as_bytes(),
            )
        };
        use Via::{Direct, PodProxy};
        assert_eq!(c(PodProxy, 200, r#"{"id":"x"}"#).unwrap()["id"], "x");
        assert_eq!(
            c(PodProxy, 401, &sidecar("unauthorized")),
            Err(PodError::TokenMismatch)
        );
        assert_eq!(
            c(Direct, 401, &sidecar("unauthorized")),
            Err(PodError::TokenMismatch)
        );
        assert_eq!(
            c(PodProxy, 503, &sidecar("admin_token_unavailable")),
            Err(PodError::NoTokenYet)
        );
        assert_eq!(
            c(Direct, 404, &sidecar("not_found")),
            Err(PodError::KeyUnknown)
        );
        let e = c(
            PodProxy,
            403,
            &status(403, "pods \"p\" is forbidden: cannot get pods/proxy"),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "Forbidden");
        assert!(
            e.to_string().starts_with(
                "forbidden: your credentials may not get pods/proxy in namespace shop"
            ),
            "{e}"
        );
        let e = c(
            PodProxy,
            503,
            &status(503, "error trying to reach service: dial tcp 10.0.0.7:9901: connect: connection refused"),
        )
        .unwrap_err();
        assert!(
            matches!(e, PodError::Unreachable(ref m) if m.contains("connection refused")),
            "{e:?}"
        );
        assert_eq!(c(Direct, 200, "not json").unwrap_err().reason(), "Error");
        assert_eq!(
            c(Direct, 500, "boom"),
            Err(PodError::Other {
                code: 500,
                message: "boom".into()
            })
        );
    }

    #[test]
    fn the_token_is_never_shown() {
        let t = AdminToken::new("  s3cret-adm1n\n").unwrap();
        assert_eq!(format!("{t:?} {t}"), "AdminToken(***) ***");
        assert!(t.header().unwrap().is_sensitive());
        assert!(AdminToken::new(" \n").is_none());
        assert!(AdminToken::new("bad\u{7f}value").is_none());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            admin_token_from(Some(&file), Some("env".into())).unwrap().0,
            "from-file"
        );
        assert_eq!(
            admin_token_from(None, Some("from-env".into())).unwrap().0,
            "from-env"
        );
        let e = admin_token_from(None, None).unwrap_err().to_string();
        assert!(
            e.contains("--admin-token-file FILE or TURNPIKE_ADMIN_TOKEN"),
            "{e}"
        );
        std::fs::write(&file, "").unwrap();
        let e = admin_token_from(Some(&file), None).unwrap_err().to_string();
        assert!(e.ends_with("holds no token"), "{e}");
    }
}
