//! The compiler on the canonical example and on targeting and conflict rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use turnpike_api::{
    bundle::{self, KeyBundle, PolicyBundle, Sealed},
    compiler::{Inputs, KeyMaterial, Kind, Outcome, PreviousSecret, compile},
    hash::PhcHash,
    manifest::{Resource, parse_documents},
    token::KeyId,
    types::*,
};

const HASH_A: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
const HASH_B: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0b3RoZXJzYWx0$b3RoZXJoYXNob3RoZXJoYXNob3RoZXJoYXNob3RoZXI";

#[derive(Default, Clone)]
struct Set {
    keys: Vec<ApiKey>,
    access: Vec<AccessPolicy>,
    rate: Vec<RateLimitPolicy>,
    cors: Vec<CorsPolicy>,
}

impl Set {
    fn from_yaml(text: &str) -> Set {
        let mut s = Set::default();
        for r in parse_documents(text).unwrap() {
            match r {
                Resource::ApiKey(k) => s.keys.push(k),
                Resource::AccessPolicy(p) => s.access.push(p),
                Resource::RateLimitPolicy(p) => s.rate.push(p),
                Resource::CorsPolicy(p) => s.cors.push(p),
            }
        }
        s
    }

    fn compile_with(
        &self,
        material: &BTreeMap<String, KeyMaterial>,
        extra: &[String],
    ) -> turnpike_api::compiler::Output {
        compile(&Inputs {
            namespace: "shop",
            api_keys: &self.keys,
            access_policies: &self.access,
            rate_limit_policies: &self.rate,
            cors_policies: &self.cors,
            key_material: material,
            extra_targets: extra,
            epoch: 7,
        })
    }

    fn compile(&self) -> turnpike_api::compiler::Output {
        self.compile_with(&BTreeMap::new(), &[])
    }
}

fn canonical_with_real_hash() -> Set {
    let text = include_str!("fixtures/canonical.yaml")
        .replace("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<digest>", HASH_A);
    Set::from_yaml(&text)
}

#[test]
fn canonical_example_placeholder_hash_is_reported_not_compiled() {
    let out = Set::from_yaml(include_str!("fixtures/canonical.yaml")).compile();
    match out.outcome(Kind::ApiKey, "billing") {
        Some(Outcome::Invalid { message }) => assert!(message.starts_with("hash:"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The policies still compile for the target.
    let orders = &out.bundles["orders"];
    assert!(orders.keys.keys.is_empty());
    assert_eq!(
        orders.policy.sources.access_policy.as_deref(),
        Some("orders")
    );
}

#[test]
fn canonical_example_compiles_field_by_field() {
    let out = canonical_with_real_hash().compile();
    assert_eq!(out.bundles.keys().collect::<Vec<_>>(), ["orders"]);
    let b = &out.bundles["orders"];

    // Secret payload.
    let k: &KeyBundle = &b.keys;
    assert_eq!(
        (k.format, k.namespace.as_str(), k.target.as_str(), k.epoch),
        (bundle::FORMAT, "shop", "orders", 7)
    );
    let id = KeyId::parse("7k2m9q4xw3ab").unwrap();
    let e = &k.keys[&id];
    assert_eq!(e.name, "billing");
    assert_eq!(e.owner.as_deref(), Some("team-billing@example.com"));
    assert_eq!(e.scopes, ["orders:read", "orders:write"]);
    assert_eq!(e.secrets.len(), 1);
    assert_eq!(e.secrets[0].hash.as_str(), HASH_A);
    assert_eq!(e.secrets[0].not_after, None);
    assert_eq!(e.daily_quota, Some(50_000));
    assert_eq!(
        e.rate_limit,
        Some(Bucket {
            rate: 50,
            per: "1s".parse().unwrap(),
            burst: 100
        })
    );
    assert_eq!(e.expires_at, Some(1_814_313_600)); // 2027-06-30T00:00:00Z
    assert!(!e.revoked);
    assert_eq!(e.fingerprint.len(), 16);

    // ConfigMap payload.
    let p: &PolicyBundle = &b.policy;
    assert_eq!(
        p.access.credentials,
        [CredentialSource::ApiKeyHeader, CredentialSource::Bearer]
    );
    assert_eq!(p.access.public.len(), 1);
    assert_eq!(p.access.public[0].path, "/healthz");
    assert!(p.access.public[0].methods.is_empty());
    assert_eq!(p.access.rules.len(), 2);
    assert_eq!(
        p.access.rules[0].matches.methods,
        [Method::Get, Method::Head]
    );
    assert_eq!(p.access.rules[0].matches.path, "/orders/**");
    assert_eq!(p.access.rules[0].scopes, ["orders:read"]);
    assert_eq!(
        p.access.rules[1].matches.methods,
        [Method::Post, Method::Put, Method::Patch, Method::Delete]
    );
    assert_eq!(p.access.rules[1].scopes, ["orders:write"]);
    assert_eq!(p.access.default_action, DefaultAction::Deny);

    let r = &p.rate_limit;
    assert_eq!(r.mode, Mode::Enforce);
    assert_eq!(
        r.per_key,
        Some(Bucket {
            rate: 10,
            per: "1s".parse().unwrap(),
            burst: 20
        })
    );
    assert_eq!(
        r.per_ip,
        Some(Bucket {
            rate: 50,
            per: "1s".parse().unwrap(),
            burst: 100
        })
    );
    assert_eq!(r.daily_quota, Some(10_000));
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].matches.methods, [Method::Post]);
    assert_eq!(r.routes[0].matches.path, "/orders");
    assert_eq!(
        r.routes[0].per_key,
        Some(Bucket {
            rate: 1,
            per: "1s".parse().unwrap(),
            burst: 5
        })
    );
    let l = r.lockout.unwrap();
    assert_eq!(
        (l.max_failures, l.window.as_secs(), l.duration.as_secs()),
        (5, 300, 900)
    );
    let a = r.abuse.unwrap();
    assert_eq!(
        (
            a.max_not_found,
            a.max_bad_request,
            a.window.as_secs(),
            a.cooldown.as_secs()
        ),
        (Some(50), Some(20), 60, 300)
    );
    assert_eq!(r.max_in_flight, Some(512));
    assert_eq!(r.backend.kind, BackendKind::Local);
    assert!(!r.hide_limit_headers);

    let c = p.cors.as_ref().unwrap();
    assert_eq!(
        c.allow_origins,
        ["https://*.shop.example.com", "https://shop.example.com"]
    );
    assert_eq!(
        c.allow_methods,
        [Method::Get, Method::Post, Method::Put, Method::Delete]
    );
    assert_eq!(
        c.allow_headers,
        ["authorization", "content-type", "x-api-key"]
    );
    assert_eq!(
        c.expose_headers,
        [
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset"
        ]
    );
    assert!(c.allow_credentials);
    assert_eq!(c.max_age_secs, Some(600));

    for kind in [
        Kind::ApiKey,
        Kind::AccessPolicy,
        Kind::RateLimitPolicy,
        Kind::CorsPolicy,
    ] {
        let name = if kind == Kind::ApiKey {
            "billing"
        } else {
            "orders"
        };
        assert_eq!(
            out.outcome(kind, name),
            Some(&Outcome::Accepted {
                targets: vec!["orders".into()]
            }),
            "{kind:?}"
        );
    }
}

#[test]
fn bundles_round_trip_and_detect_tampering() {
    let out = canonical_with_real_hash().compile();
    let b = &out.bundles["orders"];
    let keys_json = b.keys.to_json();
    let policy_json = b.policy.to_json();
    assert_eq!(bundle::parse::<KeyBundle>(&keys_json).unwrap(), b.keys);
    assert_eq!(
        bundle::parse::<PolicyBundle>(&policy_json).unwrap(),
        b.policy
    );
    let tampered = policy_json.replace("\"orders:write\"", "\"orders:read\"");
    assert!(matches!(
        bundle::parse::<PolicyBundle>(&tampered),
        Err(bundle::BundleError::Hash { .. })
    ));
    let other_format = keys_json.replacen("\"format\":1", "\"format\":2", 1);
    assert!(matches!(
        bundle::parse::<KeyBundle>(&other_format),
        Err(bundle::BundleError::Format { found: 2, .. })
    ));
    let err = bundle::parse::<KeyBundle>(&keys_json[..keys_json.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(!err.contains("argon2id"), "no hash in errors: {err}");
    // The secret and the config map never share a data key.
    assert_ne!(bundle::KEYS_FILE, bundle::POLICY_FILE);
}

#[test]
fn same_inputs_in_any_order_give_identical_bytes() {
    let mut base = canonical_with_real_hash();
    let extra = Set::from_yaml(
        "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: zeta, namespace: shop}\nspec: {scopes: [b, a, a], keyId: aaaaaaaaaaaa, hash: \"HASH\"}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: alpha, namespace: shop}\nspec: {targets: [orders, payments], keyId: bbbbbbbbbbbb, hash: \"HASH\"}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: wide, namespace: shop}\nspec: {defaultAction: AllowAuthenticated}\n"
            .replace("HASH", HASH_B)
            .as_str(),
    );
    base.keys.extend(extra.keys);
    base.access.extend(extra.access);
    let a = base.compile();
    let mut reversed = base.clone();
    reversed.keys.reverse();
    reversed.access.reverse();
    let b = reversed.compile();
    assert_eq!(a, b);
    for (t, bundle) in &a.bundles {
        assert_eq!(bundle.keys.to_json(), b.bundles[t].keys.to_json());
        assert_eq!(bundle.policy.to_json(), b.bundles[t].policy.to_json());
    }
    // alpha names payments, so payments exists and gets the namespace-wide policy.
    assert_eq!(a.bundles.keys().collect::<Vec<_>>(), ["orders", "payments"]);
    assert_eq!(
        a.bundles["payments"]
            .policy
            .sources
            .access_policy
            .as_deref(),
        Some("wide")
    );
    assert_eq!(
        a.bundles["payments"].policy.access.default_action,
        DefaultAction::AllowAuthenticated
    );
    // zeta has no targets: every target; scopes sorted and deduplicated.
    let zeta = &a.bundles["payments"].keys.keys[&KeyId::parse("aaaaaaaaaaaa").unwrap()];
    assert_eq!(zeta.scopes, ["a", "b"]);
    // billing is for orders only.
    assert!(
        !a.bundles["payments"]
            .keys
            .keys
            .contains_key(&KeyId::parse("7k2m9q4xw3ab").unwrap())
    );
    assert_eq!(
        a.outcome(Kind::AccessPolicy, "wide"),
        Some(&Outcome::Accepted {
            targets: vec!["payments".into()]
        })
    );
}

fn at(mut r: AccessPolicy, secs: i64) -> AccessPolicy {
    r.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(secs).unwrap()));
    r
}

fn access(name: &str, target: Option<&str>) -> AccessPolicy {
    let mut p = AccessPolicy::new(
        name,
        AccessPolicySpec {
            target_ref: target.map(|t| TargetRef { name: t.into() }),
            credentials: vec![CredentialSource::Bearer],
            public: vec![],
            rules: vec![],
            default_action: DefaultAction::Deny,
            security_headers: None,
            https_redirect: false,
            https_redirect_exempt: vec![],
        },
    );
    p.metadata.namespace = Some("shop".into());
    p
}

#[test]
fn oldest_of_equals_wins_and_the_other_is_conflicted() {
    let set = Set {
        access: vec![
            at(access("young", Some("orders")), 2_000),
            at(access("old", Some("orders")), 1_000),
        ],
        ..Set::default()
    };
    let out = set.compile();
    assert_eq!(
        out.bundles["orders"]
            .policy
            .sources
            .access_policy
            .as_deref(),
        Some("old")
    );
    assert_eq!(
        out.outcome(Kind::AccessPolicy, "young"),
        Some(&Outcome::Conflicted {
            winner: "old".into(),
            targets: vec!["orders".into()]
        })
    );
    assert_eq!(
        out.outcome(Kind::AccessPolicy, "old"),
        Some(&Outcome::Accepted {
            targets: vec!["orders".into()]
        })
    );
}

#[test]
fn specific_beats_namespace_wide_without_conflict() {
    let set = Set {
        access: vec![
            at(access("wide", None), 1),
            at(access("specific", Some("orders")), 2),
        ],
        ..Set::default()
    };
    let out = set.compile_with(&BTreeMap::new(), &["web".into()]);
    assert_eq!(
        out.bundles["orders"]
            .policy
            .sources
            .access_policy
            .as_deref(),
        Some("specific")
    );
    assert_eq!(
        out.bundles["web"].policy.sources.access_policy.as_deref(),
        Some("wide")
    );
    assert_eq!(
        out.outcome(Kind::AccessPolicy, "wide"),
        Some(&Outcome::Accepted {
            targets: vec!["web".into()]
        })
    );
    // Two namespace-wide: the younger conflicts even where nothing is targeted yet.
    let set = Set {
        access: vec![at(access("b", None), 2), at(access("a", None), 1)],
        ..Set::default()
    };
    let out = set.compile();
    assert!(
        matches!(out.outcome(Kind::AccessPolicy, "b"), Some(Outcome::Conflicted { winner, .. }) if winner == "a")
    );
}

#[test]
fn invalid_resources_are_reported_and_left_out() {
    let text = "apiVersion: turnpike.dev/v1alpha1\nkind: CorsPolicy\nmetadata: {name: c}\nspec: {targetRef: {name: orders}, allowOrigins: ['*'], allowCredentials: true}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: r}\nspec: {targetRef: {name: orders}, backend: {type: Redis}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: half}\nspec: {keyId: aaaaaaaaaaaa}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: dots}\nspec: {rules: [{match: {path: /a/../b}}]}\n";
    let out = Set::from_yaml(text).compile();
    let msg = |k, n| match out.outcome(k, n) {
        Some(Outcome::Invalid { message }) => message.clone(),
        other => panic!("{n}: {other:?}"),
    };
    assert!(msg(Kind::CorsPolicy, "c").contains("may not contain \"*\""));
    assert!(msg(Kind::RateLimitPolicy, "r").contains("needs secretRef"));
    assert!(msg(Kind::ApiKey, "half").contains("set together"));
    assert!(msg(Kind::AccessPolicy, "dots").contains("rules[0].match.path"));
    assert!(out.bundles.is_empty(), "invalid policies name no target");
}

#[test]
fn generated_keys_use_operator_material_and_rotation_grace() {
    let set = Set::from_yaml(
        "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: gen}\nspec: {scopes: [x]}\n",
    );
    let out = set.compile_with(&BTreeMap::new(), &["orders".into()]);
    assert_eq!(out.outcome(Kind::ApiKey, "gen"), Some(&Outcome::Pending));
    assert!(out.bundles["orders"].keys.keys.is_empty());

    let id = KeyId::parse("cccccccccccc").unwrap();
    let material = BTreeMap::from([(
        "gen".to_string(),
        KeyMaterial {
            key_id: id.clone(),
            hash: PhcHash::parse(HASH_A).unwrap(),
            previous: Some(PreviousSecret {
                hash: PhcHash::parse(HASH_B).unwrap(),
                not_after: 1_900_000_000,
            }),
        },
    )]);
    let out = set.compile_with(&material, &["orders".into()]);
    let e = &out.bundles["orders"].keys.keys[&id];
    assert_eq!(e.secrets.len(), 2);
    assert_eq!(e.secrets[0].hash.as_str(), HASH_A);
    assert_eq!(e.secrets[1].hash.as_str(), HASH_B);
    assert_eq!(e.secrets[1].not_after, Some(1_900_000_000));
}

#[test]
fn duplicate_key_ids_conflict() {
    let text = format!(
        "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: a}}\nspec: {{keyId: aaaaaaaaaaaa, hash: \"{HASH_A}\"}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: b}}\nspec: {{keyId: aaaaaaaaaaaa, hash: \"{HASH_B}\"}}\n"
    );
    let out = Set::from_yaml(&text).compile_with(&BTreeMap::new(), &["t".into()]);
    assert!(
        matches!(out.outcome(Kind::ApiKey, "b"), Some(Outcome::Conflicted { winner, .. }) if winner == "a")
    );
    let k = &out.bundles["t"].keys.keys[&KeyId::parse("aaaaaaaaaaaa").unwrap()];
    assert_eq!(k.name, "a");
}

#[test]
fn fingerprint_changes_with_the_entry() {
    let mut set = canonical_with_real_hash();
    let id = KeyId::parse("7k2m9q4xw3ab").unwrap();
    let before = set.compile().bundles["orders"].keys.keys[&id]
        .fingerprint
        .clone();
    set.keys[0].spec.revoked = true;
    let after = set.compile().bundles["orders"].keys.keys[&id]
        .fingerprint
        .clone();
    assert_ne!(before, after);
}

#[test]
fn examples_directory_compiles_with_its_real_key() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut set = Set::default();
    for r in turnpike_api::manifest::read_dir(&dir).unwrap() {
        match r {
            Resource::ApiKey(k) => set.keys.push(k),
            Resource::AccessPolicy(p) => set.access.push(p),
            Resource::RateLimitPolicy(p) => set.rate.push(p),
            Resource::CorsPolicy(p) => set.cors.push(p),
        }
    }
    assert_eq!(
        (
            set.keys.len(),
            set.access.len(),
            set.rate.len(),
            set.cors.len()
        ),
        (1, 1, 1, 1)
    );
    let out = set.compile();
    for o in &out.outcomes {
        assert!(matches!(o.outcome, Outcome::Accepted { .. }), "{o:?}");
    }
    let keys = &out.bundles["orders"].keys.keys;
    assert!(keys.contains_key(&KeyId::parse("7k2m9q4xw3ab").unwrap()));
}
