//! The accept loop: hyper-util's HTTP/1 + HTTP/2 connection builder with a timer, so
//! that a header that trickles in is cut off, plus what `axum::serve` cannot do:
//!
//! - connection caps, in total and per peer address, enforced at accept (a
//!   connection over a cap is reset before a byte is read);
//! - a first-request deadline (`--header-timeout`, which also covers the HTTP/2
//!   preface hyper reads before its own header timer starts) and an idle timeout
//!   for keep-alive connections (`--idle-timeout`);
//! - a deadline for request bodies (`--body-timeout`);
//! - graceful shutdown: stop accepting, let requests in flight finish.
//!
//! Each connection's IO carries its cap guard, so an upgraded socket (which takes the
//! IO with it) keeps counting against the caps until it closes; none of the request
//! timeouts applies to it, since the connection task, which owns the watchdog, ends
//! as the upgrade is handed over.

use crate::client_ip::{TrustedProxies, limit_key};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use dashmap::DashMap;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stop waits for requests in flight before dropping their connections.
const REQUEST_DRAIN_BOUND: Duration = Duration::from_secs(10);
/// How long accept pauses after an error (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What the accept loop enforces; a zero duration or count is off.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub proxies: TrustedProxies,
    /// Kernel send buffer per connection (None: the kernel's autotuning).
    pub send_buffer_bytes: Option<usize>,
}

/// Open connections, in total and per peer address.
pub struct ConnectionCaps {
    open: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    max_total: usize,
    max_per_ip: usize,
    proxies: TrustedProxies,
}

impl ConnectionCaps {
    pub fn new(settings: &Settings) -> Arc<ConnectionCaps> {
        Arc::new(ConnectionCaps {
            open: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            max_total: settings.max_connections,
            max_per_ip: settings.max_connections_per_ip,
            proxies: settings.proxies.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A guard that holds one place, or None when a cap is reached.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionGuard> {
        let total = self.open.fetch_add(1, Ordering::AcqRel);
        if self.max_total > 0 && total >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            crate::telemetry::metrics::connection_refused("total");
            return None;
        }
        // A trusted proxy carries many clients: it counts only toward the total.
        let key = (!self.proxies.contains(peer)).then(|| limit_key(peer));
        if let Some(key) = key {
            let mut count = self.per_ip.entry(key).or_insert(0);
            if self.max_per_ip > 0 && *count >= self.max_per_ip {
                drop(count);
                self.open.fetch_sub(1, Ordering::AcqRel);
                crate::telemetry::metrics::connection_refused("per_ip");
                return None;
            }
            *count += 1;
        }
        crate::telemetry::metrics::connection_opened();
        Some(ConnectionGuard { caps: self.clone(), key })
    }
}

/// Frees a connection's place when its IO is dropped.
struct ConnectionGuard {
    caps: Arc<ConnectionCaps>,
    key: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.caps.per_ip.remove_if_mut(&key, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        self.caps.open.fetch_sub(1, Ordering::AcqRel);
        crate::telemetry::metrics::connection_closed();
    }
}

/// Accepts and serves until `stop` is cancelled, then lets requests in flight finish
/// (bounded). Upgraded sockets are not waited for here: they watch `stop` themselves.
pub async fn run(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    caps: Arc<ConnectionCaps>,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(nonzero(settings.header_timeout))
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let settings = Arc::new(settings);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(guard) = caps.admit(peer.ip()) else {
            // A reset, not a close: the client learns at once, and no TIME_WAIT is left.
            let _ = tcp.set_zero_linger();
            continue;
        };
        // Game frames are small and latency-bound: never let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        if let Some(bytes) = settings.send_buffer_bytes {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(bytes);
        }
        connections.spawn(serve_connection(
            builder.clone(),
            tcp,
            peer,
            guard,
            router.clone(),
            settings.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(REQUEST_DRAIN_BOUND, connections.wait()).await.is_err() {
        tracing::warn!(remaining = connections.len(), "connections still busy at stop");
    }
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    tcp: TcpStream,
    peer: SocketAddr,
    guard: ConnectionGuard,
    router: Router,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked { inner: tcp, activity: activity.clone(), _guard: guard });
    let body_timeout = settings.body_timeout;
    let counted = activity.clone();
    let trusted_peer = settings.proxies.contains(peer.ip());
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::start(counted.clone());
        let mut request = if body_timeout.is_zero() {
            request.map(Body::new)
        } else {
            request.map(|body| Body::new(tower_http::timeout::DeadlineBody::new(body_timeout, body)))
        };
        // Only a trusted proxy may say the client came over TLS.
        if !trusted_peer {
            request.headers_mut().remove("x-forwarded-proto");
        }
        request.extensions_mut().insert(ConnectInfo(peer));
        let answer = crate::http::detach::answer(router.clone(), request);
        async move {
            let response = answer.await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let accepted_at = Instant::now();
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(accepted_at, &settings);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, error = %error, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = sleep_until(deadline) => {
                if let Some(reason) = activity.expired(accepted_at, &settings) {
                    tracing::debug!(%peer, reason, "connection dropped");
                    crate::telemetry::metrics::connection_timed_out(reason);
                    return;
                }
            }
        }
    }
}

fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection has done, for its watchdog.
#[derive(Default)]
struct Activity {
    /// Requests whose header has arrived.
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds since the process's epoch of the last byte read or written.
    last_io_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_io_ms.store(millis_now(), Ordering::Relaxed);
    }

    fn last_io(&self, accepted_at: Instant) -> Instant {
        let ms = self.last_io_ms.load(Ordering::Relaxed);
        if ms == 0 { accepted_at } else { epoch() + Duration::from_millis(ms) }
    }

    /// When the watchdog should look again (None: never).
    fn deadline(&self, accepted_at: Instant, settings: &Settings) -> Option<Instant> {
        if self.requests.load(Ordering::Acquire) == 0 && !settings.header_timeout.is_zero() {
            return Some(accepted_at + settings.header_timeout);
        }
        let idle = nonzero(settings.idle_timeout)?;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(Instant::now() + idle);
        }
        Some(self.last_io(accepted_at).max(accepted_at) + idle)
    }

    /// Why the connection should be dropped now, if it should.
    fn expired(&self, accepted_at: Instant, settings: &Settings) -> Option<&'static str> {
        let now = Instant::now();
        if self.requests.load(Ordering::Acquire) == 0 && !settings.header_timeout.is_zero() {
            return (now >= accepted_at + settings.header_timeout).then_some("header_timeout");
        }
        let idle = nonzero(settings.idle_timeout)?;
        let quiet = self.in_flight.load(Ordering::Acquire) == 0 && now >= self.last_io(accepted_at) + idle;
        quiet.then_some("idle_timeout")
    }
}

/// One request between its header and its response.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| Instant::now() - Duration::from_millis(1))
}

fn millis_now() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// A TCP stream that notes when bytes move and holds its connection's cap place.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    _guard: ConnectionGuard,
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, buffers);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
