//! The sidecar enforces what the operator wrote: the bundle Secret and ConfigMap are
//! copied out of a real API server into a folder laid out exactly as a kubelet projects
//! them (`..data` symlink swap), and requests go through the real sidecar binary to a
//! real upstream on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, time::Duration};

use turnpike_e2e::{
    Process, binary, bundle_trust, curl, eventually, free_port, install_crds, jsonpath, kubectl_ok,
    namespace, start_operator, temp_dir, upstream,
};

const WAIT: Duration = Duration::from_secs(60);

/// Writes the bundle objects the way a kubelet projects them into a volume: the files
/// live in a timestamped directory, `..data` points at it, and each key is a symlink
/// through `..data`; an update swaps `..data` atomically.
fn project(ns: &str, target: &str, dir: &Path, generation: u32) {
    let name = format!("turnpike-{target}");
    let keys_b64 = jsonpath("secret", ns, &name, "{.data.keys\\.json}");
    let keys = data_encoding::BASE64.decode(keys_b64.as_bytes()).unwrap();
    let policy = jsonpath("configmap", ns, &name, "{.data.policy\\.json}");
    let stamp = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&stamp).unwrap();
    std::fs::write(stamp.join("keys.json"), keys).unwrap();
    std::fs::write(stamp.join("policy.json"), policy).unwrap();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp_link).unwrap();
    std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
    for file in ["keys.json", "policy.json"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_sidecar_enforces_the_bundle_the_operator_wrote() {
    install_crds();
    let ns = namespace("e2e-sc");
    let system = namespace("e2e-sc-system");
    let _op = start_operator(&system, "sidecar-e2e", "op", "operator-sidecar", &[]);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: reader, namespace: {ns}}}\nspec: {{targets: [orders], scopes: ['orders:read']}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  public: [{{path: /healthz}}]\n  rules:\n  - {{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}\n  - {{match: {{methods: [POST], path: '/orders/**'}}, scopes: ['orders:write']}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec: {{targetRef: {{name: orders}}, perKey: {{rate: 1, per: 1h, burst: 5}}}}\n"
        )),
    );
    eventually("key Active", WAIT, || {
        (jsonpath("apikey", &ns, "reader", "{.status.phase}") == "Active").then_some(())
    });
    let token_b64 = eventually("token Secret", WAIT, || {
        Some(jsonpath("secret", &ns, "reader-token", "{.data.token}")).filter(|t| !t.is_empty())
    });
    let token =
        String::from_utf8(data_encoding::BASE64.decode(token_b64.as_bytes()).unwrap()).unwrap();
    eventually("bundle", WAIT, || {
        (!jsonpath("configmap", &ns, "turnpike-orders", "{.data.policy\\.json}").is_empty())
            .then_some(())
    });

    let dir = temp_dir("bundle");
    project(&ns, "orders", &dir, 1);
    let up = upstream();
    let (listen, admin) = (free_port(), free_port());
    // The sidecar trusts the operator's signing key, as an injected one does.
    let trust = bundle_trust(&system);
    let mut sidecar = Process::start(
        &binary("turnpike-sidecar"),
        &[
            "--bundle-dir",
            dir.to_str().unwrap(),
            "--bundle-trust",
            &trust,
            "--target",
            "orders",
            "--namespace",
            &ns,
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--upstream",
            &format!("http://127.0.0.1:{up}"),
            "--log-format",
            "json",
        ],
        "sidecar-e2e",
    );
    eventually("sidecar ready", WAIT, || {
        (curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).0 == 200).then_some(())
    });
    let base = format!("http://127.0.0.1:{listen}");
    let key_header = format!("X-API-Key: {token}");

    let (status, text) = curl(&[&format!("{base}/orders/1")]);
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("www-authenticate"),
        "{text}"
    );
    let (status, text) = curl(&["-H", &key_header, &format!("{base}/orders/1")]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("upstream saw GET /orders/1"), "{text}");
    let (status, text) = curl(&["-X", "POST", "-H", &key_header, &format!("{base}/orders/1")]);
    assert_eq!(status, 403, "{text}");
    assert_eq!(curl(&[&format!("{base}/healthz")]).0, 200, "public route");
    // burst 5 per hour: 1 GET + 1 POST already taken (a refused scope may or may not
    // consume a token; the 429 must come within the next few).
    let mut limited = None;
    for _ in 0..6 {
        let (status, text) = curl(&["-H", &key_header, &format!("{base}/orders/1")]);
        if status == 429 {
            limited = Some(text);
            break;
        }
        assert_eq!(status, 200, "{text}");
    }
    let limited = limited.expect("429 after the burst");
    assert!(
        limited.to_ascii_lowercase().contains("retry-after"),
        "{limited}"
    );

    // Revocation travels operator -> bundle -> (kubelet) -> sidecar.
    kubectl_ok(
        &[
            "patch",
            "apikey",
            "reader",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            "{\"spec\":{\"revoked\":true}}",
        ],
        None,
    );
    eventually("revoked in the bundle", WAIT, || {
        let b64 = jsonpath("secret", &ns, "turnpike-orders", "{.data.keys\\.json}");
        let keys = String::from_utf8(
            data_encoding::BASE64
                .decode(b64.as_bytes())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        keys.contains("\"revoked\":true").then_some(())
    });
    project(&ns, "orders", &dir, 2);
    eventually(
        "sidecar refuses the revoked key",
        Duration::from_secs(30),
        || (curl(&["-H", &key_header, &format!("{base}/orders/1")]).0 == 401).then_some(()),
    );

    let log = sidecar.output();
    assert!(!log.contains(&token), "token in the sidecar log");
    assert!(!log.contains("$argon2id$"), "hash in the sidecar log");
    assert!(sidecar.terminate(Duration::from_secs(25)), "graceful stop");
    let _ = std::fs::remove_dir_all(&dir);
    for n in [&ns, &system] {
        kubectl_ok(&["delete", "namespace", n, "--wait=false"], None);
    }
}
