//! Component tests of the real binary's admin token: the header
//! `x-turnpike-admin-token` (what `kubectl turnpike usage` sends through the API
//! server's pod proxy) next to `Authorization: Bearer`, and a `--admin-token-file` that
//! does not exist at start and is then written and replaced the way a kubelet updates
//! an optional Secret volume. The token never appears in the process's output.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::path::Path;

use proxy_common::*;
use turnpike_api::bundle::ADMIN_TOKEN_HEADER;

/// Writes `token` as a kubelet does: a new timestamped directory, an atomic swap of
/// the `..data` symlink, and `token` linking through `..data`.
fn kubelet_write(dir: &Path, generation: u32, token: &str) {
    let data = dir.join(format!("..2026_11_23_{generation}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("token"), token).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
}

async fn usage(sidecar: &Sidecar, id: &str, headers: &[(&str, &str)]) -> Resp {
    send(
        &format!("http://{}/internal/api-keys/{id}", sidecar.admin),
        "GET",
        headers,
        "",
    )
    .await
}

/// Polls until a request with `token` in the dedicated header gets `status`.
async fn until_status(sidecar: &Sidecar, id: &str, token: &str, status: u16) -> Resp {
    for _ in 0..800 {
        let r = usage(sidecar, id, &[(ADMIN_TOKEN_HEADER, token)]).await;
        if r.status == status {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never got {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_that_appears_later_is_picked_up_and_never_printed() {
    let upstream = start_upstream().await;
    let bundle = bundle_dir(&Setup {
        billing_extra: "  dailyQuota: 100\n".into(),
        ..Setup::default()
    });
    let tokens = tempfile::tempdir().unwrap();
    let file = tokens.path().join("token");
    // The harness also sets TURNPIKE_ADMIN_TOKEN: a configured file wins over it.
    let sidecar = Sidecar::with_bundle(
        bundle.path(),
        &upstream,
        &["--admin-token-file", file.to_str().unwrap()],
    );
    sidecar.wait_ready(200).await;
    let id = creds().billing.id();

    // No file yet: 503, whatever is presented; the proxy itself is unaffected.
    let r = usage(&sidecar, &id, &[(ADMIN_TOKEN_HEADER, ADMIN_TOKEN)]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "admin_token_unavailable");
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        get_with_key(&sidecar, "/orders/1", creds().billing.text())
            .await
            .status,
        200
    );

    // The Secret appears: the kubelet writes the file; the sidecar picks it up.
    let first = "tpa-first-0123456789abcdefghijklmnopqrstuvwxyzABCDEF";
    kubelet_write(tokens.path(), 1, &format!("{first}\n"));
    let r = until_status(&sidecar, &id, first, 200).await;
    let v = r.json();
    assert_eq!(v["id"], id);
    assert_eq!(v["usage"]["quotaUsedToday"], 1);
    assert_eq!(v["usage"]["dailyQuota"], 100);
    // The same token as a Bearer credential; wrong tokens are refused.
    let bearer = format!("Bearer {first}");
    assert_eq!(
        usage(&sidecar, &id, &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    for wrong in [ADMIN_TOKEN, "tpa-wrong", ""] {
        let r = usage(&sidecar, &id, &[(ADMIN_TOKEN_HEADER, wrong)]).await;
        assert_eq!(r.status, 401, "{wrong:?}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    assert_eq!(usage(&sidecar, &id, &[]).await.status, 401);

    // A new Secret value: the new token works, the old one stops working.
    let second = "tpa-second-ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu";
    kubelet_write(tokens.path(), 2, second);
    until_status(&sidecar, &id, second, 200).await;
    assert_eq!(
        usage(&sidecar, &id, &[(ADMIN_TOKEN_HEADER, first)])
            .await
            .status,
        401
    );

    sidecar.wait_for_output(&["admin token loaded"]).await;
    let output = sidecar.output();
    for secret in [first, second, ADMIN_TOKEN] {
        assert!(
            !output.contains(secret),
            "the output shows a token:\n{output}"
        );
    }
}
