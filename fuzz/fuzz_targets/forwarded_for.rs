//! X-Forwarded-For: parsing trusted-proxy lists and walking hops never panic, and
//! the client found is the peer itself unless the peer is trusted.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use turnpike_sidecar::engine::ip::{TrustedProxies, canonical, client_ip};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == b'\n');
    let head = parts.next().unwrap_or_default();
    let trusted = std::str::from_utf8(head)
        .ok()
        .and_then(|s| TrustedProxies::parse_list(s).ok())
        .unwrap_or_else(|| {
            TrustedProxies::parse_list("10.0.0.0/8,::1/128")
                .unwrap_or_else(|_| TrustedProxies::none())
        });
    let headers: Vec<&[u8]> = parts.collect();
    let peers = [
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped()),
    ];
    for peer in peers {
        let client = client_ip(peer, headers.iter().copied(), &trusted);
        if !trusted.contains(canonical(peer)) {
            assert_eq!(client, canonical(peer));
        }
        assert_eq!(client, canonical(client));
    }
});
