//! Who the client is: the one rule every limit, log line and forwarded
//! header uses.
//!
//! The client is the peer address of the connection, unless the peer is one
//! of the operator's `server.trusted_proxies` (a CDN or load balancer in
//! front): then it is the right-most `X-Forwarded-For` entry that is not
//! itself a trusted proxy. Entries further left were written by the client
//! or by hops nobody vouches for, so they are never believed. An entry that
//! does not parse ends the walk at the nearest hop that did (the trusted
//! proxy that wrote it): a garbled header never lets a client pick an
//! address, at worst it is counted as its proxy.
//!
//! Limits count per [`ClientKey`]: an IPv4 address, or the /64 prefix of an
//! IPv6 address (one household or one server gets a /64, and rotating
//! through its 2^64 addresses must not mint fresh budgets).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Does the block contain `ip`? An IPv4-mapped IPv6 address is matched
    /// as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u128::from(u32::from(net)) << 96, u128::from(u32::from(ip)) << 96, self.len)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(len.min(128)));
    a & mask == b & mask
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net =
            canonical(addr.trim().parse::<IpAddr>().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { net, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// The operator's `server.trusted_proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// The blocks, parsed; the error names the entry.
    pub fn parse(entries: &[String]) -> Result<Self, (usize, String)> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.parse().map_err(|m| (i, m)))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    /// Is `ip` one of ours?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// No proxy is trusted: the peer is always the client.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client of a request whose connection comes from `peer`, given the
/// values of its `X-Forwarded-For` headers in order (see the module docs).
pub fn address<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    // Entries right to left across all headers (a later header continues
    // the list of an earlier one, RFC 9110 §5.3).
    let headers: Vec<&[u8]> = forwarded_for.into_iter().collect();
    let mut nearest = peer;
    for entry in headers.iter().rev().flat_map(|h| h.rsplit(|b| *b == b',')) {
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_entry(entry) else { return nearest };
        if !trusted.contains(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(|ip| canonical(IpAddr::V6(ip)))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a dual-stack socket
/// reports for IPv4 peers) become the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What per-client limits count by: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => ClientKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(ip) => write!(f, "{ip}"),
            ClientKey::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(address(ip("127.0.0.9"), [b"1.2.3.4".as_slice()], &t), ip("127.0.0.9"));
        assert_eq!(address(ip("127.0.0.9"), [], &TrustedProxies::default()), ip("127.0.0.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_entry_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        // The client wrote "6.6.6.6" itself; the CDN appended what it saw.
        assert_eq!(address(ip("10.1.1.1"), [b"6.6.6.6, 203.0.113.7".as_slice()], &t), ip("203.0.113.7"));
        // Two trusted hops: the inner one appended the outer one.
        assert_eq!(address(ip("10.1.1.1"), [b"6.6.6.6, 203.0.113.7, 10.2.2.2".as_slice()], &t), ip("203.0.113.7"));
        // Several headers continue one list.
        assert_eq!(
            address(ip("10.1.1.1"), [b"6.6.6.6".as_slice(), b"203.0.113.7:443, 10.9.9.9"], &t),
            ip("203.0.113.7")
        );
        assert_eq!(address(ip("10.1.1.1"), [b"[2001:db9::5]:80".as_slice()], &t), ip("2001:db9::5"));
        // Only trusted entries: the left-most one.
        assert_eq!(address(ip("10.1.1.1"), [b"10.3.3.3, 10.2.2.2".as_slice()], &t), ip("10.3.3.3"));
        // No header: the proxy itself.
        assert_eq!(address(ip("10.1.1.1"), [], &t), ip("10.1.1.1"));
        // Garbage stops the walk at the hop that wrote it.
        assert_eq!(address(ip("10.1.1.1"), [b"1.2.3.4, nonsense, 10.2.2.2".as_slice()], &t), ip("10.2.2.2"));
        assert_eq!(address(ip("::ffff:10.1.1.1"), [b"198.51.100.1".as_slice()], &t), ip("198.51.100.1"));
    }

    #[test]
    fn cidr_blocks_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:1::1")) && !c.contains(ip("2001:db9::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("127.0.0.1".parse::<Cidr>().unwrap().contains(ip("127.0.0.1")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
        assert!(TrustedProxies::parse(&["10.0.0.0/8".into(), "x".into()]).is_err_and(|(i, _)| i == 1));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(ClientKey::from(ip("2001:db8:1:2::1")), ClientKey::from(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(ClientKey::from(ip("2001:db8:1:2::1")), ClientKey::from(ip("2001:db8:1:3::1")));
        assert_eq!(ClientKey::from(ip("::ffff:1.2.3.4")), ClientKey::V4(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(ClientKey::from(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }
}
