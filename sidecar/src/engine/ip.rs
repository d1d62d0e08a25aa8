//! The client address: who the per-IP limits, lockouts and cooldowns apply to.
//!
//! [`client_ip`] believes `X-Forwarded-For` only when the peer is a trusted proxy
//! (`--trusted-proxies`), and then takes the rightmost address that is not itself a
//! trusted proxy: entries to the left of it were written by the client and prove
//! nothing. [`IpKey`] is the address as the tables key it: IPv4 (and IPv4-mapped IPv6)
//! per address, IPv6 per /64, because one IPv6 host usually owns a whole /64 and could
//! otherwise rotate through fresh buckets.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// The client address as the per-IP tables key it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey(u128);

impl IpKey {
    /// The key of an address: IPv4 as is, IPv6 by its /64 prefix.
    pub fn of(ip: IpAddr) -> IpKey {
        match canonical(ip) {
            // IPv4 as its mapped IPv6 form (`::ffff:a.b.c.d`): the low 64 bits are
            // never zero, so it never equals a /64 prefix below.
            IpAddr::V4(v4) => IpKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => IpKey(u128::from(v6) & !u128::from(u64::MAX)),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; anything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Why a trusted-proxy list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted proxy {0:?}: expected an IP address or a CIDR such as 10.0.0.0/8")]
pub struct TrustedProxyError(String);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// No trusted proxy: the peer address is always the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// From CIDRs.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Parses a comma-separated list of CIDRs or plain addresses (`--trusted-proxies`).
    ///
    /// # Errors
    /// The first entry that is neither.
    pub fn parse_list(list: &str) -> Result<Self, TrustedProxyError> {
        let mut nets = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = IpNet::from_str(part)
                .or_else(|_| IpAddr::from_str(part).map(IpNet::from))
                .map_err(|_| TrustedProxyError(part.chars().take(64).collect()))?;
            nets.push(net);
        }
        Ok(Self { nets })
    }

    /// True when `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// One `X-Forwarded-For` element: an address, optionally bracketed and with a port.
fn parse_hop(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(canonical(ip));
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Some(canonical(sa.ip()));
    }
    let unbracketed = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))?;
    Ipv6Addr::from_str(unbracketed)
        .ok()
        .map(|v6| canonical(IpAddr::V6(v6)))
}

/// The client address of a request.
///
/// `forwarded_for` yields the `X-Forwarded-For` header values in the order they
/// appear. When the peer is trusted, hops are read right to left, across headers;
/// the first address not in `trusted` is the client. A hop that is not an address
/// stops the walk: the last trusted hop is the client then (the proxy that forwarded
/// garbage is the best we know). When every hop is trusted, the leftmost is the
/// client.
pub fn client_ip<'h, I>(peer: IpAddr, forwarded_for: I, trusted: &TrustedProxies) -> IpAddr
where
    I: IntoIterator<Item = &'h [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    let mut candidate = canonical(peer);
    if !trusted.contains(candidate) {
        return candidate;
    }
    for value in forwarded_for.into_iter().rev() {
        for hop in value.rsplit(|&b| b == b',') {
            if hop.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Some(ip) = parse_hop(hop) else {
                return candidate;
            };
            candidate = ip;
            if !trusted.contains(ip) {
                return ip;
            }
        }
    }
    candidate
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pick(peer: &str, xff: &[&str], trusted: &str) -> IpAddr {
        let trusted = TrustedProxies::parse_list(trusted).unwrap();
        client_ip(ip(peer), xff.iter().map(|s| s.as_bytes()), &trusted)
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        assert_eq!(pick("203.0.113.9", &["1.2.3.4"], ""), ip("203.0.113.9"));
        assert_eq!(
            pick("203.0.113.9", &["1.2.3.4"], "10.0.0.0/8"),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn rightmost_untrusted_hop() {
        let t = "10.0.0.0/8, 192.168.1.1";
        assert_eq!(
            pick("10.0.0.1", &["6.6.6.6, 1.2.3.4, 10.1.1.1"], t),
            ip("1.2.3.4")
        );
        // Across several headers, in order.
        assert_eq!(
            pick("10.0.0.1", &["6.6.6.6", "1.2.3.4", "192.168.1.1"], t),
            ip("1.2.3.4")
        );
        // Ports and brackets.
        assert_eq!(
            pick("10.0.0.1", &["[2001:db8::1]:443"], t),
            ip("2001:db8::1")
        );
        assert_eq!(pick("10.0.0.1", &["[2001:db8::1]"], t), ip("2001:db8::1"));
        assert_eq!(pick("10.0.0.1", &["1.2.3.4:5678"], t), ip("1.2.3.4"));
        // Every hop trusted: the leftmost.
        assert_eq!(pick("10.0.0.1", &["10.2.2.2, 10.3.3.3"], t), ip("10.2.2.2"));
        // No header: the peer.
        assert_eq!(pick("10.0.0.1", &[], t), ip("10.0.0.1"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            pick("10.0.0.1", &["1.2.3.4, nonsense, 10.9.9.9"], t),
            ip("10.9.9.9")
        );
        // Empty elements are skipped.
        assert_eq!(pick("10.0.0.1", &["1.2.3.4, "], t), ip("1.2.3.4"));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(
            pick("::ffff:10.0.0.1", &["::ffff:1.2.3.4"], "10.0.0.0/8"),
            ip("1.2.3.4")
        );
        assert_eq!(IpKey::of(ip("::ffff:1.2.3.4")), IpKey::of(ip("1.2.3.4")));
    }

    #[test]
    fn ipv6_keys_by_slash_64() {
        assert_eq!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8::ffff:1"))
        );
        assert_ne!(
            IpKey::of(ip("2001:db8::1")),
            IpKey::of(ip("2001:db8:0:1::1"))
        );
        assert_ne!(IpKey::of(ip("0.0.0.0")), IpKey::of(ip("::")));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse_list("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse_list("proxy.local").is_err());
        assert!(TrustedProxies::parse_list("").unwrap().is_empty());
    }
}
