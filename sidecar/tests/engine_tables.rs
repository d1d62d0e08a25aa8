//! Bounded tables seen through the engine: eviction never hands a limited client a
//! fresh bucket early, and a full table puts new clients into a shared overflow
//! bucket instead of forgetting anyone.
#![allow(clippy::unwrap_used)]

mod engine_common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use engine_common::*;
use proptest::prelude::*;
use turnpike_api::bundle::PolicyBundle;
use turnpike_sidecar::engine::{CompiledBundle, Engine, EngineConfig, RequestFacts};

/// Per-IP tables of `capacity` entries in one shard.
fn tiny_engine(capacity: usize) -> Engine {
    Engine::new(EngineConfig {
        ip_table_capacity: capacity,
        shards: 1,
        ..EngineConfig::default()
    })
}

/// One token per 10 s, burst 1; nothing else limits.
fn strict_ip_policy() -> CompiledBundle {
    let mut p: PolicyBundle = policy();
    p.rate_limit.per_ip = Some(bucket(1, 10, 1));
    p.rate_limit.lockout = None;
    p.rate_limit.abuse = None;
    compile(&keys(), &p)
}

fn health_from(last_octet: u8) -> RequestFacts<'static> {
    RequestFacts::new(
        "GET",
        "/healthz",
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last_octet)),
    )
}

#[test]
fn a_limited_client_is_not_evicted_and_new_clients_share_the_overflow_bucket() {
    let engine = tiny_engine(2);
    let bundle = strict_ip_policy();
    let (a, b, c, d) = (
        health_from(1),
        health_from(2),
        health_from(3),
        health_from(4),
    );

    assert_eq!(run(&engine, &bundle, a, T0).0, 200);
    assert_eq!(run(&engine, &bundle, a, T0), (429, "ip_rate_limit"));
    assert_eq!(run(&engine, &bundle, b, T0).0, 200);
    // The table is full of clients whose buckets are not full again.
    // New clients share one overflow bucket: c takes its token, d finds it empty.
    assert_eq!(run(&engine, &bundle, c, T0).0, 200);
    assert_eq!(run(&engine, &bundle, d, T0), (429, "ip_rate_limit"));
    // a was not forgotten to make room: still limited.
    assert_eq!(
        run(&engine, &bundle, a, T0.advance_ms(5_000)),
        (429, "ip_rate_limit")
    );
    // c, now limited in the overflow bucket, stays limited.
    assert_eq!(
        run(&engine, &bundle, c, T0.advance_ms(5_000)),
        (429, "ip_rate_limit")
    );

    // Once a's and b's buckets are full again, their entries may go: that is the
    // same as keeping them. New clients get their own entries again, and c, which was
    // limited in the overflow bucket, starts from the overflow state, not from a
    // fresh bucket (the overflow bucket refilled at the same moment here).
    let later = T0.advance_ms(10_000);
    assert_eq!(run(&engine, &bundle, d, later).0, 200);
    assert_eq!(run(&engine, &bundle, d, later), (429, "ip_rate_limit"));
    assert_eq!(run(&engine, &bundle, a, later).0, 200);
}

#[test]
fn eviction_waits_for_a_full_bucket() {
    let engine = tiny_engine(1);
    let mut p = policy();
    // Burst 3, one token per 10 s: a drained bucket is full again after 30 s.
    p.rate_limit.per_ip = Some(bucket(1, 10, 3));
    let bundle = compile(&keys(), &p);
    let (a, b) = (health_from(1), health_from(2));
    for _ in 0..3 {
        assert_eq!(run(&engine, &bundle, a, T0).0, 200);
    }
    assert_eq!(run(&engine, &bundle, a, T0).0, 429);
    // 20 s later a has 2 tokens, not 3: b must not evict a (b goes to overflow).
    let t20 = T0.advance_ms(20_000);
    assert_eq!(run(&engine, &bundle, b, t20).0, 200);
    assert_eq!(run(&engine, &bundle, a, t20).0, 200);
    assert_eq!(run(&engine, &bundle, a, t20).0, 200);
    assert_eq!(run(&engine, &bundle, a, t20), (429, "ip_rate_limit"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the table size, a client is never allowed more than its own,
    /// unbounded bucket would allow: the bound can only make limits stricter.
    #[test]
    fn bounded_tables_are_never_looser_than_unbounded_ones(
        capacity in 1usize..4,
        ops in proptest::collection::vec((0u8..6, 0u64..4_000), 1..120),
    ) {
        let bounded = tiny_engine(capacity);
        let unbounded = tiny_engine(1_000);
        let mut p = policy();
        p.rate_limit.per_ip = Some(bucket(1, 2, 2));
        p.rate_limit.lockout = None;
        let bundle = compile(&keys(), &p);
        let mut now = T0;
        let mut extra: HashMap<u8, i64> = HashMap::new();
        for (client, gap) in ops {
            now = now.advance_ms(gap);
            let f = health_from(client);
            let got = run(&bounded, &bundle, f, now).0 == 200;
            let reference = run(&unbounded, &bundle, f, now).0 == 200;
            // Count the requests the bounded engine allowed beyond the reference.
            *extra.entry(client).or_default() += i64::from(got) - i64::from(reference);
            prop_assert!(extra[&client] <= 0, "client {client} got more than its own bucket allows");
        }
    }
}
