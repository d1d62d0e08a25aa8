//! The injection decision and the JSON patch, as pure functions of the pod the API server
//! sent: every case (opt-in, opt-out, ports, targets, existing init containers and
//! volumes) is a fixture test without a network.
//!
//! Order of the checks, each short-circuiting:
//! 1. a protected namespace (`kube-system`, the operator's own) -> skip;
//! 2. a pod that already has a `turnpike-sidecar` container -> skip (idempotent: the
//!    API server may call twice, and a pod may be re-submitted);
//! 3. the pod annotation `turnpike.dev/inject`: `"false"` -> skip, `"true"` -> inject,
//!    anything else -> refuse; absent -> the namespace label decides;
//! 4. the target and the ports are resolved and validated; a problem is a refusal whose
//!    message names the annotation to fix.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::config::{InjectorConfig, SidecarBundleSource, SidecarMode};

pub use turnpike_api::pod::{
    ADMIN_PORT_NAME, APP_LABEL, CONTAINER_NAME, DEFAULT_ADMIN_PORT, NAME_LABEL, TARGET_ANNOTATION,
};

/// Pod annotation: `"true"` injects, `"false"` opts out (also in a labelled namespace).
pub const INJECT_ANNOTATION: &str = "turnpike.dev/inject";
/// Namespace label: `enabled` injects every pod of the namespace that does not opt out.
pub const NAMESPACE_LABEL: &str = "turnpike.dev/inject";
/// The value of [`NAMESPACE_LABEL`] that opts a namespace in.
pub const NAMESPACE_LABEL_ENABLED: &str = "enabled";
/// Pod annotation: the workload's port the sidecar forwards to (default
/// `--sidecar-upstream-port`, 8080).
pub const UPSTREAM_PORT_ANNOTATION: &str = "turnpike.dev/upstream-port";
/// Pod annotation: the sidecar's proxy port (default `--sidecar-listen-port`, 9080).
pub const LISTEN_PORT_ANNOTATION: &str = "turnpike.dev/listen-port";
/// Pod annotation the injector adds, with the operator's version.
pub const INJECTED_ANNOTATION: &str = "turnpike.dev/injected";

/// The projected volume holding the bundle.
pub const VOLUME_NAME: &str = "turnpike-bundle";
/// An empty volume over the service-account token path in the sidecar (see
/// [`no_token_volume`]).
pub const NO_TOKEN_VOLUME_NAME: &str = "turnpike-no-token";
/// The sidecar's own projected ServiceAccount token (API source, see
/// [`api_token_volume`]).
pub const API_TOKEN_VOLUME_NAME: &str = "turnpike-api-access";
/// Where the ServiceAccount admission plugin mounts the API token.
pub const SA_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where the bundle is mounted (`--bundle-dir`).
pub const BUNDLE_DIR: &str = "/etc/turnpike";
/// The optional Secret volume holding the sidecar's admin token.
pub const ADMIN_TOKEN_VOLUME_NAME: &str = "turnpike-admin-token";
/// Where [`ADMIN_TOKEN_VOLUME_NAME`] is mounted.
pub const ADMIN_TOKEN_DIR: &str = "/var/run/turnpike/admin";
/// The admin token file the sidecar is pointed at (`--admin-token-file`): data key
/// [`turnpike_api::bundle::ADMIN_TOKEN_KEY`] of Secret
/// [`turnpike_api::bundle::ADMIN_SECRET`], projected under [`ADMIN_TOKEN_DIR`]. The
/// volume is optional, so the file may be missing until the operator creates the Secret
/// (the sidecar waits for it).
pub const ADMIN_TOKEN_FILE: &str = "/var/run/turnpike/admin/token";
/// File name of the token inside [`ADMIN_TOKEN_DIR`].
const ADMIN_TOKEN_FILE_NAME: &str = "token";
/// Default of [`UPSTREAM_PORT_ANNOTATION`] (`--sidecar-upstream-port` changes it).
pub const DEFAULT_UPSTREAM_PORT: u16 = 8080;
/// Default of [`LISTEN_PORT_ANNOTATION`] (`--sidecar-listen-port` changes it).
pub const DEFAULT_LISTEN_PORT: u16 = 9080;
/// Name of the proxy port (Services should use it as `targetPort`).
pub const PORT_NAME: &str = "turnpike";
/// The user the sidecar runs as (distroless `nonroot`).
pub const SIDECAR_UID: i64 = 65532;

/// Why a pod is admitted unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `kube-system` or the operator's own namespace.
    ProtectedNamespace,
    /// A `turnpike-sidecar` container is already there.
    AlreadyInjected,
    /// `turnpike.dev/inject: "false"`.
    OptedOut,
    /// Neither the pod nor its namespace asked for injection.
    NotOptedIn,
}

impl Skip {
    /// A stable word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::ProtectedNamespace => "protected-namespace",
            Skip::AlreadyInjected => "already-injected",
            Skip::OptedOut => "opted-out",
            Skip::NotOptedIn => "not-opted-in",
        }
    }
}

/// The first verdict, from the pod alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Admit unchanged.
    Skip(Skip),
    /// The pod asked for the sidecar.
    Inject,
    /// The pod says nothing: inject if its namespace carries
    /// `turnpike.dev/inject=enabled` (see [`namespace_opted_in`]).
    AskNamespace,
}

/// Where the target name came from (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSource {
    /// The `turnpike.dev/target` annotation.
    Annotation,
    /// The `app.kubernetes.io/name` label.
    NameLabel,
    /// The `app` label.
    AppLabel,
}

impl std::fmt::Display for TargetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetSource::Annotation => "annotation turnpike.dev/target",
            TargetSource::NameLabel => "label app.kubernetes.io/name (used as the target because annotation turnpike.dev/target is not set)",
            TargetSource::AppLabel => "label app (used as the target because annotation turnpike.dev/target and label app.kubernetes.io/name are not set)",
        })
    }
}

/// Why a pod that asked for the sidecar is refused. The text is what `kubectl` shows
/// after `admission webhook "..." denied the request:`; each names what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `turnpike.dev/inject` is neither "true" nor "false".
    #[error("annotation turnpike.dev/inject is {value:?}; it must be \"true\" or \"false\"")]
    BadInjectValue {
        /// The value found.
        value: String,
    },
    /// No annotation or label names the target.
    #[error(
        "cannot tell which Turnpike target this pod is: set the annotation turnpike.dev/target (or the label app.kubernetes.io/name or app) to the target's name"
    )]
    NoTarget,
    /// The target is not a DNS label.
    #[error(
        "{from} is {value:?}, which is not a valid Turnpike target: it must be a DNS label (lower-case letters, digits and '-', at most 63 characters); set the annotation turnpike.dev/target"
    )]
    BadTarget {
        /// Where it came from.
        from: TargetSource,
        /// The value found.
        value: String,
    },
    /// A port annotation is not a port number.
    #[error("annotation {annotation} is {value:?}; it must be a port number from 1 to 65535")]
    BadPort {
        /// The annotation.
        annotation: &'static str,
        /// The value found.
        value: String,
    },
    /// Listen and upstream ports are equal.
    #[error(
        "annotations turnpike.dev/listen-port and turnpike.dev/upstream-port are both {port}; the sidecar cannot listen on the port it forwards to"
    )]
    SamePorts {
        /// The port.
        port: u16,
    },
    /// A port annotation names the sidecar's admin port.
    #[error(
        "annotation {annotation} is {port}, the sidecar's admin port (probes and metrics); choose another port"
    )]
    AdminPort {
        /// The annotation.
        annotation: &'static str,
        /// The port.
        port: u16,
    },
    /// A port the sidecar needs is already declared by a container of the pod.
    #[error(
        "{what} {port} is already used by container {container:?}{}; {fix}",
        port_name.as_ref().map(|n| format!(" (port {n:?})")).unwrap_or_default()
    )]
    PortInUse {
        /// "annotation turnpike.dev/listen-port" or "the sidecar's admin port".
        what: &'static str,
        /// The port.
        port: u16,
        /// The container declaring it.
        container: String,
        /// Its port name, if any.
        port_name: Option<String>,
        /// What to do.
        fix: &'static str,
    },
    /// A container already declares a port with a name the sidecar uses.
    #[error(
        "container {container:?} already has a port named {name:?}, a name the Turnpike sidecar's port needs; rename that port"
    )]
    PortNameInUse {
        /// The container.
        container: String,
        /// The port name.
        name: &'static str,
    },
    /// The pod already has a volume with a name the injector uses.
    #[error(
        "the pod already has a volume named {name:?}, a name the Turnpike sidecar's volumes need; rename that volume"
    )]
    VolumeInUse {
        /// The volume name.
        name: String,
    },
}

/// An injection: the target whose bundle is mounted and the patch to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// The target.
    pub target: String,
    /// The sidecar's proxy port.
    pub listen_port: u16,
    /// The workload's port.
    pub upstream_port: u16,
    /// RFC 6902 operations against the pod as sent.
    pub patch: Patch,
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .chain(spec.map(|s| s.containers.as_slice()).unwrap_or_default())
}

/// The verdict from the pod alone (steps 1-3 of the module doc).
pub fn screen(pod: &Pod, namespace: &str, cfg: &InjectorConfig) -> Result<Screen, Refusal> {
    if cfg.protected_namespaces.contains(namespace) {
        return Ok(Screen::Skip(Skip::ProtectedNamespace));
    }
    if all_containers(pod).any(|c| c.name == CONTAINER_NAME) {
        return Ok(Screen::Skip(Skip::AlreadyInjected));
    }
    match annotation(pod, INJECT_ANNOTATION) {
        Some("false") => Ok(Screen::Skip(Skip::OptedOut)),
        Some("true") => Ok(Screen::Inject),
        Some(other) => Err(Refusal::BadInjectValue {
            value: other.to_owned(),
        }),
        None => Ok(Screen::AskNamespace),
    }
}

/// Whether a namespace's labels opt its pods in.
pub fn namespace_opted_in(labels: &BTreeMap<String, String>) -> bool {
    labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(NAMESPACE_LABEL_ENABLED)
}

/// The target: annotation, else label `app.kubernetes.io/name`, else label `app`.
pub fn target(pod: &Pod) -> Result<String, Refusal> {
    let (source, value) = if let Some(v) = annotation(pod, TARGET_ANNOTATION) {
        (TargetSource::Annotation, v)
    } else if let Some(v) = label(pod, NAME_LABEL) {
        (TargetSource::NameLabel, v)
    } else if let Some(v) = label(pod, APP_LABEL) {
        (TargetSource::AppLabel, v)
    } else {
        return Err(Refusal::NoTarget);
    };
    turnpike_api::validate::target(value).map_err(|_| Refusal::BadTarget {
        from: source,
        value: value.to_owned(),
    })?;
    Ok(value.to_owned())
}

fn port(pod: &Pod, key: &'static str, default: u16) -> Result<u16, Refusal> {
    let Some(text) = annotation(pod, key) else {
        return Ok(default);
    };
    // Digits only: "+80", " 80" and "0x50" are not ports, whatever a parser accepts.
    match text.parse::<u16>() {
        Ok(p) if p > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(Refusal::BadPort {
            annotation: key,
            value: text.to_owned(),
        }),
    }
}

fn check_ports(pod: &Pod, listen: u16, upstream: u16, admin: u16) -> Result<(), Refusal> {
    if listen == upstream {
        return Err(Refusal::SamePorts { port: listen });
    }
    for (annotation, port) in [
        (LISTEN_PORT_ANNOTATION, listen),
        (UPSTREAM_PORT_ANNOTATION, upstream),
    ] {
        if port == admin {
            return Err(Refusal::AdminPort { annotation, port });
        }
    }
    // Containers of a pod share one network namespace: a port declared by another
    // container is taken. (The upstream port is expected to be declared by the workload.)
    for c in all_containers(pod) {
        for p in c.ports.as_deref().unwrap_or_default() {
            for (what, port, fix) in [
                (
                    "annotation turnpike.dev/listen-port",
                    listen,
                    "set the annotation turnpike.dev/listen-port to a free port",
                ),
                (
                    "the sidecar's admin port",
                    admin,
                    "move that container off this port",
                ),
            ] {
                if i32::from(port) == p.container_port {
                    return Err(Refusal::PortInUse {
                        what,
                        port,
                        container: c.name.clone(),
                        port_name: p.name.clone(),
                        fix,
                    });
                }
            }
            for name in [PORT_NAME, ADMIN_PORT_NAME] {
                if p.name.as_deref() == Some(name) {
                    return Err(Refusal::PortNameInUse {
                        container: c.name.clone(),
                        name,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The sidecar container (step 4), as JSON the API server accepts.
pub fn sidecar_container(cfg: &InjectorConfig, target: &str, listen: u16, upstream: u16) -> Value {
    let r = &cfg.resources;
    let admin = cfg.admin_port;
    let mut c = json!({
        "name": CONTAINER_NAME,
        "image": cfg.image,
        "args": [
            "--bundle-dir", BUNDLE_DIR,
            "--listen", format!("0.0.0.0:{listen}"),
            "--upstream", format!("http://127.0.0.1:{upstream}"),
            "--admin-listen", format!("0.0.0.0:{admin}"),
            "--admin-token-file", ADMIN_TOKEN_FILE,
        ],
        "ports": [
            {"name": PORT_NAME, "containerPort": listen, "protocol": "TCP"},
            {"name": ADMIN_PORT_NAME, "containerPort": admin, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": r.cpu_request.as_str(), "memory": r.memory_request.as_str()},
            "limits": {"cpu": r.cpu_limit.as_str(), "memory": r.memory_limit.as_str()},
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // The bundle, the admin token (optional: see `admin_token_volume`), and at the
        // service-account token path either the sidecar's own projected token (API
        // source: it watches its bundle and writes Events, whatever the pod's
        // `automountServiceAccountToken`) or an empty directory (files source: it
        // talks to no API, so it gets no token even when the workload automounts one).
        "volumeMounts": [
            {"name": VOLUME_NAME, "mountPath": BUNDLE_DIR, "readOnly": true},
            {"name": ADMIN_TOKEN_VOLUME_NAME, "mountPath": ADMIN_TOKEN_DIR, "readOnly": true},
            {"name": token_volume_name(cfg), "mountPath": SA_TOKEN_PATH, "readOnly": true},
        ],
    });
    if let Some(obj) = c.as_object_mut() {
        // The target its bundle must name (both sources), and the source.
        let mut extra: Vec<&str> = vec!["--target", target];
        if cfg.bundle_source == SidecarBundleSource::Api {
            extra.extend(["--bundle-source", "api"]);
        }
        // Bundles must carry the operator's signature: the trusted keys are written
        // here, at pod creation, so nothing in the pod's namespace can change them.
        if cfg.bundle_trust.is_none() {
            extra.push("--insecure-unsigned-bundles");
        }
        if let Some(args) = obj.get_mut("args").and_then(Value::as_array_mut) {
            args.extend(extra.into_iter().map(Value::from));
        }
        // Namespace (default of --namespace), pod name and UID (Events) from the
        // downward API.
        let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
        let mut env = vec![field("POD_NAMESPACE", "metadata.namespace")];
        if cfg.bundle_source == SidecarBundleSource::Api {
            env.push(field("TURNPIKE_POD_NAME", "metadata.name"));
            env.push(field("TURNPIKE_POD_UID", "metadata.uid"));
        }
        if let Some(trust) = &cfg.bundle_trust {
            env.push(json!({"name": turnpike_api::signing::TRUST_ENV, "value": trust}));
        }
        obj.insert("env".into(), Value::Array(env));
    }
    if cfg.mode == SidecarMode::Native
        && let Some(obj) = c.as_object_mut()
    {
        obj.insert("restartPolicy".into(), json!("Always"));
    }
    c
}

/// The projected volume: Secret and ConfigMap `turnpike-<target>` laid out in one
/// directory, as DESIGN.md's bundle-dir contract says, then every possible key shard
/// Secret `turnpike-<target>.keys-<n>` (n = 1 .. [`MAX_KEY_SHARDS`] - 1), each mapping
/// its one data key `keys-<n>.json` to the file of the same name.
///
/// The primary Secret and the ConfigMap are not optional: until the operator has
/// written the bundle the kubelet reports a clear `FailedMount` and the workload does
/// not start unprotected. The shards are optional: a target has as many as its keys
/// need, and they appear and disappear as keys are added and removed; the kubelet
/// projects the ones that exist and refreshes the volume when one appears, without a
/// change to the pod. Only the named key is projected from a shard, so a shard can
/// never put a file over the primary's `keys.json` or the ConfigMap's files.
///
/// [`MAX_KEY_SHARDS`]: turnpike_api::bundle::MAX_KEY_SHARDS
pub fn bundle_volume(target: &str) -> Value {
    use turnpike_api::bundle::{MAX_KEY_SHARDS, object_name, shard_file, shard_object_name};
    let name = object_name(target);
    let mut sources = vec![
        json!({"secret": {"name": name}}),
        json!({"configMap": {"name": name}}),
    ];
    sources.extend((1..MAX_KEY_SHARDS).map(|n| {
        let file = shard_file(n);
        json!({"secret": {
            "name": shard_object_name(target, n),
            "optional": true,
            "items": [{"key": file, "path": file}],
        }})
    }));
    json!({
        "name": VOLUME_NAME,
        "projected": {"sources": sources},
    })
}

/// The admin token: data key [`ADMIN_TOKEN_KEY`] of Secret [`ADMIN_SECRET`] (one per
/// namespace, created by the operator), as the file [`ADMIN_TOKEN_FILE`]. Optional, so
/// a pod starts before the operator has created the Secret (the sidecar waits for the
/// file; the kubelet adds it when the Secret appears) and the workload never fails to
/// start over a token that only guards `/internal/...`. Its own volume rather than a
/// source of the bundle volume: the bundle directory's files are all bundle data.
///
/// [`ADMIN_TOKEN_KEY`]: turnpike_api::bundle::ADMIN_TOKEN_KEY
/// [`ADMIN_SECRET`]: turnpike_api::bundle::ADMIN_SECRET
pub fn admin_token_volume() -> Value {
    use turnpike_api::bundle::{ADMIN_SECRET, ADMIN_TOKEN_KEY};
    json!({
        "name": ADMIN_TOKEN_VOLUME_NAME,
        "secret": {
            "secretName": ADMIN_SECRET,
            "optional": true,
            "items": [{"key": ADMIN_TOKEN_KEY, "path": ADMIN_TOKEN_FILE_NAME}],
        },
    })
}

fn token_volume_name(cfg: &InjectorConfig) -> &'static str {
    match cfg.bundle_source {
        SidecarBundleSource::Api => API_TOKEN_VOLUME_NAME,
        SidecarBundleSource::Files => NO_TOKEN_VOLUME_NAME,
    }
}

/// The sidecar's API credentials, laid out as the ServiceAccount admission plugin lays
/// out its own (`token`, `ca.crt`, `namespace`): a bound, expiring token of the pod's
/// ServiceAccount that the kubelet refreshes, the cluster CA from ConfigMap
/// `kube-root-ca.crt`, and the namespace. Mounted in the sidecar only, so the pod's
/// `automountServiceAccountToken: false` still keeps the workload's containers
/// without a token, and the sidecar has one whatever that setting says. What the
/// token may do is the Role the operator binds (see `crate::sidecar_rbac`).
pub fn api_token_volume() -> Value {
    json!({
        "name": API_TOKEN_VOLUME_NAME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// An empty volume the sidecar mounts at the token path. A webhook's change makes the
/// API server run its built-in mutating plugins again, and the ServiceAccount plugin
/// then mounts the pod's token into every container without a mount at that path,
/// the injected one included. A mount there is the plugin's documented opt-out per
/// container; the workload's own containers and `automountServiceAccountToken` are
/// left as they are.
///
/// No `sizeLimit`: the sidecar mounts it read-only, so nothing can grow it, and the
/// kubelet counts even an empty directory's own block (4 KiB on ext4) against a limit:
/// the `1Ki` this once had got every injected pod evicted on a real node.
pub fn no_token_volume() -> Value {
    json!({"name": NO_TOKEN_VOLUME_NAME, "emptyDir": {}})
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        // Tokens are escaped by jsonptr: '/' -> "~1", '~' -> "~0".
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Appends `values` to the array at `tokens`, or creates the array when it is absent
/// (an `add` to `.../-` of a missing array fails the whole patch).
fn append(ops: &mut Vec<PatchOperation>, tokens: &[&str], exists: bool, values: Vec<Value>) {
    if exists {
        let mut t = tokens.to_vec();
        t.push("-");
        ops.extend(values.into_iter().map(|v| add(&t, v)));
    } else {
        ops.push(add(tokens, Value::Array(values)));
    }
}

/// The target, ports and patch for a pod that is to get the sidecar (step 4).
pub fn injection(pod: &Pod, cfg: &InjectorConfig) -> Result<Injection, Refusal> {
    let target = target(pod)?;
    let upstream_port = port(pod, UPSTREAM_PORT_ANNOTATION, cfg.upstream_port)?;
    let listen_port = port(pod, LISTEN_PORT_ANNOTATION, cfg.listen_port)?;
    check_ports(pod, listen_port, upstream_port, cfg.admin_port)?;
    let spec = pod.spec.as_ref();
    let volumes = spec.and_then(|s| s.volumes.as_ref());
    if let Some(taken) = volumes.and_then(|v| {
        v.iter().find(|v| {
            [
                VOLUME_NAME,
                ADMIN_TOKEN_VOLUME_NAME,
                NO_TOKEN_VOLUME_NAME,
                API_TOKEN_VOLUME_NAME,
            ]
            .contains(&v.name.as_str())
        })
    }) {
        return Err(Refusal::VolumeInUse {
            name: taken.name.clone(),
        });
    }

    let mut ops = Vec::with_capacity(4);
    ops.push(if pod.metadata.annotations.is_some() {
        add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            json!(cfg.version),
        )
    } else {
        add(
            &["metadata", "annotations"],
            json!({ INJECTED_ANNOTATION: cfg.version }),
        )
    });
    append(
        &mut ops,
        &["spec", "volumes"],
        volumes.is_some(),
        vec![
            bundle_volume(&target),
            admin_token_volume(),
            match cfg.bundle_source {
                SidecarBundleSource::Api => api_token_volume(),
                SidecarBundleSource::Files => no_token_volume(),
            },
        ],
    );
    let container = vec![sidecar_container(cfg, &target, listen_port, upstream_port)];
    match cfg.mode {
        // Appended after the pod's own init containers: they run to completion first
        // (they do not need the proxy), then the sidecar starts before the workload.
        SidecarMode::Native => append(
            &mut ops,
            &["spec", "initContainers"],
            spec.is_some_and(|s| s.init_containers.is_some()),
            container,
        ),
        SidecarMode::Plain => append(&mut ops, &["spec", "containers"], spec.is_some(), container),
    }
    Ok(Injection {
        target,
        listen_port,
        upstream_port,
        patch: Patch(ops),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn cfg() -> InjectorConfig {
        let mut c = InjectorConfig::new("turnpike-system");
        c.version = "0.1.0".into();
        c
    }

    fn paths(p: &Patch) -> Vec<String> {
        p.0.iter()
            .map(|op| match op {
                PatchOperation::Add(a) => a.path.to_string(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn annotation_keys_are_escaped_and_missing_arrays_created() {
        let p = pod(json!({
            "metadata": {"labels": {"app": "orders"}, "annotations": {"turnpike.dev/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "x"}]},
        }));
        let inj = injection(&p, &cfg()).unwrap();
        assert_eq!(
            paths(&inj.patch),
            [
                "/metadata/annotations/turnpike.dev~1injected",
                "/spec/volumes",
                "/spec/initContainers"
            ]
        );
        let p = pod(json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [{"name": "app"}], "volumes": [], "initContainers": []},
        }));
        let inj = injection(&p, &cfg()).unwrap();
        assert_eq!(
            paths(&inj.patch),
            [
                "/metadata/annotations",
                "/spec/volumes/-",
                "/spec/volumes/-",
                "/spec/volumes/-",
                "/spec/initContainers/-"
            ]
        );
        let mut plain = cfg();
        plain.mode = SidecarMode::Plain;
        let inj = injection(&p, &plain).unwrap();
        assert_eq!(paths(&inj.patch)[4], "/spec/containers/-");
        let PatchOperation::Add(a) = &inj.patch.0[4] else {
            panic!()
        };
        assert!(a.value.get("restartPolicy").is_none());
    }

    #[test]
    fn screen_order() {
        let c = cfg();
        let annotated = |v: &str| {
            pod(
                json!({"metadata": {"annotations": {"turnpike.dev/inject": v}}, "spec": {"containers": []}}),
            )
        };
        assert_eq!(
            screen(&annotated("true"), "kube-system", &c),
            Ok(Screen::Skip(Skip::ProtectedNamespace))
        );
        assert_eq!(
            screen(&annotated("true"), "turnpike-system", &c),
            Ok(Screen::Skip(Skip::ProtectedNamespace))
        );
        assert_eq!(screen(&annotated("true"), "shop", &c), Ok(Screen::Inject));
        assert_eq!(
            screen(&annotated("false"), "shop", &c),
            Ok(Screen::Skip(Skip::OptedOut))
        );
        assert_eq!(
            screen(&annotated("yes"), "shop", &c),
            Err(Refusal::BadInjectValue {
                value: "yes".into()
            })
        );
        let bare = pod(json!({"spec": {"containers": []}}));
        assert_eq!(screen(&bare, "shop", &c), Ok(Screen::AskNamespace));
        let injected = pod(json!({"spec": {"containers": [{"name": CONTAINER_NAME}]}}));
        assert_eq!(
            screen(&injected, "shop", &c),
            Ok(Screen::Skip(Skip::AlreadyInjected))
        );
        assert!(namespace_opted_in(&BTreeMap::from([(
            "turnpike.dev/inject".into(),
            "enabled".into()
        )])));
        assert!(!namespace_opted_in(&BTreeMap::from([(
            "turnpike.dev/inject".into(),
            "true".into()
        )])));
    }

    #[test]
    fn port_annotations_are_digits_in_range() {
        for bad in ["0", "65536", "-1", "+80", " 80", "0x50", "http", ""] {
            let p = pod(json!({
                "metadata": {"labels": {"app": "a"}, "annotations": {"turnpike.dev/upstream-port": bad}},
                "spec": {"containers": []},
            }));
            let err = injection(&p, &cfg()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "annotation turnpike.dev/upstream-port is {bad:?}; it must be a port number from 1 to 65535"
                )
            );
        }
    }

    #[test]
    fn volume_names_the_injector_needs_are_refused_when_taken() {
        for name in [VOLUME_NAME, ADMIN_TOKEN_VOLUME_NAME, NO_TOKEN_VOLUME_NAME] {
            let p = pod(json!({
                "metadata": {"labels": {"app": "a"}},
                "spec": {"containers": [], "volumes": [{"name": name, "emptyDir": {}}]},
            }));
            assert_eq!(
                injection(&p, &cfg()),
                Err(Refusal::VolumeInUse { name: name.into() })
            );
        }
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "app", "ports": [{"name": "turnpike", "containerPort": 1234}]}]},
        }));
        assert_eq!(
            injection(&p, &cfg()).unwrap_err().to_string(),
            "container \"app\" already has a port named \"turnpike\", a name the Turnpike sidecar's port needs; rename that port"
        );
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 9901}]}]},
        }));
        assert_eq!(
            injection(&p, &cfg()).unwrap_err().to_string(),
            "the sidecar's admin port 9901 is already used by container \"app\"; move that container off this port"
        );
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}, "annotations": {"turnpike.dev/listen-port": "9901"}},
            "spec": {"containers": []},
        }));
        assert_eq!(
            injection(&p, &cfg()),
            Err(Refusal::AdminPort {
                annotation: LISTEN_PORT_ANNOTATION,
                port: 9901
            })
        );
    }

    #[test]
    fn the_bundle_volume_projects_every_possible_shard_as_optional() {
        use turnpike_api::bundle::{MAX_KEY_SHARDS, object_name, shard_file, shard_object_name};
        let v = bundle_volume("orders");
        assert_eq!(v["name"], VOLUME_NAME);
        let sources = v["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 2 + MAX_KEY_SHARDS - 1);
        // The primary Secret and the ConfigMap: required, every key.
        assert_eq!(sources[0], json!({"secret": {"name": "turnpike-orders"}}));
        assert_eq!(
            sources[1],
            json!({"configMap": {"name": "turnpike-orders"}})
        );
        assert_eq!(object_name("orders"), "turnpike-orders");
        // Then shards 1 ..= MAX_KEY_SHARDS - 1, optional, one named key each.
        for (i, n) in (1..MAX_KEY_SHARDS).enumerate() {
            assert_eq!(
                sources[2 + i],
                json!({"secret": {
                    "name": shard_object_name("orders", n),
                    "optional": true,
                    "items": [{"key": shard_file(n), "path": shard_file(n)}],
                }})
            );
        }
        assert_eq!(
            sources[2],
            json!({"secret": {"name": "turnpike-orders.keys-1", "optional": true,
                "items": [{"key": "keys-1.json", "path": "keys-1.json"}]}})
        );
        assert_eq!(
            sources.last().unwrap()["secret"]["name"],
            "turnpike-orders.keys-15"
        );
        // No two sources write the same file name.
        let files: Vec<&str> = sources[2..]
            .iter()
            .map(|s| s["secret"]["items"][0]["path"].as_str().unwrap())
            .collect();
        let unique: std::collections::BTreeSet<&str> = files.iter().copied().collect();
        assert_eq!(unique.len(), files.len());
        assert!(!unique.contains(turnpike_api::bundle::KEYS_FILE));
    }

    #[test]
    fn the_admin_token_is_an_optional_read_only_secret_file() {
        let v = admin_token_volume();
        assert_eq!(
            v,
            json!({"name": "turnpike-admin-token", "secret": {
                "secretName": "turnpike.admin",
                "optional": true,
                "items": [{"key": "token", "path": "token"}],
            }})
        );
        assert_eq!(
            ADMIN_TOKEN_FILE,
            format!("{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_FILE_NAME}")
        );
        let c = sidecar_container(&cfg(), "orders", 9080, 8080);
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let at = args
            .iter()
            .position(|a| *a == "--admin-token-file")
            .unwrap();
        assert_eq!(args[at + 1], "/var/run/turnpike/admin/token");
        assert!(
            c["volumeMounts"].as_array().unwrap().contains(&json!(
                {"name": "turnpike-admin-token", "mountPath": "/var/run/turnpike/admin", "readOnly": true}
            ))
        );
    }

    #[test]
    fn configured_port_defaults_apply_and_annotations_override_them() {
        let mut c = cfg();
        c.listen_port = 7080;
        c.upstream_port = 3000;
        c.admin_port = 7901;
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "app"}]},
        }));
        let inj = injection(&p, &c).unwrap();
        assert_eq!((inj.listen_port, inj.upstream_port), (7080, 3000));
        let Some(PatchOperation::Add(a)) = inj.patch.0.last() else {
            panic!()
        };
        // `initContainers` was absent: the patch creates it with the sidecar.
        let sc = &a.value[0];
        assert_eq!(
            sc["ports"],
            json!([
                {"name": "turnpike", "containerPort": 7080, "protocol": "TCP"},
                {"name": "turnpike-admin", "containerPort": 7901, "protocol": "TCP"},
            ])
        );
        let args = &sc["args"];
        assert_eq!(args[3], "0.0.0.0:7080");
        assert_eq!(args[5], "http://127.0.0.1:3000");
        assert_eq!(args[7], "0.0.0.0:7901");
        assert_eq!(sc["readinessProbe"]["httpGet"]["port"], "turnpike-admin");
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}, "annotations": {
                "turnpike.dev/listen-port": "9080", "turnpike.dev/upstream-port": "8081"}},
            "spec": {"containers": [{"name": "app"}]},
        }));
        let inj = injection(&p, &c).unwrap();
        assert_eq!((inj.listen_port, inj.upstream_port), (9080, 8081));
        // The configured admin port is the one refused, not the built-in default.
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}, "annotations": {"turnpike.dev/listen-port": "7901"}},
            "spec": {"containers": []},
        }));
        assert_eq!(
            injection(&p, &c),
            Err(Refusal::AdminPort {
                annotation: LISTEN_PORT_ANNOTATION,
                port: 7901
            })
        );
        let p = pod(json!({
            "metadata": {"labels": {"app": "a"}, "annotations": {"turnpike.dev/listen-port": "9901"}},
            "spec": {"containers": []},
        }));
        assert!(injection(&p, &c).is_ok());
    }

    #[test]
    fn the_trusted_keys_are_written_into_the_sidecar_and_unsigned_is_not_allowed() {
        let mut c = cfg();
        let trust = turnpike_api::signing::BundleSigner::from_seeds([[3u8; 32].as_slice()])
            .unwrap()
            .public()
            .to_env();
        c.bundle_trust = Some(trust.clone());
        for source in [SidecarBundleSource::Api, SidecarBundleSource::Files] {
            c.bundle_source = source;
            let sc = sidecar_container(&c, "orders", 9080, 8080);
            assert!(
                sc["env"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"name": "TURNPIKE_BUNDLE_TRUST", "value": trust})),
                "{source:?}: {sc}"
            );
            let args = sc["args"].as_array().unwrap();
            assert!(
                !args.contains(&json!("--insecure-unsigned-bundles")),
                "{source:?}"
            );
            assert!(
                args.windows(2)
                    .any(|w| w == [json!("--target"), json!("orders")])
            );
        }
    }

    #[test]
    fn the_files_source_gives_the_sidecar_no_token_and_no_api_flags() {
        let mut c = cfg();
        c.bundle_source = SidecarBundleSource::Files;
        let sc = sidecar_container(&c, "orders", 9080, 8080);
        let args: Vec<&str> = sc["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(!args.contains(&"--bundle-source"));
        // Only the namespace, for the target check: no pod name or UID (no Events).
        let env: Vec<&str> = sc["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(env, ["POD_NAMESPACE"]);
        assert!(args.windows(2).any(|w| w == ["--target", "orders"]));
        // No trust list configured: unsigned, and the pod spec says so.
        assert!(args.contains(&"--insecure-unsigned-bundles"));
        assert!(sc["volumeMounts"].as_array().unwrap().contains(&json!(
            {"name": NO_TOKEN_VOLUME_NAME, "mountPath": SA_TOKEN_PATH, "readOnly": true}
        )));
        let api = sidecar_container(&cfg(), "orders", 9080, 8080);
        assert!(api["volumeMounts"].as_array().unwrap().contains(&json!(
            {"name": API_TOKEN_VOLUME_NAME, "mountPath": SA_TOKEN_PATH, "readOnly": true}
        )));

        // The volumes added to the pod: the empty directory (no sizeLimit, see
        // `no_token_volume`) with files, the projected token with the API source.
        let p = pod(json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [{"name": "app"}], "volumes": []},
        }));
        let added = |c: &InjectorConfig| -> Vec<Value> {
            injection(&p, c)
                .unwrap()
                .patch
                .0
                .iter()
                .filter_map(|op| match op {
                    PatchOperation::Add(a) if a.path.as_str() == "/spec/volumes/-" => {
                        Some(a.value.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        let files = added(&c);
        assert_eq!(
            files[2],
            json!({"name": NO_TOKEN_VOLUME_NAME, "emptyDir": {}})
        );
        let api = added(&cfg());
        assert_eq!(api[2]["name"], API_TOKEN_VOLUME_NAME);
        assert_eq!(
            api[2]["projected"]["sources"][0],
            json!({"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}})
        );
        // A pod that already uses the name is refused rather than patched over.
        let taken = pod(json!({
            "metadata": {"labels": {"app": "orders"}},
            "spec": {"containers": [], "volumes": [{"name": API_TOKEN_VOLUME_NAME, "emptyDir": {}}]},
        }));
        assert!(matches!(
            injection(&taken, &cfg()),
            Err(Refusal::VolumeInUse { .. })
        ));
    }

    #[test]
    fn target_sources_in_order_and_named_in_refusals() {
        let with = |meta: Value| pod(json!({"metadata": meta, "spec": {"containers": []}}));
        let t = |meta: Value| target(&with(meta));
        assert_eq!(
            t(
                json!({"annotations": {"turnpike.dev/target": "a"}, "labels": {"app.kubernetes.io/name": "b", "app": "c"}})
            ),
            Ok("a".into())
        );
        assert_eq!(
            t(json!({"labels": {"app.kubernetes.io/name": "b", "app": "c"}})),
            Ok("b".into())
        );
        assert_eq!(t(json!({"labels": {"app": "c"}})), Ok("c".into()));
        assert_eq!(t(json!({})), Err(Refusal::NoTarget));
        let err = t(json!({"labels": {"app": "Orders_V2"}})).unwrap_err();
        assert!(
            err.to_string().starts_with("label app (used as the target because annotation turnpike.dev/target and label app.kubernetes.io/name are not set) is \"Orders_V2\""),
            "{err}"
        );
    }
}
