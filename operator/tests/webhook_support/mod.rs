//! Shared by the webhook tests: recorded AdmissionReviews (`fixtures/webhook/*.review.json`,
//! captured from a real kube-apiserver 1.33, so defaulting and the ServiceAccount
//! admission plugin have run as in a cluster), the cases, and the snapshot check.
//!
//! Each case names a review, whether namespace `shop` carries
//! `turnpike.dev/inject=enabled`, the injection mode, and the expected file
//! `<case>.expected.json`: the pod after applying the returned patch, or the refusal.
//! `TURNPIKE_UPDATE_FIXTURES=1 cargo test -p turnpike-operator --test webhook_fixtures`
//! rewrites the expected files; review the diff like code.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{collections::BTreeMap, path::PathBuf};

use serde_json::{Value, json};
use turnpike_operator::webhook::{
    config::{InjectorConfig, SidecarMode},
    review::Namespaces,
};

/// One fixture case.
pub struct Case {
    /// `<case>.expected.json`.
    pub name: &'static str,
    /// `<review>.review.json`.
    pub review: &'static str,
    /// Namespace `shop` is labelled `turnpike.dev/inject=enabled`.
    pub namespace_enabled: bool,
    /// Native sidecar or plain container.
    pub mode: SidecarMode,
}

const fn case(
    name: &'static str,
    review: &'static str,
    namespace_enabled: bool,
    mode: SidecarMode,
) -> Case {
    Case {
        name,
        review,
        namespace_enabled,
        mode,
    }
}

use SidecarMode::{Native, Plain};

/// Every case.
pub const CASES: &[Case] = &[
    // Injected.
    case("orders-annotated", "orders-annotated", false, Native),
    case("orders-annotated-plain", "orders-annotated", false, Plain),
    case("orders-with-init", "orders-with-init", false, Native),
    case("orders-custom-ports", "orders-custom-ports", false, Native),
    case("catalog-namespace-enabled", "catalog-plain", true, Native),
    // Unchanged.
    case("catalog-not-opted-in", "catalog-plain", false, Native),
    case("batch-opted-out", "batch-opted-out", true, Native),
    case(
        "orders-already-injected",
        "orders-already-injected",
        false,
        Native,
    ),
    case(
        "kube-system-annotated",
        "kube-system-annotated",
        false,
        Native,
    ),
    // Refused.
    case("orders-port-taken", "orders-port-taken", false, Native),
    case(
        "orders-bad-upstream-port",
        "orders-bad-upstream-port",
        false,
        Native,
    ),
    case("orders-same-ports", "orders-same-ports", false, Native),
    case("orders-bad-target", "orders-bad-target", false, Native),
    case("no-target", "no-target", false, Native),
    case(
        "orders-bad-inject-value",
        "orders-bad-inject-value",
        false,
        Native,
    ),
];

/// The fixture directory.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook")
}

/// A recorded review, as bytes.
pub fn review_bytes(review: &str) -> Vec<u8> {
    let path = dir().join(format!("{review}.review.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The injector configuration of the fixtures (pinned image and version, so a release
/// bump does not rewrite every snapshot).
pub fn config(mode: SidecarMode) -> InjectorConfig {
    let mut c = InjectorConfig::new("turnpike-system");
    c.image = "ghcr.io/turnpike/turnpike-sidecar:0.1.0".into();
    c.version = "0.1.0".into();
    c.mode = mode;
    c.bundle_trust = Some(TRUST.into());
    c
}

#[test]
fn the_fixture_trust_list_is_the_public_key_of_its_seed() {
    let signer = turnpike_api::signing::BundleSigner::from_seeds([[7u8; 32].as_slice()]).unwrap();
    assert_eq!(signer.public().to_env(), TRUST);
}

/// The trust list of the fixtures: the public key of seed `[7; 32]`.
pub const TRUST: &str = "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";

/// Namespace labels: `shop` opted in or not.
pub fn namespaces(enabled: bool) -> Namespaces {
    let mut labels =
        BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), "shop".to_owned())]);
    if enabled {
        labels.insert("turnpike.dev/inject".into(), "enabled".into());
    }
    Namespaces::Fixed(BTreeMap::from([("shop".to_owned(), labels)]))
}

/// What a response means, in the shape of the expected files.
pub fn outcome(review: &[u8], response: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(review).unwrap();
    let resp: Value = serde_json::from_slice(response).expect("response is JSON");
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1", "{resp}");
    assert_eq!(resp["kind"], "AdmissionReview", "{resp}");
    let r = &resp["response"];
    assert_eq!(
        r["uid"], review["request"]["uid"],
        "uid copied from the request"
    );
    if r["allowed"] == json!(false) {
        assert!(r.get("patch").is_none(), "a refusal carries no patch: {r}");
        return json!({
            "allowed": false,
            "code": r["status"]["code"],
            "message": r["status"]["message"],
        });
    }
    assert_eq!(r["allowed"], json!(true), "{r}");
    let Some(patch) = r.get("patch") else {
        assert!(r.get("patchType").is_none(), "{r}");
        return json!({"allowed": true, "patched": false});
    };
    assert_eq!(r["patchType"], "JSONPatch", "{r}");
    let b64 = patch.as_str().expect("the patch is a base64 string");
    let bytes = data_encoding::BASE64.decode(b64.as_bytes()).unwrap();
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &ops.0).expect("the patch applies to the pod as sent");
    json!({
        "allowed": true,
        "patched": true,
        "patch": serde_json::from_slice::<Value>(&bytes).unwrap(),
        "pod": pod,
    })
}

/// Compares with (or, with `TURNPIKE_UPDATE_FIXTURES=1`, writes) `<case>.expected.json`.
pub fn check(case: &Case, got: &Value) {
    let path = dir().join(format!("{}.expected.json", case.name));
    if std::env::var_os("TURNPIKE_UPDATE_FIXTURES").is_some() {
        let mut text = serde_json::to_string_pretty(got).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with TURNPIKE_UPDATE_FIXTURES=1 to create it)",
            path.display()
        )
    });
    let want: Value = serde_json::from_str(&text).unwrap();
    assert!(
        *got == want,
        "case {}: the outcome differs from {}\n--- got ---\n{}",
        case.name,
        path.display(),
        serde_json::to_string_pretty(got).unwrap()
    );
}
