//! `kubectl-turnpike key ...` run as a process.
#![allow(clippy::unwrap_used)]

use assert_cmd::cargo::cargo_bin_cmd;
use serde::Deserialize;
use turnpike_api::hash::{PhcHash, verify};
use turnpike_api::token::Token;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    targets: Option<Vec<String>>,
    scopes: Vec<String>,
    owner: Option<String>,
    expires_at: Option<String>,
    key_id: String,
    hash: String,
}

const TOKEN_MARK: &str = "# TOKEN (shown once, store it now): ";

fn token_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(TOKEN_MARK))
        .unwrap()
}

#[test]
fn key_new_prints_token_and_manifest() -> TestResult {
    let out = cargo_bin_cmd!("kubectl-turnpike")
        .args(["key", "new", "--name", "billing", "--namespace", "shop"])
        .args([
            "--scopes",
            "orders:read,orders:write",
            "--targets",
            "orders",
        ])
        .args(["--owner", "team-billing@example.com"])
        .args(["--expires", "2999-06-30T00:00:00Z"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout)?;
    let token = token_line(&stdout);
    assert_eq!(
        stdout.matches(token).count(),
        1,
        "token printed more than once"
    );

    let manifest: Manifest = serde_saphyr::from_str(&stdout)?;
    assert_eq!(manifest.api_version, "turnpike.dev/v1alpha1");
    assert_eq!(manifest.kind, "ApiKey");
    assert_eq!(manifest.metadata.name, "billing");
    assert_eq!(manifest.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(manifest.spec.targets, Some(vec!["orders".to_owned()]));
    assert_eq!(manifest.spec.scopes, ["orders:read", "orders:write"]);
    assert_eq!(
        manifest.spec.owner.as_deref(),
        Some("team-billing@example.com")
    );
    assert_eq!(
        manifest.spec.expires_at.as_deref(),
        Some("2999-06-30T00:00:00Z")
    );

    let parsed = Token::parse(token)?;
    assert_eq!(manifest.spec.key_id, parsed.id());
    let hash = PhcHash::parse(&manifest.spec.hash)?;
    assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(verify(&hash, token));

    // `key hash` of the same token: a new salt, and it verifies too.
    let out = cargo_bin_cmd!("kubectl-turnpike")
        .args(["key", "hash"])
        .write_stdin(format!("{token}\n"))
        .assert()
        .success()
        .get_output()
        .clone();
    let rehashed = PhcHash::parse(String::from_utf8(out.stdout)?.trim_end())?;
    assert_ne!(rehashed, hash);
    assert!(verify(&rehashed, token));
    Ok(())
}

#[test]
fn key_new_minimal_omits_optional_fields() -> TestResult {
    let out = cargo_bin_cmd!("kubectl-turnpike")
        .args(["key", "new", "--name", "ci", "--scopes", "read"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout)?;
    let manifest: Manifest = serde_saphyr::from_str(&stdout)?;
    assert_eq!(manifest.metadata.namespace, None);
    assert_eq!(manifest.spec.targets, None);
    assert_eq!(manifest.spec.owner, None);
    assert_eq!(manifest.spec.expires_at, None);
    assert_eq!(manifest.spec.scopes, ["read"]);
    Ok(())
}

#[test]
fn bad_scope_is_a_usage_error_naming_the_scope() -> TestResult {
    let out = cargo_bin_cmd!("kubectl-turnpike")
        .args([
            "key",
            "new",
            "--name",
            "billing",
            "--scopes",
            "orders:read,orders write",
        ])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("\"orders write\""), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "a token was printed despite the error"
    );
    Ok(())
}

#[test]
fn other_usage_errors_exit_2() {
    for args in [
        &["key", "new", "--scopes", "a"][..],
        &["key", "new", "--name", "x"],
        &["key", "new", "--name", "Bad_Name", "--scopes", "a"],
        &[
            "key",
            "new",
            "--name",
            "x",
            "--scopes",
            "a",
            "--namespace",
            "a.b",
        ],
        &[
            "key",
            "new",
            "--name",
            "x",
            "--scopes",
            "a",
            "--targets",
            "ok,Not-OK",
        ],
        &[
            "key",
            "new",
            "--name",
            "x",
            "--scopes",
            "a",
            "--expires",
            "2027-06-30",
        ],
        &[
            "key",
            "new",
            "--name",
            "x",
            "--scopes",
            "a",
            "--expires",
            "2000-01-01T00:00:00Z",
        ],
        &["key", "frobnicate"],
    ] {
        cargo_bin_cmd!("kubectl-turnpike")
            .args(args)
            .assert()
            .code(2);
    }
}

#[test]
fn output_dir_writes_file_and_refuses_overwrite() -> TestResult {
    let dir = tempfile::tempdir()?;
    let target = dir.path().join("nested/keys");
    let run = || {
        cargo_bin_cmd!("kubectl-turnpike")
            .args(["key", "new", "--name", "billing", "--scopes", "orders:read"])
            .arg("--output-dir")
            .arg(&target)
            .assert()
    };

    let out = run().success().get_output().clone();
    let stdout = String::from_utf8(out.stdout)?;
    let token = token_line(&stdout).to_owned();
    let path = target.join("billing.apikey.yaml");
    assert!(stdout.contains(&path.display().to_string()), "{stdout}");
    assert!(
        !stdout.contains("apiVersion"),
        "manifest printed to stdout: {stdout}"
    );

    let file = std::fs::read_to_string(&path)?;
    assert!(!file.contains(&token), "token inside the manifest file");
    assert!(!file.contains(Token::parse(&token)?.expose_secret()));
    let manifest: Manifest = serde_saphyr::from_str(&file)?;
    assert!(verify(&PhcHash::parse(&manifest.spec.hash)?, &token));

    // Second run: refuses, leaves the file alone, prints no token.
    let out = run().code(1).get_output().clone();
    let stderr = String::from_utf8(out.stderr)?;
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(!String::from_utf8(out.stdout)?.contains("tpk_"));
    assert_eq!(std::fs::read_to_string(&path)?, file);
    Ok(())
}

#[test]
fn key_hash_rejects_bad_tokens_without_echoing_them() -> TestResult {
    let token = Token::mint()?;
    let mut tampered = token.expose_token().to_owned();
    let last = if tampered.ends_with('A') { "B" } else { "A" };
    tampered.replace_range(65.., last);
    for input in [tampered.as_str(), "", "tpk_nope"] {
        let out = cargo_bin_cmd!("kubectl-turnpike")
            .args(["key", "hash"])
            .write_stdin(input)
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.contains("does not hold a valid token"), "{stderr}");
        assert!(!stderr.contains(token.as_parsed().expose_secret()));
        assert!(out.stdout.is_empty());
    }
    Ok(())
}
