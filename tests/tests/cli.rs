//! `kubectl-turnpike` against a real API server with the operator running: issue,
//! list, rotate, revoke and describe, as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use turnpike_api::{
    bundle::{self, KeyBundle, KeyEntry},
    hash,
};
use turnpike_e2e::{
    Process, Run, binary, eventually, install_crds, jsonpath, kubectl, kubectl_ok, namespace,
    start_operator,
};

const WAIT: Duration = Duration::from_secs(60);
const MARK: &str = "# TOKEN (shown once, store it now): ";

/// The operator with a Lease of its own, so it never waits on another test's leader.
fn operator(system_ns: &str) -> Process {
    start_operator(
        system_ns,
        "turnpike-cli-e2e",
        "cli-e2e",
        "operator-cli",
        &[],
    )
}

/// Runs the plugin binary against `KUBECONFIG`.
fn turnpike(args: &[&str]) -> Run {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "the e2e suite needs a cluster: run scripts/e2e (local control plane) or set KUBECONFIG"
    );
    Command::new(binary("kubectl-turnpike"))
        .args(args)
        .output()
        .expect("running kubectl-turnpike")
        .into()
}

fn turnpike_ok(args: &[&str], op: &Process) -> Run {
    let run = turnpike(args);
    assert!(
        run.ok,
        "kubectl-turnpike {args:?} failed:\n{}\n{}\noperator log:\n{}",
        run.stdout,
        run.stderr,
        op.output()
    );
    run
}

/// The one token line; panics unless there is exactly one.
fn token_of(run: &Run) -> String {
    let tokens: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(MARK))
        .collect();
    assert_eq!(tokens.len(), 1, "{}", run.stdout);
    let token = tokens[0].to_owned();
    assert_eq!(run.stdout.matches(&token).count(), 1, "token printed twice");
    assert!(!run.stderr.contains(&token), "token on stderr");
    token
}

fn key_entry(ns: &str, target: &str, key_id: &str) -> Option<KeyEntry> {
    let name = bundle::object_name(target);
    let b64 = jsonpath("secret", ns, &name, "{.data.keys\\.json}");
    let keys = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
    let keys = bundle::parse::<KeyBundle>(std::str::from_utf8(&keys).ok()?).ok()?;
    keys.keys
        .into_iter()
        .find(|(id, _)| id.as_str() == key_id)
        .map(|(_, e)| e)
}

fn secret_exists(ns: &str, name: &str) -> bool {
    kubectl(&["get", "secret", name, "-n", ns], None).ok
}

fn list_line(run: &Run, name: &str) -> String {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{}", run.stdout))
        .to_owned()
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn issue_list_rotate_revoke_describe() {
    install_crds();
    let ns = namespace("e2e-cli");
    let system = namespace("e2e-cli-system");
    let mut op = operator(&system);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}]\n"
        )),
    );

    // issue: the token is printed once and verifies against the bundle; the delivery
    // Secret is gone.
    let run = turnpike_ok(
        &[
            "issue",
            "billing",
            "-n",
            &ns,
            "--scopes",
            "orders:read",
            "--targets",
            "orders",
            "--owner",
            "team-billing",
            "--expires",
            "720h",
        ],
        &op,
    );
    let token = token_of(&run);
    let key_id = jsonpath("apikey", &ns, "billing", "{.status.keyId}");
    assert_eq!(key_id.len(), 12);
    assert!(token.starts_with(&format!("tpk_{key_id}_")), "{token}");
    assert!(
        run.stdout.contains("Secret") && run.stdout.contains("deleted"),
        "{}",
        run.stdout
    );
    assert!(!secret_exists(&ns, "billing-token"), "delivery Secret left");
    let entry = eventually("the key in bundle turnpike-orders", WAIT, || {
        key_entry(&ns, "orders", &key_id)
    });
    assert!(hash::verify(&entry.secrets[0].hash, &token));

    // issue of an existing name fails and changes nothing.
    let again = turnpike(&["issue", "billing", "-n", &ns, "--scopes", "orders:read"]);
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{again:?}"
    );
    assert_eq!(
        jsonpath("apikey", &ns, "billing", "{.status.keyId}"),
        key_id
    );

    // list: one namespace, then all of them.
    let list = turnpike_ok(&["list", "-n", &ns], &op);
    assert!(list.stdout.starts_with("NAME "), "{}", list.stdout);
    let line = list_line(&list, "billing");
    for part in [key_id.as_str(), "Active", "orders:read", "team-billing"] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    let all = turnpike_ok(&["list", "-A"], &op);
    assert!(all.stdout.starts_with("NAMESPACE "), "{}", all.stdout);
    assert!(list_line(&all, "billing").starts_with(&ns));

    // rotate: a new token for the same key id; the old one works for the grace period.
    let run = turnpike_ok(&["rotate", "billing", "-n", &ns], &op);
    let new_token = token_of(&run);
    assert_ne!(new_token, token);
    assert!(
        new_token.starts_with(&format!("tpk_{key_id}_")),
        "same key id"
    );
    assert!(
        run.stdout
            .contains("The previous token keeps working until"),
        "{}",
        run.stdout
    );
    assert!(!secret_exists(&ns, "billing-token"), "delivery Secret left");
    let entry = eventually("the rotated key in the bundle", WAIT, || {
        key_entry(&ns, "orders", &key_id).filter(|e| e.secrets.len() == 2)
    });
    assert!(hash::verify(&entry.secrets[0].hash, &new_token));
    assert!(hash::verify(&entry.secrets[1].hash, &token));

    // revoke --wait: phase Revoked, in the list too.
    let run = turnpike_ok(&["revoke", "billing", "-n", &ns, "--wait"], &op);
    assert!(
        run.stdout.contains("ApiKey") && run.stdout.contains("is Revoked"),
        "{}",
        run.stdout
    );
    let list = turnpike_ok(&["list", "-n", &ns], &op);
    assert!(
        list_line(&list, "billing").contains("Revoked"),
        "{}",
        list.stdout
    );
    // A revoked key is not rotated.
    let refused = turnpike(&["rotate", "billing", "-n", &ns]);
    assert!(
        !refused.ok && refused.stderr.contains("revoked"),
        "{refused:?}"
    );

    // describe: status and the Events regarding the key, never a token or a hash.
    let text = eventually("KeyRevoked in describe", WAIT, || {
        let run = turnpike(&["describe", "billing", "-n", &ns]);
        (run.ok && run.stdout.contains("KeyRevoked")).then_some(run.stdout)
    });
    for expected in [
        "KeyIssued",
        "KeyRotated",
        "KeyRevoked",
        key_id.as_str(),
        "Revoked",
    ] {
        assert!(text.contains(expected), "{expected} not in\n{text}");
    }
    assert!(
        !text.contains(&token) && !text.contains(&new_token) && !text.contains("argon2"),
        "{text}"
    );

    // Names that do not exist.
    let missing = turnpike(&["describe", "nope", "-n", &ns]);
    assert!(!missing.ok, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains(&format!("ApiKey {ns}/nope not found")),
        "{}",
        missing.stderr
    );

    assert!(op.running(), "operator exited:\n{}", op.output());
    assert!(op.terminate(Duration::from_secs(20)), "graceful shutdown");
    for n in [&ns, &system] {
        kubectl_ok(&["delete", "namespace", n, "--wait=false"], None);
    }
}
