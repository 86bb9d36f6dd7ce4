//! The client address that limits count: the peer, unless the peer is a proxy the
//! operator trusts (`--trusted-proxies`), in which case `X-Forwarded-For` names it.
//!
//! An IPv6 client is counted by its /64 (one host usually owns a whole /64, so its
//! last 64 bits are free for it to walk), and an IPv4-mapped IPv6 peer as the IPv4
//! address it is.

use crate::app::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The proxies whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets.into_iter().map(|net| net.trunc()).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer's, or from a trusted peer the rightmost
    /// `X-Forwarded-For` entry that is not itself trusted (the leftmost if all are).
    /// Entries left of that one were written by the client and are never read; an
    /// entry that does not parse before it makes the answer the peer. Several
    /// headers are one list, in order.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut entries = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else { return peer };
            entries.extend(text.split(',').map(str::trim).filter(|entry| !entry.is_empty()));
        }
        let mut leftmost = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else { return peer };
            if !self.contains(ip) {
                return ip;
            }
            leftmost = ip;
        }
        leftmost
    }
}

/// `--trusted-proxies` entries: an address (one host) or a CIDR range.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither an IP address nor a CIDR range"))
}

/// An entry may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))?;
    Some(canonical(ip))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The key a limit counts an address under: IPv4 as is, IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The client of this request: its address as resolved above, and its limit key.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: IpAddr,
    pub key: IpAddr,
    /// The TCP peer (the proxy, when there is one).
    pub peer: IpAddr,
}

impl FromRequestParts<AppState> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Client, Infallible> {
        // Every connection is served with its peer address; a request built by hand
        // (a unit test's `oneshot`) counts as the unspecified address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(address)| address.ip());
        let ip = state.limits.proxies().client(peer, &parts.headers);
        Ok(Client { ip, key: limit_key(ip), peer: canonical(peer) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|net| parse_net(net).unwrap()).collect())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = proxies(&[]);
        assert_eq!(none.client(ip("203.0.113.9"), &forwarded(&["198.51.100.1"])), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_entry() {
        let trusted = proxies(&["10.0.0.0/8", "2001:db8:ffff::1"]);
        let peer = ip("10.1.2.3");
        let rightmost = forwarded(&["6.6.6.6, 198.51.100.7", "10.9.9.9"]);
        assert_eq!(trusted.client(peer, &rightmost), ip("198.51.100.7"));
        assert_eq!(trusted.client(peer, &forwarded(&["10.4.4.4, 10.5.5.5"])), ip("10.4.4.4"), "all trusted");
        assert_eq!(trusted.client(peer, &forwarded(&[])), peer, "no header");
        assert_eq!(trusted.client(peer, &forwarded(&["198.51.100.7, junk"])), peer, "junk on the right");
        assert_eq!(trusted.client(peer, &forwarded(&["junk, 198.51.100.7"])), ip("198.51.100.7"));
        assert_eq!(trusted.client(peer, &forwarded(&["198.51.100.7:4321"])), ip("198.51.100.7"));
        assert_eq!(trusted.client(peer, &forwarded(&["[2001:db8::5]:80"])), ip("2001:db8::5"));
        assert_eq!(trusted.client(ip("::ffff:10.1.2.3"), &forwarded(&["::ffff:192.0.2.1"])), ip("192.0.2.1"));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert!(parse_net("not an address").is_err());
        assert!(parse_net("192.0.2.0/24").unwrap().contains(&ip("192.0.2.200")));
    }
}
