//! Authentication steps (6-9): credentials, lookup, verification and its cache,
//! revocation, expiry and rotation. Injected clock, no sockets.
#![allow(clippy::unwrap_used)]

mod engine_common;

use engine_common::*;
use turnpike_api::bundle::SecretEntry;
use turnpike_sidecar::engine::refusal::UNAUTHORIZED_MESSAGE;
use turnpike_sidecar::engine::{Decision, Engine, HeaderValues, Step};

#[test]
fn valid_key_is_allowed_with_identity_and_forwarded_path() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let d = decide(
        &engine,
        &bundle,
        with_key(req("GET", "/orders//42/./items"), c.billing.text()),
        T0,
    );
    let Decision::Allow(a) = d else {
        panic!("{d:?}")
    };
    let id = a.identity.unwrap();
    assert_eq!(id.key_id, &c.billing.id());
    assert_eq!(id.name, "billing");
    assert_eq!(id.scopes_header, "orders:read orders:write");
    assert_eq!(&*a.path, "/orders/42/items");
    assert!(a.dry_run.is_none());
    assert_eq!(engine.in_flight(), 1);
    drop(a);
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn every_401_looks_the_same_to_the_client() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let unknown = turnpike_api::token::Token::mint().unwrap();
    let mut typo = c.billing.text().to_string();
    typo.replace_range(30..31, if &typo[30..31] == "A" { "B" } else { "A" });
    let wrong = turnpike_api::token::Token::mint_with_id(&c.reader.id()).unwrap();
    let cases: [(Option<&str>, &str); 5] = [
        (None, "missing_credential"),
        (Some("not-a-token"), "malformed_token_length"),
        (Some(&typo), "malformed_token_checksum"),
        (Some(unknown.expose_token()), "unknown_key"),
        (Some(wrong.expose_token()), "wrong_secret"),
    ];
    for (token, want_reason) in cases {
        let mut facts = req("GET", "/orders/1");
        if let Some(t) = token {
            facts.api_key = HeaderValues::one(t);
        }
        let d = decide(&engine, &bundle, facts, T0);
        let Decision::Refuse(r) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(r.response.status, 401, "{want_reason}");
        assert_eq!(r.response.message, UNAUTHORIZED_MESSAGE);
        assert_eq!(r.www_authenticate, Some("Bearer realm=\"turnpike\""));
        assert_eq!(r.audit.reason, want_reason);
        assert_eq!(r.audit.event, "auth_failed");
        // Never a token in what the proxy logs.
        let printed = format!("{d:?}");
        if let Some(t) = token.filter(|t| t.len() > 20) {
            assert!(!printed.contains(&t[17..]), "{printed}");
        }
    }
}

#[test]
fn malformed_and_unknown_tokens_cost_no_argon2() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let unknown = turnpike_api::token::Token::mint().unwrap();
    let before = verifications();
    for t in ["", "tpk_", unknown.expose_token()] {
        assert!(matches!(
            engine.decide(&bundle, with_key(req("GET", "/orders"), t), T0),
            Step::Decided(Decision::Refuse(_))
        ));
    }
    assert_eq!(verifications(), before);
}

#[test]
fn bearer_and_header_rules() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let bearer = format!("Bearer {}", c.billing.text());
    let other = format!("Bearer {}", c.reader.text());

    let mut f = req("GET", "/orders");
    f.authorization = HeaderValues::one(&bearer);
    assert_eq!(run(&engine, &bundle, f, T0).0, 200);

    // Key header and Bearer with the same token: one credential.
    let mut f = with_key(req("GET", "/orders"), c.billing.text());
    f.authorization = HeaderValues::one(&bearer);
    assert_eq!(run(&engine, &bundle, f, T0).0, 200);

    // Different: 400, never "first one wins".
    let mut f = with_key(req("GET", "/orders"), c.billing.text());
    f.authorization = HeaderValues::one(&other);
    assert_eq!(
        run(&engine, &bundle, f, T0),
        (400, "conflicting_credentials")
    );

    // Two X-API-Key headers: 400.
    let mut f = req("GET", "/orders");
    f.api_key = HeaderValues::Many;
    assert_eq!(
        run(&engine, &bundle, f, T0),
        (400, "conflicting_credentials")
    );

    // Only the listed sources are read.
    let mut p = policy();
    p.access.credentials = vec![turnpike_api::types::CredentialSource::ApiKeyHeader];
    let header_only = compile(&keys(), &p);
    let mut f = req("GET", "/orders");
    f.authorization = HeaderValues::one(&bearer);
    let d = decide(&engine, &header_only, f, T0);
    let Decision::Refuse(r) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(r.audit.reason, "missing_credential");
    assert_eq!(
        r.www_authenticate,
        Some("ApiKey realm=\"turnpike\", header=\"X-API-Key\"")
    );
}

#[test]
fn cache_hit_skips_verification() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let facts = with_key(req("GET", "/orders"), c.reader.text());
    assert!(matches!(engine.decide(&bundle, facts, T0), Step::Verify(_)));
    let before = verifications();
    assert_eq!(run(&engine, &bundle, facts, T0).0, 200);
    assert_eq!(verifications(), before + 1);
    for i in 0..5 {
        let now = T0.advance_ms(i * 1000);
        assert!(matches!(
            engine.decide(&bundle, facts, now),
            Step::Decided(Decision::Allow(_))
        ));
    }
    assert_eq!(verifications(), before + 1);
    assert_eq!(engine.cached_keys(), 1);
    // The TTL (5 minutes by default) ends the cached verification.
    assert!(matches!(
        engine.decide(&bundle, facts, T0.advance_ms(5 * 60 * 1000)),
        Step::Verify(_)
    ));
}

#[test]
fn cache_is_invalidated_by_fingerprint_and_epoch() {
    let engine = Engine::default();
    let c = creds();
    let facts = with_key(req("GET", "/orders"), c.billing.text());
    let k1 = keys();
    let b1 = compile(&k1, &policy());
    assert_eq!(run(&engine, &b1, facts, T0).0, 200);
    assert!(matches!(engine.decide(&b1, facts, T0), Step::Decided(_)));

    // A reload that leaves the key alone keeps the cache.
    let mut k_other = k1.clone();
    edit_key(&mut k_other, &c.admin.id(), |e| {
        e.scopes.push("extra".into())
    });
    let b_other = compile(&k_other, &policy());
    assert!(matches!(
        engine.decide(&b_other, facts, T0),
        Step::Decided(_)
    ));

    // The key's entry changed (new fingerprint): verify again.
    let mut k2 = k1.clone();
    edit_key(&mut k2, &c.billing.id(), |e| {
        e.scopes = vec!["orders:read".into()]
    });
    let b2 = compile(&k2, &policy());
    assert!(matches!(engine.decide(&b2, facts, T0), Step::Verify(_)));
    assert_eq!(run(&engine, &b2, facts, T0).0, 200);
    assert!(matches!(engine.decide(&b2, facts, T0), Step::Decided(_)));

    // The epoch was raised: every cached verification is void.
    let mut k3 = k2.clone();
    k3.epoch += 1;
    let b3 = compile(&k3, &policy());
    assert!(matches!(engine.decide(&b3, facts, T0), Step::Verify(_)));
}

#[test]
fn revoked_and_expired_keys_are_401_with_distinct_audit_reasons() {
    let engine = Engine::default();
    let c = creds();
    let mut k = keys();
    edit_key(&mut k, &c.reader.id(), |e| e.revoked = true);
    edit_key(&mut k, &c.billing.id(), |e| {
        e.expires_at = Some(T0.unix_secs + 60)
    });
    let bundle = compile(&k, &policy());

    let d = decide(
        &engine,
        &bundle,
        with_key(req("GET", "/orders"), c.reader.text()),
        T0,
    );
    let Decision::Refuse(r) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (r.response.status, r.response.message),
        (401, UNAUTHORIZED_MESSAGE)
    );
    assert_eq!(
        (r.audit.event, r.audit.reason),
        ("revoked_key_used", "key_revoked")
    );
    assert_eq!(r.audit.key_name, Some("reader"));

    let billing = with_key(req("GET", "/orders"), c.billing.text());
    assert_eq!(run(&engine, &bundle, billing, T0.advance_ms(59_000)).0, 200);
    let d = decide(&engine, &bundle, billing, T0.advance_ms(60_000));
    let Decision::Refuse(r) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (r.response.status, r.response.message),
        (401, UNAUTHORIZED_MESSAGE)
    );
    assert_eq!(
        (r.audit.event, r.audit.reason),
        ("expired_key_used", "key_expired")
    );
}

#[test]
fn rotated_secret_works_until_not_after() {
    let engine = Engine::default();
    let c = creds();
    let mut k = keys();
    let grace_end = T0.unix_secs + 60;
    edit_key(&mut k, &c.billing.id(), |e| {
        e.secrets = vec![
            secret(&c.billing),
            SecretEntry {
                hash: c.billing_old.hash.clone(),
                not_after: Some(grace_end),
            },
        ];
    });
    let bundle = compile(&k, &policy());
    let new = with_key(req("GET", "/orders"), c.billing.text());
    let old = with_key(req("GET", "/orders"), c.billing_old.text());

    assert_eq!(run(&engine, &bundle, new, T0).0, 200);
    assert_eq!(run(&engine, &bundle, old, T0).0, 200);
    // Both stay cached side by side.
    let before = verifications();
    let at_end = T0.advance_ms(60 * 1000);
    assert_eq!(at_end.unix_secs, grace_end);
    assert_eq!(run(&engine, &bundle, old, at_end).0, 200);
    assert_eq!(run(&engine, &bundle, new, at_end).0, 200);
    assert_eq!(verifications(), before);

    // Past notAfter, cached or not: refused, the new secret still works.
    let after = at_end.advance_ms(1000);
    assert_eq!(
        run(&engine, &bundle, old, after),
        (401, "secret_rotated_out")
    );
    let fresh = Engine::default();
    assert_eq!(
        run(&fresh, &bundle, old, after),
        (401, "secret_rotated_out")
    );
    assert_eq!(run(&engine, &bundle, new, after).0, 200);
}

#[test]
fn verification_pool_full_is_503() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let Step::Verify(pending) =
        engine.decide(&bundle, with_key(req("GET", "/orders"), c.admin.text()), T0)
    else {
        panic!("expected a verification");
    };
    assert_eq!(pending.key_id(), &c.admin.id());
    assert!(!format!("{pending:?} {:?}", pending.job()).contains(&c.admin.text()[17..]));
    let d = pending.overloaded();
    assert_eq!(status(&d), 503);
    assert_eq!(header(&rate_headers(&d), "retry-after"), Some("1"));
}
