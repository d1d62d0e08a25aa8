//! Writes the seed corpora in `fuzz/seeds/<target>/` from the repository's own
//! examples, so the fuzzers start from inputs the product really sees:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Bundles are compiled from `examples/*.yaml` as the operator compiles them (and once
//! more split into shards); tokens are freshly minted (they grant nothing anywhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use turnpike_api::bundle::Sealed;
use turnpike_api::compiler::{self, Inputs};
use turnpike_api::manifest::{self, Resource};
use turnpike_api::shard::split_with_budget;
use turnpike_api::token::Token;

fn write(root: &Path, target: &str, name: &str, data: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = repo.join("fuzz/seeds");
    let mut yaml = String::new();
    for f in ["apikey", "accesspolicy", "ratelimitpolicy", "corspolicy"] {
        let text = std::fs::read_to_string(repo.join(format!("examples/{f}.yaml"))).unwrap();
        write(&root, "manifest", f, text.as_bytes());
        yaml.push_str("---\n");
        yaml.push_str(&text);
    }
    write(&root, "manifest", "all", yaml.as_bytes());

    let (mut keys, mut access, mut rate, mut cors) = (vec![], vec![], vec![], vec![]);
    for r in manifest::parse_documents(&yaml).unwrap() {
        match r {
            Resource::ApiKey(k) => keys.push(k),
            Resource::AccessPolicy(p) => access.push(p),
            Resource::RateLimitPolicy(p) => rate.push(p),
            Resource::CorsPolicy(p) => cors.push(p),
        }
    }
    // More keys than one shard holds at a small budget: copies of the example key.
    let base = keys[0].clone();
    for i in 0..24 {
        let mut k = base.clone();
        k.metadata.name = Some(format!("copy-{i}"));
        k.spec.key_id = Some(Token::mint().unwrap().key_id().as_str().to_owned());
        keys.push(k);
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
    let b = &out.bundles["orders"];
    let (k, p) = (b.keys.to_json(), b.policy.to_json());
    write(&root, "bundle", "pair", format!("{k}\0{p}").as_bytes());
    let sharded = split_with_budget(&b.keys, 3000).unwrap();
    let mut sharded_input = format!("{}\0{p}", sharded.primary.to_json());
    for (_, text) in sharded.shard_files() {
        sharded_input.push('\0');
        sharded_input.push_str(&text);
    }
    write(&root, "bundle", "sharded", sharded_input.as_bytes());

    let token = Token::mint().unwrap();
    let t = token.expose_token();
    write(
        &root,
        "credential",
        "header",
        format!("\x03\u{ff}\x01{t}").as_bytes(),
    );
    write(
        &root,
        "credential",
        "bearer",
        format!("\x03\u{ff}\u{ff}\x01Bearer {t}").as_bytes(),
    );
    write(
        &root,
        "credential",
        "both",
        format!("\x03\u{ff}\x01{t}\u{ff}\x01Bearer {t}").as_bytes(),
    );

    for (i, v) in [
        "/orders/42/items",
        "/orders/../admin",
        "/a/%2e%2e/b",
        "/a%2Fb",
        "/..;/admin",
        "/admin;jsessionid=1/x",
        "/%C3%A9t%C3%A9",
        "/%252e",
        "/%c0%ae",
        "//x///y/",
    ]
    .iter()
    .enumerate()
    {
        write(&root, "path", &format!("v{i}"), v.as_bytes());
    }
    write(
        &root,
        "route_scope",
        "orders",
        b"/orders/42/items\n/orders/*/items\n/admin/**\n/**",
    );
    write(
        &root,
        "route_scope",
        "params",
        b"/admin;x/secret\n/admin/**\n/a;v=1\n/**",
    );
    write(
        &root,
        "cors_origin",
        "preflight",
        b"https://app.example.com\nPOST\ncontent-type\nhttps://shop.example.com",
    );
    write(&root, "cors_origin", "star", b"null\nGET\n\n*");
    write(
        &root,
        "forwarded_for",
        "chain",
        b"10.0.0.0/8,fd00::/8\n203.0.113.9, 10.0.0.7\n10.1.1.1",
    );
    write(
        &root,
        "forwarded_for",
        "v6",
        b"::1/128\n[2001:db8::1], ::ffff:10.0.0.1\n",
    );
    println!("seeds written to {}", root.display());
}
