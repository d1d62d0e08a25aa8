//! Every failure of a cluster command, phrased for the person at the terminal: what
//! was refused, and what to do about it. [`from_kube`] is the one place that turns a
//! `kube::Error` into one of these.

use std::error::Error as StdError;

use kube::core::Status;

/// The kinds of objects the plugin reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `apikeys.turnpike.dev`.
    ApiKey,
    /// Core `secrets` (the token delivery Secret).
    Secret,
    /// `events.events.k8s.io`.
    Event,
    /// Core `pods` (the pods a sidecar serves in).
    Pod,
    /// The `pods/proxy` subresource (the API server's proxy to a pod's port).
    PodProxy,
}

impl Kind {
    /// The resource as RBAC rules name it.
    pub const fn resource(self) -> &'static str {
        match self {
            Kind::ApiKey => "apikeys.turnpike.dev",
            Kind::Secret => "secrets",
            Kind::Event => "events.events.k8s.io",
            Kind::Pod => "pods",
            Kind::PodProxy => "pods/proxy",
        }
    }

    /// The kind as people write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "ApiKey",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
            Kind::Pod => "Pod",
            Kind::PodProxy => "Pod proxy",
        }
    }
}

/// One API call, described for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// RBAC verb: `get`, `list`, `create`, `patch`, `delete`.
    pub verb: &'static str,
    /// What kind of object.
    pub kind: Kind,
    /// Namespace; `None` for a list across all namespaces.
    pub namespace: Option<String>,
    /// Object name; `None` for a list.
    pub name: Option<String>,
}

impl Op {
    /// An operation on one named object.
    pub fn object(verb: &'static str, kind: Kind, namespace: &str, name: &str) -> Op {
        Op {
            verb,
            kind,
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
        }
    }

    /// A list in one namespace, or across all of them.
    pub fn list(kind: Kind, namespace: Option<&str>) -> Op {
        Op {
            verb: "list",
            kind,
            namespace: namespace.map(str::to_owned),
            name: None,
        }
    }

    /// `ApiKey shop/billing`, `ApiKeys in namespace shop`, `ApiKeys in all namespaces`.
    pub fn target(&self) -> String {
        let kind = self.kind.as_str();
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
            (None, Some(name)) => format!("{kind} {name}"),
            (Some(ns), None) => format!("{kind}s in namespace {ns}"),
            (None, None) => format!("{kind}s in all namespaces"),
        }
    }

    fn place(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".to_owned(),
        }
    }
}

/// Why a cluster command failed. Messages never contain a token or a hash.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No configuration, or the API server did not answer.
    #[error("cannot reach the Kubernetes API server (KUBECONFIG / in-cluster): {0}")]
    Unreachable(String),
    /// 401: the credentials of the kubeconfig user were not accepted.
    #[error(
        "the API server did not accept your credentials (401 Unauthorized): {message}; check the user of the current kubeconfig context (expired token or certificate?)"
    )]
    Unauthorized {
        /// The API server's message.
        message: String,
    },
    /// 404 on the resource itself, not on an object: the CRDs are missing.
    #[error(
        "the Turnpike CRDs are not installed: kubectl apply -f crds/ (the API server does not serve {resource})"
    )]
    CrdsMissing {
        /// The resource that is not served.
        resource: &'static str,
    },
    /// 403: RBAC refused a verb on a resource.
    #[error(
        "forbidden: your credentials may not {verb} {resource} {place}; ask for an RBAC Role that grants it (API server: {message})"
    )]
    Forbidden {
        /// The refused verb.
        verb: &'static str,
        /// The resource it was refused on.
        resource: &'static str,
        /// `in namespace X` or `cluster-wide`.
        place: String,
        /// The API server's message.
        message: String,
    },
    /// 404 on a named object.
    #[error("{what} not found{hint}")]
    NotFound {
        /// `ApiKey shop/billing`.
        what: String,
        /// Where to look instead (may be empty).
        hint: String,
    },
    /// 404 because the namespace does not exist.
    #[error("namespace {namespace} does not exist")]
    NamespaceNotFound {
        /// The namespace.
        namespace: String,
    },
    /// 409 AlreadyExists on create.
    #[error("{what} already exists{hint}")]
    AlreadyExists {
        /// `ApiKey shop/billing`.
        what: String,
        /// What to do instead (may be empty).
        hint: String,
    },
    /// 400/422: the API server (schema, CEL rules, admission) refused the object.
    #[error("the API server rejected {what}: {message}")]
    Rejected {
        /// `ApiKey shop/billing`.
        what: String,
        /// The API server's message, which names the field.
        message: String,
    },
    /// Any other API answer.
    #[error("{verb} {what}: the API server answered {code} {reason}: {message}")]
    Api {
        /// The verb.
        verb: &'static str,
        /// The object or list.
        what: String,
        /// HTTP status code.
        code: u16,
        /// Machine-readable reason.
        reason: String,
        /// The API server's message.
        message: String,
    },
    /// A client-side failure (decoding an answer, building a request).
    #[error("{verb} {what}: {detail}")]
    Client {
        /// The verb.
        verb: &'static str,
        /// The object or list.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// Waiting for the operator took longer than `--timeout`.
    #[error("timed out after {waited} waiting for {what} (last seen: {last}); {hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout, e.g. `1m`.
        waited: String,
        /// The last state observed.
        last: String,
        /// What to check, and what was left behind.
        hint: String,
    },
    /// The operator refused the key (condition `Ready` with reason Invalid or
    /// Conflicted).
    #[error("{what} was not issued: {reason}: {message}{cleanup}")]
    NotIssued {
        /// `ApiKey shop/billing`.
        what: String,
        /// `Invalid` or `Conflicted`.
        reason: String,
        /// The condition's message.
        message: String,
        /// What happened to the ApiKey.
        cleanup: String,
    },
    /// The object is in a state the command cannot act on.
    #[error("{0}")]
    State(String),
    /// Writing to stdout or stderr failed (the cause is the error's source, printed
    /// once by `{:#}`).
    #[error("writing output")]
    Output(#[from] std::io::Error),
    /// A result could not be encoded for `-o json|yaml`.
    #[error("encoding {format} output: {message}")]
    Encode {
        /// `json` or `yaml`.
        format: &'static str,
        /// The encoder's message.
        message: String,
    },
}

/// An error and its sources as one line, without repeating a source that the outer
/// message already quotes.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Maps a failed API call to an [`Error`] naming the call.
pub fn from_kube(op: &Op, err: kube::Error) -> Error {
    match err {
        kube::Error::Api(status) => from_status(op, &status),
        e @ (kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::Auth(_)
        | kube::Error::RustlsTls(_)
        | kube::Error::TlsRequired
        | kube::Error::InferConfig(_)
        | kube::Error::InferKubeconfig(_)
        | kube::Error::ProxyProtocolUnsupported { .. }
        | kube::Error::ProxyProtocolDisabled { .. }) => Error::Unreachable(chain(&e)),
        e => Error::Client {
            verb: op.verb,
            what: op.target(),
            detail: chain(&e),
        },
    }
}

/// Maps an API server `Status` answer to an [`Error`] naming the call.
pub fn from_status(op: &Op, status: &Status) -> Error {
    let message = status.message.clone();
    let details = status.details.as_ref();
    match status.code {
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden {
            verb: op.verb,
            resource: op.kind.resource(),
            place: op.place(),
            message,
        },
        404 => match details {
            Some(d) if d.kind == "namespaces" && !d.name.is_empty() => Error::NamespaceNotFound {
                namespace: d.name.clone(),
            },
            // The object is missing: the answer names it.
            Some(d) if !d.name.is_empty() => Error::NotFound {
                what: op.target(),
                hint: match (op.kind, &op.namespace) {
                    (Kind::ApiKey, Some(ns)) => {
                        format!(" (see `kubectl turnpike list -n {ns}`)")
                    }
                    _ => String::new(),
                },
            },
            // The path itself is unknown ("404 page not found", no details): the API
            // server does not serve the resource.
            _ if op.kind == Kind::ApiKey => Error::CrdsMissing {
                resource: op.kind.resource(),
            },
            _ => api(op, status),
        },
        409 if status.reason == "AlreadyExists" => Error::AlreadyExists {
            what: op.target(),
            hint: String::new(),
        },
        400 | 422 => Error::Rejected {
            what: op.target(),
            message,
        },
        _ => api(op, status),
    }
}

fn api(op: &Op, status: &Status) -> Error {
    Error::Api {
        verb: op.verb,
        what: op.target(),
        code: status.code,
        reason: status.reason.clone(),
        message: status.message.clone(),
    }
}

/// True when `err` is a 404 for a named object (not a missing resource type).
pub fn is_object_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404
        && s.details.as_ref().is_some_and(|d| !d.name.is_empty() && d.kind != "namespaces"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kube::core::response::StatusDetails;

    use super::*;

    fn status(code: u16, reason: &str, message: &str, details: Option<(&str, &str)>) -> Status {
        let mut s = Status::failure(message, reason).with_code(code);
        s.details = details.map(|(kind, name)| StatusDetails {
            name: name.into(),
            group: "turnpike.dev".into(),
            kind: kind.into(),
            uid: String::new(),
            causes: Vec::new(),
            retry_after_seconds: 0,
        });
        s
    }

    fn get_key() -> Op {
        Op::object("get", Kind::ApiKey, "shop", "billing")
    }

    #[test]
    fn not_found_object_vs_missing_crds() {
        let e = from_status(
            &get_key(),
            &status(
                404,
                "NotFound",
                "apikeys.turnpike.dev \"billing\" not found",
                Some(("apikeys", "billing")),
            ),
        );
        assert_eq!(
            e.to_string(),
            "ApiKey shop/billing not found (see `kubectl turnpike list -n shop`)"
        );
        // What kube makes of the API server's plain-text "404 page not found".
        let e = from_status(
            &get_key(),
            &Status::failure("404 page not found", "Failed to parse error data").with_code(404),
        );
        assert!(matches!(e, Error::CrdsMissing { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("the Turnpike CRDs are not installed: kubectl apply -f crds/"),
            "{e}"
        );
        let e = from_status(
            &Op::list(Kind::ApiKey, None),
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            ),
        );
        assert!(matches!(e, Error::CrdsMissing { .. }), "{e:?}");
    }

    #[test]
    fn missing_namespace() {
        let e = from_status(
            &Op::object("create", Kind::ApiKey, "nope", "billing"),
            &status(
                404,
                "NotFound",
                "namespaces \"nope\" not found",
                Some(("namespaces", "nope")),
            ),
        );
        assert_eq!(e.to_string(), "namespace nope does not exist");
    }

    #[test]
    fn forbidden_names_verb_resource_and_namespace() {
        let e = from_status(
            &Op::object("delete", Kind::Secret, "shop", "billing-token"),
            &status(
                403,
                "Forbidden",
                "secrets \"billing-token\" is forbidden: User \"dev\" cannot delete resource \"secrets\"",
                None,
            ),
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "forbidden: your credentials may not delete secrets in namespace shop;"
            ),
            "{text}"
        );
        let e = from_status(
            &Op::list(Kind::ApiKey, None),
            &status(403, "Forbidden", "cannot list", None),
        );
        assert!(
            e.to_string()
                .contains("may not list apikeys.turnpike.dev cluster-wide"),
            "{e}"
        );
    }

    #[test]
    fn other_codes() {
        let create = Op::object("create", Kind::ApiKey, "shop", "billing");
        let e = from_status(&create, &status(409, "AlreadyExists", "exists", None));
        assert_eq!(e.to_string(), "ApiKey shop/billing already exists");
        let e = from_status(
            &create,
            &status(422, "Invalid", "spec.scopes[0]: Invalid value", None),
        );
        assert_eq!(
            e.to_string(),
            "the API server rejected ApiKey shop/billing: spec.scopes[0]: Invalid value"
        );
        let e = from_status(&create, &status(401, "Unauthorized", "Unauthorized", None));
        assert!(matches!(e, Error::Unauthorized { .. }));
        let e = from_status(&create, &status(500, "InternalError", "etcd is sad", None));
        assert_eq!(
            e.to_string(),
            "create ApiKey shop/billing: the API server answered 500 InternalError: etcd is sad"
        );
    }

    #[test]
    fn transport_errors_mean_unreachable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = from_kube(&get_key(), kube::Error::Service(Box::new(io)));
        assert_eq!(
            e.to_string(),
            "cannot reach the Kubernetes API server (KUBECONFIG / in-cluster): ServiceError: connection refused"
        );
    }

    #[test]
    fn chain_skips_repeated_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
