//! Progress bars on stderr while a phase runs; hidden when stderr is not a terminal,
//! so that logs and pipes get only the summary.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn new_bar(len: u64, template: &str, prefix: &'static str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar.set_prefix(prefix);
    bar
}

/// A bar that counts items (sockets opened, logins done).
pub fn counter(len: u64, prefix: &'static str) -> ProgressBar {
    new_bar(len, "{prefix:>8} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}", prefix)
}

/// A bar that fills over a fixed time; [`live`] moves it.
pub fn timer(duration: Duration, prefix: &'static str) -> ProgressBar {
    let len = duration.as_millis().max(1) as u64;
    new_bar(len, "{prefix:>8} {elapsed_precise} [{bar:30}] {msg}", prefix)
}

/// Refreshes the bar's message four times a second from `message` (and, for a
/// [`timer`], its position from the clock) until the returned ticker is dropped,
/// which refreshes it a last time.
pub fn live(bar: &ProgressBar, timed: bool, message: impl Fn() -> String + Send + Sync + 'static) -> Ticker {
    let message: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(message);
    let started = Instant::now();
    let task = tokio::spawn({
        let (bar, message) = (bar.clone(), message.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                if timed {
                    bar.set_position(started.elapsed().as_millis() as u64);
                }
                bar.set_message(message());
            }
        }
    });
    Ticker { task, bar: bar.clone(), message }
}

/// Stops refreshing its bar when dropped.
pub struct Ticker {
    task: JoinHandle<()>,
    bar: ProgressBar,
    message: Arc<dyn Fn() -> String + Send + Sync>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.set_message((self.message)());
    }
}
