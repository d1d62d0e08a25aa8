//! CORS: compiling origin patterns and matching request origins never panics, an
//! allowed origin is echoed exactly as sent, and `*.example.com` never allows an
//! origin that does not end in `.example.com`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_api::bundle::CorsConfig;
use turnpike_api::types::Method;
use turnpike_sidecar::engine::cors::Cors;
use turnpike_sidecar::engine::facts::HeaderValues;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let origin = lines.next().unwrap_or_default();
    let request_method = lines.next().unwrap_or_default();
    let request_headers = lines.next().unwrap_or_default();
    let mut patterns: Vec<String> = lines.map(str::to_owned).collect();
    patterns.push("https://*.example.com".into());
    let cors = Cors::compile(&CorsConfig {
        allow_origins: patterns.clone(),
        allow_methods: vec![Method::Get, Method::Post],
        allow_headers: vec!["content-type".into()],
        expose_headers: vec![],
        allow_credentials: false,
        max_age_secs: Some(60),
    });
    let o = HeaderValues::one(origin);
    if let Ok(h) = cors.preflight(
        o,
        HeaderValues::one(request_method),
        HeaderValues::one(request_headers),
    ) {
        h.for_each(|name, value| {
            if name.eq_ignore_ascii_case("access-control-allow-origin") {
                assert!(value == origin || value == "*", "{value:?} for {origin:?}");
            }
        });
    }
    let mut echoed = None;
    cors.decorate(o).for_each(|name, value| {
        if name.eq_ignore_ascii_case("access-control-allow-origin") {
            echoed = Some(value.to_owned());
        }
    });
    if let Some(v) = echoed {
        assert!(v == origin || v == "*", "{v:?} for {origin:?}");
        let only_wildcard = patterns.iter().all(|p| {
            p == "https://*.example.com" || !p.eq_ignore_ascii_case(origin) && !p.contains('*')
        });
        if only_wildcard && v != "*" {
            let lower = origin.to_ascii_lowercase();
            assert!(
                lower.starts_with("https://") && lower.ends_with(".example.com"),
                "{origin:?} allowed by https://*.example.com"
            );
        }
    }
});
