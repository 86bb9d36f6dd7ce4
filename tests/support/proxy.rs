//! A TCP proxy in front of PostgreSQL that a test can cut and heal: each node's
//! `TETHER_DATABASE_URL` points at a proxy of its own, so one node can lose its
//! database (pool and revocation listener alike) while the others keep theirs.
//!
//! A cut drops every proxied connection at once (with a reset, as a crashed network
//! path would look) and then, until healed, either refuses new connections
//! ([`CutMode::Refuse`]: accepted and reset at once) or takes them and never answers
//! ([`CutMode::Blackhole`]: the client waits on its own timeouts; they are reset at
//! the heal).

use std::net::SocketAddr;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a cut proxy does with a connection that arrives while it is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    Refuse,
    Blackhole,
}

#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// Bumped by every cut: a connection that started under an older one is dropped.
    generation: u64,
    cut: Option<CutMode>,
}

pub struct DbProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    accepting: JoinHandle<()>,
}

impl DbProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> DbProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the database proxy");
        let addr = listener.local_addr().unwrap();
        let (state, watching) = watch::channel(State::default());
        let accepting = tokio::spawn(accept_loop(listener, upstream, watching));
        DbProxy { addr, state, accepting }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (a `postgres://` URL) with its host and port replaced by this proxy's.
    pub fn url_for(&self, url: &str) -> String {
        with_host_port(url, self.addr)
    }

    /// Drops every proxied connection; new ones are refused or blackholed until [`heal`].
    ///
    /// [`heal`]: DbProxy::heal
    pub fn cut(&self, mode: CutMode) {
        self.state.send_modify(|state| {
            state.generation += 1;
            state.cut = Some(mode);
        });
    }

    pub fn heal(&self) {
        self.state.send_modify(|state| state.cut = None);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Every forwarding task watches the state: a last cut ends them all.
        self.state.send_modify(|state| {
            state.generation += 1;
            state.cut = Some(CutMode::Refuse);
        });
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: watch::Receiver<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let now = *state.borrow();
        let state = state.clone();
        match now.cut {
            Some(CutMode::Refuse) => reset(client),
            Some(CutMode::Blackhole) => {
                tokio::spawn(hold_until_healed(client, state));
            }
            None => {
                tokio::spawn(forward(client, upstream, now.generation, state));
            }
        }
    }
}

/// Closes with a reset rather than a FIN, as a broken path would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn hold_until_healed(client: TcpStream, mut state: watch::Receiver<State>) {
    let held = *state.borrow_and_update();
    if held.cut.is_some() {
        while state.changed().await.is_ok() {
            let now = *state.borrow_and_update();
            if now.cut.is_none() || now.generation != held.generation {
                break;
            }
        }
    }
    reset(client);
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    generation: u64,
    mut state: watch::Receiver<State>,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut = async {
        loop {
            if state.changed().await.is_err() || state.borrow().generation != generation {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            let _ = client.shutdown().await;
            let _ = server.shutdown().await;
        }
        () = cut => {
            reset(client);
            reset(server);
        }
    }
}

/// The `host:port` of a `scheme://[user@]host[:port]/...` URL.
pub fn host_port(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    Some(if host.contains(':') { host.to_owned() } else { format!("{host}:5432") })
}

fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    format!("{}{user}{addr}{}", &url[..start], &url[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_at_the_proxy() {
        let addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            with_host_port("postgres://postgres@127.0.0.1:5432/db?x=1", addr),
            "postgres://postgres@127.0.0.1:6000/db?x=1"
        );
        assert_eq!(with_host_port("postgres://localhost/db", addr), "postgres://127.0.0.1:6000/db");
        assert_eq!(host_port("postgres://u:p@db.example:5433/x").as_deref(), Some("db.example:5433"));
        assert_eq!(host_port("postgres://localhost/x").as_deref(), Some("localhost:5432"));
    }
}
