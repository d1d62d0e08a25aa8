//! Decision latency of the engine (no I/O): the allowed decision with a cached key
//! is the hot path of every authenticated request. Goal: median under 1 µs.
//!
//! `cargo bench -p turnpike-sidecar --bench engine`
#![allow(clippy::unwrap_used)]

#[path = "../tests/engine_common/mod.rs"]
mod engine_common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use engine_common::*;
use turnpike_sidecar::engine::path::normalize;
use turnpike_sidecar::engine::{CompiledBundle, Decision, Engine, EngineConfig, Step};

/// The canonical policy with a daily quota large enough for the simulated traffic.
fn bench_bundle() -> CompiledBundle {
    let mut p = policy();
    p.rate_limit.daily_quota = Some(1_000_000);
    compile(&keys(), &p)
}

fn decide_benches(c: &mut Criterion) {
    // Cached verifications outlive the simulated days below.
    let engine = Engine::new(EngineConfig {
        cache_ttl_ms: 365 * 86_400_000,
        ..EngineConfig::default()
    });
    let bundle = bench_bundle();
    let token = creds().billing.text();
    let facts = with_key(req("GET", "/orders/42/items"), token);
    assert_eq!(run(&engine, &bundle, facts, T0).0, 200);
    // Simulated time: each request comes 100 ms after the previous one, the rate of
    // the canonical perKey bucket (10/s), so every request takes the full allowed
    // path: per-IP and per-key buckets, daily quota (UTC days roll over), headers.
    let mut now = T0;
    let mut next = move || {
        now = now.advance_ms(100);
        now
    };

    // The decision alone (what the engine adds to a request)...
    c.bench_function("decide/cached_allow", |b| {
        b.iter(|| match engine.decide(&bundle, black_box(facts), next()) {
            Step::Decided(Decision::Allow(a)) => black_box(a),
            other => panic!("{other:?}"),
        })
    });

    // ...and with the rate-limit headers rendered, as the proxy will.
    c.bench_function("decide/cached_allow_with_headers", |b| {
        b.iter(|| match engine.decide(&bundle, black_box(facts), next()) {
            Step::Decided(Decision::Allow(a)) => {
                let mut n = 0;
                a.rate.for_each(|k, v| n += k.len() + v.len());
                black_box(n);
            }
            other => panic!("{other:?}"),
        })
    });

    let public = req("GET", "/healthz");
    c.bench_function("decide/public_route", |b| {
        b.iter(|| black_box(engine.decide(&bundle, black_box(public), next())))
    });

    let missing = req("GET", "/orders/42");
    c.bench_function("decide/refused_missing_key", |b| {
        b.iter(|| black_box(engine.decide(&bundle, black_box(missing), next())))
    });

    c.bench_function("path/normalize_clean", |b| {
        b.iter(|| black_box(normalize(black_box("/orders/42/items")).is_ok()))
    });
    c.bench_function("path/normalize_rewrite", |b| {
        b.iter(|| black_box(normalize(black_box("/orders//%34%32/./items/../items")).is_ok()))
    });
}

criterion_group!(benches, decide_benches);
criterion_main!(benches);
