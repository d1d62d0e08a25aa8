//! The sidecar injection webhook against a real API server: the operator runs as a local
//! process with `--webhook-url https://127.0.0.1:<port>`, registers
//! `turnpike-injector` with its own CA, and Pods created with kubectl are injected,
//! left alone or refused by the API server's own admission chain. There is no node, so
//! every Pod stays Pending: what is checked is the stored Pod spec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use turnpike_e2e::{
    Process, bundle_trust, eventually, install_crds, jsonpath, kubectl, kubectl_ok, namespace,
    start_operator,
};

const WAIT: Duration = Duration::from_secs(60);

/// A port that was free a moment ago (bind 0, read it, release it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn operator(system_ns: &str, port: u16) -> Process {
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    start_operator(
        system_ns,
        "turnpike-operator",
        "webhook-e2e",
        "operator-webhook",
        &[
            "--webhook-listen",
            &listen,
            "--webhook-url",
            &url,
            "--sidecar-image",
            "ghcr.io/turnpike/turnpike-sidecar:e2e",
        ],
    )
}

/// Deletes what the test made even when it fails half-way: a left-over
/// `turnpike-injector` with `failurePolicy: Fail` would refuse opted-in pods of later
/// tests sharing the control plane.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(
            &[
                "delete",
                "mutatingwebhookconfiguration",
                "turnpike-injector",
                "--ignore-not-found",
            ],
            None,
        );
        for n in &self.0 {
            let _ = kubectl(&["delete", "namespace", n, "--wait=false"], None);
        }
    }
}

fn pod_yaml(ns: &str, name: &str, labels: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\n  annotations: {annotations}\nspec:\n  containers:\n  - name: app\n    image: registry.example.com/app:1.0\n    imagePullPolicy: Never\n    ports: [{{name: http, containerPort: 8080}}]\n"
    )
}

fn get_pod(ns: &str, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(
        &["get", "pod", name, "-n", ns, "-o", "json"],
        None,
    ))
    .unwrap()
}

fn sidecar(pod: &Value) -> Option<Value> {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "turnpike-sidecar"))
        .cloned()
}

fn assert_untouched(pod: &Value) {
    assert!(sidecar(pod).is_none(), "{pod}");
    assert!(
        pod["metadata"]["annotations"]
            .get("turnpike.dev/injected")
            .is_none(),
        "{pod}"
    );
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert!(containers.iter().all(|c| c["name"] != "turnpike-sidecar"));
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_webhook_injects_refuses_and_leaves_alone() {
    install_crds();
    let system = namespace("e2e-wh-system");
    let mut cleanup = Cleanup(vec![system.clone()]);
    let port = free_port();
    let mut op = operator(&system, port);

    // Registered with its own CA and the URL asked for.
    let url = format!("https://127.0.0.1:{port}/mutate-pods");
    let cfg: Value = eventually("turnpike-injector with a caBundle", WAIT, || {
        let run = kubectl(
            &[
                "get",
                "mutatingwebhookconfiguration",
                "turnpike-injector",
                "-o",
                "json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&run.stdout).ok()?;
        let hooks = v["webhooks"].as_array()?;
        let ready = hooks.len() == 2
            && hooks.iter().all(|h| {
                h["clientConfig"]["url"] == json!(url)
                    && h["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
            });
        ready.then_some(v)
    });
    let secret_ca = jsonpath(
        "secret",
        &system,
        "turnpike-webhook-certs",
        "{.data.ca\\.crt}",
    );
    assert!(!secret_ca.is_empty());
    assert_eq!(
        cfg["webhooks"][0]["clientConfig"]["caBundle"],
        json!(secret_ca),
        "the published CA is the stored one"
    );
    for h in cfg["webhooks"].as_array().unwrap() {
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["sideEffects"], "None");
        assert_eq!(h["timeoutSeconds"], 5);
    }
    let managers = kubectl_ok(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "turnpike-injector",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
            "--show-managed-fields",
        ],
        None,
    );
    assert!(managers.contains("turnpike-operator"), "{managers}");

    let ns = namespace("e2e-wh");
    cleanup.0.push(ns.clone());

    // An annotated pod gets the native sidecar. The first creation may race the API
    // server's loading of the new configuration, so retry until the sidecar shows.
    let annotated = pod_yaml(
        &ns,
        "orders",
        "{app.kubernetes.io/name: orders}",
        "{turnpike.dev/inject: 'true'}",
    );
    let pod = eventually("an injected pod", WAIT, || {
        let _ = kubectl(
            &["delete", "pod", "orders", "-n", &ns, "--wait=false"],
            None,
        );
        let run = kubectl(&["apply", "-f", "-"], Some(&annotated));
        if !run.ok {
            return None;
        }
        let pod = get_pod(&ns, "orders");
        sidecar(&pod).is_some().then_some(pod)
    });
    let c = sidecar(&pod).unwrap();
    assert_eq!(c["restartPolicy"], "Always");
    assert_eq!(c["image"], "ghcr.io/turnpike/turnpike-sidecar:e2e");
    assert_eq!(
        c["args"],
        json!([
            "--bundle-dir",
            "/etc/turnpike",
            "--listen",
            "0.0.0.0:9080",
            "--upstream",
            "http://127.0.0.1:8080",
            "--admin-listen",
            "0.0.0.0:9901",
            "--admin-token-file",
            "/var/run/turnpike/admin/token",
            "--target",
            "orders",
            "--bundle-source",
            "api"
        ])
    );
    // The operator's public signing key(s), written into the pod at creation: the
    // sidecar refuses bundles they did not sign.
    let trust = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "TURNPIKE_BUNDLE_TRUST")
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(trust, bundle_trust(&system));
    // The downward API: the namespace to watch, the pod's name and UID for Events.
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| e["name"] != "TURNPIKE_BUNDLE_TRUST")
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAMESPACE", "metadata.namespace"),
            ("TURNPIKE_POD_NAME", "metadata.name"),
            ("TURNPIKE_POD_UID", "metadata.uid")
        ]
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "turnpike-admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "50m", "memory": "32Mi"})
    );
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
    // The ServiceAccount admission plugin runs again after a webhook's change; the
    // sidecar's own mount over the token path (its projected token, for the API bundle
    // source) stands, while the workload keeps its own.
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "turnpike-bundle", "mountPath": "/etc/turnpike", "readOnly": true},
            {"name": "turnpike-admin-token", "mountPath": "/var/run/turnpike/admin", "readOnly": true},
            {"name": "turnpike-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
        ])
    );
    // The API server accepted the projected token volume as sent.
    let access = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "turnpike-api-access")
        .cloned()
        .expect("api access volume");
    let sources = &access["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
    let app = &pod["spec"]["containers"][0];
    assert!(
        app["volumeMounts"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")),
        "{app}"
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "turnpike-bundle")
        .cloned()
        .expect("bundle volume");
    // The API server accepted the projection as sent: the primary Secret and the
    // ConfigMap, then every possible key shard, optional.
    let sources = volume["projected"]["sources"].as_array().unwrap();
    assert_eq!(
        sources[..2],
        [
            json!({"secret": {"name": "turnpike-orders"}}),
            json!({"configMap": {"name": "turnpike-orders"}})
        ]
    );
    assert_eq!(sources.len(), 2 + turnpike_api::bundle::MAX_KEY_SHARDS - 1);
    assert_eq!(sources[2]["secret"]["name"], "turnpike-orders.keys-1");
    assert_eq!(sources[2]["secret"]["optional"], true);
    assert_eq!(
        sources[2]["secret"]["items"],
        json!([{"key": "keys-1.json", "path": "keys-1.json"}])
    );
    let admin = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "turnpike-admin-token")
        .cloned()
        .expect("admin token volume");
    assert_eq!(admin["secret"]["secretName"], "turnpike.admin");
    assert_eq!(admin["secret"]["optional"], true);
    assert_eq!(
        pod["metadata"]["annotations"]["turnpike.dev/injected"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(pod["status"]["phase"], "Pending");

    // No annotation, namespace not labelled: untouched.
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pod_yaml(&ns, "plain", "{app: plain}", "{}")),
    );
    assert_untouched(&get_pod(&ns, "plain"));

    // A bad port annotation: refused, with the message naming it.
    let run = kubectl(
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            &ns,
            "bad-port",
            "{app: orders}",
            "{turnpike.dev/inject: 'true', turnpike.dev/upstream-port: 'http'}",
        )),
    );
    assert!(!run.ok, "{}", run.stdout);
    assert!(
        run.stderr.contains("pods.injector.turnpike.dev")
            && run.stderr.contains(
                "annotation turnpike.dev/upstream-port is \"http\"; it must be a port number from 1 to 65535"
            ),
        "{}",
        run.stderr
    );
    assert!(!kubectl(&["get", "pod", "bad-port", "-n", &ns], None).ok);

    // A typo in the opt-in reaches the webhook (match condition) and is refused.
    let run = kubectl(
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            &ns,
            "typo",
            "{app: orders}",
            "{turnpike.dev/inject: 'True'}",
        )),
    );
    assert!(!run.ok);
    assert!(
        run.stderr.contains("annotation turnpike.dev/inject is") && run.stderr.contains("True"),
        "{}",
        run.stderr
    );

    // A namespace labelled turnpike.dev/inject=enabled: pods are injected without an
    // annotation; "false" opts out.
    let labelled = namespace("e2e-wh-ns");
    cleanup.0.push(labelled.clone());
    kubectl_ok(
        &[
            "label",
            "namespace",
            &labelled,
            "turnpike.dev/inject=enabled",
        ],
        None,
    );
    let pod = eventually("a pod injected by namespace label", WAIT, || {
        let _ = kubectl(
            &["delete", "pod", "catalog", "-n", &labelled, "--wait=false"],
            None,
        );
        let run = kubectl(
            &["apply", "-f", "-"],
            Some(&pod_yaml(
                &labelled,
                "catalog",
                "{app.kubernetes.io/name: catalog}",
                "{}",
            )),
        );
        if !run.ok {
            return None;
        }
        let pod = get_pod(&labelled, "catalog");
        sidecar(&pod).is_some().then_some(pod)
    });
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "turnpike-bundle")
        .cloned()
        .unwrap();
    assert_eq!(
        volume["projected"]["sources"][0]["secret"]["name"],
        "turnpike-catalog"
    );
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            &labelled,
            "batch",
            "{app: batch}",
            "{turnpike.dev/inject: 'false'}",
        )),
    );
    assert_untouched(&get_pod(&labelled, "batch"));

    // The operator's own namespace is never touched, even when asked.
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            &system,
            "own",
            "{app: own}",
            "{turnpike.dev/inject: 'true'}",
        )),
    );
    assert_untouched(&get_pod(&system, "own"));

    assert!(op.running(), "operator exited:\n{}", op.output());
    let log = op.output();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    assert!(
        op.terminate(Duration::from_secs(20)),
        "graceful shutdown:\n{}",
        op.output()
    );

    // Fail closed: with the operator gone, a pod that asked for the sidecar is refused;
    // pods that did not ask are not affected.
    let run = kubectl(
        &["apply", "-f", "-"],
        Some(&pod_yaml(
            &ns,
            "while-down",
            "{app: orders}",
            "{turnpike.dev/inject: 'true'}",
        )),
    );
    assert!(
        !run.ok,
        "created without the sidecar while the webhook was down"
    );
    assert!(
        run.stderr.contains("failed calling webhook"),
        "{}",
        run.stderr
    );
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pod_yaml(&ns, "unrelated", "{app: other}", "{}")),
    );
    // `cleanup` removes the configuration (it points at a dead address now) and the
    // namespaces.
    drop(cleanup);
}

/// A CA and a serving certificate for 127.0.0.1 made with openssl, as cert-manager would
/// write them: (`tls.crt`, `tls.key`, `ca.crt`) file paths in `dir`.
fn issue_with_openssl(dir: &std::path::Path, tag: &str) -> [std::path::PathBuf; 3] {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let f = |n: &str| format!("{tag}-{n}");
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    run(&[&["genpkey"][..], &ec, &["-out", &f("ca.key")]].concat());
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &f("ca.key"),
        "-subj",
        &format!("/CN=e2e-ca-{tag}"),
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &f("ca.crt"),
    ]);
    run(&[&["genpkey"][..], &ec, &["-out", &f("tls.key")]].concat());
    run(&[
        "req",
        "-new",
        "-key",
        &f("tls.key"),
        "-subj",
        "/CN=webhook",
        "-out",
        &f("tls.csr"),
    ]);
    std::fs::write(
        dir.join(f("ext")),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &f("tls.csr"),
        "-CA",
        &f("ca.crt"),
        "-CAkey",
        &f("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &f("ext"),
        "-out",
        &f("tls.crt"),
    ]);
    [
        dir.join(f("tls.crt")),
        dir.join(f("tls.key")),
        dir.join(f("ca.crt")),
    ]
}

fn tls_secret_yaml(ns: &str, name: &str, files: &[std::path::PathBuf; 3]) -> String {
    let b64 = |p: &std::path::Path| data_encoding::BASE64.encode(&std::fs::read(p).unwrap());
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
        b64(&files[0]),
        b64(&files[1]),
        b64(&files[2])
    )
}

fn ca_bundle_of_injector() -> Option<Vec<Vec<u8>>> {
    let run = kubectl(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "turnpike-injector",
            "-o",
            "json",
        ],
        None,
    );
    let v: Value = serde_json::from_str(&run.stdout).ok()?;
    v["webhooks"]
        .as_array()?
        .iter()
        .map(|h| {
            let b = h["clientConfig"]["caBundle"].as_str()?;
            data_encoding::BASE64.decode(b.as_bytes()).ok()
        })
        .collect()
}

/// `--webhook-cert-secret` (cert-manager mode) and `--webhook-failure-policy Ignore`:
/// the operator serves the pair it is given, publishes its `ca.crt`, writes no
/// certificate of its own, picks up a renewed Secret without a restart, and an outage
/// lets opted-in pods through unprotected, as `Ignore` means.
#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn the_webhook_serves_a_certificate_from_a_secret_and_reloads_it() {
    install_crds();
    let system = namespace("e2e-whcm-system");
    let mut cleanup = Cleanup(vec![system.clone()]);
    let ns = namespace("e2e-whcm");
    cleanup.0.push(ns.clone());
    let dir = std::env::temp_dir().join(format!("turnpike-e2e-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = issue_with_openssl(&dir, "one");
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&tls_secret_yaml(&system, "hook-tls", &first)),
    );

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://127.0.0.1:{port}");
    let mut op = start_operator(
        &system,
        "turnpike-operator",
        "webhook-cm-e2e",
        "operator-webhook-cm",
        &[
            "--webhook-listen",
            &listen,
            "--webhook-url",
            &url,
            "--webhook-cert-secret",
            "hook-tls",
            "--webhook-failure-policy",
            "Ignore",
            "--sidecar-image",
            "ghcr.io/turnpike/turnpike-sidecar:e2e",
        ],
    );

    // The caBundle is the Secret's ca.crt, byte for byte, and the policy is Ignore.
    let ca_one = std::fs::read(&first[2]).unwrap();
    eventually("turnpike-injector with the Secret's ca.crt", WAIT, || {
        ca_bundle_of_injector()
            .filter(|b| b.len() == 2 && b.iter().all(|b| *b == ca_one))
            .map(|_| ())
    });
    let policies = kubectl_ok(
        &[
            "get",
            "mutatingwebhookconfiguration",
            "turnpike-injector",
            "-o",
            "jsonpath={.webhooks[*].failurePolicy}",
        ],
        None,
    );
    assert_eq!(policies, "Ignore Ignore");
    assert!(
        !kubectl(
            &["get", "secret", "turnpike-webhook-certs", "-n", &system],
            None
        )
        .ok,
        "the operator wrote its own certificate Secret in cert-secret mode"
    );

    let annotated = |name: &str| {
        pod_yaml(
            &ns,
            name,
            "{app.kubernetes.io/name: orders}",
            "{turnpike.dev/inject: 'true'}",
        )
    };
    // With Ignore, a failed call creates the pod without the sidecar: retry until the
    // webhook (serving the given certificate) has injected it.
    let injected = |name: &str| {
        let _ = kubectl(&["delete", "pod", name, "-n", &ns, "--wait=false"], None);
        if !kubectl(&["apply", "-f", "-"], Some(&annotated(name))).ok {
            return None;
        }
        sidecar(&get_pod(&ns, name)).map(|_| ())
    };
    eventually("a pod injected over the Secret's certificate", WAIT, || {
        injected("first")
    });

    // cert-manager renews (here with a new CA, the harder case): the operator re-reads
    // the Secret (every minute), serves the new pair and publishes the new CA.
    let second = issue_with_openssl(&dir, "two");
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&tls_secret_yaml(&system, "hook-tls", &second)),
    );
    let ca_two = std::fs::read(&second[2]).unwrap();
    eventually(
        "the renewed ca.crt in turnpike-injector",
        Duration::from_secs(180),
        || {
            ca_bundle_of_injector()
                .filter(|b| b.iter().all(|b| *b == ca_two))
                .map(|_| ())
        },
    );
    eventually("a pod injected over the renewed certificate", WAIT, || {
        injected("second")
    });

    let log = op.output();
    assert!(!log.contains("PRIVATE KEY"), "key material in the log");
    assert!(op.terminate(Duration::from_secs(20)), "{}", op.output());

    // Ignore: with no webhook answering, an opted-in pod is created, without the sidecar.
    kubectl_ok(&["apply", "-f", "-"], Some(&annotated("while-down")));
    assert_untouched(&get_pod(&ns, "while-down"));
    let _ = std::fs::remove_dir_all(&dir);
    drop(cleanup);
}
