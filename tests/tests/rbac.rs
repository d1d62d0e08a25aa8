//! Least privilege, proven against the real authorizer: `deploy/rbac.yaml` (whose rules
//! `scripts/chart-check` keeps equal to the chart's `templates/rbac.yaml`) is applied
//! under fresh names, and the real operator binary runs with a kubeconfig that
//! impersonates the operator's ServiceAccount (kubeconfig `as:`, which kube-rs sends as
//! `Impersonate-User`; the API server then authorizes each request as that
//! ServiceAccount, groups included). It must do its whole job (key issued, bundle
//! written, Events, Lease, webhook registered and injecting) without one refusal, and
//! the ServiceAccount must be refused what it has no reason to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use turnpike_e2e::{
    can_i, events_for, eventually, install_crds, jsonpath, kubeconfig_as, kubectl, kubectl_ok,
    namespace, repo_root, service_account_user, start_operator_with_env,
};

const WAIT: Duration = Duration::from_secs(60);

/// Deletes the cluster-wide objects and namespaces of the test, even when it fails.
struct Cleanup {
    name: String,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A left-over `turnpike-injector` (failurePolicy Fail, pointing at a dead port)
        // would refuse opted-in pods of later tests on the same control plane.
        let _ = kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                "turnpike-injector",
                "--ignore-not-found",
            ],
            None,
        );
        for kind in ["clusterrolebinding", "clusterrole"] {
            let _ = kubectl(&["delete", kind, &self.name, "--ignore-not-found"], None);
        }
        for n in &self.namespaces {
            let _ = kubectl(&["delete", "namespace", n, "--wait=false"], None);
        }
    }
}

/// deploy/rbac.yaml with the operator's namespace and object names replaced, so the test
/// neither needs nor disturbs an installed Turnpike (`turnpike-system`,
/// `turnpike-operator`). The Lease's `resourceNames` follow the name, as the chart's
/// `leaderElection.leaseName` does.
fn rbac_manifest(system_ns: &str, name: &str) -> String {
    let path = repo_root().join("deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("turnpike-system") && text.contains("turnpike-operator"));
    text.replace("turnpike-system", system_ns)
        .replace("turnpike-operator", name)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn pod_yaml(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app.kubernetes.io/name: orders}}\nspec:\n  containers:\n  - name: app\n    image: registry.example.com/app:1.0\n"
    )
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_operator_does_its_job_with_exactly_its_rbac() {
    install_crds();
    let system = namespace("e2e-rbac-system");
    let name = format!("tp-{system}");
    let mut cleanup = Cleanup {
        name: name.clone(),
        namespaces: vec![system.clone()],
    };
    kubectl_ok(&["apply", "-f", "-"], Some(&rbac_manifest(&system, &name)));
    let sa = service_account_user(&system, &name);

    // The bindings are in force (the authorizer's cache follows within moments).
    eventually("the ServiceAccount's bindings to take effect", WAIT, || {
        (can_i(&sa, "list", "apikeys.turnpike.dev", &["--all-namespaces"])
            && can_i(&sa, "update", &format!("leases/{name}"), &["-n", &system]))
        .then_some(())
    });

    let ns = namespace("e2e-rbac");
    cleanup.namespaces.push(ns.clone());
    // Injection by namespace label makes the webhook read the Namespace (its labels).
    kubectl_ok(
        &["label", "namespace", &ns, "turnpike.dev/inject=enabled"],
        None,
    );

    let kubeconfig = kubeconfig_as(&sa, "rbac-operator");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    let identity = "rbac-e2e";
    let mut op = start_operator_with_env(
        &system,
        &name,
        identity,
        "operator-rbac",
        &[
            "--webhook-listen",
            &listen,
            "--webhook-url",
            &url,
            "--sidecar-image",
            "ghcr.io/turnpike/turnpike-sidecar:e2e",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    );

    // Leader election: the Lease (named as the Role allows) is held by this operator.
    eventually("the Lease to be held", WAIT, || {
        (jsonpath("lease", &system, &name, "{.spec.holderIdentity}") == identity).then_some(())
    });

    // Reconciliation: key issued, status written, token and bundle written, Events.
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: gen, namespace: {ns}}}\nspec: {{targets: [orders], scopes: ['orders:read']}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}]\n"
        )),
    );
    eventually("ApiKey gen to become Active", WAIT, || {
        (jsonpath("apikey", &ns, "gen", "{.status.phase}") == "Active").then_some(())
    });
    assert!(!jsonpath("secret", &ns, "gen-token", "{.data.token}").is_empty());
    eventually("bundle Secret and ConfigMap turnpike-orders", WAIT, || {
        let keys = jsonpath("secret", &ns, "turnpike-orders", "{.data.keys\\.json}");
        let policy = jsonpath("configmap", &ns, "turnpike-orders", "{.data.policy\\.json}");
        (!keys.is_empty() && !policy.is_empty()).then_some(())
    });
    assert_eq!(
        jsonpath(
            "accesspolicy",
            &ns,
            "orders",
            "{.status.conditions[?(@.type==\"Accepted\")].status}"
        ),
        "True"
    );
    eventually("a KeyIssued Event regarding ApiKey gen", WAIT, || {
        events_for(&ns, "ApiKey", "gen")
            .iter()
            .any(|(reason, _)| reason == "KeyIssued")
            .then_some(())
    });

    // The webhook: certificate Secret written, configuration registered with its CA.
    let want_url = format!("{url}/mutate-pods");
    eventually("turnpike-injector registered with a caBundle", WAIT, || {
        let run = kubectl(
            &[
                "get",
                "mutatingwebhookconfiguration",
                "turnpike-injector",
                "-o",
                "json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        let hooks = v["webhooks"].as_array()?;
        (hooks.len() == 2
            && hooks.iter().all(|h| {
                h["clientConfig"]["url"] == want_url
                    && h["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
            }))
        .then_some(())
    });
    assert!(
        !jsonpath(
            "secret",
            &system,
            "turnpike-webhook-certs",
            "{.data.ca\\.crt}"
        )
        .is_empty()
    );
    // And it injects a pod of the labelled namespace (the handler reads the Namespace
    // with the operator's credentials). The API server may need a moment to load the
    // new configuration: retry until the sidecar shows. Skipped where the API server
    // cannot reach this host's loopback (kind: tests/kind/run.sh sets the variable).
    let reachable = std::env::var("TURNPIKE_E2E_WEBHOOK_UNREACHABLE").is_err();
    eventually("a pod injected by namespace label", WAIT, || {
        if !reachable {
            return Some(());
        }
        let _ = kubectl(
            &["delete", "pod", "orders", "-n", &ns, "--wait=false"],
            None,
        );
        if !kubectl(&["apply", "-f", "-"], Some(&pod_yaml(&ns, "orders"))).ok {
            return None;
        }
        let names = jsonpath("pod", &ns, "orders", "{.spec.initContainers[*].name}");
        names.contains("turnpike-sidecar").then_some(())
    });

    // Nothing was refused along the way.
    assert!(op.running(), "operator exited:\n{}", op.output());
    let log = op.output();
    let lower = log.to_ascii_lowercase();
    assert!(
        !lower.contains("forbidden") && !lower.contains("rbac forbids"),
        "the operator was refused something its RBAC should grant:\n{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    assert!(
        op.terminate(Duration::from_secs(20)),
        "graceful shutdown:\n{}",
        op.output()
    );
    // Released on shutdown: the update that clears the holder was allowed too.
    let holder = jsonpath("lease", &system, &name, "{.spec.holderIdentity}");
    assert_ne!(holder, identity, "the Lease was not released");
    let lower = op.output().to_ascii_lowercase();
    assert!(!lower.contains("forbidden"), "{}", op.output());

    // What it is granted, the real authorizer agrees with (so the refusals below are
    // not an artefact of a broken impersonation).
    let lease = format!("leases/{name}");
    let granted: &[(&str, &str, &[&str])] = &[
        ("create", "events.events.k8s.io", &["-n", &ns]),
        (
            "patch",
            "apikeys.turnpike.dev",
            &["-n", &ns, "--subresource=status"],
        ),
        ("update", &lease, &["-n", &system]),
        (
            "patch",
            "mutatingwebhookconfigurations/turnpike-injector",
            &[],
        ),
        ("create", "secrets", &["-n", &ns]),
    ];
    for (verb, resource, more) in granted {
        assert!(
            can_i(&sa, verb, resource, more),
            "{verb} {resource} {more:?}"
        );
    }

    // What it has no reason to do, the authorizer refuses.
    let other_ns = ns.as_str();
    let refused: &[(&str, &str, &[&str])] = &[
        // CRDs are installed by the chart or `kubectl apply -f crds/`, never the operator.
        (
            "delete",
            "customresourcedefinitions.apiextensions.k8s.io",
            &[],
        ),
        (
            "create",
            "customresourcedefinitions.apiextensions.k8s.io",
            &[],
        ),
        // Users and GitOps own the Turnpike objects.
        ("create", "apikeys.turnpike.dev", &["-n", other_ns]),
        ("delete", "apikeys.turnpike.dev", &["-n", other_ns]),
        ("delete", "accesspolicies.turnpike.dev", &["-n", other_ns]),
        // No namespaces, pods or workloads are created or changed.
        ("create", "namespaces", &[]),
        ("delete", "namespaces", &[]),
        ("create", "pods", &["-n", other_ns]),
        ("patch", "pods", &["-n", other_ns]),
        ("create", "deployments.apps", &["-n", other_ns]),
        ("create", "pods", &["-n", other_ns, "--subresource=exec"]),
        (
            "create",
            "serviceaccounts",
            &["-n", other_ns, "--subresource=token"],
        ),
        // Only its own webhook configuration, and no validating ones.
        ("patch", "mutatingwebhookconfigurations/someone-elses", &[]),
        (
            "delete",
            "mutatingwebhookconfigurations/turnpike-injector",
            &[],
        ),
        ("get", "mutatingwebhookconfigurations/someone-elses", &[]),
        ("create", "validatingwebhookconfigurations", &[]),
        // No privilege escalation through RBAC.
        ("create", "clusterrolebindings", &[]),
        ("create", "rolebindings", &["-n", other_ns]),
        ("escalate", "clusterroles", &[]),
        ("bind", "clusterroles", &[]),
        ("impersonate", "users", &[]),
        // Core-group Events are not written (events.k8s.io only); no nodes.
        ("create", "events", &["-n", other_ns]),
        ("list", "nodes", &[]),
        // Leases only in its own namespace, and only its own name there.
        ("create", "leases.coordination.k8s.io", &["-n", other_ns]),
        ("update", "leases/another-lease", &["-n", &system]),
    ];
    for (verb, resource, more) in refused {
        assert!(
            !can_i(&sa, verb, resource, more),
            "the operator's ServiceAccount may {verb} {resource} {more:?}"
        );
    }

    // The refusals reach the operator too, so it really ran as the ServiceAccount (kube-rs
    // honours the kubeconfig's `as:`): told to use a namespace that does not exist, it
    // tries to create it and is forbidden.
    let whoami = kubectl_ok(
        &[
            "--kubeconfig",
            &kubeconfig,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(whoami, sa);
    let missing = format!("{system}-absent");
    let mut refused_op = start_operator_with_env(
        &missing,
        &name,
        "rbac-e2e-refused",
        "operator-rbac-refused",
        &[],
        &[("KUBECONFIG", &kubeconfig)],
    );
    eventually(
        "the operator to exit on the refused namespace",
        WAIT,
        || (!refused_op.running()).then_some(()),
    );
    let out = refused_op.output();
    assert!(
        out.contains("creating namespace") && out.to_ascii_lowercase().contains("forbidden"),
        "{out}"
    );
    assert!(!kubectl(&["get", "namespace", &missing], None).ok);
    drop(cleanup);
}
