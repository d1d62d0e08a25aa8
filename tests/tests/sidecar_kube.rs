//! The sidecar talking to Kubernetes, on a real API server without a node: the sidecar
//! binary runs on this host with the test's `KUBECONFIG`, `--bundle-source api`, and
//! writes its Events to the API server.
//!
//! - the bundle comes from the watch (no mounted directory at all), and a revocation
//!   applied with kubectl turns the key's next request into a 401 (the time from the
//!   apply to the first 401 is printed);
//! - a storm of refused requests from one key becomes one Event per reason with its
//!   `series.count`, in a handful of API writes (counted by the sidecar's
//!   `turnpike_sidecar_event_writes_total` and printed);
//! - `kubectl describe apikey` shows the Events, and neither the token nor a hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use turnpike_api::bundle::{self, KeyBundle, Sealed as _};
use turnpike_e2e::{
    Process, binary, bundle_trust, curl, eventually, free_port, install_crds, jsonpath, kubectl,
    kubectl_ok, namespace, sidecar_events, start_operator, upstream,
};

const WAIT: Duration = Duration::from_secs(60);
/// Refused requests of the storm.
const STORM: u64 = 20_000;

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = kubectl(&["delete", "namespace", n, "--wait=false"], None);
        }
    }
}

/// Sends `n` requests for `path` with `token` on one keep-alive connection; returns
/// how many got `status`.
fn storm(port: u16, path: &str, token: &str, n: u64, status: u16) -> u64 {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nhost: orders\r\nx-api-key: {token}\r\n\r\n");
    let mut matched = 0;
    for _ in 0..n {
        writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let got: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        if got == status {
            matched += 1;
        }
    }
    matched
}

/// Sum of a counter family in the sidecar's `/metrics`.
fn metric(admin: u16, prefix: &str) -> u64 {
    let (_, text) = curl(&[&format!("http://127.0.0.1:{admin}/metrics")]);
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_sidecar_watches_its_bundle_and_reports_aggregated_events() {
    install_crds();
    let system = namespace("e2e-sk-system");
    let ns = namespace("e2e-sk");
    let _cleanup = Cleanup(vec![system.clone(), ns.clone()]);
    let _op = start_operator(&system, "tp-sk", "sk-e2e", "operator-sidecar-kube", &[]);

    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: gen, namespace: {ns}}}\nspec: {{targets: [orders], scopes: ['orders:read']}}\n---\napiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}, {{match: {{methods: [GET], path: '/admin/**'}}, scopes: ['admin']}}]\n"
        )),
    );
    eventually("ApiKey gen to become Active", WAIT, || {
        (jsonpath("apikey", &ns, "gen", "{.status.phase}") == "Active").then_some(())
    });
    let token = eventually("the token of gen", WAIT, || {
        let t = kubectl(
            &[
                "get",
                "secret",
                "gen-token",
                "-n",
                &ns,
                "-o",
                "go-template={{.data.token | base64decode}}",
            ],
            None,
        );
        (t.ok && t.stdout.starts_with("tpk_")).then(|| t.stdout.trim().to_string())
    });
    eventually("bundle objects turnpike-orders", WAIT, || {
        let keys = jsonpath("secret", &ns, "turnpike-orders", "{.data.keys\\.json}");
        let policy = jsonpath("configmap", &ns, "turnpike-orders", "{.data.policy\\.json}");
        (!keys.is_empty() && !policy.is_empty()).then_some(())
    });

    let up = upstream();
    let (port, admin) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let admin_listen = format!("127.0.0.1:{admin}");
    let upstream_url = format!("http://127.0.0.1:{up}");
    let trust = bundle_trust(&system);
    let mut sidecar = Process::start(
        &binary("turnpike-sidecar"),
        &[
            "--bundle-source",
            "api",
            "--bundle-trust",
            &trust,
            "--target",
            "orders",
            "--namespace",
            &ns,
            "--pod-name",
            "orders-e2e-pod",
            "--event-series-interval",
            "2s",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
            "--upstream",
            &upstream_url,
            "--log-format",
            "pretty",
        ],
        "sidecar-kube",
    );
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    eventually(
        "the sidecar to be ready on the watched bundle",
        WAIT,
        || (curl(&[&readyz]).0 == 200).then_some(()),
    );
    let orders = format!("http://127.0.0.1:{port}/orders/1");
    let key_header = format!("x-api-key: {token}");
    assert_eq!(curl(&["-H", &key_header, &orders]).0, 200);

    // Whoever may write Secrets here grants the key the admin scope in the bundle
    // itself, content hash recomputed, the operator's signature kept: the sidecar
    // refuses the edit (it reaches it through the watch), and the operator, seeing its
    // Secret changed, writes its own signed bundle back.
    let admin_url = format!("http://127.0.0.1:{port}/admin/users");
    // Each refused probe of the admin route counts in the ScopeDenied Event below.
    let mut probes = 0u64;
    let mut probe_admin = || {
        probes += 1;
        curl(&["-H", &key_header, &admin_url]).0
    };
    assert_eq!(probe_admin(), 403);
    let written = jsonpath("secret", &ns, "turnpike-orders", "{.data.keys\\.json}");
    let written = String::from_utf8(
        data_encoding::BASE64
            .decode(written.as_bytes())
            .expect("base64 keys.json"),
    )
    .expect("UTF-8 keys.json");
    let mut keys: KeyBundle = bundle::parse(&written).expect("the operator's keys.json");
    assert!(
        !keys.signatures.is_empty(),
        "the operator signs its bundles"
    );
    for entry in keys.keys.values_mut() {
        entry.scopes.push("admin".into());
        entry.refresh_fingerprint();
    }
    keys.seal();
    let forged = data_encoding::BASE64.encode(keys.to_json().as_bytes());
    kubectl_ok(
        &[
            "patch",
            "secret",
            "turnpike-orders",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"data":{{"keys.json":"{forged}"}}}}"#),
        ],
        None,
    );
    eventually("the sidecar to refuse the edited bundle", WAIT, || {
        sidecar
            .output()
            .contains("no valid signature by a trusted key")
            .then_some(())
    });
    assert_eq!(probe_admin(), 403, "the edited scopes were not enforced");
    eventually("the operator to write its own bundle back", WAIT, || {
        let now = jsonpath("secret", &ns, "turnpike-orders", "{.data.keys\\.json}");
        (now != forged).then_some(())
    });
    assert_eq!(curl(&["-H", &key_header, &orders]).0, 200);
    assert_eq!(probe_admin(), 403);

    // The storm: one key, a route its scopes do not allow.
    let started = Instant::now();
    let refused = storm(port, "/admin/users", &token, STORM, 403);
    assert_eq!(refused, STORM);
    let storm_secs = started.elapsed().as_secs_f64();
    let events = eventually(
        "one ScopeDenied Event counting the whole storm",
        WAIT,
        || {
            let all = sidecar_events(&ns);
            let denied: Vec<_> = all.iter().filter(|e| e.reason == "ScopeDenied").collect();
            (denied.len() == 1 && denied[0].count == STORM + probes).then_some(all)
        },
    );
    let writes = metric(admin, "turnpike_sidecar_event_writes_total");
    let dropped = metric(admin, "turnpike_events_dropped_total");
    println!(
        "storm: {STORM} refused requests in {storm_secs:.1} s -> {} sidecar Event(s), {writes} API writes, {dropped} dropped",
        events.len()
    );
    let denied = events.iter().find(|e| e.reason == "ScopeDenied").unwrap();
    assert_eq!(denied.regarding, "gen");
    let key_id = token.split('_').nth(1).unwrap();
    assert!(denied.note.contains(key_id) && denied.note.contains("GET /admin/users"));
    assert!(denied.note.contains("127.0.0.1"), "{}", denied.note);
    // One create, then at most one patch per 2 s series interval of the storm (and
    // the one after it): a bound that does not depend on the request count.
    let bound = 2 + (storm_secs / 2.0).ceil() as u64;
    assert!(writes <= bound, "{writes} writes > {bound}");

    // Revocation through the watch.
    let applied = Instant::now();
    kubectl_ok(
        &[
            "patch",
            "apikey",
            "gen",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"revoked":true}}"#,
        ],
        None,
    );
    eventually("the revoked key to get 401", WAIT, || {
        (curl(&["-H", &key_header, &orders]).0 == 401).then_some(())
    });
    println!(
        "revocation: kubectl patch -> first 401 in {} ms (polling with curl)",
        applied.elapsed().as_millis()
    );
    assert_eq!(storm(port, "/orders/2", &token, 5, 401), 5);
    eventually("a RevokedKeyUsed Event regarding gen", WAIT, || {
        sidecar_events(&ns)
            .iter()
            .any(|e| e.reason == "RevokedKeyUsed" && e.regarding == "gen" && e.count >= 2)
            .then_some(())
    });

    // What a person sees, without a secret.
    let described = kubectl_ok(&["describe", "apikey", "gen", "-n", &ns], None);
    assert!(described.contains("ScopeDenied"), "{described}");
    assert!(described.contains("RevokedKeyUsed"), "{described}");
    assert!(
        described.contains(&format!("x{}", STORM + probes)),
        "{described}"
    );
    let secret_part = token.rsplit('_').next().unwrap();
    let all_events = kubectl_ok(
        &["get", "events.events.k8s.io", "-n", &ns, "-o", "yaml"],
        None,
    );
    for text in [&described, &all_events] {
        assert!(!text.contains(secret_part));
        assert!(!text.contains("$argon2"));
    }
    assert!(!sidecar.output().contains(secret_part));
    assert!(sidecar.terminate(Duration::from_secs(30)));
}
