//! The allowed decision with a cached key allocates nothing: the proxy's hot path
//! stays off the allocator. Counted with an instrumented global allocator (no timing
//! assertion). One test in this binary, so no other test allocates concurrently.
#![allow(clippy::unwrap_used)]

mod engine_common;

use std::alloc::System;

use engine_common::*;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use turnpike_sidecar::engine::{Decision, Engine, HeaderValues, Step};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn cached_allow_path_does_not_allocate() {
    let engine = Engine::default();
    let bundle = compile(&keys(), &policy());
    let c = creds();
    let bearer = format!("Bearer {}", c.billing.text());
    let mut facts = with_key(req("GET", "/orders/42/items"), c.billing.text());
    facts.authorization = HeaderValues::one(&bearer);
    facts.origin = HeaderValues::one("https://shop.example.com");

    // Warm up: verify once (fills the cache), create the client's table entries.
    assert_eq!(run(&engine, &bundle, facts, T0).0, 200);
    let mut now = T0;
    for _ in 0..3 {
        now = now.advance_ms(200);
        assert!(matches!(
            engine.decide(&bundle, facts, now),
            Step::Decided(Decision::Allow(_))
        ));
    }

    let mut emitted = 0usize;
    let region = Region::new(GLOBAL);
    for _ in 0..200 {
        now = now.advance_ms(200);
        let Step::Decided(Decision::Allow(allow)) = engine.decide(&bundle, facts, now) else {
            panic!("not allowed from the cache");
        };
        allow
            .rate
            .for_each(|name, value| emitted += name.len() + value.len());
        if let Some(cors) = allow.cors {
            cors.for_each(|name, value| emitted += name.len() + value.len());
        }
        let identity = allow.identity.unwrap();
        emitted += identity.key_id.as_str().len() + identity.scopes_header.len() + allow.path.len();
        drop(allow);
    }
    let stats = region.change();
    assert!(emitted > 0);
    assert_eq!(
        (stats.allocations, stats.reallocations),
        (0, 0),
        "the cached-allow path allocated: {stats:?}"
    );
}
