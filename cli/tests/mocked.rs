//! Cluster commands against a mocked API server: `tower_test::mock::pair` behind a
//! `kube::Client`, kube-rs's standard pattern. A script per test checks every request
//! the command makes and answers it; the clock is paused, so waiting costs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Parser;
use http::{Method, Request, Response};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{Client, client::Body};
use kubectl_turnpike::{Cli, Command, Error, commands, machine::Format, output::Out};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};
use turnpike_api::token::Token;

const NS: &str = "shop";
const KEYS: &str = "/apis/turnpike.dev/v1alpha1/namespaces/shop/apikeys";
const KEY: &str = "/apis/turnpike.dev/v1alpha1/namespaces/shop/apikeys/billing";
const ALL_KEYS: &str = "/apis/turnpike.dev/v1alpha1/apikeys";
const SECRET: &str = "/api/v1/namespaces/shop/secrets/billing-token";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const MARK: &str = "# TOKEN (shown once, store it now): ";
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

/// A request as the script sees it.
#[derive(Debug)]
struct Seen {
    query: String,
    content_type: String,
    body: Value,
}

/// The API server's side of the mock.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    fn new() -> (Client, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "default"), ApiServer(handle))
    }

    async fn next(&mut self, method: Method, path: &str) -> (Seen, SendResponse<Response<Body>>) {
        let (request, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("the client hung up; expected {method} {path}"));
        let (parts, body) = request.into_parts();
        assert_eq!(
            (&parts.method, parts.uri.path()),
            (&method, path),
            "unexpected request"
        );
        let bytes = body.collect_bytes().await.unwrap();
        let seen = Seen {
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
        };
        (seen, send)
    }

    /// Expects `method path` and answers `code` with a JSON body.
    async fn json(&mut self, method: Method, path: &str, code: u16, answer: Value) -> Seen {
        let (seen, send) = self.next(method, path).await;
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        seen
    }

    /// Expects `method path` and answers `code` with plain text, as the API server
    /// does for paths it does not serve at all.
    async fn text(&mut self, method: Method, path: &str, code: u16, answer: &str) -> Seen {
        let (seen, send) = self.next(method, path).await;
        send.send_response(
            Response::builder()
                .status(code)
                .header("content-type", "text/plain")
                .body(Body::from(answer.as_bytes().to_vec()))
                .unwrap(),
        );
        seen
    }
}

/// What a command printed and returned.
struct Ran {
    result: Result<(), Error>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn error(&self) -> String {
        match &self.result {
            Ok(()) => panic!("expected an error; stdout:\n{}", self.stdout),
            Err(e) => e.to_string(),
        }
    }
}

/// Runs `$command` (which writes to `$out`) next to the server `$script`. A command
/// waiting for an answer the script never gives fails the test: the paused clock
/// reaches the limit at once.
macro_rules! drive {
    ($out:ident => $command:expr, $script:expr) => {{
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let result = {
            let mut $out = Out {
                out: &mut stdout,
                err: &mut stderr,
            };
            let both = async { tokio::join!($command, $script) };
            tokio::time::timeout(Duration::from_secs(3600), both)
                .await
                .expect("the command or the script is stuck")
                .0
        };
        Ran {
            result,
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }};
}

fn parse(args: &[&str]) -> Command {
    let argv = std::iter::once("kubectl-turnpike").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap().command
}

fn issue_args(extra: &[&str]) -> commands::issue::IssueArgs {
    let mut args = vec!["issue", "billing", "--scopes", "orders:read", "-n", NS];
    args.extend_from_slice(extra);
    match parse(&args) {
        Command::Issue(a) => a,
        other => panic!("{other:?}"),
    }
}

fn rotate_args(extra: &[&str]) -> commands::rotate::RotateArgs {
    let mut args = vec!["rotate", "billing", "-n", NS];
    args.extend_from_slice(extra);
    match parse(&args) {
        Command::Rotate(a) => a,
        other => panic!("{other:?}"),
    }
}

fn revoke_args(extra: &[&str]) -> commands::revoke::RevokeArgs {
    let mut args = vec!["revoke", "billing", "-n", NS];
    args.extend_from_slice(extra);
    match parse(&args) {
        Command::Revoke(a) => a,
        other => panic!("{other:?}"),
    }
}

fn apikey(spec: Value, status: Value) -> Value {
    json!({
        "apiVersion": "turnpike.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {
            "name": "billing", "namespace": NS, "uid": "uid-1",
            "resourceVersion": "1", "generation": 1,
            "creationTimestamp": "2026-11-23T10:00:00Z",
        },
        "spec": spec,
        "status": status,
    })
}

fn spec() -> Value {
    json!({"scopes": ["orders:read"]})
}

fn ready(status: &str, reason: &str, message: &str) -> Value {
    json!([{
        "type": "Ready", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-11-23T10:00:00Z",
    }])
}

fn pending() -> Value {
    json!({"phase": "Pending", "conditions": ready("False", "Pending", "waiting for the operator to issue the key")})
}

fn active(key_id: &str) -> Value {
    json!({
        "keyId": key_id, "phase": "Active",
        "issuedAt": "2026-11-23T10:00:01Z",
        "conditions": ready("True", "Active", "accepted by targets: orders"),
    })
}

fn token_secret(token: &Token, resource_version: &str) -> Value {
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("billing-token".into()),
            namespace: Some(NS.into()),
            uid: Some("secret-uid".into()),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "token".to_owned(),
                ByteString(token.expose_token().as_bytes().to_vec()),
            ),
            (
                "keyId".to_owned(),
                ByteString(token.id().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    v
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    })
}

fn not_found(kind: &str, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        json!({"name": name, "kind": kind}),
    )
}

fn forbidden(verb: &str, resource: &str) -> Value {
    status(
        403,
        "Forbidden",
        &format!("{resource} is forbidden: User \"dev\" cannot {verb} resource \"{resource}\""),
        json!({"kind": resource}),
    )
}

fn token_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(MARK))
        .collect()
}

// ---- issue ----

#[tokio::test(start_paused = true)]
async fn issue_prints_the_token_once_and_deletes_the_secret() {
    let (client, mut api) = ApiServer::new();
    let token = Token::mint().unwrap();
    let id = token.id().to_owned();
    let args = issue_args(&["--targets", "orders", "--owner", "team-billing"]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        let created = api.json(Method::POST, KEYS, 201, apikey(spec(), Value::Null)).await;
        assert_eq!(created.body["metadata"]["name"], "billing");
        assert_eq!(created.body["spec"]["scopes"], json!(["orders:read"]));
        assert_eq!(created.body["spec"]["targets"], json!(["orders"]));
        assert_eq!(created.body["spec"]["owner"], "team-billing");
        assert!(created.body["spec"].get("keyId").is_none() && created.body["spec"].get("hash").is_none());
        assert!(created.query.contains("fieldManager=kubectl-turnpike"), "{}", created.query);
        api.json(Method::GET, KEY, 200, apikey(spec(), pending())).await;
        api.json(Method::GET, KEY, 200, apikey(spec(), active(&id))).await;
        api.json(Method::GET, SECRET, 200, token_secret(&token, "7")).await;
        let deleted = api.json(Method::DELETE, SECRET, 200, token_secret(&token, "7")).await;
        // Only the version that was read and shown.
        assert_eq!(deleted.body["preconditions"]["resourceVersion"], "7");
        assert_eq!(deleted.body["preconditions"]["uid"], "secret-uid");
    });
    ran.result.as_ref().unwrap();
    assert_eq!(token_lines(&ran.stdout), [token.expose_token()]);
    assert_eq!(ran.stdout.matches(token.expose_token()).count(), 1);
    assert!(!ran.stderr.contains(token.expose_token()));
    assert!(
        ran.stdout.contains(&format!(
            "ApiKey shop/billing issued: key id {id}, phase Active"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("Secret shop/billing-token deleted: this token cannot be shown again"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stderr.contains("waiting up to 1m for the operator"),
        "{}",
        ran.stderr
    );
}

#[tokio::test(start_paused = true)]
async fn issue_keep_secret_leaves_the_secret() {
    let (client, mut api) = ApiServer::new();
    let token = Token::mint().unwrap();
    let id = token.id().to_owned();
    let args = issue_args(&["--keep-secret"]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 201, apikey(spec(), Value::Null)).await;
        api.json(Method::GET, KEY, 200, apikey(spec(), active(&id))).await;
        api.json(Method::GET, SECRET, 200, token_secret(&token, "7")).await;
    });
    ran.result.as_ref().unwrap();
    assert_eq!(token_lines(&ran.stdout), [token.expose_token()]);
    assert!(
        ran.stdout
            .contains("Secret shop/billing-token kept (--keep-secret)"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(start_paused = true)]
async fn issue_without_crds_says_to_install_them() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.text(Method::POST, KEYS, 404, "404 page not found").await;
    });
    assert!(matches!(ran.result, Err(Error::CrdsMissing { .. })));
    assert_eq!(
        ran.error(),
        "the Turnpike CRDs are not installed: kubectl apply -f crds/ (the API server does not serve apikeys.turnpike.dev)"
    );
    assert!(ran.stdout.is_empty());
}

#[tokio::test(start_paused = true)]
async fn issue_refuses_an_existing_name() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        let answer = status(409, "AlreadyExists", "apikeys.turnpike.dev \"billing\" already exists", json!({"name": "billing", "kind": "apikeys"}));
        api.json(Method::POST, KEYS, 409, answer).await;
    });
    assert_eq!(
        ran.error(),
        "ApiKey shop/billing already exists; choose another name, or run `kubectl turnpike rotate billing -n shop` for a new token"
    );
}

#[tokio::test(start_paused = true)]
async fn issue_in_a_missing_namespace() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 404, not_found("namespaces", NS)).await;
    });
    assert_eq!(ran.error(), "namespace shop does not exist");
}

#[tokio::test(start_paused = true)]
async fn issue_reports_an_invalid_key_and_removes_it() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 201, apikey(spec(), Value::Null)).await;
        let invalid = json!({"phase": "Pending", "conditions": ready("False", "Invalid", "spec.targets: target \"x\" is refused")});
        api.json(Method::GET, KEY, 200, apikey(spec(), invalid)).await;
        let deleted = api.json(Method::DELETE, KEY, 200, apikey(spec(), Value::Null)).await;
        // Never a namesake created meanwhile.
        assert_eq!(deleted.body["preconditions"]["uid"], "uid-1");
    });
    assert!(matches!(ran.result, Err(Error::NotIssued { .. })));
    assert_eq!(
        ran.error(),
        "ApiKey shop/billing was not issued: Invalid: spec.targets: target \"x\" is refused; the ApiKey was deleted again, so nothing is left half-issued"
    );
}

#[tokio::test(start_paused = true)]
async fn issue_times_out_when_no_operator_acts() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&["--timeout", "2s"]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 201, apikey(spec(), Value::Null)).await;
        // 0s, 0.5s, 1s, 1.5s, 2s: five reads, then the ApiKey is withdrawn.
        for _ in 0..5 {
            api.json(Method::GET, KEY, 200, apikey(spec(), pending())).await;
        }
        api.json(Method::DELETE, KEY, 200, apikey(spec(), Value::Null)).await;
    });
    assert!(matches!(ran.result, Err(Error::Timeout { .. })));
    assert_eq!(
        ran.error(),
        "timed out after 2s waiting for ApiKey shop/billing to become Active (last seen: phase Pending (Pending: waiting for the operator to issue the key)); is the Turnpike operator running? Check `kubectl get pods -n turnpike-system` and its logs; the ApiKey was deleted again, so nothing is left half-issued"
    );
}

#[tokio::test(start_paused = true)]
async fn issue_says_which_verb_rbac_refused() {
    let (client, mut api) = ApiServer::new();
    let token = Token::mint().unwrap();
    let id = token.id().to_owned();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 201, apikey(spec(), Value::Null)).await;
        api.json(Method::GET, KEY, 200, apikey(spec(), active(&id))).await;
        api.json(Method::GET, SECRET, 200, token_secret(&token, "7")).await;
        api.json(Method::DELETE, SECRET, 403, forbidden("delete", "secrets")).await;
    });
    // The token was shown (the key works); the failure says what is left to do.
    assert_eq!(token_lines(&ran.stdout), [token.expose_token()]);
    let err = ran.error();
    assert!(
        err.starts_with("the token above is valid, but Secret shop/billing-token could not be deleted: forbidden: your credentials may not delete secrets in namespace shop;"),
        "{err}"
    );
    assert!(
        err.ends_with("delete it yourself: kubectl delete secret billing-token -n shop"),
        "{err}"
    );
    assert!(!err.contains(token.expose_token()));
}

#[tokio::test(start_paused = true)]
async fn issue_forbidden_create() {
    let (client, mut api) = ApiServer::new();
    let args = issue_args(&[]);
    let ran = drive!(out => commands::issue::run(&client, NS, &args, &mut out), async {
        api.json(Method::POST, KEYS, 403, forbidden("create", "apikeys")).await;
    });
    let err = ran.error();
    assert!(
        err.starts_with("forbidden: your credentials may not create apikeys.turnpike.dev in namespace shop; ask for an RBAC Role that grants it"),
        "{err}"
    );
}

// ---- list ----

#[tokio::test(start_paused = true)]
async fn list_all_namespaces() {
    let (client, mut api) = ApiServer::new();
    let ran = drive!(out => commands::list::run(&client, None, Format::Table, &mut out), async {
        let mut other = apikey(json!({"scopes": ["a", "b"], "owner": "ops"}), pending());
        other["metadata"]["namespace"] = json!("web");
        other["metadata"]["name"] = json!("ci");
        let list = json!({
            "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKeyList", "metadata": {},
            "items": [other, apikey(spec(), active("7k2m9q4xw3ab"))],
        });
        api.json(Method::GET, ALL_KEYS, 200, list).await;
    });
    ran.result.as_ref().unwrap();
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", ran.stdout);
    assert!(
        lines[0].starts_with(
            "NAMESPACE   NAME      KEY ID         PHASE     SCOPES        EXPIRES   OWNER"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        lines[1].starts_with("shop        billing   7k2m9q4xw3ab   Active    orders:read   <none>"),
        "{}",
        ran.stdout
    );
    assert!(
        lines[2].starts_with(
            "web         ci        <none>         Pending   a,b           <none>    ops"
        ),
        "{}",
        ran.stdout
    );
}

#[tokio::test(start_paused = true)]
async fn list_empty_namespace_says_so_on_stderr() {
    let (client, mut api) = ApiServer::new();
    let ran = drive!(out => commands::list::run(&client, Some(NS), Format::Table, &mut out), async {
        let list = json!({"apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKeyList", "metadata": {}, "items": []});
        api.json(Method::GET, KEYS, 200, list).await;
    });
    ran.result.as_ref().unwrap();
    assert!(ran.stdout.is_empty());
    assert_eq!(
        ran.stderr,
        "No ApiKeys found in namespace shop.
"
    );
}

#[tokio::test(start_paused = true)]
async fn list_as_json_and_yaml_parses_back_without_the_hash() {
    for format in [Format::Json, Format::Yaml] {
        let (client, mut api) = ApiServer::new();
        let ran = drive!(out => commands::list::run(&client, Some(NS), format, &mut out), async {
            let gitops = json!({"scopes": ["orders:read"], "keyId": "7k2m9q4xw3ab", "hash": HASH});
            let list = json!({
                "apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKeyList", "metadata": {},
                "items": [apikey(gitops, active("7k2m9q4xw3ab"))],
            });
            api.json(Method::GET, KEYS, 200, list).await;
        });
        ran.result.as_ref().unwrap();
        assert!(!ran.stdout.contains("argon2"), "{format:?}: {}", ran.stdout);
        assert!(ran.stderr.is_empty(), "{}", ran.stderr);
        let v: Value = match format {
            Format::Json => serde_json::from_str(&ran.stdout).unwrap(),
            _ => serde_saphyr::from_str(&ran.stdout).unwrap(),
        };
        assert_eq!(v["items"][0]["name"], "billing");
        assert_eq!(v["items"][0]["keyId"], "7k2m9q4xw3ab");
        assert_eq!(v["items"][0]["phase"], "Active");
    }
    // No ApiKeys: still a document, so a script's parser does not choke.
    let (client, mut api) = ApiServer::new();
    let ran = drive!(out => commands::list::run(&client, Some(NS), Format::Json, &mut out), async {
        let list = json!({"apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKeyList", "metadata": {}, "items": []});
        api.json(Method::GET, KEYS, 200, list).await;
    });
    ran.result.as_ref().unwrap();
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v, json!({"items": []}));
    assert!(ran.stderr.is_empty());
}

#[tokio::test(start_paused = true)]
async fn list_forbidden_cluster_wide() {
    let (client, mut api) = ApiServer::new();
    let ran = drive!(out => commands::list::run(&client, None, Format::Table, &mut out), async {
        api.json(Method::GET, ALL_KEYS, 403, forbidden("list", "apikeys")).await;
    });
    assert!(matches!(
        ran.result,
        Err(Error::Forbidden { verb: "list", .. })
    ));
    assert!(ran.error().starts_with(
        "forbidden: your credentials may not list apikeys.turnpike.dev cluster-wide;"
    ));
}

#[tokio::test(start_paused = true)]
async fn list_without_crds() {
    let (client, mut api) = ApiServer::new();
    let ran = drive!(out => commands::list::run(&client, Some(NS), Format::Table, &mut out), async {
        api.text(Method::GET, KEYS, 404, "404 page not found").await;
    });
    assert!(
        ran.error()
            .starts_with("the Turnpike CRDs are not installed: kubectl apply -f crds/")
    );
}

// ---- revoke ----

#[tokio::test(start_paused = true)]
async fn revoke_merge_patches_spec_revoked() {
    let (client, mut api) = ApiServer::new();
    let args = revoke_args(&[]);
    let ran = drive!(out => commands::revoke::run(&client, NS, &args, &mut out), async {
        api.json(Method::GET, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        let patched = api
            .json(Method::PATCH, KEY, 200, apikey(json!({"scopes": ["orders:read"], "revoked": true}), active("7k2m9q4xw3ab")))
            .await;
        assert_eq!(patched.content_type, "application/merge-patch+json");
        assert_eq!(patched.body, json!({"spec": {"revoked": true}}));
    });
    ran.result.as_ref().unwrap();
    assert!(
        ran.stdout
            .starts_with("ApiKey shop/billing (key id 7k2m9q4xw3ab) revoked: spec.revoked is true"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("phase Active until the operator records the revocation (--wait waits for phase Revoked)"), "{}", ran.stdout);
}

#[tokio::test(start_paused = true)]
async fn revoke_wait_waits_for_phase_revoked() {
    let (client, mut api) = ApiServer::new();
    let args = revoke_args(&["--wait", "--timeout", "10s"]);
    let revoked_spec = json!({"scopes": ["orders:read"], "revoked": true});
    let ran = drive!(out => commands::revoke::run(&client, NS, &args, &mut out), async {
        api.json(Method::GET, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        api.json(Method::PATCH, KEY, 200, apikey(revoked_spec.clone(), active("7k2m9q4xw3ab"))).await;
        api.json(Method::GET, KEY, 200, apikey(revoked_spec.clone(), active("7k2m9q4xw3ab"))).await;
        let revoked = json!({"keyId": "7k2m9q4xw3ab", "phase": "Revoked", "conditions": ready("False", "Revoked", "spec.revoked is true")});
        api.json(Method::GET, KEY, 200, apikey(revoked_spec.clone(), revoked)).await;
    });
    ran.result.as_ref().unwrap();
    assert!(
        ran.stdout.ends_with(
            "ApiKey shop/billing is Revoked
"
        ),
        "{}",
        ran.stdout
    );
}

#[tokio::test(start_paused = true)]
async fn revoke_an_unknown_name() {
    let (client, mut api) = ApiServer::new();
    let args = revoke_args(&[]);
    let ran = drive!(out => commands::revoke::run(&client, NS, &args, &mut out), async {
        api.json(Method::GET, KEY, 404, not_found("apikeys.turnpike.dev", "billing")).await;
    });
    assert!(matches!(ran.result, Err(Error::NotFound { .. })));
    assert_eq!(
        ran.error(),
        "ApiKey shop/billing not found (see `kubectl turnpike list -n shop`)"
    );
}

// ---- rotate ----

#[tokio::test(start_paused = true)]
async fn rotate_prints_the_new_token_and_the_grace_period() {
    let (client, mut api) = ApiServer::new();
    let old = Token::mint().unwrap();
    let id = old.id().to_owned();
    let new = Token::mint_with_id(&old.key_id()).unwrap();
    let args = rotate_args(&[]);
    let ran = drive!(out => commands::rotate::run(&client, NS, &args, &mut out), async {
        let mut before = active(&id);
        before["rotatedAt"] = json!("2026-11-23T09:00:00Z");
        api.json(Method::GET, KEY, 200, apikey(spec(), before.clone())).await;
        // The old token is still in the Secret (issued with --keep-secret).
        api.json(Method::GET, SECRET, 200, token_secret(&old, "5")).await;
        let patched = api.json(Method::PATCH, KEY, 200, apikey(spec(), before.clone())).await;
        assert_eq!(patched.content_type, "application/merge-patch+json");
        let request = patched.body["metadata"]["annotations"]["turnpike.dev/rotate"].as_str().unwrap().to_owned();
        assert!(request.parse::<jiff::Timestamp>().is_ok(), "{request}");
        // Not yet rotated: the same old token.
        api.json(Method::GET, SECRET, 200, token_secret(&old, "5")).await;
        api.json(Method::GET, KEY, 200, apikey(spec(), before.clone())).await;
        // The operator delivers the new token, then the status.
        api.json(Method::GET, SECRET, 200, token_secret(&new, "6")).await;
        let mut after = active(&id);
        after["rotatedAt"] = json!("2026-11-23T10:00:00Z");
        after["previousSecretValidUntil"] = json!("2026-11-24T10:00:00Z");
        api.json(Method::GET, KEY, 200, apikey(spec(), after)).await;
        let deleted = api.json(Method::DELETE, SECRET, 200, token_secret(&new, "6")).await;
        assert_eq!(deleted.body["preconditions"]["resourceVersion"], "6");
    });
    ran.result.as_ref().unwrap();
    assert_eq!(token_lines(&ran.stdout), [new.expose_token()]);
    assert!(!ran.stdout.contains(old.expose_token()) && !ran.stderr.contains(old.expose_token()));
    assert!(
        ran.stdout.contains(&format!(
            "ApiKey shop/billing rotated: key id {id} (unchanged)"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .contains("The previous token keeps working until 2026-11-24T10:00:00Z"),
        "{}",
        ran.stdout
    );
}

#[tokio::test(start_paused = true)]
async fn rotate_refuses_keys_made_offline() {
    let (client, mut api) = ApiServer::new();
    let args = rotate_args(&[]);
    let ran = drive!(out => commands::rotate::run(&client, NS, &args, &mut out), async {
        let gitops = json!({"scopes": ["orders:read"], "keyId": "7k2m9q4xw3ab", "hash": HASH});
        api.json(Method::GET, KEY, 200, apikey(gitops, active("7k2m9q4xw3ab"))).await;
    });
    let err = ran.error();
    assert!(
        err.contains("the operator rotates only keys it generated"),
        "{err}"
    );
    assert!(!err.contains("argon2"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn rotate_refuses_revoked_keys() {
    let (client, mut api) = ApiServer::new();
    let args = rotate_args(&[]);
    let ran = drive!(out => commands::rotate::run(&client, NS, &args, &mut out), async {
        let revoked = json!({"scopes": ["orders:read"], "revoked": true});
        api.json(Method::GET, KEY, 200, apikey(revoked, active("7k2m9q4xw3ab"))).await;
    });
    assert!(
        ran.error()
            .contains("is revoked; a revoked key is never rotated")
    );
}

#[tokio::test(start_paused = true)]
async fn rotate_times_out_and_says_the_request_stays() {
    let (client, mut api) = ApiServer::new();
    let args = rotate_args(&["--timeout", "1s"]);
    let ran = drive!(out => commands::rotate::run(&client, NS, &args, &mut out), async {
        api.json(Method::GET, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        api.json(Method::GET, SECRET, 404, not_found("secrets", "billing-token")).await;
        api.json(Method::PATCH, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        for _ in 0..3 {
            api.json(Method::GET, SECRET, 404, not_found("secrets", "billing-token")).await;
            api.json(Method::GET, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        }
    });
    let err = ran.error();
    assert!(
        err.starts_with("timed out after 1s waiting for a new token in Secret shop/billing-token"),
        "{err}"
    );
    assert!(
        err.contains("is the Turnpike operator running?")
            && err.contains("the rotation request stays on the ApiKey"),
        "{err}"
    );
}

// ---- describe ----

#[tokio::test(start_paused = true)]
async fn describe_shows_status_and_its_own_events() {
    let (client, mut api) = ApiServer::new();
    let now: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    let ran = drive!(out => commands::describe::run(&client, NS, "billing", Format::Table, now, &mut out), async {
        let gitops = json!({"scopes": ["orders:read"], "keyId": "7k2m9q4xw3ab", "hash": HASH});
        api.json(Method::GET, KEY, 200, apikey(gitops, active("7k2m9q4xw3ab"))).await;
        let event = |reason: &str, uid: &str, at: &str| json!({
            "metadata": {"name": format!("billing.{reason}"), "namespace": NS},
            "eventTime": at, "reason": reason, "type": "Normal", "note": format!("{reason} note"),
            "reportingController": "turnpike-operator", "reportingInstance": "op", "action": "Reconcile",
            "regarding": {"apiVersion": "turnpike.dev/v1alpha1", "kind": "ApiKey", "name": "billing", "namespace": NS, "uid": uid},
        });
        let list = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "EventList", "metadata": {},
            "items": [
                event("KeyRevoked", "uid-1", "2026-11-23T11:00:00.000000Z"),
                // An earlier ApiKey of the same name: not this one's history.
                event("KeyExpired", "uid-0", "2026-11-20T11:00:00.000000Z"),
                event("KeyIssued", "uid-1", "2026-11-23T10:00:01.000000Z"),
            ],
        });
        let seen = api.json(Method::GET, EVENTS, 200, list).await;
        assert!(
            seen.query.contains("fieldSelector=regarding.kind%3DApiKey%2Cregarding.name%3Dbilling"),
            "{}",
            seen.query
        );
    });
    ran.result.as_ref().unwrap();
    let text = &ran.stdout;
    assert!(
        !text.contains("argon2"),
        "a hash was printed:
{text}"
    );
    assert!(text.contains("Phase:") && text.contains("Active"), "{text}");
    assert!(text.contains("accepted by targets: orders"), "{text}");
    let issued = text.find("KeyIssued").expect("KeyIssued");
    let revoked = text.find("KeyRevoked").expect("KeyRevoked");
    assert!(
        issued < revoked,
        "Events are sorted by time:
{text}"
    );
    assert!(!text.contains("KeyExpired"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn describe_as_json_carries_status_and_events_but_no_hash() {
    let (client, mut api) = ApiServer::new();
    let now: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    let ran = drive!(out => commands::describe::run(&client, NS, "billing", Format::Json, now, &mut out), async {
        let gitops = json!({"scopes": ["orders:read"], "keyId": "7k2m9q4xw3ab", "hash": HASH});
        api.json(Method::GET, KEY, 200, apikey(gitops, active("7k2m9q4xw3ab"))).await;
        api.json(Method::GET, EVENTS, 403, forbidden("list", "events")).await;
    });
    ran.result.as_ref().unwrap();
    assert!(!ran.stdout.contains("argon2"), "{}", ran.stdout);
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["keyId"], "7k2m9q4xw3ab");
    assert_eq!(v["keySource"], "offline");
    assert_eq!(v["conditions"][0]["message"], "accepted by targets: orders");
    assert_eq!(v["events"], json!([]));
    assert!(
        v["eventsError"]
            .as_str()
            .unwrap()
            .starts_with("forbidden: your credentials may not list events.events.k8s.io"),
        "{v}"
    );
}

#[tokio::test(start_paused = true)]
async fn describe_falls_back_when_the_field_selector_is_refused_and_survives_rbac() {
    let (client, mut api) = ApiServer::new();
    let now: jiff::Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
    let ran = drive!(out => commands::describe::run(&client, NS, "billing", Format::Table, now, &mut out), async {
        api.json(Method::GET, KEY, 200, apikey(spec(), active("7k2m9q4xw3ab"))).await;
        let refused = status(400, "BadRequest", "field label not supported: regarding.kind", json!({}));
        api.json(Method::GET, EVENTS, 400, refused).await;
        api.json(Method::GET, EVENTS, 403, forbidden("list", "events")).await;
    });
    ran.result.as_ref().unwrap();
    assert!(
        ran.stdout.contains("Events:\n  <cannot list Events: forbidden: your credentials may not list events.events.k8s.io in namespace shop;"),
        "{}",
        ran.stdout
    );
}
