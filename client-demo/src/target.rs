//! The server under load: its address, which must be on this machine's loopback, and
//! the loopback source addresses that client sockets are bound to in turn.

use anyhow::{Context as _, bail};
use reqwest::Url;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;

pub struct Target {
    /// `http://host:port`, as given.
    pub base: Url,
    /// Where sockets connect: always a loopback address, never looked up in DNS.
    pub addr: SocketAddr,
    /// `ws://host:port/ws`.
    pub ws_uri: Uri,
    /// Local addresses to bind client sockets to, round robin; empty: let the kernel choose.
    pub source_ips: Vec<IpAddr>,
    next_source: AtomicUsize,
}

impl Target {
    /// Refuses anything but `http://` to 127.0.0.0/8, `localhost` or `[::1]`, and source
    /// addresses that are not loopback addresses of the same family.
    pub fn parse(text: &str, source_ips: &[IpAddr]) -> anyhow::Result<Target> {
        let base = Url::parse(text).with_context(|| format!("--target {text:?} is not a URL"))?;
        if base.scheme() != "http" {
            bail!("--target must be http:// (a loopback server needs no TLS), not {}://", base.scheme());
        }
        let host = base.host_str().context("--target has no host")?;
        let ip = loopback_ip(host).with_context(|| {
            format!("--target host {host:?} is not a loopback address: only 127.0.0.0/8, localhost or [::1]")
        })?;
        let port = base.port_or_known_default().context("--target has no port")?;
        let addr = SocketAddr::new(ip, port);
        for source in source_ips {
            if !source.is_loopback() {
                bail!("--source-ips: {source} is not a loopback address");
            }
            if source.is_ipv4() != ip.is_ipv4() {
                bail!("--source-ips: {source} is not of the same address family as the target {ip}");
            }
        }
        let ws_uri: Uri = format!("ws://{host}:{port}/ws").parse().context("building the ws:// URI")?;
        Ok(Target { base, addr, ws_uri, source_ips: source_ips.to_vec(), next_source: AtomicUsize::new(0) })
    }

    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("a fixed path joins any base URL")
    }

    /// A TCP connection to the server, from the next source address when there are several.
    pub async fn tcp_connect(&self) -> io::Result<TcpStream> {
        let socket = if self.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(source) = self.next_source_ip() {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        // Frames are small and timed: do not let Nagle hold them back.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    pub fn next_source_ip(&self) -> Option<IpAddr> {
        if self.source_ips.is_empty() {
            return None;
        }
        let turn = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(self.source_ips[turn % self.source_ips.len()])
    }
}

/// The loopback address a host stands for, without asking DNS: `localhost` is taken
/// as 127.0.0.1 whatever a resolver might say.
fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    let ip: IpAddr = bare.parse().ok()?;
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Some(ip),
        IpAddr::V6(v6) if v6.is_loopback() => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        for good in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3:80",
            "http://localhost:9000",
            "http://LOCALHOST:9000/",
            "http://[::1]:8080",
        ] {
            assert!(Target::parse(good, &[]).is_ok(), "{good} was refused");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.1",
            "http://example.com",
            "http://localhost.example.com",
            "http://[::2]:80",
            "http://0.0.0.0:8080",
            "https://127.0.0.1",
            "ws://127.0.0.1:8080",
            "127.0.0.1:8080",
        ] {
            assert!(Target::parse(bad, &[]).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn source_addresses_must_be_loopback_of_the_targets_family() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(Target::parse("http://127.0.0.1:1", &[ip("127.0.0.2"), ip("127.0.0.3")]).is_ok());
        assert!(Target::parse("http://127.0.0.1:1", &[ip("10.0.0.2")]).is_err());
        assert!(Target::parse("http://127.0.0.1:1", &[ip("::1")]).is_err());
        assert!(Target::parse("http://[::1]:1", &[ip("::1")]).is_ok());
    }

    #[test]
    fn the_socket_uri_keeps_the_host_as_given() {
        let target = Target::parse("http://localhost:8081", &[]).unwrap();
        assert_eq!(target.ws_uri.to_string(), "ws://localhost:8081/ws");
        assert_eq!(target.addr, "127.0.0.1:8081".parse().unwrap());
        let target = Target::parse("http://[::1]:8081", &[]).unwrap();
        assert_eq!(target.ws_uri.to_string(), "ws://[::1]:8081/ws");
        assert_eq!(target.url("/api/me").as_str(), "http://[::1]:8081/api/me");
    }
}
