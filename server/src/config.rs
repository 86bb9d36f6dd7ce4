//! Command line and environment: the `tether` subcommands and every `serve` setting.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://tether.db";

#[derive(Debug, Parser)]
#[command(name = "tether", version, about = "Real-time game server with revocable sessions")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve(Box<Config>),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Signing keys for --jwt-keys-file.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Credentials of the game's other services (introspection, revocation feed).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Apply pending migrations and exit.
    Migrate {
        #[arg(long, env = "TETHER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        /// Read the password from standard input (the only way, so it never shows in `ps`).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Create players PREFIX1..PREFIXn sharing one password (for load tests): the
    /// password is hashed once, so a thousand bots cost one argon2 run, not a thousand.
    CreateMany {
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        count: u32,
        /// The first number to use.
        #[arg(long, default_value_t = 1)]
        start: u32,
        /// Read the shared password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long, default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print one new private JWK as one line of JSON.
    Generate {
        #[arg(long, value_enum, required_unless_present = "from_secret_file")]
        alg: Option<crate::auth::keyset::KeyAlgorithm>,
        /// The key's id (random when not given).
        #[arg(long, conflicts_with = "from_secret_file")]
        kid: Option<String>,
        /// Print the JWK of this --jwt-secret-file with its v1 kid instead, so that
        /// moving to a key file logs nobody out.
        #[arg(long, conflicts_with = "alg")]
        from_secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a credential; prints `{name, client_id, client_secret}` once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, env = "TETHER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// List the credentials (never their secrets), one JSON object per line.
    List {
        #[arg(long, env = "TETHER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Revoke a credential: every node refuses it within 5 s and ends its streams.
    Revoke {
        #[arg(long)]
        name: String,
        #[arg(long, env = "TETHER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
        database_url: String,
    },
}

/// Everything `serve` needs. Each flag is also read from `TETHER_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "TETHER_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// `sqlite://PATH` (embedded, the default) or `postgres://...`.
    #[arg(long, env = "TETHER_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// File whose contents are the JWT signing secret (at least 32 bytes).
    #[arg(long, env = "TETHER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// JSON key set `{"active": KID, "keys": [private JWK, ...]}` (HS256 and Ed25519
    /// keys), reread on SIGHUP and on change; instead of --jwt-secret-file.
    #[arg(long, env = "TETHER_JWT_KEYS_FILE")]
    pub jwt_keys_file: Option<PathBuf>,

    /// Extra origins allowed to open sockets, comma-separated.
    #[arg(long, env = "TETHER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Access token lifetime.
    #[arg(long, env = "TETHER_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    pub access_ttl: Duration,

    /// A session's absolute lifetime; refresh cannot extend it.
    #[arg(long, env = "TETHER_SESSION_TTL", default_value = "30d", value_parser = parse_duration)]
    pub session_ttl: Duration,

    /// A new login revokes the user's older sessions (close 4005).
    #[arg(long, env = "TETHER_SINGLE_SESSION")]
    pub single_session: bool,

    /// `iss` claim written and required.
    #[arg(long, env = "TETHER_JWT_ISSUER", default_value = "tether")]
    pub jwt_issuer: String,

    /// `aud` claim written and required.
    #[arg(long, env = "TETHER_JWT_AUDIENCE", default_value = "tether")]
    pub jwt_audience: String,

    /// Clock leeway for `exp`, in seconds (the contract allows at most 30).
    #[arg(long, env = "TETHER_JWT_LEEWAY", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub jwt_leeway: u64,

    /// Argon2id memory cost in KiB (OWASP: 19456).
    #[arg(long, env = "TETHER_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id passes.
    #[arg(long, env = "TETHER_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Frames a socket may have queued for sending before it counts as a slow consumer
    /// (at least twice the room capacity, so that a room's presence burst fits).
    #[arg(long, env = "TETHER_WS_OUTBOUND_QUEUE", default_value_t = 64)]
    pub ws_outbound_queue: usize,

    /// Largest client message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "TETHER_WS_MAX_MESSAGE", default_value_t = 16 * 1024)]
    pub ws_max_message: usize,

    /// Failed logins per client address per minute, whatever the username (0: no limit).
    /// A right password is never counted. (v1 counted every login and registration.)
    #[arg(long, env = "TETHER_AUTH_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub auth_per_ip_per_minute: u32,

    /// Failed logins per (client address, username) per minute; the right password
    /// clears its pair (0: no limit). (v1 counted every attempt for the username from
    /// anywhere, so an attacker could lock its owner out.)
    #[arg(long, env = "TETHER_AUTH_PER_USERNAME_PER_MINUTE", default_value_t = 5)]
    pub auth_per_username_per_minute: u32,

    /// Failed logins per username per hour from all addresses together (0: no
    /// ceiling). While it is spent the right password is refused too: see README.
    #[arg(long, env = "TETHER_LOGIN_FAILURES_PER_USERNAME_PER_HOUR", default_value_t = 0)]
    pub login_failures_per_username_per_hour: u32,

    /// Registrations per client address per minute (0: no limit).
    #[arg(long, env = "TETHER_REGISTRATIONS_PER_IP_PER_MINUTE", default_value_t = 200)]
    pub registrations_per_ip_per_minute: u32,

    /// Refresh attempts per client address per minute (0: no limit).
    #[arg(long, env = "TETHER_REFRESHES_PER_IP_PER_MINUTE", default_value_t = 600)]
    pub refreshes_per_ip_per_minute: u32,

    /// WebSocket upgrades per client address per minute (0: no limit; load tests want 0).
    #[arg(long, env = "TETHER_UPGRADES_PER_IP_PER_MINUTE", default_value_t = 600)]
    pub upgrades_per_ip_per_minute: u32,

    /// Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: addresses or
    /// CIDR ranges, comma-separated (default: none, every peer is the client).
    #[arg(long, env = "TETHER_TRUSTED_PROXIES", value_delimiter = ',', value_parser = crate::client_ip::parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Password hashes that may wait for a core; beyond them, 503 `busy` (0: no bound).
    #[arg(long, env = "TETHER_PASSWORD_HASH_QUEUE", default_value_t = 256)]
    pub password_hash_queue: usize,

    /// Sockets one session may have open; one more is closed 1008 (0: no limit).
    #[arg(long, env = "TETHER_MAX_SOCKETS_PER_SESSION", default_value_t = 8)]
    pub max_sockets_per_session: usize,

    /// A connection whose request header has not fully arrived by then is dropped (0: never).
    #[arg(long, env = "TETHER_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub header_timeout: Duration,

    /// A keep-alive connection with no request in flight and no traffic for this
    /// long is closed (0: never). Upgraded sockets have their own ping instead.
    #[arg(long, env = "TETHER_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration_or_zero)]
    pub idle_timeout: Duration,

    /// A request body must have fully arrived within this (0: no limit).
    #[arg(long, env = "TETHER_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration_or_zero)]
    pub body_timeout: Duration,

    /// Open connections, upgraded sockets included; one more is closed at accept (0: no cap).
    #[arg(long, env = "TETHER_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    /// Open connections per peer address (IPv6: per /64), sockets included; a trusted
    /// proxy counts only toward --max-connections (0: no cap).
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Messages a socket may send per second, sustained (0: no limit).
    #[arg(long, env = "TETHER_WS_MESSAGES_PER_SECOND", default_value_t = 30)]
    pub ws_messages_per_second: u32,

    /// Messages a socket may send in a burst above that rate.
    #[arg(long, env = "TETHER_WS_MESSAGE_BURST", default_value_t = 60)]
    pub ws_message_burst: u32,

    /// How often the server pings a socket; one that stays silent for two intervals is dropped.
    #[arg(long, env = "TETHER_WS_PING_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub ws_ping_interval: Duration,

    /// Frames dropped in a row (its queue full) before a socket is closed as a slow consumer (1008).
    #[arg(long, env = "TETHER_WS_SLOW_CONSUMER_DROPS", default_value_t = 20)]
    pub ws_slow_consumer_drops: u32,

    /// Kernel send buffer per connection, in bytes (default: the kernel's autotuning).
    /// Smaller finds slow consumers sooner and caps what one can hold.
    #[arg(long, env = "TETHER_TCP_SEND_BUFFER_BYTES")]
    pub tcp_send_buffer_bytes: Option<usize>,

    /// Players a room holds.
    #[arg(long, env = "TETHER_ROOM_CAPACITY", default_value_t = 32)]
    pub room_capacity: u32,

    /// Simulation ticks (and snapshots) per second.
    #[arg(long, env = "TETHER_TICK_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub tick_rate: u32,

    /// Live rooms this node holds at most (0: no limit); an empty room ends after `--room-grace`.
    #[arg(long, env = "TETHER_MAX_ROOMS", default_value_t = 1000)]
    pub max_rooms: usize,

    /// How long an empty room lives on before it ends (a reload finds it again).
    #[arg(long, env = "TETHER_ROOM_GRACE", default_value = "10s", value_parser = parse_duration_or_zero)]
    pub room_grace: Duration,

    /// Live rooms one user may have created at once (0: no limit); the lobby is no one's.
    #[arg(long, env = "TETHER_MAX_ROOMS_PER_USER", default_value_t = 3)]
    pub max_rooms_per_user: u32,

    /// Rooms one user may create a minute (0: no limit).
    #[arg(long, env = "TETHER_ROOM_CREATIONS_PER_USER_PER_MINUTE", default_value_t = 10)]
    pub room_creations_per_user_per_minute: u32,

    /// Serves the browser pages from this directory, read at each request, instead
    /// of the copies built into the binary: for working on the pages without a rebuild.
    #[arg(long, env = "TETHER_WEB_DIR")]
    pub web_dir: Option<std::path::PathBuf>,

    /// Bad frames a socket may send before it is closed with 1008.
    #[arg(long, env = "TETHER_WS_MAX_BAD_FRAMES", default_value_t = 10)]
    pub ws_max_bad_frames: u32,

    /// This node's id, shown to operators (`nodes`); generated and logged when absent.
    #[arg(long, env = "TETHER_NODE_ID")]
    pub node_id: Option<String>,

    /// How long a node of a cluster may go without reading the revocation log before
    /// it stops vouching for its sessions (Bearer routes 503, upgrades closed 1013);
    /// 0: never.
    #[arg(long, env = "TETHER_MAX_STALENESS", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub max_staleness: Duration,

    /// How long a revocation stream's consumer may leave its queue full (not reading)
    /// before the stream is cut off; it then resumes with its last event id.
    #[arg(long, env = "TETHER_REVOCATION_STREAM_STALL", default_value = "10s", value_parser = parse_duration)]
    pub revocation_stream_stall: Duration,

    /// Revoked sessions a node reads from the revocation log at a time.
    #[arg(long, env = "TETHER_REVOCATION_BATCH_SIZE", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub revocation_batch_size: u32,

    /// `text` for people, `json` for log collectors.
    #[arg(long, env = "TETHER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    /// The defaults, as `tether serve` with no flags and no environment would have them.
    pub fn defaults() -> Config {
        #[derive(Parser)]
        struct Probe {
            #[command(flatten)]
            config: Config,
        }
        Probe::parse_from(["tether"]).config
    }

    pub fn is_postgres(&self) -> bool {
        is_postgres_url(&self.database_url)
    }
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A duration, or 0 (which a flag then reads as "off").
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" { Ok(Duration::ZERO) } else { parse_duration(text) }
}

/// `90s`, `15m`, `2h`, `30d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let count: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 2h or 30d"))?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let seconds = count
        .checked_mul(unit_seconds)
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("{text:?} must be positive and not absurdly large"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_documented_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("15 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::defaults();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.access_ttl, Duration::from_secs(900));
        assert_eq!(config.session_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert!(!config.single_session);
    }
}
