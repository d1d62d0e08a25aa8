//! The secret-leak test: a scenario with real tokens through the real binary, at the
//! most verbose log level, then every byte the sidecar wrote (stdout and stderr) and
//! every admin answer (probes, metrics, key usage) is searched for the tokens, their
//! secret parts and argon2id hashes.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use proxy_common::*;

#[tokio::test(flavor = "multi_thread")]
async fn no_token_secret_or_hash_leaks() {
    let upstream = start_upstream().await;
    let setup = Setup {
        billing_extra: "  dailyQuota: 4\n".into(),
        rate_limit: format!(
            "{GENEROUS}  lockout: {{maxFailures: 2, window: 1m, duration: 1s}}\n  abuse: {{maxNotFound: 1, window: 1m, cooldown: 1s}}\n"
        ),
        ..Setup::default()
    };
    let dir = bundle_dir(&setup);
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &["--log-level", "trace"]);
    let c = creds();
    let wrong = c.reader.wrong();
    let bearer = format!("Bearer {}", c.billing.text());
    let mut typo = c.billing.text().to_string();
    typo.replace_range(30..31, if &typo[30..31] == "A" { "B" } else { "A" });
    let mut admin = Vec::new();

    // Allowed, by header and by Bearer; quota used up; scope denied; CORS.
    for headers in [
        vec![("x-api-key", c.billing.text())],
        vec![("authorization", bearer.as_str())],
        vec![
            ("x-api-key", c.billing.text()),
            ("origin", "https://shop.example.com"),
        ],
    ] {
        let r = send(&sidecar.url("/orders/1?token=x"), "GET", &headers, "").await;
        assert_eq!(r.status, 200);
    }
    let r = send(
        &sidecar.url("/orders/1"),
        "DELETE",
        &[("x-api-key", c.reader.text())],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    // A token pasted into the URL.
    let in_path = format!("/orders/{}?key={}", c.billing.text(), c.billing.text());
    assert_eq!(
        send(&sidecar.url(&in_path), "GET", &[], "").await.status,
        401
    );
    for _ in 0..3 {
        let _ = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
    }
    // Typos, wrong secrets (lockout), two credentials, a 404 (cooldown).
    let _ = get_with_key(&sidecar, "/orders/1", &typo).await;
    let _ = send(
        &sidecar.url("/orders/1"),
        "GET",
        &[("x-api-key", c.reader.text()), ("authorization", &bearer)],
        "",
    )
    .await;
    for _ in 0..3 {
        let _ = get_with_key(&sidecar, "/orders/1", &wrong).await;
    }
    let _ = get_with_key(&sidecar, "/orders/missing", c.reader.text()).await;
    // A reload, good then broken.
    write_bundle(dir.path(), &Setup::default());
    sidecar.wait_for_output(&["policy_reloaded"]).await;
    write_atomic(
        &dir.path().join(turnpike_api::bundle::KEYS_FILE),
        &compile_bundle(&manifests(&Setup::default())).0[..200],
    );
    sidecar.wait_for_output(&["policy_rejected"]).await;

    for path in [
        "/healthz".to_string(),
        "/readyz".to_string(),
        "/metrics".to_string(),
        format!("/internal/api-keys/{}", c.billing.id()),
        format!("/internal/api-keys/{}", c.reader.id()),
    ] {
        admin.push(sidecar.admin_get(&path, Some(ADMIN_TOKEN)).await.1);
    }
    assert!(admin[4].contains("\"lockedOut\":true") || admin[4].contains("\"lockedOut\":false"));

    // Shut down cleanly so every line is flushed.
    let mut sidecar = sidecar;
    sidecar.terminate();
    let _ = sidecar.wait_exit(std::time::Duration::from_secs(20)).await;
    let output = sidecar.output();
    assert!(
        output.contains("\"target\":\"audit\""),
        "the scenario produced audit lines"
    );
    assert!(output.contains("wrong_secret") && output.contains("lockout_triggered"));

    let everything = format!("{output}\n{}", admin.join("\n"));
    for cred in [&c.billing, &c.reader] {
        for needle in [cred.text(), cred.secret(), cred.hash.as_str()] {
            assert!(
                !everything.contains(needle),
                "leaked: {}...",
                &needle[..8.min(needle.len())]
            );
        }
        // The hash's digest part alone.
        let digest = cred.hash.as_str().rsplit('$').next().unwrap();
        assert!(!everything.contains(digest), "a hash digest leaked");
    }
    for needle in [wrong.as_str(), &wrong[17..], typo.as_str(), &typo[17..]] {
        assert!(!everything.contains(needle), "a presented token leaked");
    }
    assert!(!everything.contains("$argon2"), "an argon2 hash leaked");
    assert!(!everything.contains(ADMIN_TOKEN), "the admin token leaked");
    assert!(
        !everything.contains("token=x"),
        "query strings are not logged"
    );
}
