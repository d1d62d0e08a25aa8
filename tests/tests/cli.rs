//! `kubectl-turnpike` against a real API server with the operator running: issue,
//! list, rotate, revoke and describe, as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use turnpike_api::{
    bundle::{self, KeyBundle, KeyEntry},
    hash,
};
use turnpike_e2e::{
    Process, Run, binary, curl, eventually, free_port, install_crds, jsonpath, kubectl, kubectl_ok,
    namespace, start_operator, temp_dir, upstream,
};

const WAIT: Duration = Duration::from_secs(60);
const MARK: &str = "# TOKEN (shown once, store it now): ";

/// The operator with a Lease of its own, so it never waits on another test's leader.
fn operator(system_ns: &str) -> Process {
    start_operator(
        system_ns,
        "turnpike-cli-e2e",
        "cli-e2e",
        "operator-cli",
        &[],
    )
}

/// Runs the plugin binary against `KUBECONFIG`.
fn turnpike(args: &[&str]) -> Run {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "the e2e suite needs a cluster: run scripts/e2e (local control plane) or set KUBECONFIG"
    );
    Command::new(binary("kubectl-turnpike"))
        .args(args)
        .output()
        .expect("running kubectl-turnpike")
        .into()
}

fn turnpike_ok(args: &[&str], op: &Process) -> Run {
    let run = turnpike(args);
    assert!(
        run.ok,
        "kubectl-turnpike {args:?} failed:\n{}\n{}\noperator log:\n{}",
        run.stdout,
        run.stderr,
        op.output()
    );
    run
}

/// The one token line; panics unless there is exactly one.
fn token_of(run: &Run) -> String {
    let tokens: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix(MARK))
        .collect();
    assert_eq!(tokens.len(), 1, "{}", run.stdout);
    let token = tokens[0].to_owned();
    assert_eq!(run.stdout.matches(&token).count(), 1, "token printed twice");
    assert!(!run.stderr.contains(&token), "token on stderr");
    token
}

fn key_entry(ns: &str, target: &str, key_id: &str) -> Option<KeyEntry> {
    let name = bundle::object_name(target);
    let b64 = jsonpath("secret", ns, &name, "{.data.keys\\.json}");
    let keys = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
    let keys = bundle::parse::<KeyBundle>(std::str::from_utf8(&keys).ok()?).ok()?;
    keys.keys
        .into_iter()
        .find(|(id, _)| id.as_str() == key_id)
        .map(|(_, e)| e)
}

fn secret_exists(ns: &str, name: &str) -> bool {
    kubectl(&["get", "secret", name, "-n", ns], None).ok
}

fn list_line(run: &Run, name: &str) -> String {
    run.stdout
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{}", run.stdout))
        .to_owned()
}

#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn issue_list_rotate_revoke_describe() {
    install_crds();
    let ns = namespace("e2e-cli");
    let system = namespace("e2e-cli-system");
    let mut op = operator(&system);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}]\n"
        )),
    );

    // issue: the token is printed once and verifies against the bundle; the delivery
    // Secret is gone.
    let run = turnpike_ok(
        &[
            "issue",
            "billing",
            "-n",
            &ns,
            "--scopes",
            "orders:read",
            "--targets",
            "orders",
            "--owner",
            "team-billing",
            "--expires",
            "720h",
        ],
        &op,
    );
    let token = token_of(&run);
    let key_id = jsonpath("apikey", &ns, "billing", "{.status.keyId}");
    assert_eq!(key_id.len(), 12);
    assert!(token.starts_with(&format!("tpk_{key_id}_")), "{token}");
    assert!(
        run.stdout.contains("Secret") && run.stdout.contains("deleted"),
        "{}",
        run.stdout
    );
    assert!(!secret_exists(&ns, "billing-token"), "delivery Secret left");
    let entry = eventually("the key in bundle turnpike-orders", WAIT, || {
        key_entry(&ns, "orders", &key_id)
    });
    assert!(hash::verify(&entry.secrets[0].hash, &token));

    // issue of an existing name fails and changes nothing.
    let again = turnpike(&["issue", "billing", "-n", &ns, "--scopes", "orders:read"]);
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{again:?}"
    );
    assert_eq!(
        jsonpath("apikey", &ns, "billing", "{.status.keyId}"),
        key_id
    );

    // list: one namespace, then all of them.
    let list = turnpike_ok(&["list", "-n", &ns], &op);
    assert!(list.stdout.starts_with("NAME "), "{}", list.stdout);
    let line = list_line(&list, "billing");
    for part in [key_id.as_str(), "Active", "orders:read", "team-billing"] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    let all = turnpike_ok(&["list", "-A"], &op);
    assert!(all.stdout.starts_with("NAMESPACE "), "{}", all.stdout);
    assert!(list_line(&all, "billing").starts_with(&ns));

    // rotate: a new token for the same key id; the old one works for the grace period.
    let run = turnpike_ok(&["rotate", "billing", "-n", &ns], &op);
    let new_token = token_of(&run);
    assert_ne!(new_token, token);
    assert!(
        new_token.starts_with(&format!("tpk_{key_id}_")),
        "same key id"
    );
    assert!(
        run.stdout
            .contains("The previous token keeps working until"),
        "{}",
        run.stdout
    );
    assert!(!secret_exists(&ns, "billing-token"), "delivery Secret left");
    let entry = eventually("the rotated key in the bundle", WAIT, || {
        key_entry(&ns, "orders", &key_id).filter(|e| e.secrets.len() == 2)
    });
    assert!(hash::verify(&entry.secrets[0].hash, &new_token));
    assert!(hash::verify(&entry.secrets[1].hash, &token));

    // revoke --wait: phase Revoked, in the list too.
    let run = turnpike_ok(&["revoke", "billing", "-n", &ns, "--wait"], &op);
    assert!(
        run.stdout.contains("ApiKey") && run.stdout.contains("is Revoked"),
        "{}",
        run.stdout
    );
    let list = turnpike_ok(&["list", "-n", &ns], &op);
    assert!(
        list_line(&list, "billing").contains("Revoked"),
        "{}",
        list.stdout
    );
    // A revoked key is not rotated.
    let refused = turnpike(&["rotate", "billing", "-n", &ns]);
    assert!(
        !refused.ok && refused.stderr.contains("revoked"),
        "{refused:?}"
    );

    // describe: status and the Events regarding the key, never a token or a hash.
    let text = eventually("KeyRevoked in describe", WAIT, || {
        let run = turnpike(&["describe", "billing", "-n", &ns]);
        (run.ok && run.stdout.contains("KeyRevoked")).then_some(run.stdout)
    });
    for expected in [
        "KeyIssued",
        "KeyRotated",
        "KeyRevoked",
        key_id.as_str(),
        "Revoked",
    ] {
        assert!(text.contains(expected), "{expected} not in\n{text}");
    }
    assert!(
        !text.contains(&token) && !text.contains(&new_token) && !text.contains("argon2"),
        "{text}"
    );

    // Names that do not exist.
    let missing = turnpike(&["describe", "nope", "-n", &ns]);
    assert!(!missing.ok, "{missing:?}");
    assert!(
        missing
            .stderr
            .contains(&format!("ApiKey {ns}/nope not found")),
        "{}",
        missing.stderr
    );

    assert!(op.running(), "operator exited:\n{}", op.output());
    assert!(op.terminate(Duration::from_secs(20)), "graceful shutdown");
    for n in [&ns, &system] {
        kubectl_ok(&["delete", "namespace", n, "--wait=false"], None);
    }
}

/// Component test of `usage --sidecar-url` (no cluster needed, only the workspace's
/// binaries, hence in this suite): the real sidecar in local mode with the example
/// policies and a key minted by `key new`, some requests, then the plugin reports the
/// quota and bucket they used. The admin token never shows.
#[test]
#[ignore = "needs the workspace's binaries: scripts/e2e builds them"]
fn usage_reports_what_the_real_sidecar_counted() {
    let dir = temp_dir("usage-local");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let examples = turnpike_e2e::repo_root().join("examples");
    for f in [
        "accesspolicy.yaml",
        "ratelimitpolicy.yaml",
        "corspolicy.yaml",
    ] {
        std::fs::copy(examples.join(f), manifests.join(f)).unwrap();
    }
    let run: Run = Command::new(binary("kubectl-turnpike"))
        .args([
            "key",
            "new",
            "--name",
            "usage-demo",
            "--namespace",
            "shop",
            "--targets",
            "orders",
            "--scopes",
            "orders:read",
            "--output-dir",
            manifests.to_str().unwrap(),
        ])
        .output()
        .expect("running kubectl-turnpike key new")
        .into();
    assert!(run.ok, "{}", run.stderr);
    let token = token_of(&run);
    let key_id = token.split('_').nth(1).unwrap().to_owned();
    // The key's own bucket refills once an hour, so its level after the requests below
    // does not depend on how fast they ran (the example policy's perKey refills at 10/s).
    let manifest = std::fs::read_dir(&manifests)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_to_string(p).unwrap().contains("kind: ApiKey"))
        .expect("key new wrote the ApiKey manifest");
    let mut yaml = std::fs::read_to_string(&manifest).unwrap();
    yaml.push_str("  rateLimit: {rate: 1, per: 1h, burst: 20}\n");
    std::fs::write(&manifest, yaml).unwrap();

    let admin_token = "e2eAdminToken0123456789abcdefghijklmnopqrstu";
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{admin_token}\n")).unwrap();
    let up = upstream();
    let (listen, admin) = (free_port(), free_port());
    let sidecar = Process::start(
        &binary("turnpike-sidecar"),
        &[
            "--manifests",
            manifests.to_str().unwrap(),
            "--target",
            "orders",
            "--namespace",
            "shop",
            "--upstream",
            &format!("http://127.0.0.1:{up}"),
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        "sidecar-usage",
    );
    eventually("sidecar ready", WAIT, || {
        (curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).0 == 200).then_some(())
    });
    let key_header = format!("X-API-Key: {token}");
    for _ in 0..3 {
        let (status, text) = curl(&[
            "-H",
            &key_header,
            &format!("http://127.0.0.1:{listen}/orders/1"),
        ]);
        assert_eq!(status, 200, "{text}");
    }

    let url = format!("http://127.0.0.1:{admin}");
    let usage = |extra: &[&str], env_token: Option<&str>| -> Run {
        let mut cmd = Command::new(binary("kubectl-turnpike"));
        cmd.args(["usage", "--sidecar-url", &url, "--key-id", &key_id])
            .args(extra)
            .env_remove("TURNPIKE_ADMIN_TOKEN");
        if let Some(t) = env_token {
            cmd.env("TURNPIKE_ADMIN_TOKEN", t);
        }
        cmd.output().expect("running kubectl-turnpike").into()
    };
    let run = usage(
        &[
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let sidecar_view = &v["sidecars"][0]["usage"];
    assert_eq!(sidecar_view["id"], key_id.as_str());
    assert_eq!(sidecar_view["target"], "orders");
    assert_eq!(sidecar_view["usage"]["quotaUsedToday"], 3);
    assert_eq!(sidecar_view["usage"]["dailyQuota"], 10000);
    assert_eq!(sidecar_view["usage"]["bucket"]["available"], 17);
    assert_eq!(sidecar_view["usage"]["bucket"]["burst"], 20);
    assert_eq!(sidecar_view["usage"]["lockedOut"], false);

    // The table, with the token from the environment.
    let run = usage(&[], Some(admin_token));
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let row = run.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        row.starts_with(&url)
            && row.contains("17/20")
            && row.contains("3/10000")
            && row.ends_with("ok"),
        "{}",
        run.stdout
    );

    // A wrong token: a clear error, exit 1.
    let run = usage(&[], Some("not-the-admin-token"));
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("the sidecar refused the admin token (401)"),
        "{}",
        run.stderr
    );
    // No token at all.
    let run = usage(&[], None);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("--admin-token-file FILE or TURNPIKE_ADMIN_TOKEN"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains(admin_token) && !run.stderr.contains(admin_token));
    assert!(
        !sidecar.output().contains(admin_token),
        "the sidecar logged the admin token"
    );
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The operator creates the namespace's admin-token Secret once a bundle exists, and
/// again after it is deleted (rotation); `usage` explains when no sidecar runs.
#[test]
#[ignore = "needs a cluster: scripts/e2e"]
fn usage_in_a_cluster_without_running_sidecars() {
    install_crds();
    let ns = namespace("e2e-usage");
    let system = namespace("e2e-usage-system");
    // A namespace with no Turnpike resource: checked at the end, after the operator
    // has had the whole test to (wrongly) write there.
    let bare = namespace("e2e-usage-bare");
    let op = operator(&system);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: turnpike.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: orders, namespace: {ns}}}\nspec:\n  targetRef: {{name: orders}}\n  rules: [{{match: {{methods: [GET], path: '/orders/**'}}, scopes: ['orders:read']}}]\n"
        )),
    );
    let run = turnpike_ok(
        &[
            "issue",
            "billing",
            "-n",
            &ns,
            "--scopes",
            "orders:read",
            "--targets",
            "orders",
        ],
        &op,
    );
    let _ = token_of(&run);

    let admin_token = |ns: &str| -> Option<String> {
        let b64 = jsonpath("secret", ns, "turnpike.admin", "{.data.token}");
        let bytes = data_encoding::BASE64.decode(b64.as_bytes()).ok()?;
        String::from_utf8(bytes).ok().filter(|t| !t.is_empty())
    };
    let first = eventually("Secret turnpike.admin", WAIT, || admin_token(&ns));
    assert_eq!(first.len(), 43, "256 random bits in base62");
    assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(
        jsonpath(
            "secret",
            &ns,
            "turnpike.admin",
            "{.metadata.labels.app\\.kubernetes\\.io/managed-by}"
        ),
        "turnpike-operator"
    );

    // No pod has a sidecar: said plainly.
    let run = turnpike(&["usage", "billing", "-n", &ns]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("no pods with a Turnpike sidecar serve target(s) orders"),
        "{}",
        run.stderr
    );

    // A pod with a sidecar that cannot run here (no kubelet): shown, not asked.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: orders-1, namespace: {ns}, labels: {{app: orders}}}}\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - {{name: app, image: example.invalid/app}}\n  - name: turnpike-sidecar\n    image: example.invalid/sidecar\n    ports: [{{name: turnpike-admin, containerPort: 9901}}]\n"
    );
    eventually("pod created", WAIT, || {
        kubectl(&["apply", "-f", "-"], Some(&pod)).ok.then_some(())
    });
    let run = turnpike(&["usage", "billing", "-n", &ns]);
    assert!(!run.ok);
    assert!(
        run.stdout.contains("orders-1") && run.stdout.contains("NotRunning"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("no sidecar is running"),
        "{}",
        run.stderr
    );

    // Deleting the Secret rotates the token: the operator creates a new one.
    kubectl_ok(&["delete", "secret", "turnpike.admin", "-n", &ns], None);
    let second = eventually("a new Secret turnpike.admin", WAIT, || {
        admin_token(&ns).filter(|t| *t != first)
    });
    for text in [&run.stdout, &run.stderr, &op.output()] {
        assert!(
            !text.contains(&first) && !text.contains(&second),
            "token shown: {text}"
        );
    }
    assert!(
        !secret_exists(&bare, "turnpike.admin"),
        "a Secret where no bundle is"
    );
}
