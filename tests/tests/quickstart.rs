//! docs/quickstart.md, executed: every ```sh block of the page (and the ```sh local
//! ones, for the local cluster of tests/cluster) runs in order in one bash session from
//! the repository root, so the page cannot rot. A line ending in `# expect: TEXT` must
//! print TEXT. Blocks marked ```sh kind are for kind and not run; the local cluster's
//! own `up` reuses the cluster scripts/e2e started, and its `down` is left to
//! scripts/e2e, which runs it after the whole suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, process::Command};

use turnpike_e2e::{kubectl, repo_root};

/// One fenced block of the page: its info string and its lines.
struct Block {
    info: String,
    lines: Vec<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            match current.take() {
                Some(b) => out.push(b),
                None => {
                    current = Some(Block {
                        info: rest.trim().to_owned(),
                        lines: Vec::new(),
                    })
                }
            }
        } else if let Some(b) = current.as_mut() {
            b.lines.push(line.to_owned());
        }
    }
    out
}

/// The shell script the page amounts to on the local cluster.
fn script(markdown: &str) -> (String, usize) {
    let mut text = String::from(
        "set -euo pipefail\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n",
    );
    let mut expectations = 0;
    for block in blocks(markdown) {
        if block.info != "sh" && block.info != "sh local" {
            continue;
        }
        // A command continued with `\` is one command, its expectation on its last line.
        let mut joined: Vec<String> = Vec::new();
        let mut pending = String::new();
        for line in block.lines {
            if let Some(head) = line.strip_suffix('\\') {
                pending.push_str(head);
                continue;
            }
            pending.push_str(&line);
            joined.push(std::mem::take(&mut pending));
        }
        for line in joined {
            if line
                .trim_start()
                .starts_with("tests/cluster/local-control-plane down")
            {
                continue;
            }
            match line.rsplit_once("# expect: ") {
                Some((cmd, want)) if !cmd.trim().is_empty() => {
                    let want = want.trim();
                    let cmd = cmd.trim_end();
                    text.push_str(&format!(
                        "out=$({cmd}) || {{ echo \"quickstart: failed: {esc}\" >&2; exit 1; }}\n\
                         printf '%s\\n' \"$out\"\n\
                         grep -qF -- {want_q} <<<\"$out\" || {{ echo \"quickstart: expected {want_e} from: {esc}\" >&2; exit 1; }}\n",
                        esc = cmd.replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$").replace('`', "\\`"),
                        want_q = shell_quote(want),
                        want_e = want.replace('"', "\\\"").replace('$', "\\$"),
                    ));
                    expectations += 1;
                }
                _ => {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        }
    }
    (text, expectations)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Expectations become checks, kind blocks are left out, local ones kept.
#[test]
fn the_harness_turns_expectations_into_checks() {
    let md = "text\n```sh\necho a   # expect: a\nls\n```\n```sh kind\nkind create\n```\n```sh local\necho b\n```\n";
    let (s, n) = script(md);
    assert_eq!(n, 1);
    assert!(s.contains("out=$(echo a)"), "{s}");
    assert!(s.contains("grep -qF -- 'a'"), "{s}");
    assert!(s.contains("\nls\n") && s.contains("\necho b\n"), "{s}");
    assert!(!s.contains("kind create"), "{s}");
}

#[test]
#[ignore = "needs the local cluster with its node and the images (scripts/e2e)"]
fn the_quickstart_runs_as_written() {
    assert!(
        std::env::var("TURNPIKE_E2E_LOCAL_NODE").as_deref() == Ok("1"),
        "docs/quickstart.md is executed on the local cluster (scripts/e2e sets TURNPIKE_E2E_LOCAL_NODE=1)"
    );
    let root = repo_root();
    let page =
        std::fs::read_to_string(root.join("docs/quickstart.md")).expect("docs/quickstart.md");
    let (text, expectations) = script(&page);
    assert!(
        expectations >= 10,
        "the page checks what it shows ({expectations} expectations)"
    );
    // A namespace left terminating by an earlier test refuses the page's objects; one
    // left in place is an earlier test's leak (the page creates both), said at once.
    for ns in ["turnpike-system", "shop"] {
        let state = kubectl(
            &[
                "get",
                "namespace",
                ns,
                "--ignore-not-found",
                "-o",
                "jsonpath={.metadata.name}/{.metadata.deletionTimestamp}",
            ],
            None,
        );
        assert!(
            state.stdout.trim() != format!("{ns}/"),
            "namespace {ns} exists and is not being deleted: an earlier test left it, and the page creates it"
        );
        let _ = kubectl(
            &[
                "wait",
                "--for=delete",
                &format!("namespace/{ns}"),
                "--timeout=180s",
            ],
            None,
        );
    }
    let helm = std::env::var("TURNPIKE_E2E_HELM").expect("TURNPIKE_E2E_HELM (set by scripts/e2e)");
    let helm_dir = PathBuf::from(helm)
        .parent()
        .expect("helm's directory")
        .to_owned();
    let path = format!(
        "{}:{}",
        helm_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&text)
        .current_dir(&root)
        .env("PATH", path)
        .output()
        .expect("running bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    let cleanup = |args: &[&str]| {
        let _ = kubectl(args, None);
    };
    if !out.status.success() {
        cleanup(&[
            "delete",
            "namespace",
            "shop",
            "turnpike-system",
            "--wait=false",
        ]);
        cleanup(&[
            "delete",
            "mutatingwebhookconfiguration",
            "turnpike-injector",
            "--ignore-not-found",
        ]);
        panic!("docs/quickstart.md failed as written (script below):\n{text}");
    }
    assert!(
        stdout.contains("HTTP/1.1 401"),
        "the page's revocation step ran:\n{stdout}"
    );
}
