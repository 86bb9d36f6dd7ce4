//! Headless Chromium, driven by the Node scripts in `tests/browser/` (playwright-core
//! with Debian's `chromium`). Each script is one scenario with its own bounds; it
//! exits 0 on success and explains itself on failure.

use std::path::PathBuf;
use std::time::Duration;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether the browser tests can run here. Without Chromium, Node or the npm
/// packages they say they are skipped; under CI (which installs them) that fails.
pub fn browser_available(test: &str) -> bool {
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let chromium = chromium_path().exists();
    let packages = browser_dir().join("node_modules/playwright-core").exists();
    if node && chromium && packages {
        return true;
    }
    let missing = format!("node: {node}, chromium: {chromium}, `npm ci --prefix tests/browser`: {packages}");
    assert!(std::env::var_os("CI").is_none(), "CI must provide the browser test tools ({missing})");
    eprintln!("skipped {test}: browser test tools missing ({missing}); see README");
    false
}

/// Runs `node tests/browser/<script> <args>` and returns (success, stdout + stderr).
pub async fn run_driver(script: &str, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new("node");
    command.arg(browser_dir().join(script)).args(args).env("CHROMIUM_PATH", chromium_path());
    crate::process::run_bounded(command, script, Duration::from_secs(90)).await
}
