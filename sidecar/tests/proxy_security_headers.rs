//! Security headers and HTTPS enforcement (AccessPolicy `securityHeaders`,
//! `httpsRedirect`), against the real binary in local mode: the defaults, every rule
//! kind, HSTS under both trust cases, the redirect and the refusal.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::sync::atomic::Ordering;

use proxy_common::*;

const LEAKY: &str = "/orders/leaky";

async fn get(sidecar: &Sidecar, path: &str, headers: &[(&str, &str)]) -> Resp {
    let key = creds().billing.text();
    let mut all = vec![("x-api-key", key)];
    all.extend_from_slice(headers);
    send(&sidecar.url(path), "GET", &all, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn owasp_defaults_without_a_header_policy() {
    let upstream = start_upstream().await;
    let (sidecar, _dir) = local_mode(&Setup::default(), &upstream, &[]);
    sidecar.wait_ready(200).await;

    let r = get(&sidecar, LEAKY, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("server"), None, "leak removed");
    assert_eq!(r.header("x-powered-by"), None, "leak removed");
    assert_eq!(
        r.header("x-frame-options"),
        Some("SAMEORIGIN"),
        "set only if missing"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-xss-protection"), Some("0"));
    assert_eq!(r.header("cross-origin-resource-policy"), None);
    // Plain HTTP, and a client-sent X-Forwarded-Proto from an untrusted peer: no HSTS.
    assert_eq!(r.header("strict-transport-security"), None);
    let r = get(&sidecar, LEAKY, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.header("strict-transport-security"), None);

    // The sidecar's own answers too.
    let r = send(&sidecar.url("/orders/1"), "GET", &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hsts_only_over_https_from_a_trusted_proxy() {
    let upstream = start_upstream().await;
    let (sidecar, _dir) = local_mode(
        &Setup::default(),
        &upstream,
        &["--trusted-proxies", "127.0.0.1/32"],
    );
    sidecar.wait_ready(200).await;

    let r = get(&sidecar, LEAKY, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    let r = get(&sidecar, LEAKY, &[("x-forwarded-proto", "http")]).await;
    assert_eq!(r.header("strict-transport-security"), None);
    let r = get(&sidecar, LEAKY, &[]).await;
    assert_eq!(r.header("strict-transport-security"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rule_kind_of_a_header_policy() {
    let upstream = start_upstream().await;
    let setup = Setup {
        access_extra: "  securityHeaders:
    set:
      - {name: X-Frame-Options, value: DENY}
      - {name: X-XSS-Protection, value: \"1; mode=block\"}
    setIfMissing:
      - {name: Cross-Origin-Resource-Policy, value: same-site}
    remove: [Referrer-Policy]
    hsts: {maxAge: 1h, includeSubDomains: false}
"
        .into(),
        ..Setup::default()
    };
    let (sidecar, _dir) = local_mode(&setup, &upstream, &["--trusted-proxies", "127.0.0.1"]);
    sidecar.wait_ready(200).await;

    let r = get(&sidecar, LEAKY, &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "set replaces");
    assert_eq!(r.header("x-xss-protection"), Some("1; mode=block"));
    assert_eq!(r.header("cross-origin-resource-policy"), Some("same-site"));
    assert_eq!(r.header("referrer-policy"), None, "a removed default");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=3600"));

    // An invalid header policy is refused by the compiler, with a reason that names it.
    let upstream2 = start_upstream().await;
    let bad = Setup {
        access_extra:
            "  securityHeaders:\n    set:\n      - {name: Transfer-Encoding, value: chunked}\n"
                .into(),
        ..Setup::default()
    };
    let (refused, _dir2) = local_mode(&bad, &upstream2, &[]);
    refused
        .wait_for_output(&["Transfer-Encoding", "cannot be changed"])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_is_redirected_or_refused_before_the_key_is_read() {
    let upstream = start_upstream().await;
    let setup = Setup {
        access_extra: "  httpsRedirect: true\n  httpsRedirectExempt:\n    - {path: /healthz}\n"
            .into(),
        ..Setup::default()
    };
    let (sidecar, _dir) = local_mode(&setup, &upstream, &["--trusted-proxies", "127.0.0.1"]);
    sidecar.wait_ready(200).await;
    let wrong = creds().billing.wrong();

    // GET with a wrong key: redirected, the key is never checked.
    let r = send(
        &sidecar.url("/orders/1?x=1"),
        "GET",
        &[("x-api-key", &wrong), ("host", "shop.example.com:9080")],
        "",
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/orders/1?x=1")
    );
    assert_eq!(r.json()["error"]["code"], "https_redirect");
    // POST: a redirect would lose the body.
    let r = send(
        &sidecar.url("/orders/1"),
        "POST",
        &[("x-api-key", &wrong)],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "https_required");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    assert!(
        !sidecar.output().contains("auth_failed"),
        "no key was checked"
    );

    // Exempt route, and HTTPS through the trusted proxy: served.
    let r = send(&sidecar.url("/healthz"), "GET", &[], "").await;
    assert_eq!(r.status, 200);
    let r = get(&sidecar, "/orders/1", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}
