//! The command line: one subcommand per scenario, each with the common flags.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for a Tether server on this machine (loopback only)",
    after_help = "Run the server with its limits off for load tests:\n  tether serve --auth-per-ip-per-minute 0 \
                  --auth-per-username-per-minute 0 --upgrades-per-ip-per-minute 0 --ws-messages-per-second 0 \
                  --registrations-per-ip-per-minute 0 --refreshes-per-ip-per-minute 0 \
                  --max-sockets-per-session 0 --max-connections 0 --max-connections-per-ip 0"
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N authenticated sockets at rate R over S sessions and hold them.
    Connect(ConnectArgs),
    /// N players in rooms of K: inputs at H Hz, a ping a second; RTT and input-to-ack latency.
    Play(PlayArgs),
    /// N sockets over S sessions, then revoke the sessions; time from request to close frame.
    Revoke(RevokeArgs),
    /// `GET /api/me` (or `POST /api/auth/introspect`) at a fixed concurrency for a while
    /// (and `GET /healthz` to compare).
    Http(HttpArgs),
    /// Honest logins and logouts, first alone, then beside slowloris connections, a
    /// connection flood and a refresh flood from another address: how their latency moves.
    Hostile(HostileArgs),
    /// Revocation feed delivery latency across nodes: N logouts on one node, each timed
    /// to its `revoked` event on another node's revocation stream.
    Feed(FeedArgs),
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Connect(args) => &args.common,
            Scenario::Play(args) => &args.common,
            Scenario::Revoke(args) => &args.common,
            Scenario::Http(args) => &args.common,
            Scenario::Hostile(args) => &args.common,
            Scenario::Feed(args) => &args.common,
        }
    }
}

/// Flags every scenario takes.
#[derive(Debug, Args, Serialize)]
pub struct Common {
    /// The server: http://HOST:PORT where HOST is in 127.0.0.0/8, `localhost` or [::1].
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,

    /// Admin account, for `revoke`.
    #[arg(long, default_value = "admin")]
    pub admin_user: String,

    /// The admin's password (or set LOADGEN_ADMIN_PASSWORD).
    #[arg(long, env = "LOADGEN_ADMIN_PASSWORD", hide_env_values = true)]
    #[serde(skip)]
    pub admin_password: Option<String>,

    /// A file holding the admin's password, e.g. the server's `tether.db.admin-password`.
    #[arg(long, conflicts_with = "admin_password")]
    pub admin_password_file: Option<PathBuf>,

    /// Bot accounts are `<prefix>1` .. `<prefix>N`.
    #[arg(long, default_value = "bot")]
    pub users_prefix: String,

    /// How many bot accounts to spread the logins over [default: one per session].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub users: Option<u32>,

    /// The one password of every bot account (or set LOADGEN_BOT_PASSWORD).
    #[arg(long, env = "LOADGEN_BOT_PASSWORD", default_value = "bot-password", hide_env_values = true)]
    #[serde(skip)]
    pub bot_password: String,

    /// Create the bot accounts first through `POST /api/auth/register` (an existing
    /// one is left as it is).
    #[arg(long)]
    pub register: bool,

    /// Length of the measured phase: hold time (connect), play time (play), HTTP phase
    /// (http), longest wait for the close frames after the last revoke (revoke); feed
    /// does not use it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,

    /// Write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Draw the latency distributions as an SVG chart to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Bind client sockets to these loopback addresses in turn (comma-separated), for
    /// more than one address's worth of ephemeral ports.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Logins (and registrations) in flight at once; each costs the server a password hash.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub login_concurrency: u32,

    /// Longest time from the TCP connect to `welcome` (and to `joined` in `play`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub connect_timeout: Duration,

    /// Hard bound on the whole run, logins included; the run gives up after it.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub max_time: Duration,
}

#[derive(Debug, Args, Serialize)]
pub struct ConnectArgs {
    /// Sockets to open (N).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub sockets: u32,
    /// Sockets started per second (R); 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Sessions (logins) the sockets are spread over (S).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub sessions: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// How long to hold the sockets open (H) [default: --duration].
    #[arg(long, value_parser = parse_duration)]
    #[serde(serialize_with = "maybe_seconds")]
    pub hold: Option<Duration>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args, Serialize)]
pub struct PlayArgs {
    /// Players, one socket each (N).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub players: u32,
    /// Players per room (K): player i joins `room-<i / K>`.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub room_size: u32,
    /// Inputs per second per player (H).
    #[arg(long, default_value_t = 20.0)]
    pub hz: f64,
    /// Sessions (logins) the players are spread over [default: one per player].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub sessions: Option<u32>,
    /// Sockets started per second while joining; 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Handshakes and joins in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Join no room and send no input: each socket only pings once a second (the
    /// ping/pong latency of many connected but idle players).
    #[arg(long)]
    pub pings_only: bool,
    /// How snapshots come: `json` (the default, what any server speaks) or `binary`
    /// delta frames, acknowledged on each input.
    #[arg(long, value_enum, default_value_t = SnapshotEncoding::Json)]
    pub encoding: SnapshotEncoding,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotEncoding {
    Json,
    Binary,
}

#[derive(Debug, Args, Serialize)]
pub struct RevokeArgs {
    /// Sockets to open (N).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub sockets: u32,
    /// Sessions (logins) the sockets are spread over (S); each is revoked.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200_000))]
    pub sessions: u32,
    /// Revoke requests per second, one session each (R).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Revoke everything with one `POST /api/admin/revoke-all` instead. It revokes
    /// every session on the server but the admin's own, not only the bots'.
    #[arg(long)]
    pub all: bool,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Reason sent with the revocations.
    #[arg(long, default_value = "loadgen")]
    pub reason: String,
    /// Servers the sockets connect to, in turn (comma-separated; default: --target):
    /// several nodes of one cluster, with the revoke answered by --target. Each gets
    /// its own close-latency line.
    #[arg(long, value_delimiter = ',')]
    pub socket_targets: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args, Serialize)]
pub struct HttpArgs {
    /// Requests in flight at once (C).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Sessions (logins) whose tokens the workers use, round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sessions: u32,
    /// Also run `GET /healthz` the same way, after the measured endpoint, and print the ratio.
    #[arg(long)]
    pub compare_healthz: bool,
    /// What the workers ask: `me` (`GET /api/me` with a bot's Bearer token) or
    /// `introspect` (`POST /api/auth/introspect` of a bot's token, with --client-id and
    /// --client-secret), what another service pays to check a token.
    #[arg(long, value_enum, default_value_t = Endpoint::Me)]
    pub endpoint: Endpoint,
    #[command(flatten)]
    #[serde(flatten)]
    pub service: ServiceCredential,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Me,
    Introspect,
}

/// A service credential, for the routes that other services call (introspection, the
/// revocation stream).
#[derive(Debug, Args, Serialize)]
pub struct ServiceCredential {
    /// The credential's client id, as `tether service create` prints it (or set
    /// LOADGEN_CLIENT_ID).
    #[arg(long, env = "LOADGEN_CLIENT_ID", hide_env_values = true)]
    pub client_id: Option<String>,
    /// Its client secret (or set LOADGEN_CLIENT_SECRET).
    #[arg(long, env = "LOADGEN_CLIENT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub client_secret: Option<String>,
}

/// Where a service credential comes from, for error messages.
pub const CREDENTIAL_HOW: &str = "`tether service create --name loadgen --database-url URL` (against the \
     server's database) prints {\"name\", \"client_id\", \"client_secret\"}";

impl ServiceCredential {
    /// The id and the secret; an error naming what is missing when either is, since
    /// every request would otherwise fail 401 `invalid_client`.
    pub fn require(&self, needed_by: &str) -> anyhow::Result<(String, String)> {
        let given =
            |value: &Option<String>| value.as_deref().filter(|text| !text.is_empty()).map(str::to_owned);
        match (given(&self.client_id), given(&self.client_secret)) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            (id, _) => anyhow::bail!(
                "{needed_by} needs a service credential: {} missing. Pass --client-id and --client-secret \
                 (or set LOADGEN_CLIENT_ID and LOADGEN_CLIENT_SECRET); {CREDENTIAL_HOW}",
                if id.is_none() { "--client-id is" } else { "--client-secret is" }
            ),
        }
    }
}

#[derive(Debug, Args, Serialize)]
pub struct FeedArgs {
    /// Node A, where the bots log in and out [default: --target]; loopback only, like --target.
    #[arg(long)]
    pub revoke_on: Option<String>,
    /// Node B, whose revocation stream is followed [default: --target]; loopback only.
    #[arg(long)]
    pub follow_on: Option<String>,
    /// Sessions logged in on A, then logged out, each a `revoked` event expected on B (N).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub revocations: u32,
    /// Logouts in flight at once (K).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub batch: u32,
    #[command(flatten)]
    #[serde(flatten)]
    pub service: ServiceCredential,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args, Serialize)]
pub struct HostileArgs {
    /// Where the attacks come from: a loopback address other than the honest clients'.
    #[arg(long, default_value = "127.0.0.66")]
    pub hostile_source: IpAddr,
    /// Slowloris connections: a request header that never ends, a byte every 5 s.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=20_000))]
    pub slowloris: u32,
    /// Connections opened and held silent, past the per-address cap.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=20_000))]
    pub flood: u32,
    /// Workers sending `POST /api/auth/refresh` with random tokens, back to back.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    pub refresh_flood: u32,
    /// Honest clients, each logging in and out in turn (one account each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub honest: u32,
    /// Pause between an honest client's login/logout pairs.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub honest_pause: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// `250ms`, `90s`, `15m`, `1h` or plain seconds (`2.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit in {text:?}: use ms, s, m or h")),
    };
    if !value.is_finite() || value < 0.0 || value * scale > 86_400.0 {
        return Err(format!("{text:?} is not between 0 and 24h"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn maybe_seconds<S: serde::Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => seconds(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
