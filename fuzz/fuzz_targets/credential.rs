//! Credential headers: extraction from X-API-Key / Authorization and the token
//! format check never panic, and a token that parses is found again in its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_sidecar::engine::credential::{Sources, extract, parse};
use turnpike_sidecar::engine::facts::HeaderValues;

fn values(part: &[u8]) -> HeaderValues<'_> {
    // First byte picks absent / one / many.
    match part.split_first() {
        None => HeaderValues::Absent,
        Some((b, rest)) if b % 5 == 0 => {
            let _ = rest;
            HeaderValues::Many
        }
        Some((_, rest)) => HeaderValues::One(rest),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let flags = parts.next().and_then(|p| p.first().copied()).unwrap_or(3);
    let api_key = values(parts.next().unwrap_or_default());
    let authorization = values(parts.next().unwrap_or_default());
    let sources = Sources {
        api_key_header: flags & 1 == 1,
        bearer: flags & 2 == 2,
    };
    if let Ok(Some(raw)) = extract(sources, api_key, authorization) {
        if let Ok(token) = parse(raw) {
            let id = token.id();
            let text = std::str::from_utf8(raw).expect("a parsed token is UTF-8");
            assert!(text.contains(id), "key id not in its token");
        }
    }
    let _ = parse(data);
});
