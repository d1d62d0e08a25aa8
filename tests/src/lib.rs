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
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        if let Err(e) = pipe.write_all(text.as_bytes()) {
            panic!("writing to kubectl: {e}");
        }
    }
    match child.wait_with_output() {
        Ok(o) => o.into(),
        Err(e) => panic!("kubectl failed to run: {e}"),
    }
}

/// Runs kubectl and panics (with its output) when it fails.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let run = kubectl(args, stdin);
    assert!(run.ok, "kubectl {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
    run.stdout
}

/// Applies `crds/` once per test process and waits until every CRD is Established.
pub fn install_crds() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = repo_root().join("crds");
        let dir = dir.to_string_lossy();
        kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", &dir], None);
        kubectl_ok(
            &["wait", "--for=condition=Established", "--timeout=60s", "-f", &dir],
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
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
