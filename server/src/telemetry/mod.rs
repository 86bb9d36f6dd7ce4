//! Observability: logs (human text or JSON lines, filtered by `RUST_LOG`) here,
//! Prometheus metrics in [`metrics`].

pub mod metrics;

use tracing_subscriber::EnvFilter;

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let colors = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colors);
    // A second init (tests start several servers) keeps the first subscriber.
    let _ = match format {
        "json" => builder.json().flatten_event(true).try_init(),
        _ => builder.try_init(),
    };
}
