//! Component tests of the real binary: buckets, lockout, daily quota, dry run, abuse
//! cooldown and the bounded argon2 pool under a flood of wrong secrets. Windows are
//! 1 s where time must pass; the tests wait for outcomes, never assert timings (the
//! real clock is read only for a polling deadline).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod proxy_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proxy_common::*;

fn limits(rate_limit: &str) -> Setup {
    Setup {
        rate_limit: rate_limit.into(),
        ..Setup::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_then_429_with_retry_after() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&limits(
        "  perKey: {rate: 1, per: 1m, burst: 3}\n  perIp: {rate: 1000, per: 1s, burst: 1000}\n",
    ));
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let token = creds().billing.text();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get_with_key(&sidecar, "/orders/1", token).await;
        assert_eq!(r.status, 200);
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = get_with_key(&sidecar, "/orders/1", token).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("ratelimit").unwrap().contains("\"key\";r=0"));
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "turnpike_sidecar_rate_limit_hits_total{limit=\"key\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "turnpike_sidecar_requests_total{decision=\"refused\",reason=\"key_rate_limit\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_after_wrong_secrets_then_unlock() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&limits(&format!(
        "{GENEROUS}  lockout: {{maxFailures: 3, window: 1m, duration: 1s}}\n"
    )));
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let c = creds();
    let wrong = c.billing.wrong();
    for _ in 0..3 {
        assert_eq!(
            get_with_key(&sidecar, "/orders/1", &wrong).await.status,
            401
        );
    }
    // Locked: even the right secret is refused now, with Retry-After.
    let r = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "locked_out");
    assert!(r.header("retry-after").is_some());
    sidecar
        .wait_for_output(&["\"event\":\"lockout_triggered\"", "\"reason\":\"key\""])
        .await;
    let (_, usage) = sidecar
        .admin_get(
            &format!("/internal/api-keys/{}", c.billing.id()),
            Some(ADMIN_TOKEN),
        )
        .await;
    let usage: serde_json::Value = serde_json::from_str(&usage).unwrap();
    // The key may already be unlocked on a slow machine; if locked, it says so.
    if usage["usage"]["lockedOut"] == true {
        assert!(usage["usage"]["lockedForMs"].as_u64().unwrap() <= 1000);
    }
    let m = sidecar.metrics().await;
    assert_eq!(
        metric(&m, "turnpike_sidecar_lockouts_total{subject=\"key\"}"),
        1.0
    );

    // After the lockout duration, the right secret works again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(std::time::Instant::now() < deadline, "never unlocked");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_quota_is_429_until_midnight() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup {
        billing_extra: "  dailyQuota: 2\n".into(),
        ..Setup::default()
    });
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let token = creds().billing.text();
    for _ in 0..2 {
        assert_eq!(get_with_key(&sidecar, "/orders/1", token).await.status, 200);
    }
    let r = get_with_key(&sidecar, "/orders/1", token).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "quota_exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .contains("\"daily\";q=2")
    );
    sidecar
        .wait_for_output(&["\"event\":\"quota_exhausted\"", "\"result\":\"denied\""])
        .await;
    let m = sidecar.metrics().await;
    assert_eq!(metric(&m, "turnpike_sidecar_quota_exceeded_total"), 1.0);
    // Another key has its own quota.
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", creds().reader.text())
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_passes_everything_but_reports() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup {
        billing_extra: "  dailyQuota: 1\n".into(),
        rate_limit: "  mode: DryRun\n".into(),
        ..Setup::default()
    });
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let token = creds().billing.text();
    for _ in 0..4 {
        assert_eq!(get_with_key(&sidecar, "/orders/1", token).await.status, 200);
    }
    sidecar
        .wait_for_output(&["\"event\":\"quota_exhausted\"", "\"result\":\"dry_run\""])
        .await;
    let m = sidecar.metrics().await;
    // The quota (1) would have refused requests 2-4.
    let reported = metric(
        &m,
        "turnpike_sidecar_dry_run_refusals_total{reason=\"daily_quota\"}",
    );
    assert_eq!(reported, 3.0, "{m}");
    // Dry run never covers authentication.
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", &creds().billing.wrong())
            .await
            .status,
        401
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_404s_start_a_cooldown() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&limits(&format!(
        "{GENEROUS}  abuse: {{maxNotFound: 2, window: 1m, cooldown: 1m}}\n"
    )));
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);
    let token = creds().billing.text();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            get_with_key(&sidecar, "/orders/missing", token)
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..2], [404, 404]);
    assert_eq!(statuses[3], 429);
    let r = get_with_key(&sidecar, "/orders/1", token).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "cooldown");
    sidecar
        .wait_for_output(&["\"event\":\"cooldown_triggered\""])
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secret_flood_does_not_starve_cached_keys() {
    let upstream = start_upstream().await;
    // No lockout (it would lock the key id under attack, by design), generous buckets.
    let dir = bundle_dir(&Setup::default());
    let sidecar = Arc::new(Sidecar::with_bundle(
        dir.path(),
        &upstream,
        &["--verify-threads", "1", "--verify-queue", "4"],
    ));
    let c = creds();
    // Warm the verified-key cache.
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", c.billing.text())
            .await
            .status,
        200
    );

    let (unauthorized, overloaded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut flood = Vec::new();
    for _ in 0..200 {
        let (sidecar, u, o) = (
            Arc::clone(&sidecar),
            Arc::clone(&unauthorized),
            Arc::clone(&overloaded),
        );
        let wrong = c.billing.wrong();
        flood.push(tokio::spawn(async move {
            match get_with_key(&sidecar, "/orders/1", &wrong).await.status {
                401 => u.fetch_add(1, Ordering::SeqCst),
                503 => o.fetch_add(1, Ordering::SeqCst),
                s => panic!("unexpected {s}"),
            };
        }));
    }
    // Meanwhile, the cached key keeps working.
    for _ in 0..50 {
        let r = get_with_key(&sidecar, "/orders/1", c.billing.text()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for f in flood {
        f.await.unwrap();
    }
    let (u, o) = (
        unauthorized.load(Ordering::SeqCst),
        overloaded.load(Ordering::SeqCst),
    );
    assert_eq!(u + o, 200);
    assert!(o > 0, "the bounded queue refused part of the flood");
    let m = sidecar.metrics().await;
    assert!(
        metric(
            &m,
            "turnpike_sidecar_argon2_verifications_total{result=\"overloaded\"}"
        ) > 0.0
    );
    assert!(m.contains("turnpike_sidecar_argon2_queue_wait_seconds_count"));
}
