//! Access steps: one path decided and forwarded, public routes, scopes, the default
//! action, and CORS (preflights and decorations).
#![allow(clippy::unwrap_used)]

mod engine_common;

use engine_common::*;
use turnpike_api::types::DefaultAction;
use turnpike_sidecar::engine::{Decision, Engine, HeaderValues, RequestFacts};

#[test]
fn path_refusals_are_400() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let cases = [
        ("/orders%2F1", "path_encoded_slash"),
        ("/orders%2f1", "path_encoded_slash"),
        ("/orders%5C1", "path_encoded_backslash"),
        ("/orders\\1", "path_backslash"),
        ("/orders%00", "path_control_character"),
        ("/orders\u{1}", "path_control_character"),
        ("/orders/%zz", "path_bad_percent_encoding"),
        ("/admin/..;/orders", "path_dot_segment_parameter"),
        ("orders", "path_not_absolute"),
    ];
    for (path, want) in cases {
        let d = decide(
            &engine,
            &bundle,
            with_key(req("GET", path), c.billing.text()),
            T0,
        );
        let Decision::Refuse(r) = &d else {
            panic!("{path}: {d:?}")
        };
        assert_eq!(
            (r.response.status, r.response.code, r.audit.reason),
            (400, "invalid_request", want),
            "{path}"
        );
    }
}

#[test]
fn decisions_use_the_normalised_path_and_forward_it() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    // `/healthz/../admin/x` is not the public `/healthz`: it is `/admin/x`.
    assert_eq!(
        run(&engine, &bundle, req("GET", "/healthz/../admin/x"), T0),
        (401, "missing_credential")
    );
    let reader = |path| with_key(req("GET", path), c.reader.text());
    assert_eq!(
        run(&engine, &bundle, reader("/orders/%2e%2e/admin/x"), T0),
        (403, "missing_scope")
    );
    assert_eq!(
        run(&engine, &bundle, reader("/%61dmin/x"), T0),
        (403, "missing_scope")
    );
    let d = decide(&engine, &bundle, reader("/%6Frders//1/./x/../y"), T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(&*a.path, "/orders/1/y");
    // Encoded public path is public too, and forwarded decoded.
    let d = decide(&engine, &bundle, req("GET", "/%68ealthz"), T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(&*a.path, "/healthz");
    assert!(a.identity.is_none());
}

#[test]
fn public_routes_need_no_key_and_ignore_credentials() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let mut f = req("GET", "/healthz");
    // Conflicting or broken credentials are not even read on a public route.
    f.api_key = HeaderValues::Many;
    f.authorization = HeaderValues::one("Bearer nonsense");
    let d = decide(&engine, &bundle, f, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    assert!(a.identity.is_none());
    // Only the per-IP limits apply: per-IP headers, no per-key or quota ones.
    let h = rate_headers(&d);
    assert_eq!(header(&h, "ratelimit-policy"), Some("\"ip\";q=100;w=2"));
    // Not public: `/healthz/x` and `/healthzz`.
    assert_eq!(run(&engine, &bundle, req("GET", "/healthz/x"), T0).0, 401);
    assert_eq!(run(&engine, &bundle, req("GET", "/healthzz"), T0).0, 401);
}

#[test]
fn scopes_and_default_action() {
    let engine = Engine::default();
    let c = creds();
    let bundle = compile(&keys(), &policy());
    let k = |m, p, t| with_key(req(m, p), t);
    assert_eq!(
        run(&engine, &bundle, k("GET", "/orders/1", c.reader.text()), T0).0,
        200
    );
    assert_eq!(
        run(&engine, &bundle, k("HEAD", "/orders", c.reader.text()), T0).0,
        200
    );
    let d = decide(
        &engine,
        &bundle,
        k("DELETE", "/orders/1", c.reader.text()),
        T0,
    );
    let Decision::Refuse(r) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (r.response.status, r.response.code, r.audit.event),
        (403, "forbidden", "scope_denied")
    );
    assert_eq!(r.audit.key_id, Some(c.reader.id().as_str()));
    assert_eq!(r.www_authenticate, None);
    drop(d);
    assert_eq!(
        run(
            &engine,
            &bundle,
            k("DELETE", "/orders/1", c.billing.text()),
            T0
        )
        .0,
        200
    );
    assert_eq!(
        run(
            &engine,
            &bundle,
            k("GET", "/admin/users", c.admin.text()),
            T0
        )
        .0,
        200
    );
    // An unknown method matches only method-less rules.
    assert_eq!(
        run(
            &engine,
            &bundle,
            k("PROPFIND", "/orders/1", c.billing.text()),
            T0
        ),
        (403, "no_matching_rule")
    );
    // No rule: Deny by default...
    assert_eq!(
        run(&engine, &bundle, k("GET", "/reports", c.billing.text()), T0),
        (403, "no_matching_rule")
    );
    // ...or any authenticated key.
    let mut p = policy();
    p.access.default_action = DefaultAction::AllowAuthenticated;
    let open = compile(&keys(), &p);
    assert_eq!(
        run(&engine, &open, k("GET", "/reports", c.admin.text()), T0).0,
        200
    );
    assert_eq!(run(&engine, &open, req("GET", "/reports"), T0).0, 401);
}

fn preflight<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> RequestFacts<'a> {
    let mut f = req("OPTIONS", "/orders/1");
    f.origin = HeaderValues::one(origin);
    f.access_control_request_method = HeaderValues::one(method);
    f.access_control_request_headers = HeaderValues::one(headers);
    f
}

#[test]
fn cors_preflight_is_answered_without_credentials() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let d = decide(
        &engine,
        &bundle,
        preflight(
            "https://app.shop.example.com",
            "POST",
            "content-type, x-api-key",
        ),
        T0,
    );
    let Decision::Preflight(p) = &d else {
        panic!("{d:?}")
    };
    let mut h = Vec::new();
    p.headers
        .for_each(|n, v| h.push((n.to_string(), v.to_string())));
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("https://app.shop.example.com")
    );
    assert_eq!(
        header(&h, "access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE")
    );
    assert_eq!(
        header(&h, "access-control-allow-headers"),
        Some("content-type, authorization, x-api-key")
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-max-age"), Some("600"));
    assert_eq!(engine.in_flight(), 0, "a preflight is not forwarded");
    drop(d);

    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://shop.example.com", "PATCH", ""),
        ("https://shop.example.com", "GET", "x-internal"),
    ] {
        let d = decide(&engine, &bundle, preflight(origin, method, headers), T0);
        assert_eq!(
            (status(&d), reason(&d)),
            (403, "cors_preflight_rejected"),
            "{origin} {method} {headers}"
        );
    }

    // Without a CorsPolicy, OPTIONS is an ordinary request (it needs a key).
    let mut p = policy();
    p.cors = None;
    let no_cors = compile(&keys(), &p);
    assert_eq!(
        run(
            &engine,
            &no_cors,
            preflight("https://shop.example.com", "GET", ""),
            T0
        )
        .0,
        401
    );
}

#[test]
fn preflights_pass_the_per_ip_limits() {
    let engine = Engine::default();
    let mut p = policy();
    p.rate_limit.per_ip = Some(bucket(1, 10, 1));
    let bundle = compile(&keys(), &p);
    let f = preflight("https://shop.example.com", "GET", "");
    assert_eq!(run(&engine, &bundle, f, T0).0, 204);
    assert_eq!(run(&engine, &bundle, f, T0), (429, "ip_rate_limit"));
}

#[test]
fn cors_headers_on_actual_responses_and_refusals() {
    let (engine, bundle) = (Engine::default(), compile(&keys(), &policy()));
    let c = creds();
    let mut f = with_key(req("GET", "/orders"), c.reader.text());
    f.origin = HeaderValues::one("https://shop.example.com");
    let d = decide(&engine, &bundle, f, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    let cors = a.cors.unwrap();
    assert_eq!(cors.allow_origin, Some("https://shop.example.com"));
    assert!(cors.allow_credentials && cors.vary_origin);
    assert_eq!(cors.expose_headers, Some("X-RateLimit-Limit, Retry-After"));
    drop(d);

    // A refusal carries them too, so the browser can read the error.
    let mut f = req("GET", "/orders");
    f.origin = HeaderValues::one("https://shop.example.com");
    let d = decide(&engine, &bundle, f, T0);
    let Decision::Refuse(r) = &d else {
        panic!("{d:?}")
    };
    assert_eq!(
        r.cors.unwrap().allow_origin,
        Some("https://shop.example.com")
    );
    drop(d);

    // A foreign origin gets only `Vary: Origin`.
    let mut f = with_key(req("GET", "/orders"), c.reader.text());
    f.origin = HeaderValues::one("https://evil.example.com");
    let d = decide(&engine, &bundle, f, T0);
    let Decision::Allow(a) = &d else {
        panic!("{d:?}")
    };
    let mut h = Vec::new();
    a.cors.unwrap().for_each(|n, v| h.push((n, v.to_string())));
    assert_eq!(h, vec![("vary", "Origin".to_string())]);
}

#[test]
fn https_redirect_comes_before_the_credential() {
    let engine = Engine::default();
    let mut p = policy();
    p.access.https_redirect = true;
    p.access.https_redirect_exempt = vec![turnpike_api::bundle::RouteSpec {
        methods: vec![],
        path: "/status/**".into(),
    }];
    let bundle = compile(&keys(), &p);
    let c = creds();
    // Plain HTTP: the key is never looked at (not even a verification).
    let before = verifications();
    assert_eq!(
        run(
            &engine,
            &bundle,
            with_key(req("GET", "/orders/1"), c.billing.text()),
            T0
        ),
        (308, "plain_http")
    );
    assert_eq!(verifications(), before);
    assert_eq!(
        run(&engine, &bundle, req("HEAD", "/orders/1"), T0),
        (308, "plain_http")
    );
    for method in ["POST", "DELETE", "OPTIONS"] {
        assert_eq!(
            run(&engine, &bundle, req(method, "/orders/1"), T0),
            (403, "plain_http"),
            "{method}"
        );
    }
    // The exemption is matched on the normalised path.
    assert_eq!(
        run(&engine, &bundle, req("GET", "/status/x"), T0),
        (401, "missing_credential")
    );
    assert_eq!(
        run(&engine, &bundle, req("GET", "/status/../orders/1"), T0),
        (308, "plain_http")
    );
    // Over HTTPS the request goes on as usual.
    let mut https = with_key(req("GET", "/orders/1"), c.billing.text());
    https.https = true;
    assert_eq!(status(&decide(&engine, &bundle, https, T0)), 200);
}
