//! The admission handler on recorded AdmissionReviews, without a network: every case's
//! patch is applied to the pod as the API server sent it and the result compared with
//! the snapshot in `fixtures/webhook/<case>.expected.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhook_support;

use serde_json::{Value, json};
use turnpike_operator::webhook::{
    config::SidecarMode,
    review::{Admission, Verdict},
};
use webhook_support::{CASES, TRUST, check, config, namespaces, outcome, review_bytes};

#[tokio::test]
async fn every_fixture_matches_its_snapshot() {
    for case in CASES {
        let admission = Admission::new(config(case.mode), namespaces(case.namespace_enabled));
        let review = review_bytes(case.review);
        let response = admission.review(&review).await.expect(case.name);
        check(case, &outcome(&review, &response));
    }
}

fn sidecar(pod: &Value) -> Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "turnpike-sidecar"))
        .cloned()
        .expect("sidecar in initContainers")
}

/// The properties the snapshots must have, stated once so a regenerated snapshot that
/// loses one fails here too.
#[tokio::test]
async fn injected_pods_have_the_contracted_shape() {
    let admission = Admission::new(config(SidecarMode::Native), namespaces(false));
    let review = review_bytes("orders-with-init");
    let out = outcome(&review, &admission.review(&review).await.unwrap());
    let pod = &out["pod"];
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 2);
    assert_eq!(
        init[0]["name"], "migrate",
        "the pod's own init container stays first"
    );
    let c = sidecar(pod);
    assert_eq!(c["restartPolicy"], "Always");
    assert_eq!(c["image"], "ghcr.io/turnpike/turnpike-sidecar:0.1.0");
    assert_eq!(
        c["args"],
        json!([
            "--bundle-dir",
            "/etc/turnpike",
            "--listen",
            "0.0.0.0:9080",
            "--upstream",
            "http://127.0.0.1:8080",
            "--admin-listen",
            "0.0.0.0:9901",
            "--admin-token-file",
            "/var/run/turnpike/admin/token",
            "--target",
            "orders",
            "--bundle-source",
            "api"
        ])
    );
    // The downward API gives the sidecar its namespace (the default of --namespace),
    // its pod name (reportingInstance of its Events) and UID.
    assert_eq!(
        c["env"],
        json!([
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "TURNPIKE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TURNPIKE_POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "TURNPIKE_BUNDLE_TRUST", "value": TRUST}
        ])
    );
    assert_eq!(
        c["ports"],
        json!([
            {"name": "turnpike", "containerPort": 9080, "protocol": "TCP"},
            {"name": "turnpike-admin", "containerPort": 9901, "protocol": "TCP"}
        ])
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "turnpike-admin"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "turnpike-admin"})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}})
    );
    assert_eq!(
        c["securityContext"],
        json!({
            "runAsNonRoot": true, "runAsUser": 65532, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    // The bundle, the admin token, and the sidecar's own projected ServiceAccount
    // token over the token path (the API source watches the bundle and writes Events).
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "turnpike-bundle", "mountPath": "/etc/turnpike", "readOnly": true},
            {"name": "turnpike-admin-token", "mountPath": "/var/run/turnpike/admin", "readOnly": true},
            {"name": "turnpike-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
        ])
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes.len(),
        6,
        "cache, config, kube-api-access, bundle, admin token, turnpike-api-access"
    );
    // The bundle: the primary Secret and the ConfigMap (required), then every possible
    // key shard (optional, one named file each).
    let mut sources = vec![
        json!({"secret": {"name": "turnpike-orders"}}),
        json!({"configMap": {"name": "turnpike-orders"}}),
    ];
    for n in 1..turnpike_api::bundle::MAX_KEY_SHARDS {
        sources.push(json!({"secret": {
            "name": format!("turnpike-orders.keys-{n}"),
            "optional": true,
            "items": [{"key": format!("keys-{n}.json"), "path": format!("keys-{n}.json")}],
        }}));
    }
    assert_eq!(
        volumes[3],
        json!({"name": "turnpike-bundle", "projected": {"sources": sources}})
    );
    assert_eq!(
        volumes[4],
        json!({"name": "turnpike-admin-token", "secret": {
            "secretName": "turnpike.admin",
            "optional": true,
            "items": [{"key": "token", "path": "token"}],
        }})
    );
    assert_eq!(volumes[5]["name"], "turnpike-api-access");
    let token = &volumes[5]["projected"]["sources"];
    assert_eq!(token[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(token[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        token[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["turnpike.dev/injected"],
        "0.1.0"
    );
    // The workload is untouched.
    let review: Value = serde_json::from_slice(&review).unwrap();
    assert_eq!(
        pod["spec"]["containers"],
        review["request"]["object"]["spec"]["containers"]
    );
    assert_eq!(
        pod["spec"]["automountServiceAccountToken"],
        review["request"]["object"]["spec"]["automountServiceAccountToken"]
    );
    // The patch escapes '/' in the annotation key and appends to existing arrays.
    let paths: Vec<&str> = out["patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations/turnpike.dev~1injected",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/volumes/-",
            "/spec/initContainers/-"
        ]
    );
}

#[tokio::test]
async fn a_pod_without_annotations_volumes_or_init_containers_gets_them_created() {
    let admission = Admission::new(config(SidecarMode::Native), namespaces(true));
    let review = review_bytes("catalog-plain");
    let out = outcome(&review, &admission.review(&review).await.unwrap());
    let paths: Vec<&str> = out["patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/spec/volumes",
            "/spec/initContainers"
        ]
    );
    assert_eq!(sidecar(&out["pod"])["name"], "turnpike-sidecar");
    assert_eq!(
        out["pod"]["spec"]["volumes"][0]["projected"]["sources"][0]["secret"]["name"],
        "turnpike-catalog"
    );
}

#[tokio::test]
async fn a_second_review_of_an_injected_pod_changes_nothing() {
    // Idempotence end to end: inject, then review the patched pod again.
    let admission = Admission::new(config(SidecarMode::Native), namespaces(false));
    let review = review_bytes("orders-annotated");
    let out = outcome(&review, &admission.review(&review).await.unwrap());
    let mut again: Value = serde_json::from_slice(&review).unwrap();
    again["request"]["object"] = out["pod"].clone();
    let again = serde_json::to_vec(&again).unwrap();
    let (resp, verdict) = admission.review_verdict(&again).await.unwrap();
    assert_eq!(
        verdict,
        Verdict::Skipped(turnpike_operator::webhook::inject::Skip::AlreadyInjected)
    );
    assert_eq!(
        outcome(&again, &resp),
        json!({"allowed": true, "patched": false})
    );
}

#[tokio::test]
async fn malformed_reviews_are_errors_not_decisions() {
    let admission = Admission::new(config(SidecarMode::Native), namespaces(false));
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
        b"[1,2,3]",
    ] {
        assert!(admission.review(body).await.is_err(), "{body:?}");
    }
    // A CREATE without the object.
    let mut review: Value = serde_json::from_slice(&review_bytes("orders-annotated")).unwrap();
    review["request"].as_object_mut().unwrap().remove("object");
    let err = admission
        .review(&serde_json::to_vec(&review).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the AdmissionReview request has no object");
}

#[tokio::test]
async fn other_operations_and_kinds_pass_unchanged() {
    let admission = Admission::new(config(SidecarMode::Native), namespaces(true));
    let mut review: Value = serde_json::from_slice(&review_bytes("orders-annotated")).unwrap();
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    let bytes = serde_json::to_vec(&review).unwrap();
    let (resp, verdict) = admission.review_verdict(&bytes).await.unwrap();
    assert_eq!(verdict, Verdict::NotApplicable);
    assert_eq!(
        outcome(&bytes, &resp),
        json!({"allowed": true, "patched": false})
    );
}
