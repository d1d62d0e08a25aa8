//! The generated CRDs: in sync with `crds/`, structural, with printer columns, and every
//! validation rule (schema pattern, range, enum, CEL) accepting good and refusing bad
//! samples. CEL rules are evaluated by kube-cel, a Rust CEL interpreter with the
//! Kubernetes extension library; the same samples are applied to a real API server by the
//! e2e suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};
use turnpike_api::crd;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema_of(kind: &str) -> Value {
    let crd = crd::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("kind exists");
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).unwrap()
}

#[test]
fn crds_directory_matches_the_types() {
    let crds = crd::crds();
    assert_eq!(crds.len(), 4);
    let mut stale = Vec::new();
    for c in &crds {
        let path = repo_root().join("crds").join(crd::file_name(c));
        let want = crd::to_yaml(c).unwrap();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs {stale:?}: run `cargo run -p turnpike-operator -- crdgen --out-dir crds`"
    );
    let files = std::fs::read_dir(repo_root().join("crds")).unwrap().count();
    assert_eq!(files, 4, "crds/ holds exactly the generated files");
}

#[test]
fn crds_yaml_parses_back_into_the_same_definition() {
    for c in crd::crds() {
        let yaml = crd::to_yaml(&c).unwrap();
        let back: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&c).unwrap()
        );
    }
}

/// Kubernetes refuses non-structural schemas: every node needs a `type` (unless it is
/// `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`), and `$ref`,
/// `definitions`, `additionalItems`, `patternProperties`, `dependencies`, typed
/// `anyOf`/`oneOf`/`allOf` branches and `additionalProperties` beside `properties` are
/// not allowed.
fn assert_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: not an object"));
        return;
    };
    for banned in [
        "$ref",
        "definitions",
        "$defs",
        "additionalItems",
        "patternProperties",
        "dependencies",
        "$schema",
        "id",
    ] {
        if obj.contains_key(banned) {
            problems.push(format!("{path}: has {banned}"));
        }
    }
    let escape = obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    if !escape && !obj.contains_key("type") {
        problems.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        problems.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    for junction in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = obj.get(junction).and_then(Value::as_array) {
            for b in branches {
                for key in ["type", "description", "default", "nullable", "title"] {
                    if b.get(key).is_some() {
                        problems.push(format!("{path}.{junction}: branch sets {key}"));
                    }
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            assert_structural(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(ap, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn every_schema_is_structural() {
    for c in crd::crds() {
        let kind = c.spec.names.kind.clone();
        let mut problems = Vec::new();
        assert_structural(&schema_of(&kind), &kind, &mut problems);
        assert!(
            problems.is_empty(),
            "{kind} is not structural: {problems:#?}"
        );
    }
}

#[test]
fn names_columns_and_subresources() {
    let expected = [
        (
            "ApiKey",
            "ak",
            &["Key ID", "Phase", "Scopes", "Expires", "Age"][..],
        ),
        ("AccessPolicy", "acp", &["Target", "Accepted", "Age"][..]),
        (
            "RateLimitPolicy",
            "rlp",
            &["Target", "Mode", "Accepted", "Age"][..],
        ),
        ("CorsPolicy", "corsp", &["Target", "Accepted", "Age"][..]),
    ];
    let crds = crd::crds();
    for (kind, short, columns) in expected {
        let c = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        assert_eq!(c.spec.group, "turnpike.dev");
        assert_eq!(c.spec.scope, "Namespaced");
        assert_eq!(
            c.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            c.spec.names.categories.as_deref(),
            Some(&["turnpike".to_string()][..])
        );
        let v = &c.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let names: Vec<&str> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        for col in columns {
            assert!(names.contains(col), "{kind} lacks column {col}: {names:?}");
        }
        let top = schema_of(kind);
        let desc = top["description"].as_str().unwrap_or_default();
        assert!(
            !desc.contains("Auto-generated"),
            "{kind} has a real description"
        );
    }
}

/// Validates `object` against everything the API server checks for the kind: the
/// OpenAPI schema (types, patterns, ranges, enums, required) and the CEL rules.
fn check(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), String> {
    let schema = schema_of(kind);
    let mut errors = Vec::new();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&strip_nullable(schema.clone()))
        .map_err(|e| e.to_string())?;
    for e in validator.iter_errors(object) {
        errors.push(format!("{}: {e}", e.instance_path()));
    }
    if let Err(e) = kube::core::cel::Validator::new().validate(&schema, object, old) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// JSON Schema draft 4 has no `nullable`; our samples never send null, so it is dropped.
fn strip_nullable(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("nullable");
            for (_, child) in map.iter_mut() {
                *child = strip_nullable(child.take());
            }
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                *child = strip_nullable(child.take());
            }
        }
        _ => {}
    }
    v
}

fn obj(kind: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "turnpike.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "sample", "namespace": "shop"},
        "spec": spec,
    })
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

/// The canonical example of DESIGN.md passes every rule, placeholder hash included.
#[test]
fn canonical_example_is_accepted() {
    let docs =
        turnpike_api::manifest::parse_documents(include_str!("fixtures/canonical.yaml")).unwrap();
    assert_eq!(docs.len(), 4);
    for doc in docs {
        let value = doc.to_json().unwrap();
        let kind = value["kind"].as_str().unwrap().to_string();
        check(&kind, &value, None).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
}

fn samples(section: &str) -> Vec<(String, Value, String)> {
    let all: Value = serde_json::from_str(include_str!("fixtures/rule-samples.json")).unwrap();
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

/// Each rule, with a sample it must refuse and the message the user sees.
#[test]
fn every_rule_refuses_its_bad_sample() {
    let cases = samples("reject");
    assert!(cases.len() >= 30);
    for (kind, spec, expected) in cases {
        let sample = obj(&kind, spec.clone());
        match check(&kind, &sample, None) {
            Ok(()) => panic!("{kind} {spec} was accepted"),
            Err(e) => assert!(
                e.contains(&expected),
                "{kind} {spec}: expected {expected:?} in {e}"
            ),
        }
    }
}

#[test]
fn good_samples_pass_every_rule() {
    for (kind, spec, _) in samples("accept") {
        check(&kind, &obj(&kind, spec.clone()), None)
            .unwrap_or_else(|e| panic!("{kind} {spec}: {e}"));
    }
}

#[test]
fn key_id_is_immutable_once_set() {
    let old = obj("ApiKey", json!({"keyId": "7k2m9q4xw3ab", "hash": HASH}));
    let changed = obj("ApiKey", json!({"keyId": "aaaaaaaaaaaa", "hash": HASH}));
    let removed = obj("ApiKey", json!({}));
    let same = obj(
        "ApiKey",
        json!({"keyId": "7k2m9q4xw3ab", "hash": HASH, "revoked": true}),
    );
    for new in [&changed, &removed] {
        let e = check("ApiKey", new, Some(&old)).unwrap_err();
        assert!(e.contains("keyId cannot be changed"), "{e}");
    }
    check("ApiKey", &same, Some(&old)).unwrap();
}
