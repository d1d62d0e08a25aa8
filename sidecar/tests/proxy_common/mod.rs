//! Harness of the proxy component tests: the real `turnpike-sidecar` binary, a real
//! upstream on 127.0.0.1, bundles compiled from manifests by `turnpike-api`'s
//! compiler, tokens minted and hashed for real.
//!
//! The upstream answers:
//! - `*/slow?ms=N`: after N ms (default 3000), like the echo;
//! - `*/missing*`: 404;
//! - `*/leaky`: 200 with `Server`, `X-Powered-By` and `X-Frame-Options: SAMEORIGIN`;
//! - `*/ws`: 101 `Upgrade: echo`, then echoes bytes;
//! - anything else: 200 with JSON `{method, path, query, headers, body_len}`.
//!
//! The sidecar listens on port 0; its addresses are read from its "serving" log
//! line. All of its stdout and stderr is kept (the secret-leak test reads it).
//!
//! The real clock is read here only for polling deadlines (a real process runs in
//! real time); no test asserts on a duration.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnpike_api::bundle::{KEYS_FILE, POLICY_FILE, Sealed};
use turnpike_api::compiler::{self, Inputs};
use turnpike_api::hash::{PhcHash, hash_token};
use turnpike_api::manifest::{self, Resource};
use turnpike_api::token::Token;

// ---- credentials -------------------------------------------------------------------

/// A token and its argon2id hash.
pub struct Cred {
    pub token: Token,
    pub hash: PhcHash,
}

impl Cred {
    pub fn mint() -> Cred {
        let token = Token::mint().unwrap();
        let hash = hash_token(&token).unwrap();
        Cred { token, hash }
    }

    pub fn id(&self) -> String {
        self.token.key_id().as_str().to_string()
    }

    pub fn text(&self) -> &str {
        self.token.expose_token()
    }

    /// The secret part (after `tpk_<id>_`).
    pub fn secret(&self) -> &str {
        &self.text()[17..]
    }

    /// A well-formed token with this key id and another secret.
    pub fn wrong(&self) -> String {
        Token::mint_with_id(&self.token.key_id())
            .unwrap()
            .expose_token()
            .to_string()
    }
}

/// The keys of the tests: `billing` (orders:read, orders:write), `reader`
/// (orders:read). Minted once per test binary.
pub struct Creds {
    pub billing: Cred,
    pub reader: Cred,
}

pub fn creds() -> &'static Creds {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    CREDS.get_or_init(|| Creds {
        billing: Cred::mint(),
        reader: Cred::mint(),
    })
}

// ---- manifests and bundles ---------------------------------------------------------

/// What a test changes in the canonical manifests.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Extra lines of the billing ApiKey's spec (`dailyQuota: 2`).
    pub billing_extra: String,
    /// Include the reader key.
    pub with_reader: bool,
    /// RateLimitPolicy spec lines, indented by two spaces.
    pub rate_limit: String,
    /// Include the CorsPolicy.
    pub cors: bool,
    /// Extra lines of the AccessPolicy's spec, indented by two spaces.
    pub access_extra: String,
}

/// Generous limits: nothing in a test trips them by accident.
pub const GENEROUS: &str =
    "  perKey: {rate: 1000, per: 1s, burst: 2000}\n  perIp: {rate: 5000, per: 1s, burst: 10000}\n";

impl Default for Setup {
    fn default() -> Self {
        Self {
            billing_extra: String::new(),
            with_reader: true,
            rate_limit: GENEROUS.into(),
            cors: true,
            access_extra: String::new(),
        }
    }
}

/// The manifests (namespace `shop`, target `orders`), as a user would write them.
pub fn manifests(setup: &Setup) -> String {
    let c = creds();
    let mut y = format!(
        "apiVersion: turnpike.dev/v1alpha1
kind: ApiKey
metadata: {{name: billing, namespace: shop}}
spec:
  targets: [orders]
  scopes: [\"orders:read\", \"orders:write\"]
  owner: team-billing@example.com
  keyId: {}
  hash: \"{}\"
{}",
        c.billing.id(),
        c.billing.hash.as_str(),
        setup.billing_extra
    );
    if setup.with_reader {
        y.push_str(&format!(
            "---
apiVersion: turnpike.dev/v1alpha1
kind: ApiKey
metadata: {{name: reader, namespace: shop}}
spec:
  targets: [orders]
  scopes: [\"orders:read\"]
  keyId: {}
  hash: \"{}\"
",
            c.reader.id(),
            c.reader.hash.as_str()
        ));
    }
    y.push_str(
        "---
apiVersion: turnpike.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {name: orders}
  credentials: [ApiKeyHeader, Bearer]
  public:
    - {path: /healthz}
  rules:
    - match: {methods: [GET, HEAD], path: \"/orders/**\"}
      scopes: [\"orders:read\"]
    - match: {methods: [POST, PUT, PATCH, DELETE], path: \"/orders/**\"}
      scopes: [\"orders:write\"]
  defaultAction: Deny
",
    );
    y.push_str(&setup.access_extra);
    y.push_str(
        "---
apiVersion: turnpike.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {name: orders}
",
    );
    y.push_str(&setup.rate_limit);
    if setup.cors {
        y.push_str(
            "---
apiVersion: turnpike.dev/v1alpha1
kind: CorsPolicy
metadata: {name: orders, namespace: shop}
spec:
  targetRef: {name: orders}
  allowOrigins: [\"https://shop.example.com\", \"https://*.shop.example.com\"]
  allowMethods: [GET, POST, PUT, DELETE]
  allowHeaders: [Content-Type, Authorization, X-API-Key]
  exposeHeaders: [X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After]
  allowCredentials: true
  maxAge: 10m
",
        );
    }
    y
}

/// Compiles manifests as the operator would and returns `(keys.json, policy.json)`.
pub fn compile_bundle(yaml: &str) -> (String, String) {
    let (mut keys, mut access, mut rate, mut cors) = (vec![], vec![], vec![], vec![]);
    for r in manifest::parse_documents(yaml).unwrap() {
        match r {
            Resource::ApiKey(k) => keys.push(k),
            Resource::AccessPolicy(p) => access.push(p),
            Resource::RateLimitPolicy(p) => rate.push(p),
            Resource::CorsPolicy(p) => cors.push(p),
        }
    }
    let material = BTreeMap::new();
    let out = compiler::compile(&Inputs {
        namespace: "shop",
        api_keys: &keys,
        access_policies: &access,
        rate_limit_policies: &rate,
        cors_policies: &cors,
        key_material: &material,
        extra_targets: &["orders".to_string()],
        epoch: 1,
    });
    for o in &out.outcomes {
        assert!(
            matches!(o.outcome, compiler::Outcome::Accepted { .. }),
            "{o:?}"
        );
    }
    let b = &out.bundles["orders"];
    (b.keys.to_json(), b.policy.to_json())
}

/// Writes a file atomically (rename), as the kubelet swaps projected files.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Writes the bundle of `setup` into `dir`.
pub fn write_bundle(dir: &Path, setup: &Setup) {
    let (keys, policy) = compile_bundle(&manifests(setup));
    write_atomic(&dir.join(KEYS_FILE), &keys);
    write_atomic(&dir.join(POLICY_FILE), &policy);
}

/// A temporary bundle directory holding the bundle of `setup`.
pub fn bundle_dir(setup: &Setup) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), setup);
    dir
}

// ---- upstream ----------------------------------------------------------------------

/// The test workload.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in req.headers() {
        headers
            .entry(n.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let body_len = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let json = serde_json::json!({
        "method": method, "path": path, "query": query, "headers": headers, "body_len": body_len,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if path.ends_with("/ws") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        return Ok(resp);
    }
    if path.ends_with("/leaky") {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
        for (n, v) in [
            ("server", "Apache/2.4.1"),
            ("x-powered-by", "PHP/8.1"),
            ("x-frame-options", "SAMEORIGIN"),
        ] {
            resp.headers_mut().insert(n, v.parse().unwrap());
        }
        return Ok(resp);
    }
    if path.contains("/missing") {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not here")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    if path.ends_with("/slow") {
        let ms = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(echo(req).await)
}

/// Starts the upstream on 127.0.0.1.
pub async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let svc = service_fn(move |req| upstream_handle(req, Arc::clone(&h)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream { addr, hits }
}

/// An address where nothing listens.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

// ---- the sidecar process -----------------------------------------------------------

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running `turnpike-sidecar`.
pub struct Sidecar {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

fn collect(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    });
}

impl Sidecar {
    /// Starts the binary with `args` (plus listeners on port 0, JSON logs and the
    /// admin token in the environment).
    pub fn start(args: &[&str]) -> Sidecar {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnpike-sidecar"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--reload-interval",
            "200ms",
        ])
        .args(args)
        .env("TURNPIKE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // Test bundles are unsigned unless a test signs them (and passes the trust list).
        if !args.contains(&"--bundle-trust") {
            cmd.env("TURNPIKE_INSECURE_UNSIGNED_BUNDLES", "true");
        }
        let mut child = cmd.spawn().expect("starting turnpike-sidecar");
        let output = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), Arc::clone(&output));
        collect(child.stderr.take().unwrap(), Arc::clone(&output));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = output.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "turnpike-sidecar serving").then(|| {
                    (
                        v["listen"].as_str().unwrap().parse().unwrap(),
                        v["admin"].as_str().unwrap().parse().unwrap(),
                    )
                })
            });
            if let Some((addr, admin)) = found {
                return Sidecar {
                    child,
                    addr,
                    admin,
                    output,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "turnpike-sidecar exited with {status}:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "turnpike-sidecar did not start:\n{}",
                output.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A sidecar enforcing the bundle in `dir` in front of `upstream`.
    pub fn with_bundle(dir: &Path, upstream: &Upstream, extra: &[&str]) -> Sidecar {
        let mut args = vec![
            "--bundle-dir".to_string(),
            dir.display().to_string(),
            "--upstream".into(),
            upstream.url(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Sidecar::start(&args)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The JSON audit lines written so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.output
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect()
    }

    /// Waits until the output has a line containing all of `needles`.
    pub async fn wait_for_output(&self, needles: &[&str]) {
        eventually(|| {
            let lines = self.output.lock().unwrap();
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n)))
        })
        .await;
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the sidecar did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// GETs an admin path: (status, body).
    pub async fn admin_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut headers = vec![];
        let auth;
        if let Some(t) = token {
            auth = format!("Bearer {t}");
            headers.push(("authorization", auth.as_str()));
        }
        let r = send(
            &format!("http://{}{}", self.admin, path),
            "GET",
            &headers,
            "",
        )
        .await;
        (r.status, r.text())
    }

    /// Waits for `/readyz` to answer `status`.
    pub async fn wait_ready(&self, status: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (s, body) = self.admin_get("/readyz", None).await;
            if s == status {
                return body;
            }
            assert!(Instant::now() < deadline, "readyz stayed: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics", None).await.1
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` until it holds (at most 20 s); no timing is asserted.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of a counter or gauge series in metrics text (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// ---- clients -----------------------------------------------------------------------

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The upstream's view of the request (echo endpoint).
    pub fn echoed_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    // One client per request: each test has its own runtime, and a pooled
    // connection belongs to the runtime that opened it.
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request over HTTP/1.1.
pub async fn send(url: &str, method: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut req = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let resp = client().request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// GET with `X-API-Key`.
pub async fn get_with_key(sidecar: &Sidecar, path: &str, token: &str) -> Resp {
    send(&sidecar.url(path), "GET", &[("x-api-key", token)], "").await
}

/// Polls `GET /orders/1` with `token` (every 25 ms, up to 10 s) until the sidecar
/// answers `want`, as it does once a reload took effect; panics naming `what`.
pub async fn status_eventually(sidecar: &Sidecar, token: &str, want: u16, what: &str) {
    let mut status = 0;
    for _ in 0..400 {
        status = get_with_key(sidecar, "/orders/1", token).await.status;
        if status == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{what}: status stayed {status}, wanted {want}");
}

/// Writes raw bytes on a new connection and reads until the server closes it (or
/// `within` passes): the text received, and whether the server closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], within: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// A sidecar in local mode (`--manifests`) on the manifests of `setup`, in front of
/// `upstream`; the returned directory holds the manifests.
pub fn local_mode(
    setup: &Setup,
    upstream: &Upstream,
    extra: &[&str],
) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(&dir.path().join("turnpike.yaml"), &manifests(setup));
    let mut args = vec![
        "--manifests".to_string(),
        dir.path().display().to_string(),
        "--target".into(),
        "orders".into(),
        "--upstream".into(),
        upstream.url(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (Sidecar::start(&args), dir)
}

/// A path relative to the crate, for fixtures.
pub fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
