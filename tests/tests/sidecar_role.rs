//! `--sidecar-role-binding none` on a real API server: the operator writes the sidecars'
//! Role `turnpike-sidecar` and keeps its names current, but no RoleBinding; a binding the
//! platform team makes to one ServiceAccount grants that one only, and follows the Role
//! as targets are added.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use turnpike_e2e::{
    can_i, eventually, install_crds, jsonpath, kubectl, kubectl_ok, namespace,
    service_account_user, start_operator,
};

const WAIT: Duration = Duration::from_secs(60);

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = kubectl(&["delete", "namespace", n, "--wait=false"], None);
        }
    }
}

fn policy(ns: &str, target: &str) -> String {
    format!(
        "apiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {target}, namespace: {ns}}}\nspec:\n  targetRef: {{name: {target}}}\n  rules: [{{match: {{methods: [GET], path: '/**'}}, scopes: ['read']}}]\n"
    )
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn with_role_binding_none_the_team_binds_exactly_its_service_accounts() {
    install_crds();
    let system = namespace("e2e-sr-system");
    let ns = namespace("e2e-sr");
    let _cleanup = Cleanup(vec![system.clone(), ns.clone()]);
    let mut op = start_operator(
        &system,
        "tp-sr",
        "sr-e2e",
        "operator-sidecar-role",
        &["--sidecar-role-binding", "none"],
    );

    kubectl_ok(&["apply", "-f", "-"], Some(&policy(&ns, "orders")));
    eventually("Role turnpike-sidecar naming turnpike-orders", WAIT, || {
        jsonpath("role", &ns, "turnpike-sidecar", "{.rules[1].resourceNames}")
            .contains("\"turnpike-orders\"")
            .then_some(())
    });
    // Written in the same step as the Role would be: none of ours.
    assert!(
        !kubectl(&["get", "rolebinding", "turnpike-sidecar", "-n", &ns], None).ok,
        "the operator bound the Role although told not to"
    );
    let orders = service_account_user(&ns, "orders");
    let other = service_account_user(&ns, "default");
    let n = ["-n", ns.as_str()];
    assert!(!can_i(&orders, "get", "secrets/turnpike-orders", &n));

    // The team binds the Role to the orders workload's ServiceAccount only.
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "orders-sidecar",
            "--role",
            "turnpike-sidecar",
            "--serviceaccount",
            &format!("{ns}:orders"),
            "-n",
            &ns,
        ],
        None,
    );
    eventually("the team's binding to take effect", WAIT, || {
        can_i(&orders, "watch", "configmaps/turnpike-orders", &n).then_some(())
    });
    assert!(can_i(&orders, "create", "events.events.k8s.io", &n));
    assert!(!can_i(&orders, "get", "secrets/turnpike.admin", &n));
    for (verb, resource) in [
        ("get", "secrets/turnpike-orders"),
        ("watch", "configmaps/turnpike-orders"),
        ("create", "events.events.k8s.io"),
    ] {
        assert!(
            !can_i(&other, verb, resource, &n),
            "an unbound ServiceAccount may {verb} {resource}"
        );
    }

    // A new target: the operator extends the Role, the team's binding follows.
    kubectl_ok(&["apply", "-f", "-"], Some(&policy(&ns, "catalog")));
    eventually("the Role to name turnpike-catalog", WAIT, || {
        can_i(&orders, "get", "secrets/turnpike-catalog", &n).then_some(())
    });
    assert!(!can_i(&other, "get", "secrets/turnpike-catalog", &n));
    assert!(
        kubectl(&["get", "rolebinding", "orders-sidecar", "-n", &ns], None).ok,
        "the team's binding was touched"
    );
    assert!(op.running(), "operator exited:\n{}", op.output());
    assert!(!op.output().to_ascii_lowercase().contains("forbidden"));
}
