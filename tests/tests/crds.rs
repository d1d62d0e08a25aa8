//! The CRDs against a real API server: they install, `kubectl explain` shows our field
//! docs, the canonical example applies, and the API server's own validation refuses
//! every bad sample with the expected message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use turnpike_e2e::{install_crds, kubectl, kubectl_ok, namespace, repo_root};

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn crds_become_established_and_are_listed_in_the_turnpike_category() {
    install_crds();
    for name in [
        "apikeys",
        "accesspolicies",
        "ratelimitpolicies",
        "corspolicies",
    ] {
        let out = kubectl_ok(
            &[
                "get",
                "crd",
                &format!("{name}.turnpike.dev"),
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            None,
        );
        assert_eq!(out.trim(), "True", "{name}");
    }
    let ns = namespace("e2e-cat");
    let out = kubectl_ok(&["get", "turnpike", "-n", &ns], None);
    assert!(out.is_empty() || out.contains("No resources"), "{out}");
    kubectl_ok(&["delete", "namespace", &ns, "--wait=false"], None);
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn kubectl_explain_shows_field_docs() {
    install_crds();
    let out = kubectl_ok(&["explain", "apikey.spec"], None);
    assert!(out.contains("argon2id PHC string"), "{out}");
    assert!(out.contains("expiresAt"), "{out}");
    let out = kubectl_ok(&["explain", "ratelimitpolicy.spec.lockout"], None);
    assert!(out.contains("maxFailures"), "{out}");
    let out = kubectl_ok(&["explain", "apikey"], None);
    // kubectl wraps text: compare with whitespace collapsed.
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Only an argon2id hash of the token is ever stored"),
        "{out}"
    );
}

/// Deletes a namespace the test made, even when it fails (not waiting: the next test
/// that needs the name waits for it to go).
struct NamespaceGuard(&'static str);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "namespace",
                self.0,
                "--ignore-not-found",
                "--wait=false",
            ],
            None,
        );
    }
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn canonical_example_applies_as_written() {
    install_crds();
    let text =
        std::fs::read_to_string(repo_root().join("api/tests/fixtures/canonical.yaml")).unwrap();
    // The example names namespace `shop`; made here, so removed here (the quickstart
    // creates its own `shop` later in the same cluster).
    let _shop = kubectl(&["create", "namespace", "shop"], None)
        .ok
        .then_some(NamespaceGuard("shop"));
    kubectl_ok(&["apply", "-f", "-"], Some(&text));
    let out = kubectl_ok(&["get", "turnpike", "-n", "shop", "-o", "name"], None);
    for want in [
        "apikey.turnpike.dev/billing",
        "accesspolicy.turnpike.dev/orders",
        "ratelimitpolicy.turnpike.dev/orders",
        "corspolicy.turnpike.dev/orders",
    ] {
        assert!(out.contains(want), "{want} missing in {out}");
    }
    // Printer columns as a platform engineer reads them.
    let out = kubectl_ok(&["get", "apikeys", "-n", "shop"], None);
    for col in ["NAME", "KEY ID", "PHASE", "SCOPES", "EXPIRES", "AGE"] {
        assert!(out.contains(col), "{col} missing in {out}");
    }
    assert!(out.contains("2027-06-30T00:00:00Z"), "{out}");
    // Short names work.
    kubectl_ok(&["get", "ak,acp,rlp,corsp", "-n", "shop"], None);
    let examples = repo_root().join("examples");
    let examples = examples.to_string_lossy();
    kubectl_ok(
        &["apply", "--dry-run=server", "-n", "shop", "-f", &examples],
        None,
    );
}

fn samples(section: &str) -> Vec<(String, Value, String)> {
    let text =
        std::fs::read_to_string(repo_root().join("api/tests/fixtures/rule-samples.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[section]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["spec"].clone(),
                s["expect"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn manifest(ns: &str, kind: &str, i: usize, spec: &Value) -> String {
    json!({
        "apiVersion": "turnpike.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": format!("sample-{i}"), "namespace": ns},
        "spec": spec,
    })
    .to_string()
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_api_server_refuses_every_bad_sample_with_our_message() {
    install_crds();
    let ns = namespace("e2e-rules");
    let mut failures = Vec::new();
    for (i, (kind, spec, expect)) in samples("reject").into_iter().enumerate() {
        let run = kubectl(&["apply", "-f", "-"], Some(&manifest(&ns, &kind, i, &spec)));
        if run.ok {
            failures.push(format!("{kind} {spec}: accepted"));
        } else if !run.stderr.contains(&expect) {
            failures.push(format!(
                "{kind} {spec}: expected {expect:?} in {}",
                run.stderr.trim()
            ));
        }
    }
    for (i, (kind, spec, _)) in samples("accept").into_iter().enumerate() {
        let run = kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(&ns, &kind, 1000 + i, &spec)),
        );
        if !run.ok {
            failures.push(format!("{kind} {spec}: refused: {}", run.stderr.trim()));
        }
    }
    kubectl_ok(&["delete", "namespace", &ns, "--wait=false"], None);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn key_id_cannot_change_once_set() {
    install_crds();
    let ns = namespace("e2e-immutable");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let first = manifest(
        &ns,
        "ApiKey",
        0,
        &json!({"keyId": "7k2m9q4xw3ab", "hash": hash}),
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&first));
    let changed = manifest(
        &ns,
        "ApiKey",
        0,
        &json!({"keyId": "aaaaaaaaaaaa", "hash": hash}),
    );
    let run = kubectl(&["apply", "-f", "-"], Some(&changed));
    assert!(
        !run.ok && run.stderr.contains("keyId cannot be changed"),
        "{}",
        run.stderr
    );
    kubectl_ok(&["delete", "namespace", &ns, "--wait=false"], None);
}
