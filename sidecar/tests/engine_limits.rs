//! Limits (steps 4, 5, 7, 11, 12 and the response side): buckets, route overrides,
//! key overrides, daily quotas, lockout, abuse cooldown, overload, dry run, headers.
//! The clock is injected; nothing sleeps.
#![allow(clippy::unwrap_used)]

mod engine_common;

use engine_common::*;
use turnpike_api::bundle::{AbuseSpec, LockoutSpec, PolicyBundle};
use turnpike_api::duration::Duration;
use turnpike_api::token::Token;
use turnpike_api::types::Mode;
use turnpike_sidecar::engine::{CompiledBundle, Decision, Engine, Now, RequestFacts};

fn with_policy(edit: impl FnOnce(&mut PolicyBundle)) -> CompiledBundle {
    let mut p = policy();
    edit(&mut p);
    compile(&keys(), &p)
}

/// Warms the verified-key cache so later requests need no argon2.
fn login(engine: &Engine, bundle: &CompiledBundle, token: &str) {
    let d = decide(engine, bundle, with_key(req("GET", "/orders"), token), T0);
    assert_eq!(status(&d), 200, "{d:?}");
}

#[test]
fn per_ip_bucket_applies_to_public_routes_with_headers() {
    let engine = Engine::default();
    let bundle = with_policy(|p| p.rate_limit.per_ip = Some(bucket(1, 10, 2)));
    let health = req("GET", "/healthz");
    assert_eq!(run(&engine, &bundle, health, T0).0, 200);
    let d = decide(&engine, &bundle, health, T0);
    let h = rate_headers(&d);
    assert_eq!(header(&h, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&h, "ratelimit-policy"), Some("\"ip\";q=2;w=20"));
    assert_eq!(header(&h, "ratelimit"), Some("\"ip\";r=0;t=20"));
    drop(d);

    let d = decide(&engine, &bundle, health, T0);
    assert_eq!((status(&d), reason(&d)), (429, "ip_rate_limit"));
    let h = rate_headers(&d);
    assert_eq!(header(&h, "retry-after"), Some("10"));
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some("0"));
    let Decision::Refuse(r) = &d else { panic!() };
    assert_eq!(
        r.response.body,
        r#"{"error":{"code":"rate_limited","message":"rate limit exceeded"}}"#
    );

    // Another address has its own bucket; the first one refills with time.
    let mut other = health;
    other.client_ip = ip("198.51.100.7");
    assert_eq!(run(&engine, &bundle, other, T0).0, 200);
    assert_eq!(run(&engine, &bundle, health, T0.advance_ms(10_000)).0, 200);
}

#[test]
fn per_key_bucket_and_key_override() {
    let engine = Engine::default();
    let c = creds();
    let mut k = keys();
    edit_key(&mut k, &c.billing.id(), |e| {
        e.rate_limit = Some(bucket(1, 10, 4))
    });
    let mut p = policy();
    p.rate_limit.per_key = Some(bucket(1, 10, 2));
    let bundle = compile(&k, &p);

    let reader = with_key(req("GET", "/orders"), c.reader.text());
    assert_eq!(run(&engine, &bundle, reader, T0).0, 200);
    assert_eq!(run(&engine, &bundle, reader, T0).0, 200);
    let d = decide(&engine, &bundle, reader, T0);
    assert_eq!((status(&d), reason(&d)), (429, "key_rate_limit"));
    assert_eq!(header(&rate_headers(&d), "retry-after"), Some("10"));
    drop(d);

    // The ApiKey's rateLimit overrides perKey.
    let billing = with_key(req("GET", "/orders"), c.billing.text());
    for _ in 0..4 {
        assert_eq!(run(&engine, &bundle, billing, T0).0, 200);
    }
    assert_eq!(run(&engine, &bundle, billing, T0), (429, "key_rate_limit"));
}

#[test]
fn per_route_bucket_is_added_and_refunds_the_general_one() {
    let engine = Engine::default();
    let c = creds();
    let bundle = with_policy(|p| {
        p.rate_limit.per_key = Some(bucket(1, 10, 3));
        p.rate_limit.routes[0].per_key = Some(bucket(1, 10, 1));
    });
    let post = with_key(req("POST", "/orders"), c.billing.text());
    let get = with_key(req("GET", "/orders"), c.billing.text());
    let d = decide(&engine, &bundle, post, T0);
    assert_eq!(status(&d), 200);
    // The most constrained bucket is reported.
    assert_eq!(
        header(&rate_headers(&d), "ratelimit-policy").map(|v| v.starts_with("\"key-route\";q=1")),
        Some(true)
    );
    drop(d);
    assert_eq!(
        run(&engine, &bundle, post, T0),
        (429, "key_route_rate_limit")
    );
    // The refused POST gave its general token back: two GETs left, not one.
    assert_eq!(run(&engine, &bundle, get, T0).0, 200);
    assert_eq!(run(&engine, &bundle, get, T0).0, 200);
    assert_eq!(run(&engine, &bundle, get, T0), (429, "key_rate_limit"));
}

#[test]
fn daily_quota_resets_at_utc_midnight_and_keys_override_it() {
    let engine = Engine::default();
    let c = creds();
    let mut k = keys();
    edit_key(&mut k, &c.billing.id(), |e| e.daily_quota = Some(3));
    let mut p = policy();
    p.rate_limit.daily_quota = Some(2);
    let bundle = compile(&k, &p);

    let evening = Now::new(T0.mono_ms, DAY0_UNIX + 86_400 - 10);
    let reader = with_key(req("GET", "/orders"), c.reader.text());
    let d = decide(&engine, &bundle, reader, evening);
    assert_eq!(status(&d), 200);
    let h = rate_headers(&d);
    assert_eq!(
        header(&h, "ratelimit-policy"),
        Some("\"key\";q=20;w=2, \"daily\";q=2;w=86400")
    );
    assert_eq!(
        header(&h, "ratelimit").map(|v| v.ends_with("\"daily\";r=1;t=10")),
        Some(true)
    );
    drop(d);
    assert_eq!(run(&engine, &bundle, reader, evening).0, 200);
    let d = decide(&engine, &bundle, reader, evening.advance_ms(1000));
    assert_eq!((status(&d), reason(&d)), (429, "daily_quota"));
    let Decision::Refuse(r) = &d else { panic!() };
    assert_eq!(r.audit.event, "quota_exhausted");
    assert_eq!(r.response.code, "quota_exceeded");
    assert_eq!(header(&rate_headers(&d), "retry-after"), Some("9"));
    drop(d);
    let usage = engine
        .key_usage(&bundle, c.reader.id().as_str(), evening)
        .unwrap();
    assert_eq!((usage.quota_used_today, usage.daily_quota), (2, Some(2)));

    // Midnight UTC: a new day, a new quota.
    let midnight = evening.advance_ms(10_000);
    assert_eq!(midnight.unix_secs % 86_400, 0);
    assert_eq!(run(&engine, &bundle, reader, midnight).0, 200);

    // The ApiKey's dailyQuota overrides the policy default.
    let billing = with_key(req("GET", "/orders"), c.billing.text());
    let later = midnight.advance_ms(1000);
    for _ in 0..3 {
        assert_eq!(run(&engine, &bundle, billing, later).0, 200);
    }
    assert_eq!(run(&engine, &bundle, billing, later), (429, "daily_quota"));
}

fn lockout_policy(p: &mut PolicyBundle) {
    p.rate_limit.lockout = Some(LockoutSpec {
        max_failures: 3,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(120),
    });
}

#[test]
fn ip_lockout_triggers_and_unlocks_by_itself() {
    let engine = Engine::default();
    let bundle = with_policy(lockout_policy);
    let c = creds();
    login(&engine, &bundle, c.billing.text());
    let unknown = Token::mint().unwrap();
    let bad = with_key(req("GET", "/orders"), unknown.expose_token());
    assert_eq!(run(&engine, &bundle, bad, T0), (401, "unknown_key"));
    assert_eq!(
        run(
            &engine,
            &bundle,
            with_key(req("GET", "/orders"), "garbage"),
            T0
        )
        .0,
        401
    );
    // Missing credentials are not authentication attempts.
    assert_eq!(
        run(&engine, &bundle, req("GET", "/orders"), T0),
        (401, "missing_credential")
    );
    let d = decide(&engine, &bundle, bad, T0);
    let Decision::Refuse(r) = &d else { panic!() };
    assert_eq!(r.response.status, 401);
    assert!(r.audit.triggered.ip_lockout);
    drop(d);

    // Locked: even a valid key, even a public route, from that address.
    let good = with_key(req("GET", "/orders"), c.billing.text());
    let d = decide(&engine, &bundle, good, T0.advance_ms(1000));
    assert_eq!((status(&d), reason(&d)), (429, "ip_locked_out"));
    assert_eq!(header(&rate_headers(&d), "retry-after"), Some("119"));
    drop(d);
    assert_eq!(run(&engine, &bundle, req("GET", "/healthz"), T0).0, 429);
    // Other addresses are not affected.
    let mut elsewhere = good;
    elsewhere.client_ip = ip("198.51.100.20");
    assert_eq!(run(&engine, &bundle, elsewhere, T0).0, 200);
    // The lock ends by itself.
    assert_eq!(run(&engine, &bundle, good, T0.advance_ms(119_999)).0, 429);
    assert_eq!(run(&engine, &bundle, good, T0.advance_ms(120_000)).0, 200);
}

#[test]
fn key_lockout_counts_wrong_secrets_from_any_address() {
    let engine = Engine::default();
    let bundle = with_policy(lockout_policy);
    let c = creds();
    let wrong = Token::mint_with_id(&c.billing.id()).unwrap();
    for (i, addr) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .into_iter()
        .enumerate()
    {
        let mut f = with_key(req("GET", "/orders"), wrong.expose_token());
        f.client_ip = ip(addr);
        let d = decide(&engine, &bundle, f, T0);
        assert_eq!((status(&d), reason(&d)), (401, "wrong_secret"));
        let Decision::Refuse(r) = &d else { panic!() };
        assert_eq!(r.audit.triggered.key_lockout, i == 2);
    }
    let mut good = with_key(req("GET", "/orders"), c.billing.text());
    good.client_ip = ip("203.0.113.99");
    let before = verifications();
    assert_eq!(run(&engine, &bundle, good, T0), (429, "key_locked_out"));
    assert_eq!(verifications(), before, "a locked key costs no argon2");
    // Other keys are not affected; the lock ends by itself.
    assert_eq!(
        run(
            &engine,
            &bundle,
            with_key(req("GET", "/orders"), c.reader.text()),
            T0
        )
        .0,
        200
    );
    assert_eq!(run(&engine, &bundle, good, T0.advance_ms(120_000)).0, 200);
    let usage = engine
        .key_usage(&bundle, c.billing.id().as_str(), T0.advance_ms(120_000))
        .unwrap();
    assert_eq!(usage.locked_for_ms, None);
}

#[test]
fn abuse_cooldown_from_the_response_side() {
    let engine = Engine::default();
    let bundle = with_policy(|p| {
        p.rate_limit.abuse = Some(AbuseSpec {
            max_not_found: Some(2),
            max_bad_request: None,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        })
    });
    let c = creds();
    login(&engine, &bundle, c.reader.text());
    let addr = ip("192.0.2.1");
    let key = Some(c.reader.id());
    let key = key.as_ref().map(|k| k.as_str());
    assert!(!engine.observe_response(&bundle, addr, key, 404, T0).any());
    assert!(!engine.observe_response(&bundle, addr, key, 200, T0).any());
    assert!(!engine.observe_response(&bundle, addr, key, 404, T0).any());
    let t = engine.observe_response(&bundle, addr, key, 404, T0);
    assert!(t.ip_cooldown && t.key_cooldown);

    assert_eq!(
        run(&engine, &bundle, req("GET", "/healthz"), T0),
        (429, "ip_cooldown")
    );
    let mut elsewhere = with_key(req("GET", "/orders"), c.reader.text());
    elsewhere.client_ip = ip("198.51.100.1");
    assert_eq!(run(&engine, &bundle, elsewhere, T0), (429, "key_cooldown"));
    assert_eq!(
        run(&engine, &bundle, elsewhere, T0.advance_ms(30_000)).0,
        200
    );
}

#[test]
fn overload_is_503_and_slots_are_released() {
    let engine = Engine::default();
    let bundle = with_policy(|p| p.rate_limit.max_in_flight = Some(2));
    let c = creds();
    login(&engine, &bundle, c.billing.text());
    let f = with_key(req("GET", "/orders"), c.billing.text());
    let a = decide(&engine, &bundle, f, T0);
    let b = decide(&engine, &bundle, req("GET", "/healthz"), T0);
    assert_eq!((status(&a), status(&b)), (200, 200));
    let used = engine
        .key_usage(&bundle, c.billing.id().as_str(), T0)
        .unwrap()
        .quota_used_today;
    let d = decide(&engine, &bundle, f, T0);
    assert_eq!((status(&d), reason(&d)), (503, "overloaded"));
    assert_eq!(header(&rate_headers(&d), "retry-after"), Some("1"));
    drop(d);
    // The refused request gave its quota back.
    assert_eq!(
        engine
            .key_usage(&bundle, c.billing.id().as_str(), T0)
            .unwrap()
            .quota_used_today,
        used
    );
    drop(a);
    assert_eq!(run(&engine, &bundle, f, T0).0, 200);
    drop(b);
    assert_eq!(engine.in_flight(), 0);
}

#[test]
fn dry_run_reports_limits_but_blocks_nothing_else() {
    let engine = Engine::default();
    let bundle = with_policy(|p| {
        p.rate_limit.mode = Mode::DryRun;
        p.rate_limit.per_ip = Some(bucket(1, 10, 1));
        p.rate_limit.daily_quota = Some(0);
        p.rate_limit.max_in_flight = Some(1);
        lockout_policy(p);
    });
    let c = creds();
    let good = with_key(req("GET", "/orders"), c.billing.text());
    let d = decide(&engine, &bundle, good, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    let would = a.dry_run.unwrap();
    assert_eq!((would.reason, would.enforced), ("daily_quota", false));
    let held = d;

    // Second request: over the per-IP bucket, the quota and the in-flight limit, all
    // reported (the first one found), none enforced.
    let d = decide(&engine, &bundle, good, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(a.dry_run.unwrap().reason, "ip_rate_limit");
    drop((d, held));

    // Authentication and scope are never dry-run.
    assert_eq!(
        run(&engine, &bundle, req("GET", "/orders"), T0),
        (401, "missing_credential")
    );
    let reader_post = with_key(req("POST", "/orders"), c.reader.text());
    assert_eq!(
        run(&engine, &bundle, reader_post, T0),
        (403, "missing_scope")
    );

    // Lockout is computed (failures counted) but not enforced.
    let unknown = Token::mint().unwrap();
    for _ in 0..3 {
        assert_eq!(
            run(
                &engine,
                &bundle,
                with_key(req("GET", "/orders"), unknown.expose_token()),
                T0
            )
            .0,
            401
        );
    }
    let d = decide(&engine, &bundle, good, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(a.dry_run.unwrap().reason, "ip_locked_out");
}

#[test]
fn hidden_limit_headers_keep_retry_after() {
    let engine = Engine::default();
    let bundle = with_policy(|p| {
        p.rate_limit.hide_limit_headers = true;
        p.rate_limit.per_ip = Some(bucket(1, 5, 1));
    });
    let d = decide(&engine, &bundle, req("GET", "/healthz"), T0);
    assert_eq!(status(&d), 200);
    assert!(rate_headers(&d).is_empty());
    drop(d);
    let d = decide(&engine, &bundle, req("GET", "/healthz"), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(
        rate_headers(&d),
        vec![("retry-after".to_string(), "5".to_string())]
    );
}

#[test]
fn route_per_ip_limit_applies_to_public_routes() {
    let engine = Engine::default();
    let bundle = with_policy(|p| {
        p.rate_limit.routes[0].matches.path = "/healthz".into();
        p.rate_limit.routes[0].matches.methods.clear();
        p.rate_limit.routes[0].per_ip = Some(bucket(1, 10, 1));
    });
    let health = RequestFacts::new("GET", "/healthz", ip("192.0.2.50"));
    assert_eq!(run(&engine, &bundle, health, T0).0, 200);
    assert_eq!(
        run(&engine, &bundle, health, T0),
        (429, "ip_route_rate_limit")
    );
}

#[test]
fn key_usage_reports_the_key_bucket_level() {
    let engine = Engine::default();
    let bundle = with_policy(|p| p.rate_limit.per_key = Some(bucket(1, 10, 3)));
    let c = creds();
    let id = c.billing.id();
    let level = |now| engine.key_usage(&bundle, id.as_str(), now).unwrap().bucket;
    // Nothing taken yet: a full bucket.
    assert_eq!(level(T0).map(|b| (b.available, b.burst)), Some((3, 3)));
    login(&engine, &bundle, c.billing.text());
    assert_eq!(level(T0).map(|b| (b.available, b.burst)), Some((2, 3)));
    // Refilled after a while; reading it takes nothing.
    assert_eq!(level(T0.advance_ms(10_000)).map(|b| b.available), Some(3));
    assert_eq!(level(T0).map(|b| b.available), Some(2));
}
