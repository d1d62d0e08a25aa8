//! Bundle decode: keys.json, policy.json and key shards, split at NUL bytes. Parsing
//! (shape, format, content hash), shard merging and compiling never panic; the
//! compiler also sees the input without its hash check, so it is exercised on
//! arbitrary structure and not only on the rare input whose hash matches.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use turnpike_api::bundle::{KeyBundle, PolicyBundle, parse, shard_file};
use turnpike_api::shard::{merge, parse_shard};
use turnpike_sidecar::engine::bundle::CompiledBundle;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let keys = parts.next().unwrap_or_default();
    let policy = parts.next().unwrap_or_default();
    let shards: BTreeMap<String, String> = parts
        .enumerate()
        .map(|(i, s)| (shard_file(i + 1), s.to_owned()))
        .collect();
    for (file, s) in &shards {
        let _ = parse_shard(file, s);
    }
    let sealed_keys = parse::<KeyBundle>(keys).ok();
    let sealed_policy = parse::<PolicyBundle>(policy).ok();
    if let (Some(k), Some(p)) = (sealed_keys, sealed_policy) {
        if let Ok(merged) = merge(k, &shards) {
            let _ = CompiledBundle::compile(&merged, &p);
        }
    }
    let raw_keys = serde_json::from_str::<KeyBundle>(keys);
    let raw_policy = serde_json::from_str::<PolicyBundle>(policy);
    if let (Ok(k), Ok(p)) = (raw_keys, raw_policy) {
        if let Ok(c) = CompiledBundle::compile(&k, &p) {
            assert!(c.key_count() <= k.keys.len());
        }
    }
});
