//! The tracing subscriber both binaries install: human-readable lines on stderr,
//! level from `RUST_LOG`, else the config's `log_level`, else `info`.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(config_level: Option<&str>) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(config_level.unwrap_or("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
