//! Argument validation and the no-cluster paths of the plugin, run as a process.
#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use clap::Parser;
use kubectl_turnpike::{Cli, Command as Sub};

/// The plugin with no cluster configured at all.
fn offline() -> Command {
    let mut cmd = cargo_bin_cmd!("kubectl-turnpike");
    cmd.env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    cmd
}

fn usage_error(args: &[&str]) -> String {
    let out = offline().args(args).assert().code(2).get_output().clone();
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&["issue", "billing"], "--scopes"),
        (
            &["issue", "Billing", "--scopes", "a"],
            "\"Billing\" is not a valid name",
        ),
        (&["issue", "billing", "--scopes", "a b"], "scope \"a b\""),
        (
            &["issue", "billing", "--scopes", "a", "--timeout", "60"],
            "invalid duration \"60\"",
        ),
        (
            &["issue", "billing", "--scopes", "a", "--timeout", "0s"],
            "longer than zero",
        ),
        (
            &[
                "issue",
                "billing",
                "--scopes",
                "a",
                "--expires",
                "2001-01-01T00:00:00Z",
            ],
            "in the past",
        ),
        (
            &["issue", "billing", "--scopes", "a", "--expires", "30d"],
            "720h",
        ),
        (
            &["issue", "billing", "--scopes", "a", "-n", "Shop"],
            "not a valid DNS label",
        ),
        (&["list", "-A", "-n", "shop"], "cannot be used with"),
        (&["revoke"], "<NAME>"),
        (&["revoke", "billing", "--timeout", "5s"], "--wait"),
        (&["rotate", "a_b"], "not a valid name"),
        (&["describe"], "<NAME>"),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let stderr = usage_error(args);
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} not in {stderr}"
        );
    }
}

#[test]
fn parsed_arguments() {
    let cli = Cli::try_parse_from([
        "kubectl-turnpike",
        "issue",
        "billing",
        "--scopes",
        "orders:read,orders:write",
        "--targets",
        "orders",
        "--expires",
        "720h",
        "--owner",
        "team",
        "-n",
        "shop",
        "--keep-secret",
        "--timeout",
        "2m",
    ])
    .unwrap();
    let Sub::Issue(args) = cli.command else {
        panic!("not issue")
    };
    assert_eq!(args.scopes, ["orders:read", "orders:write"]);
    assert_eq!(args.targets, ["orders"]);
    assert_eq!(args.cluster.namespace.as_deref(), Some("shop"));
    assert!(args.keep_secret);
    assert_eq!(args.timeout, std::time::Duration::from_secs(120));
    let expires = args.expires.unwrap();
    let days = (expires.as_second() - jiff::Timestamp::now().as_second()) / 86_400;
    assert!((29..=30).contains(&days), "{expires}");
    let key = kubectl_turnpike::commands::issue::manifest(&args, "shop");
    assert_eq!(key.metadata.namespace.as_deref(), Some("shop"));
    assert!(key.spec.key_id.is_none() && key.spec.hash.is_none());

    let cli = Cli::try_parse_from(["kubectl-turnpike", "list", "-A"]).unwrap();
    let Sub::List(args) = cli.command else {
        panic!("not list")
    };
    assert!(args.all_namespaces && args.cluster.namespace.is_none());
}

#[test]
fn without_a_cluster_commands_say_so() {
    for args in [
        &["list"][..],
        &["issue", "billing", "--scopes", "a"],
        &["describe", "billing"],
    ] {
        let out = offline().args(args).assert().code(1).get_output().clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("cannot reach the Kubernetes API server (KUBECONFIG / in-cluster): "),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn key_commands_stay_offline() {
    let out = offline()
        .args(["key", "new", "--name", "ci", "--scopes", "read"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("# TOKEN (shown once, store it now): tpk_"),
        "{stdout}"
    );
    // `--expires` also takes a duration from now.
    offline()
        .args([
            "key",
            "new",
            "--name",
            "ci",
            "--scopes",
            "read",
            "--expires",
            "24h",
        ])
        .assert()
        .success();
}

#[test]
fn a_reader_that_stops_early_is_not_a_failure() {
    use std::process::{Command as Process, Stdio};
    // The pipe's read end is closed before the plugin has started, so its first write
    // fails with EPIPE (Rust ignores SIGPIPE): `kubectl turnpike ... | head` in a script.
    let mut child = Process::new(env!("CARGO_BIN_EXE_kubectl-turnpike"))
        .args(["completion", "bash"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
