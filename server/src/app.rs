//! The application: state, router and the listener it owns, background upkeep, and
//! a graceful stop that also closes the upgraded sockets axum does not track.

use crate::auth::jwt::{Keys, TokenKeys};
use crate::auth::key_file::KeyFileWatch;
use crate::auth::passwords::Passwords;
use crate::bans::BanList;
use crate::cluster::{ClusterBus, LogFollower, SharedLog};
use crate::config::Config;
use crate::feed::FeedHead;
use crate::game::{RoomSettings, Rooms};
use crate::limits::Limits;
use crate::services::ServiceCredentials;
use crate::sessions::SessionMisses;
use crate::sessions::SessionRegistry;
use crate::store::{self, Store};

use crate::{bootstrap, http, ws};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often sessions past their lifetime have their sockets closed (4002).
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often `last_seen_at` is written back to the store.
const LAST_SEEN_FLUSH_EVERY: Duration = Duration::from_secs(30);
/// How often rate limiters forget clients that are back to a full allowance.
const LIMITER_TIDY_EVERY: Duration = Duration::from_secs(60);
/// How often the revocation log drops events whose sessions have all ended.
const LOG_PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long a stop waits for sockets to send their 1001 and finish writing.
const SOCKET_DRAIN_BOUND: Duration = Duration::from_secs(8);

/// Handles to everything a handler may need. One `Arc`: axum clones the state for
/// every request (and every socket keeps one), and cloning twenty handles meant twenty
/// atomic increments and a lock (the shutdown token's) shared by every core.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub config: Arc<Config>,
    /// Names this process to operators and, in a cluster, to the other nodes.
    pub node_id: Arc<str>,
    pub store: Arc<Store>,
    /// Wakes and informs the other nodes; None for a single node (SQLite).
    pub bus: Option<Arc<dyn ClusterBus>>,
    pub sessions: SessionRegistry,
    /// The bans in force, as the registry reads them for close codes.
    pub bans: BanList,
    pub rooms: Rooms,
    pub limits: Arc<Limits>,
    /// The key set in force; replaced whole when `--jwt-keys-file` changes.
    pub keys: Keys,
    pub passwords: Passwords,
    /// Socket tasks, so that a stop can wait for them.
    pub socket_tasks: TaskTracker,
    /// Revocations under way (each runs in a task of its own), so that a stop lets
    /// them commit, and `/metrics` can say how many are pending.
    pub revocations: TaskTracker,
    /// How far this node has applied the revocation log.
    pub log: SharedLog,
    /// How far revocation streams may send: what this node has applied.
    pub feed: FeedHead,
    /// The other services' credentials, as last read from the store.
    pub services: ServiceCredentials,
    /// Sessions this node is loading from the store after a registry miss.
    pub misses: SessionMisses,
    /// Cancelled when the server stops; sockets then close with 1001.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// How long a session must be remembered after it ended: as long as an access
    /// token issued before the end can still pass the signature check.
    pub fn session_retention(&self) -> Duration {
        self.config.access_ttl + Duration::from_secs(self.config.jwt_leeway) + Duration::from_secs(60)
    }
}

pub struct App {
    listener: TcpListener,
    state: AppState,
    key_file: KeyFileWatch,
}

impl App {
    /// Connects and migrates the store, loads the registry, prepares secrets and the
    /// first admin, and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        crate::telemetry::metrics::exporter();
        let store = store::connect(&config.database_url).await?;
        let key_set = bootstrap::key_set(&config)?;
        let keys = TokenKeys::new(
            &key_set,
            &config.jwt_issuer,
            &config.jwt_audience,
            config.access_ttl,
            config.jwt_leeway,
        )?;
        tracing::info!(active = %key_set.active().kid, kids = %key_set.kids().join(","), "signing keys loaded");
        let key_file = KeyFileWatch::start(config.jwt_keys_file.clone());
        let passwords = Passwords::with_queue(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.password_hash_queue,
        )?;
        let listener = listen(config.bind)?;
        let node_id: Arc<str> = match &config.node_id {
            Some(id) => id.as_str().into(),
            None => format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).into(),
        };
        tracing::info!(node_id = %node_id, "node id");
        let rooms = Rooms::new(RoomSettings {
            capacity: config.room_capacity,
            tick_rate: config.tick_rate,
            max_rooms: config.max_rooms,
            grace: config.room_grace,
            max_rooms_per_user: config.max_rooms_per_user,
            room_creations_per_user_per_minute: config.room_creations_per_user_per_minute,
        });
        let limits = Arc::new(Limits::new(&config));
        // Read before the registry is loaded: a revocation committed in between is
        // then both loaded and applied again, never missed.
        let log = Arc::new(LogFollower::starting_at(
            store.latest_revocation_seq().await?,
            (!config.max_staleness.is_zero()).then_some(config.max_staleness),
            config.revocation_batch_size as usize,
        ));
        let bus = store.postgres_pool().map(|pool| {
            Arc::new(crate::cluster::postgres::PgBus::new(pool, &config.database_url, &node_id))
                as Arc<dyn ClusterBus>
        });
        let bans = BanList::default();
        bans.replace(store.active_bans(store::now()).await?.into_iter().map(|ban| (ban.user_id, ban.until)));
        let state = AppState(Arc::new(Shared {
            node_id,
            config: Arc::new(config),
            store,
            bus,
            sessions: SessionRegistry::new(bans.clone()),
            bans,
            rooms,
            limits,
            feed: FeedHead::starting_at(log.applied()),
            log,
            services: ServiceCredentials::default(),
            misses: SessionMisses::default(),
            keys: Keys::new(keys),
            passwords,
            socket_tasks: TaskTracker::new(),
            revocations: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }));
        load_registry(&state).await?;
        crate::services::load(&state).await?;
        prune_revocation_log(&state).await;
        bootstrap::first_admin(&state).await?;
        Ok(App { listener, state, key_file })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn router(state: AppState) -> Router {
        let pages = state.config.web_dir.clone();
        http::with_layers(http::router(pages.as_deref()).merge(ws::router()).with_state(state))
    }

    /// Serves until `stop` completes, then closes every socket with 1001 and waits
    /// (bounded) for them to finish.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App { listener, state, key_file } = self;
        let upkeep = tokio::spawn(run_upkeep(state.clone()));
        let key_watch = tokio::spawn(key_file.run(state.clone()));
        let service_watch = tokio::spawn(crate::services::follow(state.clone()));
        let cluster = state.bus.clone().map(|bus| {
            (
                tokio::spawn(crate::cluster::follow_revocations(state.clone(), bus.clone())),
                tokio::spawn(crate::cluster::publish_presence(state.clone(), bus)),
            )
        });
        let config = &state.config;
        let settings = crate::serve::Settings {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            body_timeout: config.body_timeout,
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            proxies: state.limits.proxies().clone(),
            send_buffer_bytes: config.tcp_send_buffer_bytes,
        };
        let caps = crate::serve::ConnectionCaps::new(&settings);
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            stop.await;
            shutdown.cancel();
        });
        crate::serve::run(listener, App::router(state.clone()), settings, caps, state.shutdown.clone()).await;
        state.shutdown.cancel();
        // A revocation already refused in memory must reach the store before we go.
        state.revocations.close();
        if tokio::time::timeout(SOCKET_DRAIN_BOUND, state.revocations.wait()).await.is_err() {
            tracing::error!(remaining = state.revocations.len(), "revocations still uncommitted at stop");
        }
        state.socket_tasks.close();
        if tokio::time::timeout(SOCKET_DRAIN_BOUND, state.socket_tasks.wait()).await.is_err() {
            tracing::warn!(remaining = state.socket_tasks.len(), "sockets still open at stop");
        }
        upkeep.abort();
        key_watch.abort();
        service_watch.abort();
        if let Some((follower, presence)) = cluster {
            follower.abort();
            // The presence task withdraws this node's counts as it ends.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), presence).await;
        }
        flush_last_seen(&state).await;
        Ok(())
    }
}

/// Connection attempts the kernel queues for `accept`. tokio's default (128) drops
/// the SYNs of a burst of new sockets beyond it, which clients retry only after a
/// second; 4096 is this kind of machine's `somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

async fn load_registry(state: &AppState) -> anyhow::Result<()> {
    let forget_before = store::now() - state.session_retention();
    for record in state.store.sessions_to_remember(forget_before, forget_before).await? {
        state.sessions.remember(&record);
    }
    tracing::info!(sessions = state.sessions.len(), "session registry loaded");
    Ok(())
}

/// Closes sockets of sessions that reached their end, forgets sessions no token can
/// name any more, and writes `last_seen_at` back now and then.
async fn run_upkeep(state: AppState) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut flush = tokio::time::interval(LAST_SEEN_FLUSH_EVERY);
    let mut tidy = tokio::time::interval(LIMITER_TIDY_EVERY);
    let mut prune = tokio::time::interval_at(tokio::time::Instant::now() + LOG_PRUNE_EVERY, LOG_PRUNE_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = sweep.tick() => {
                let plan = state.sessions.sweep(store::now(), state.session_retention());
                plan.execute(crate::revocation::CLOSE_CONFIRM_BOUND).await;
            }
            _ = flush.tick() => flush_last_seen(&state).await,
            _ = prune.tick() => prune_revocation_log(&state).await,
            _ = tidy.tick() => {
                state.limits.forget_idle();
                state.rooms.forget_idle();
            }
        }
    }
}

/// Forgets log events no session needs any more; feed cursors before them then get
/// `reset`. A failure only delays it.
async fn prune_revocation_log(state: &AppState) {
    match state.store.prune_revocation_log(store::now()).await {
        Ok(floor) => tracing::debug!(pruned_through = floor, "revocation log pruned"),
        Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot prune the revocation log"),
    }
}

async fn flush_last_seen(state: &AppState) {
    let changed = state.sessions.take_last_seen_changes();
    if let Err(error) = state.store.record_last_seen(&changed).await {
        tracing::warn!(error = format!("{error:#}"), "could not record last_seen_at");
    }
}
