//! Logging set-up: tracing to stderr through the progress-bar area, level from -v/-q or RUST_LOG.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (call once, first thing).
pub fn init(verbose: u8, quiet: bool) {
    crate::exec::progress::init(quiet);
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::exec::progress::BarWriter)
        .with_target(false)
        .without_time()
        .try_init();
}
