//! The krew manifest `plugins/turnpike.yaml` holds what krew requires and agrees with
//! this crate: it fails when the manifest drifts (version, binary name, a missing or
//! malformed field, a placeholder left in a real release, or the reverse).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde::Deserialize;

/// The manifest, beside the workspace's crates.
const MANIFEST: &str = include_str!("../../plugins/turnpike.yaml");

/// Host of the placeholder URIs (the workspace's `repository` is on it).
const PLACEHOLDER_HOST: &str = "example.invalid";
/// The digest standing for "no archive published yet".
const PLACEHOLDER_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

// The fields of krew's `index.krew.googlecontainertools.github.com/v1alpha2` Plugin;
// unknown fields are refused, so a misspelt one fails here rather than in krew.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Plugin {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    version: String,
    homepage: Option<String>,
    short_description: String,
    description: Option<String>,
    #[allow(dead_code)] // optional free text; parsed so that it is not an unknown field
    caveats: Option<String>,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    #[serde(default)]
    files: Vec<FileOp>,
    bin: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOp {
    from: String,
    to: String,
}

/// Everything wrong with `text` as a krew manifest for this crate.
fn problems(text: &str) -> Vec<String> {
    let plugin: Plugin = match serde_saphyr::from_str(text) {
        Ok(p) => p,
        Err(e) => return vec![format!("not a krew Plugin: {e}")],
    };
    let mut bad = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    check(
        plugin.api_version == "krew.googlecontainertools.github.com/v1alpha2",
        format!("apiVersion {:?}", plugin.api_version),
    );
    check(plugin.kind == "Plugin", format!("kind {:?}", plugin.kind));

    // kubectl runs `kubectl turnpike` as the executable `kubectl-turnpike`.
    let name = &plugin.metadata.name;
    check(
        name == "turnpike",
        format!("metadata.name {name:?}: the plugin is `kubectl turnpike`"),
    );
    let bin = format!("kubectl-{name}");

    // krew wants a `v`-prefixed semantic version; it must be this crate's.
    let spec = &plugin.spec;
    let crate_version = env!("CARGO_PKG_VERSION");
    match spec.version.strip_prefix('v').map(semver::Version::parse) {
        Some(Ok(v)) => check(
            v.to_string() == crate_version,
            format!(
                "spec.version {} differs from the crate version {crate_version}",
                spec.version
            ),
        ),
        _ => check(
            false,
            format!("spec.version {:?} is not v<semver>", spec.version),
        ),
    }
    let short = spec.short_description.trim();
    check(
        !short.is_empty() && !short.contains('\n') && short.len() <= 60,
        format!("spec.shortDescription {short:?}: one line, at most 60 characters"),
    );
    check(
        spec.description
            .as_deref()
            .is_some_and(|d| !d.trim().is_empty()),
        "spec.description is missing".to_owned(),
    );
    if let Some(home) = &spec.homepage {
        check(
            home.starts_with("https://"),
            format!("spec.homepage {home:?}"),
        );
    }

    check(
        !spec.platforms.is_empty(),
        "spec.platforms is empty".to_owned(),
    );
    let mut seen = Vec::new();
    for (i, p) in spec.platforms.iter().enumerate() {
        let at = format!("spec.platforms[{i}]");
        let labels = &p.selector.match_labels;
        check(
            !labels.is_empty() || !p.selector.match_expressions.is_empty(),
            format!("{at}.selector selects nothing"),
        );
        let (os, arch) = (labels.get("os"), labels.get("arch"));
        check(
            os.is_some() && arch.is_some(),
            format!("{at}.selector.matchLabels needs os and arch"),
        );
        check(
            !seen.contains(&(os, arch)),
            format!("{at}: a second platform for {os:?}/{arch:?}"),
        );
        seen.push((os, arch));

        // The archive of this version, over HTTPS.
        check(
            p.uri.starts_with("https://"),
            format!("{at}.uri {:?} is not https", p.uri),
        );
        check(
            p.uri.contains(&format!("/{}/", spec.version))
                && p.uri.contains(&format!("{bin}-{}-", spec.version))
                && (p.uri.ends_with(".tar.gz") || p.uri.ends_with(".zip")),
            format!(
                "{at}.uri {:?} is not the {bin}-{}-<target>.tar.gz archive of release {}",
                p.uri, spec.version, spec.version
            ),
        );
        let hex = p.sha256.len() == 64
            && p.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        check(
            hex,
            format!("{at}.sha256 {:?} is not 64 lower-case hex digits", p.sha256),
        );
        let placeholder_uri = p.uri.starts_with(&format!("https://{PLACEHOLDER_HOST}/"));
        let placeholder_sha = p.sha256 == PLACEHOLDER_SHA256;
        check(
            placeholder_uri == placeholder_sha,
            if placeholder_sha {
                format!(
                    "{at}: sha256 is the placeholder but the uri is a real release: put the archive's digest"
                )
            } else {
                format!("{at}: uri is the placeholder but sha256 is not: a digest of what?")
            },
        );

        let windows = os.is_some_and(|o| o == "windows");
        let expected = if windows {
            format!("{bin}.exe")
        } else {
            bin.clone()
        };
        check(
            p.bin == expected,
            format!("{at}.bin {:?}: expected {expected:?}", p.bin),
        );
        if !p.files.is_empty() {
            check(
                p.files.iter().any(|f| f.from == expected),
                format!("{at}.files does not copy {expected}"),
            );
            check(
                p.files
                    .iter()
                    .all(|f| !f.from.is_empty() && !f.to.is_empty()),
                format!("{at}.files has an empty from or to"),
            );
        }
    }
    bad
}

#[test]
fn the_manifest_is_valid_and_matches_the_crate() {
    assert_eq!(problems(MANIFEST), Vec::<String>::new());
}

#[test]
fn the_check_catches_drift() {
    let broken = |from: &str, to: &str| {
        assert!(MANIFEST.contains(from), "{from} is not in the manifest");
        problems(&MANIFEST.replacen(from, to, 1))
    };
    let has = |found: Vec<String>, needle: &str| {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "expected a problem with {needle:?}, got {found:?}"
        );
    };
    let v = format!("v{}", env!("CARGO_PKG_VERSION"));
    has(
        broken(&format!("version: {v}"), "version: v9.9.9"),
        "differs from the crate version",
    );
    has(
        broken(&format!("version: {v}"), "version: 0.1"),
        "not v<semver>",
    );
    has(
        broken("bin: kubectl-turnpike", "bin: turnpike"),
        ".bin \"turnpike\"",
    );
    has(
        broken("  shortDescription:", "  shortDesc:"),
        "not a krew Plugin",
    );
    has(
        broken(PLACEHOLDER_SHA256, "abc123"),
        "not 64 lower-case hex digits",
    );
    has(
        broken(
            "https://example.invalid/turnpike/releases",
            "https://github.com/x/turnpike/releases",
        ),
        "sha256 is the placeholder",
    );
    has(
        broken(PLACEHOLDER_SHA256, &"ab".repeat(32)),
        "uri is the placeholder",
    );
    has(broken("          os: linux\n", ""), "needs os and arch");
    has(
        broken(
            "https://example.invalid/turnpike/releases",
            "http://example.invalid/turnpike/releases",
        ),
        "is not https",
    );
}
