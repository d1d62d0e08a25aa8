//! Helpers for the end-to-end suite: a `kubectl` wrapper bound to the cluster in
//! `KUBECONFIG` and per-test namespaces.
//!
//! The suite's tests are `#[ignore]`d so a plain `cargo test` never touches a cluster;
//! `scripts/e2e` starts the local control plane and runs them with `--run-ignored only`
//! (or `cargo test -p turnpike-e2e -- --ignored` against any cluster in `KUBECONFIG`).
#![forbid(unsafe_code)]

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Result of one kubectl call.
#[derive(Debug)]
pub struct Run {
    /// Exit status was 0.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs kubectl against `KUBECONFIG`. Panics with a clear message when there is no
/// cluster configured: the e2e tests only run when asked for.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Run {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "the e2e suite needs a cluster: run scripts/e2e (local control plane) or set KUBECONFIG"
    );
    let mut cmd = Command::new("kubectl");
    cmd.args(["--request-timeout=30s"]).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take())
        && let Err(e) = pipe.write_all(text.as_bytes())
    {
        panic!("writing to kubectl: {e}");
    }
    match child.wait_with_output() {
        Ok(o) => o.into(),
        Err(e) => panic!("kubectl failed to run: {e}"),
    }
}

/// Runs kubectl and panics (with its output) when it fails.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let run = kubectl(args, stdin);
    assert!(
        run.ok,
        "kubectl {args:?} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// Applies `crds/` once per test process and waits until every CRD is Established.
pub fn install_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = repo_root().join("crds");
        let dir = dir.to_string_lossy();
        kubectl_ok(
            &["apply", "--server-side", "--force-conflicts", "-f", &dir],
            None,
        );
        kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                &dir,
            ],
            None,
        );
    });
}

/// Creates a fresh namespace named `<prefix>-<random>` and returns its name.
pub fn namespace(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let name = format!("{prefix}-{:x}{:x}", std::process::id(), nanos);
    kubectl_ok(&["create", "namespace", &name], None);
    name
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with
/// `what` in the message.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Path of a workspace binary built by `cargo build` (scripts/e2e builds them first).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (scripts/e2e does)",
        path.display()
    );
    path
}

/// A child process killed when dropped, with its output in a log file.
pub struct Process {
    child: std::process::Child,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

impl Process {
    /// Starts `bin` with `args`, output to a temporary log file.
    pub fn start(bin: &std::path::Path, args: &[&str], log_name: &str) -> Process {
        Self::start_with_env(bin, args, &[], log_name)
    }

    /// Starts `bin` with `args` and extra environment variables `env`, output to a
    /// temporary log file.
    pub fn start_with_env(
        bin: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_name: &str,
    ) -> Process {
        let log = std::env::temp_dir().join(format!(
            "turnpike-e2e-{log_name}-{}.log",
            std::process::id()
        ));
        let out = match std::fs::File::create(&log) {
            Ok(f) => f,
            Err(e) => panic!("creating {}: {e}", log.display()),
        };
        let err = match out.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("cloning log handle: {e}"),
        };
        let child = match Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(out)
            .stderr(err)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("starting {}: {e}", bin.display()),
        };
        Process { child, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up (a crashed leader).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `timeout` for a graceful exit; returns whether it exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a field with a jsonpath; empty when the object or field is missing.
pub fn jsonpath(kind: &str, ns: &str, name: &str, path: &str) -> String {
    let run = kubectl(
        &[
            "get",
            kind,
            name,
            "-n",
            ns,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    );
    if run.ok { run.stdout } else { String::new() }
}

/// Every Event (events.k8s.io/v1) in `ns`, as JSON (none while `kubectl` fails).
fn events_in(ns: &str) -> Vec<serde_json::Value> {
    let run = kubectl(
        &["get", "events.events.k8s.io", "-n", ns, "-o", "json"],
        None,
    );
    if !run.ok {
        return Vec::new();
    }
    let mut v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_default();
    match v["items"].take() {
        serde_json::Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// Events (events.k8s.io/v1) regarding an object, as (reason, note) pairs.
pub fn events_for(ns: &str, kind: &str, name: &str) -> Vec<(String, String)> {
    events_in(ns)
        .iter()
        .filter(|e| e["regarding"]["kind"] == kind && e["regarding"]["name"] == name)
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One Event the sidecar wrote (`reportingController: turnpike.dev/sidecar`).
#[derive(Debug, Clone)]
pub struct SidecarEvent {
    /// Its reason (`ScopeDenied`, `RevokedKeyUsed`, ...).
    pub reason: String,
    /// The name of the object it regards (the ApiKey, policy or pod).
    pub regarding: String,
    /// How many occurrences it stands for (`series.count`, 1 without a series).
    pub count: u64,
    /// Its note (key id, route, client IP).
    pub note: String,
}

/// The Events the sidecars wrote in `ns` (none while `kubectl` fails).
pub fn sidecar_events(ns: &str) -> Vec<SidecarEvent> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    events_in(ns)
        .iter()
        .filter(|e| e["reportingController"] == "turnpike.dev/sidecar")
        .map(|e| SidecarEvent {
            reason: text(&e["reason"]),
            regarding: text(&e["regarding"]["name"]),
            count: e["series"]["count"].as_u64().unwrap_or(1),
            note: text(&e["note"]),
        })
        .collect()
}

/// The public keys the operator of `system_ns` signs bundles with, as its ConfigMap
/// `turnpike-bundle-trust` publishes them, in `TURNPIKE_BUNDLE_TRUST` form
/// (comma-separated), once it has published them.
pub fn bundle_trust(system_ns: &str) -> String {
    eventually(
        "the operator's trust ConfigMap",
        Duration::from_secs(60),
        || {
            let keys = jsonpath(
                "configmap",
                system_ns,
                "turnpike-bundle-trust",
                "{.data.keys}",
            );
            let list: Vec<&str> = keys.split_whitespace().collect();
            (!list.is_empty()).then(|| list.join(","))
        },
    )
}

/// Starts the real operator binary with its own namespace, Lease and identity, short
/// lease timings, and extra flags; output goes to a log file named after `log`. The
/// webhook is off unless `extra` holds webhook flags (see `tests/tests/webhook.rs`):
/// operators of other scenarios must not fight over port 8443 and the cluster-wide
/// webhook configuration.
pub fn start_operator(
    system_ns: &str,
    lease: &str,
    identity: &str,
    log: &str,
    extra: &[&str],
) -> Process {
    start_operator_with_env(system_ns, lease, identity, log, extra, &[])
}

/// [`start_operator`] with extra environment variables, for example a `KUBECONFIG` that
/// acts as the operator's ServiceAccount (see [`kubeconfig_as`]).
pub fn start_operator_with_env(
    system_ns: &str,
    lease: &str,
    identity: &str,
    log: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let webhook = extra.iter().any(|a| a.starts_with("--webhook"));
    let mut args = vec![
        "--namespace",
        system_ns,
        "--lease-name",
        lease,
        "--identity",
        identity,
        "--lease-seconds",
        "4",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "pretty",
    ];
    if !webhook {
        args.push("--disable-webhook");
    }
    args.extend_from_slice(extra);
    Process::start_with_env(&binary("turnpike-operator"), &args, env, log)
}

/// The ServiceAccount user name the API server gives `namespace/name`'s tokens.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Writes a copy of the current kubeconfig (its current context only, credentials
/// embedded) whose user impersonates `user` (kubeconfig `as:`, honoured by kubectl and
/// by kube-rs, which send `Impersonate-User`), and returns its path. For a ServiceAccount
/// user the API server adds the ServiceAccount's groups, so every request is authorized
/// exactly as one made with that ServiceAccount's token.
pub fn kubeconfig_as(user: &str, file_name: &str) -> PathBuf {
    let raw = kubectl_ok(
        &[
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "json",
        ],
        None,
    );
    let mut cfg: serde_json::Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => panic!("kubectl config view printed no JSON: {e}"),
    };
    let Some(entry) = cfg["users"].get_mut(0) else {
        panic!("the kubeconfig has no user");
    };
    entry["user"]["as"] = serde_json::Value::String(user.to_owned());
    let path = std::env::temp_dir().join(format!("{file_name}-{}.kubeconfig", std::process::id()));
    let text = match serde_json::to_string_pretty(&cfg) {
        Ok(t) => t,
        Err(e) => panic!("serialising the kubeconfig: {e}"),
    };
    if let Err(e) = std::fs::write(&path, text) {
        panic!("writing {}: {e}", path.display());
    }
    path
}

/// `kubectl auth can-i VERB RESOURCE --as USER [more args]`: whether the real authorizer
/// allows it.
pub fn can_i(user: &str, verb: &str, resource: &str, more: &[&str]) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    args.extend_from_slice(more);
    let run = kubectl(&args, None);
    match run.stdout.trim() {
        "yes" => true,
        s if s == "no" || s.starts_with("no ") => false,
        _ => panic!(
            "kubectl {args:?} answered neither yes nor no:\n{}\n{}",
            run.stdout, run.stderr
        ),
    }
}

/// A minimal upstream on 127.0.0.1: answers every request with 200 and the request
/// line (`upstream saw GET /path HTTP/1.1`), one thread per connection. Returns its
/// port.
pub fn upstream() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let body = format!("upstream saw {}", line.trim());
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// (status, headers+body) of a curl request (`-s -i --max-time 10` and `args`); status
/// 0 when curl got no answer.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// An empty directory `turnpike-e2e-<name>-<pid>` under the system's temp directory
/// (emptied first if a previous run left it).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("turnpike-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp directory");
    dir
}
