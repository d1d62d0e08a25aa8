//! `kubectl turnpike usage` against a mocked API server (the `tower_test` pattern of
//! `mocked.rs`): the calls it makes in order, the admin token in the dedicated header
//! through the pod proxy, per-pod errors that do not stop the others, and the errors
//! that stop it before any sidecar is asked. The token never reaches the output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use http::{Method, Request, Response};
use kube::{Client, client::Body};
use kubectl_turnpike::{
    Cli, Command,
    commands::usage::{self, UsageArgs},
    output::Out,
};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

const NS: &str = "shop";
const KEY: &str = "/apis/turnpike.dev/v1alpha1/namespaces/shop/apikeys/billing";
const ADMIN: &str = "/api/v1/namespaces/shop/secrets/turnpike.admin";
const PODS: &str = "/api/v1/namespaces/shop/pods";
const TOKEN: &str = "AdminTokenValue0123456789abcdefghijklmnopqr";

struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    fn new() -> (Client, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), ApiServer(handle))
    }

    /// Expects `GET path`, answers `code` + `answer`; returns the admin token header.
    async fn get(&mut self, path: &str, code: u16, answer: Value) -> Option<String> {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("the client hung up; expected GET {path}"));
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::GET, path),
            "unexpected request"
        );
        let header = request
            .headers()
            .get("x-turnpike-admin-token")
            .map(|v| v.to_str().unwrap().to_owned());
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        header
    }
}

fn args(extra: &[&str]) -> UsageArgs {
    let argv = ["kubectl-turnpike", "usage"]
        .into_iter()
        .chain(extra.iter().copied());
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Usage(a) => a,
        other => panic!("{other:?}"),
    }
}

struct Ran {
    result: Result<(), String>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn error(&self) -> &str {
        self.result.as_ref().expect_err("expected an error")
    }

    fn assert_no_token(&self) {
        for text in [
            &self.stdout,
            &self.stderr,
            self.result.as_ref().err().unwrap_or(&String::new()),
        ] {
            assert!(!text.contains(TOKEN), "the admin token was printed: {text}");
        }
    }
}

/// Runs `usage` for `args` in namespace `shop` against `script`.
async fn drive(
    client: Client,
    args: UsageArgs,
    script: impl std::future::Future<Output = ()>,
) -> Ran {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = {
        let mut out = Out {
            out: &mut stdout,
            err: &mut stderr,
        };
        let command = async {
            let usage = usage::collect_from_cluster(&client, NS, &args).await?;
            usage::print(&usage, args.output, &mut out)
        };
        tokio::join!(command, script).0
    };
    Ran {
        result: result.map_err(|e| e.to_string()),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    })
}

fn apikey(status: Value) -> Value {
    json!({
        "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey",
        "metadata": {"name": "billing", "namespace": NS},
        "spec": {"targets": ["orders"], "scopes": ["orders:read"]},
        "status": status,
    })
}

fn active() -> Value {
    apikey(json!({"keyId": "7k2m9q4xw3ab", "phase": "Active"}))
}

fn admin_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "turnpike.admin", "namespace": NS},
        "data": {"token": data_encoding::BASE64.encode(format!("{TOKEN}\n").as_bytes())},
    })
}

fn pod(name: &str, target: &str, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"app": target}},
        "spec": {
            "containers": [{"name": "app", "image": "x"}],
            "initContainers": [{"name": "turnpike-sidecar", "image": "y", "ports": [
                {"name": "turnpike-admin", "containerPort": 9901},
            ]}],
        },
        "status": {"phase": phase},
    })
}

fn pods(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn proxied(pod: &str) -> String {
    format!("{PODS}/{pod}:9901/proxy/internal/api-keys/7k2m9q4xw3ab")
}

fn usage_answer(used: u64, available: u64) -> Value {
    json!({
        "id": "7k2m9q4xw3ab", "name": "billing", "owner": null, "namespace": NS,
        "target": "orders", "scopes": ["orders:read"], "expiresAt": null,
        "expired": false, "revoked": false, "secrets": 1,
        "usage": {
            "quotaUsedToday": used, "dailyQuota": 10000,
            "bucket": {"available": available, "burst": 20},
            "lockedOut": false, "lockedForMs": null, "coolingDown": false, "cooldownForMs": null,
        },
    })
}

#[tokio::test]
async fn asks_each_sidecar_of_the_keys_targets_and_reports_each() {
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 200, admin_secret()).await;
        api.get(
            PODS,
            200,
            pods(vec![
                pod("orders-b", "orders", "Running"),
                pod("orders-a", "orders", "Running"),
                pod("orders-new", "orders", "Pending"),
                pod("web-1", "web", "Running"),
                json!({"metadata": {"name": "plain", "labels": {"app": "orders"}},
                       "spec": {"containers": [{"name": "app"}]}, "status": {"phase": "Running"}}),
            ]),
        )
        .await;
        // Sorted by name; the pod of another target and the pod without a sidecar are
        // not asked; the Pending pod is not asked either.
        let header = api.get(&proxied("orders-a"), 200, usage_answer(42, 17)).await;
        assert_eq!(header.as_deref(), Some(TOKEN), "the token goes in the dedicated header");
        api.get(
            &proxied("orders-b"),
            503,
            status(503, "ServiceUnavailable", "error trying to reach service: dial tcp 10.0.0.7:9901: connect: connection refused", json!({})),
        )
        .await;
    })
    .await;
    assert_eq!(ran.error(), "1 of 2 sidecar(s) could not report");
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", ran.stdout);
    assert!(lines[0].starts_with("POD "), "{}", lines[0]);
    assert!(
        lines[1].starts_with("orders-a   ")
            && lines[1].contains("17/20")
            && lines[1].contains("42/10000")
            && lines[1].ends_with("ok"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("orders-b   ") && lines[2].ends_with("Unreachable"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3].starts_with("orders-new") && lines[3].ends_with("NotRunning"),
        "{}",
        lines[3]
    );
    assert!(
        ran.stderr
            .contains("orders-b: sidecar not reachable: error trying to reach service"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("orders-new: pod is Pending"),
        "{}",
        ran.stderr
    );
    ran.assert_no_token();
}

#[tokio::test]
async fn json_output_and_a_token_mismatch() {
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing", "-o", "json", "--pod", "orders-a"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 200, admin_secret()).await;
        api.get(&format!("{PODS}/orders-a"), 200, pod("orders-a", "orders", "Running")).await;
        api.get(
            &proxied("orders-a"),
            401,
            json!({"error": {"code": "unauthorized", "message": "a valid admin token is required"}}),
        )
        .await;
    })
    .await;
    assert_eq!(ran.error(), "1 of 1 sidecar(s) could not report");
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["keyId"], "7k2m9q4xw3ab");
    assert_eq!(v["sidecars"][0]["pod"], "orders-a");
    assert_eq!(v["sidecars"][0]["error"]["reason"], "TokenMismatch");
    assert!(
        ran.stderr
            .contains("the sidecar refused the admin token (401)"),
        "{}",
        ran.stderr
    );
    ran.assert_no_token();
}

#[tokio::test]
async fn errors_before_any_sidecar_is_asked() {
    // ApiKey missing.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(
            KEY,
            404,
            status(
                404,
                "NotFound",
                "apikeys.turnpike.dev \"billing\" not found",
                json!({"name": "billing", "kind": "apikeys"}),
            ),
        )
        .await;
    })
    .await;
    assert_eq!(
        ran.error(),
        "ApiKey shop/billing not found (see `kubectl turnpike list -n shop`)"
    );

    // Not issued yet.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, apikey(json!({"phase": "Pending"}))).await;
    })
    .await;
    assert!(
        ran.error()
            .starts_with("ApiKey shop/billing has no key id yet (phase Pending)"),
        "{}",
        ran.error()
    );

    // The admin Secret is missing.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(
            ADMIN,
            404,
            status(
                404,
                "NotFound",
                "secrets \"turnpike.admin\" not found",
                json!({"name": "turnpike.admin", "kind": "secrets"}),
            ),
        )
        .await;
    })
    .await;
    assert!(
        ran.error()
            .starts_with("Secret shop/turnpike.admin does not exist: the operator creates it"),
        "{}",
        ran.error()
    );

    // RBAC refuses reading it.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 403, status(403, "Forbidden", "secrets \"turnpike.admin\" is forbidden: User \"dev\" cannot get resource \"secrets\"", json!({"name": "turnpike.admin", "kind": "secrets"}))).await;
    })
    .await;
    assert!(
        ran.error()
            .starts_with("forbidden: your credentials may not get secrets in namespace shop"),
        "{}",
        ran.error()
    );

    // RBAC refuses listing pods.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 200, admin_secret()).await;
        api.get(
            PODS,
            403,
            status(
                403,
                "Forbidden",
                "pods is forbidden",
                json!({"kind": "pods"}),
            ),
        )
        .await;
    })
    .await;
    assert!(
        ran.error()
            .starts_with("forbidden: your credentials may not list pods in namespace shop"),
        "{}",
        ran.error()
    );

    // No sidecar serves the key's target.
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 200, admin_secret()).await;
        api.get(PODS, 200, pods(vec![pod("web-1", "web", "Running")]))
            .await;
    })
    .await;
    assert!(
        ran.error().starts_with(
            "no pods with a Turnpike sidecar serve target(s) orders in namespace shop"
        ),
        "{}",
        ran.error()
    );
    ran.assert_no_token();
}

#[tokio::test]
async fn pod_proxy_forbidden_names_the_permission() {
    let (client, mut api) = ApiServer::new();
    let ran = drive(client, args(&["billing"]), async {
        api.get(KEY, 200, active()).await;
        api.get(ADMIN, 200, admin_secret()).await;
        api.get(PODS, 200, pods(vec![pod("orders-a", "orders", "Running")]))
            .await;
        api.get(
            &proxied("orders-a"),
            403,
            status(
                403,
                "Forbidden",
                "pods \"orders-a\" is forbidden: User \"dev\" cannot get resource \"pods/proxy\"",
                json!({"name": "orders-a", "kind": "pods"}),
            ),
        )
        .await;
    })
    .await;
    assert_eq!(ran.error(), "1 of 1 sidecar(s) could not report");
    assert!(
        ran.stderr.contains(
            "orders-a: forbidden: your credentials may not get pods/proxy in namespace shop"
        ),
        "{}",
        ran.stderr
    );
}
