//! Component tests of the real binary: authentication, identity forwarding, scopes,
//! CORS, trusted proxies, fail-closed, admin endpoints and audit lines.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use proxy_common::*;

#[tokio::test(flavor = "multi_thread")]
async fn allowed_request_is_forwarded_with_identity_and_without_credential() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();

    let r = send(
        &sidecar.url("/orders//42/./items/%61?x=1&y=%2F"),
        "GET",
        &[
            ("x-api-key", c.billing.text()),
            ("x-turnpike-key-id", "spoofed"),
            ("x-turnpike-scopes", "admin"),
            ("x-turnpike-anything", "spoofed"),
            ("x-forwarded-for", "6.6.6.6"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    // The path the engine decided on, with the original query.
    assert_eq!(echo["path"], "/orders/42/items/a");
    assert_eq!(echo["query"], "x=1&y=%2F");
    assert_eq!(r.echoed_header("x-turnpike-key-id"), [c.billing.id()]);
    assert_eq!(
        r.echoed_header("x-turnpike-scopes"),
        ["orders:read orders:write"]
    );
    assert!(r.echoed_header("x-turnpike-anything").is_empty());
    assert!(r.echoed_header("x-api-key").is_empty());
    assert_eq!(r.echoed_header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.echoed_header("x-forwarded-proto"), ["http"]);
    // Response side: rate-limit and security headers.
    assert!(r.header("x-ratelimit-limit").is_some());
    assert!(r.header("ratelimit-policy").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.header("strict-transport-security").is_none());

    // Bearer: stripped too; a non-Turnpike Authorization would pass (unit-tested).
    let bearer = format!("Bearer {}", c.reader.text());
    let r = send(
        &sidecar.url("/orders/1"),
        "GET",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.echoed_header("authorization").is_empty());
    assert_eq!(r.echoed_header("x-turnpike-scopes"), ["orders:read"]);

    // Public route: no key, no identity.
    let r = send(&sidecar.url("/healthz"), "GET", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.echoed_header("x-turnpike-key-id").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_get_401_with_challenge_and_are_audited() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();
    let wrong = c.billing.wrong();
    let unknown = turnpike_api::token::Token::mint().unwrap();
    let cases: [(Option<&str>, &str); 4] = [
        (None, "missing_credential"),
        (Some("tpk_not-a-token"), "malformed_token_length"),
        (Some(&wrong), "wrong_secret"),
        (Some(unknown.expose_token()), "unknown_key"),
    ];
    for (token, reason) in cases {
        let headers: Vec<(&str, &str)> = token.map(|t| ("x-api-key", t)).into_iter().collect();
        let r = send(&sidecar.url("/orders/1"), "GET", &headers, "").await;
        assert_eq!(r.status, 401, "{reason}: {}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"turnpike\"")
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            serde_json::json!({"error": {"code": "unauthorized", "message": "invalid or missing API key"}})
        );
        if reason != "missing_credential" {
            sidecar
                .wait_for_output(&["\"target\":\"audit\"", reason])
                .await;
        }
    }
    // Two different credentials: 400, never "first one wins".
    let bearer = format!("Bearer {}", c.reader.text());
    let r = send(
        &sidecar.url("/orders/1"),
        "GET",
        &[("x-api-key", c.billing.text()), ("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_request");
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Audit lines: one JSON object each, with the contract's fields.
    let line = sidecar
        .audit_lines()
        .into_iter()
        .find(|l| l["reason"] == "wrong_secret")
        .unwrap();
    for field in [
        "timestamp",
        "event",
        "actor",
        "resource",
        "action",
        "result",
    ] {
        assert!(line[field].is_string(), "{field} in {line}");
    }
    assert_eq!(line["event"], "auth_failed");
    assert_eq!(line["actor"], c.billing.id());
    assert_eq!(line["resource"], "shop/orders GET /orders/1");
    assert_eq!(line["action"], "authenticate");
    assert_eq!(line["result"], "denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_scope_is_403() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();
    let r = send(
        &sidecar.url("/orders/1"),
        "POST",
        &[("x-api-key", c.reader.text())],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let r = send(
        &sidecar.url("/orders/1"),
        "POST",
        &[("x-api-key", c.billing.text())],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 2);
    sidecar
        .wait_for_output(&["\"event\":\"scope_denied\"", "\"action\":\"authorize\""])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_is_answered_by_the_sidecar() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let origin = "https://app.shop.example.com";
    let r = send(
        &sidecar.url("/orders/1"),
        "OPTIONS",
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-api-key"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);

    let r = send(
        &sidecar.url("/orders/1"),
        "OPTIONS",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "GET"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "cors_forbidden");

    // Actual requests (and refusals) carry the CORS headers.
    let r = send(&sidecar.url("/orders/1"), "GET", &[("origin", origin)], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    let r = send(
        &sidecar.url("/orders/1"),
        "GET",
        &[("origin", origin), ("x-api-key", creds().reader.text())],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-ratelimit-limit")
    );
}

fn per_ip_burst_two() -> Setup {
    Setup {
        rate_limit:
            "  perKey: {rate: 1000, per: 1s, burst: 2000}\n  perIp: {rate: 1, per: 1m, burst: 2}\n"
                .into(),
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_forwarded_for_is_ignored_from_untrusted_peers() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&per_ip_burst_two());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let xff = format!("198.51.100.{i}");
        let r = send(
            &sidecar.url("/healthz"),
            "GET",
            &[("x-forwarded-for", &xff)],
            "",
        )
        .await;
        if r.status == 200 {
            assert_eq!(r.echoed_header("x-forwarded-for"), ["127.0.0.1"]);
        }
        statuses.push(r.status);
    }
    // Every request counted against the peer, 127.0.0.1: burst 2.
    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_from_trusted_proxies() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&per_ip_burst_two());
    let sidecar = Sidecar::with_bundle(
        dir.path(),
        &upstream,
        &["--trusted-proxies", "127.0.0.1/32"],
    );
    for i in 0..4 {
        let xff = format!("198.51.100.{i}");
        let r = send(
            &sidecar.url("/healthz"),
            "GET",
            &[("x-forwarded-for", &xff)],
            "",
        )
        .await;
        // Each client address has its own bucket.
        assert_eq!(r.status, 200);
        assert_eq!(
            r.echoed_header("x-forwarded-for"),
            [format!("{xff}, 127.0.0.1")]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fails_closed_without_a_bundle() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let ready = sidecar.wait_ready(503).await;
    assert!(ready.contains("no valid bundle loaded yet"), "{ready}");
    assert!(ready.contains("keys.json"), "{ready}");
    assert_eq!(sidecar.admin_get("/healthz", None).await.0, 200);
    for path in ["/orders/1", "/healthz"] {
        let r = get_with_key(&sidecar, path, creds().billing.text()).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"]["code"], "unavailable");
    }
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let m = sidecar.metrics().await;
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_loaded"), 0.0);
    assert!(metric(&m, "turnpike_sidecar_bundle_reload_failures_total") >= 1.0);

    // The bundle arrives: ready, and requests pass.
    write_bundle(dir.path(), &Setup::default());
    sidecar.wait_ready(200).await;
    let r = get_with_key(&sidecar, "/orders/1", creds().billing.text()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_key_usage_needs_the_admin_token() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup {
        billing_extra: "  dailyQuota: 100\n".into(),
        ..Setup::default()
    });
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();
    for _ in 0..3 {
        assert_eq!(
            get_with_key(&sidecar, "/orders/1", c.billing.text())
                .await
                .status,
            200
        );
    }
    let path = format!("/internal/api-keys/{}", c.billing.id());
    assert_eq!(sidecar.admin_get(&path, None).await.0, 401);
    assert_eq!(sidecar.admin_get(&path, Some("wrong")).await.0, 401);
    assert_eq!(
        sidecar
            .admin_get("/internal/api-keys/zzzzzzzzzzzz", Some(ADMIN_TOKEN))
            .await
            .0,
        404
    );
    let (status, body) = sidecar.admin_get(&path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], c.billing.id());
    assert_eq!(v["name"], "billing");
    assert_eq!(v["owner"], "team-billing@example.com");
    assert_eq!(
        v["scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    assert_eq!(v["revoked"], false);
    assert_eq!(v["usage"]["quotaUsedToday"], 3);
    assert_eq!(v["usage"]["dailyQuota"], 100);
    assert_eq!(v["usage"]["lockedOut"], false);
    assert_eq!(v["usage"]["bucket"]["burst"], 2000);
    assert!(!body.contains("argon2"));

    let m = sidecar.metrics().await;
    assert_eq!(
        metric(
            &m,
            "turnpike_sidecar_requests_total{decision=\"allowed\",reason=\"authenticated\"}"
        ),
        3.0
    );
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_loaded"), 1.0);
    assert_eq!(metric(&m, "turnpike_sidecar_bundle_keys"), 2.0);
    assert!(
        metric(
            &m,
            "turnpike_sidecar_key_cache_lookups_total{result=\"hit\"}"
        ) >= 2.0
    );
    assert!(m.contains("turnpike_sidecar_upstream_duration_seconds_bucket"));
    assert!(!m.contains(&c.billing.id()), "key ids are never labels");
    let ready = sidecar.admin_get("/readyz", None).await;
    assert_eq!(ready.0, 200);
    assert!(ready.1.contains("shop/orders"), "{}", ready.1);
}
