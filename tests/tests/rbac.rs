//! Least privilege, proven against the real authorizer: `deploy/rbac.yaml` (whose rules
//! `scripts/chart-check` keeps equal to the chart's `templates/rbac.yaml`) is applied
//! under fresh names, and the real operator binary runs with a kubeconfig that
//! impersonates the operator's ServiceAccount (kubeconfig `as:`, which kube-rs sends as
//! `Impersonate-User`; the API server then authorizes each request as that
//! ServiceAccount, groups included). It must do its whole job (key issued, bundle
//! written, Events, Lease, webhook registered and injecting) without one refusal, and
//! the ServiceAccount must be refused what it has no reason to do.
//!
//! The sidecars' side, with the Role and RoleBinding `turnpike-sidecar` that this
//! operator (so within its own RBAC: the API server refuses a Role granting more than
//! its author holds) writes next to the bundle: a ServiceAccount of the namespace may
//! get/list/watch exactly the target's bundle objects and create/patch Events, nothing
//! else (checked with `kubectl auth can-i --as`); and the real sidecar binary,
//! impersonating that ServiceAccount, loads its bundle through the watch (list and
//! watch with the `metadata.name` field selector that `resourceNames` needs), follows
//! a revocation, and writes and patches its Events, without one refusal. When the
//! namespace's last target goes, the operator removes the Role and RoleBinding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use turnpike_e2e::{
    Process, binary, bundle_trust, can_i, curl, events_for, eventually, install_crds, jsonpath,
    kubeconfig_as, kubectl, kubectl_ok, namespace, repo_root, service_account_user, sidecar_events,
    start_operator_with_env, upstream,
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
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app.kubernetes.io/name: orders}}\nspec:\n  containers:\n  - name: app\n    image: registry.example.com/app:1.0\n    imagePullPolicy: Never\n"
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
            "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: gen, namespace: {ns}}}\nspec: {{targets: [orders], scopes: ['orders:read']}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}, {{match: {{methods: [GET], path: '/admin/**'}}, scopes: ['admin']}}]\n"
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

    the_sidecar_may_do_its_job_and_nothing_else(&ns, &system, &op);

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
        ("create", "rolebindings", &["-n", &ns]),
        ("patch", "roles/turnpike-sidecar", &["-n", &ns]),
        ("delete", "rolebindings/turnpike-sidecar", &["-n", &ns]),
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
        // Roles and RoleBindings: it creates them (the sidecars' `turnpike-sidecar`) but
        // changes or deletes no other, and may neither escalate nor bind beyond what it
        // holds.
        ("create", "clusterrolebindings", &[]),
        ("patch", "rolebindings/someone-elses", &["-n", other_ns]),
        ("delete", "roles/someone-elses", &["-n", other_ns]),
        ("escalate", "roles", &["-n", other_ns]),
        ("bind", "roles", &["-n", other_ns]),
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

/// The Role the operator wrote for the sidecars of `ns` (target `orders`), proven on
/// the real authorizer and by the real sidecar acting as a ServiceAccount of `ns`.
fn the_sidecar_may_do_its_job_and_nothing_else(ns: &str, system: &str, op: &Process) {
    eventually("Role and RoleBinding turnpike-sidecar", WAIT, || {
        let role = jsonpath("role", ns, "turnpike-sidecar", "{.rules[0].resourceNames}");
        let subject = jsonpath("rolebinding", ns, "turnpike-sidecar", "{.subjects[0].name}");
        (role.contains("\"turnpike-orders\"") && subject == format!("system:serviceaccounts:{ns}"))
            .then_some(())
    });
    // Any ServiceAccount of the namespace: the pod's own, whatever it is (the injector
    // mounts that one's token into the sidecar). One that does not even exist is
    // authorized by its name and groups alike.
    let sa = service_account_user(ns, "orders-app");
    eventually("the sidecar's binding to take effect", WAIT, || {
        can_i(&sa, "get", "secrets/turnpike-orders", &["-n", ns]).then_some(())
    });
    let n = ["-n", ns];
    let granted: &[(&str, &str)] = &[
        ("get", "secrets/turnpike-orders"),
        ("list", "secrets/turnpike-orders"),
        ("watch", "secrets/turnpike-orders"),
        ("get", "secrets/turnpike-orders.keys-1"),
        ("get", "secrets/turnpike-orders.keys-15"),
        ("get", "configmaps/turnpike-orders"),
        ("list", "configmaps/turnpike-orders"),
        ("watch", "configmaps/turnpike-orders"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
    ];
    for (verb, resource) in granted {
        assert!(
            can_i(&sa, verb, resource, &n),
            "the sidecar may not {verb} {resource}"
        );
    }
    let refused: &[(&str, &str, &[&str])] = &[
        // No other Secret: not the tokens, the key material, the admin token, nor
        // another target's bundle; and no list or watch of all Secrets.
        ("get", "secrets/gen-token", &n),
        ("get", "secrets/turnpike-key-gen", &n),
        ("get", "secrets/turnpike.admin", &n),
        ("get", "secrets/turnpike-catalog", &n),
        ("get", "secrets/turnpike-orders.keys-16", &n),
        ("list", "secrets", &n),
        ("watch", "secrets", &n),
        ("list", "configmaps", &n),
        ("get", "configmaps/kube-root-ca.crt", &n),
        // Read only: no writes to its bundle.
        ("update", "secrets/turnpike-orders", &n),
        ("patch", "configmaps/turnpike-orders", &n),
        ("delete", "secrets/turnpike-orders", &n),
        ("create", "secrets", &n),
        // Events: written, never read or deleted; no core-group Events.
        ("get", "events.events.k8s.io", &n),
        ("list", "events.events.k8s.io", &n),
        ("delete", "events.events.k8s.io", &n),
        ("create", "events", &n),
        // Nothing else of the namespace or the cluster.
        ("get", "pods", &n),
        ("list", "pods", &n),
        ("create", "pods", &["-n", ns, "--subresource=exec"]),
        ("get", "apikeys.turnpike.dev", &n),
        ("list", "serviceaccounts", &n),
        (
            "create",
            "serviceaccounts",
            &["-n", ns, "--subresource=token"],
        ),
        ("get", "roles/turnpike-sidecar", &n),
        ("patch", "roles/turnpike-sidecar", &n),
        ("create", "rolebindings", &n),
        ("get", "secrets/turnpike-orders", &["-n", "default"]),
        ("list", "secrets", &["--all-namespaces"]),
        ("list", "namespaces", &[]),
    ];
    for (verb, resource, more) in refused {
        assert!(
            !can_i(&sa, verb, resource, more),
            "a sidecar's ServiceAccount may {verb} {resource} {more:?}"
        );
    }

    // The real sidecar, as that ServiceAccount: bundle from the watch only (no mounted
    // directory), Events created and patched.
    let token = eventually("the token of gen", WAIT, || {
        let t = kubectl(
            &[
                "get",
                "secret",
                "gen-token",
                "-n",
                ns,
                "-o",
                "go-template={{.data.token | base64decode}}",
            ],
            None,
        );
        (t.ok && t.stdout.starts_with("tpk_")).then(|| t.stdout.trim().to_string())
    });
    let kubeconfig = kubeconfig_as(&sa, "rbac-sidecar");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let up = upstream();
    let (port, admin) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin_listen = format!("127.0.0.1:{admin}");
    let upstream_url = format!("http://127.0.0.1:{up}");
    // It trusts the operator's signing key, as an injected sidecar does.
    let trust = bundle_trust(system);
    let mut sidecar = Process::start_with_env(
        &binary("turnpike-sidecar"),
        &[
            "--bundle-source",
            "api",
            "--bundle-trust",
            &trust,
            "--target",
            "orders",
            "--namespace",
            ns,
            "--pod-name",
            "orders-rbac-pod",
            "--event-series-interval",
            "1s",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
            "--upstream",
            &upstream_url,
            "--log-format",
            "pretty",
        ],
        &[("KUBECONFIG", &kubeconfig)],
        "sidecar-rbac",
    );
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    eventually(
        "the sidecar to be ready on the watched bundle",
        WAIT,
        || (curl(&[&readyz]).0 == 200).then_some(()),
    );
    let key = format!("x-api-key: {token}");
    let orders = format!("http://127.0.0.1:{port}/orders/1");
    let admin_route = format!("http://127.0.0.1:{port}/admin/users");
    assert_eq!(curl(&["-H", &key, &orders]).0, 200);
    assert_eq!(curl(&["-H", &key, &admin_route]).0, 403);
    eventually("a ScopeDenied Event created by the sidecar", WAIT, || {
        sidecar_events(ns)
            .iter()
            .any(|e| e.reason == "ScopeDenied")
            .then_some(())
    });
    // Repeats after the series interval: the same Event, patched.
    eventually("the ScopeDenied Event patched with a series", WAIT, || {
        assert_eq!(curl(&["-H", &key, &admin_route]).0, 403);
        sidecar_events(ns)
            .iter()
            .any(|e| e.reason == "ScopeDenied" && e.count >= 2)
            .then_some(())
    });
    // The watch (not only the first list) is authorized: a revocation arrives.
    kubectl_ok(
        &[
            "patch",
            "apikey",
            "gen",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"revoked":true}}"#,
        ],
        None,
    );
    eventually("the revoked key to get 401 through the watch", WAIT, || {
        (curl(&["-H", &key, &orders]).0 == 401).then_some(())
    });
    assert!(sidecar.running(), "sidecar exited:\n{}", sidecar.output());
    let log = sidecar.output();
    let lower = log.to_ascii_lowercase();
    assert!(
        !lower.contains("forbidden"),
        "the sidecar was refused something its Role should grant:\n{log}"
    );
    assert!(!log.contains(&token), "token in the sidecar's log");
    assert!(sidecar.terminate(Duration::from_secs(20)));
    // Many reconciles so far (issuance, statuses, the revocation), one target all
    // along: the real API server returns the Role as written, so it was written once.
    let writes = op
        .output()
        .matches("sidecar Role and RoleBinding written")
        .count();
    assert_eq!(writes, 1, "{}", op.output());

    // The namespace's last target goes: its bundle, then the Role and RoleBinding.
    kubectl_ok(
        &[
            "delete",
            "apikey/gen",
            "accesspolicy/orders",
            "-n",
            ns,
            "--wait=true",
        ],
        None,
    );
    eventually("the sidecars' Role and RoleBinding removed", WAIT, || {
        let left = kubectl_ok(
            &[
                "get",
                "role,rolebinding,configmap",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/managed-by=turnpike-operator",
                "-o",
                "name",
            ],
            None,
        );
        left.trim().is_empty().then_some(())
    });
    eventually("the authorizer to drop the grant", WAIT, || {
        (!can_i(&sa, "get", "secrets/turnpike-orders", &n)).then_some(())
    });
}
