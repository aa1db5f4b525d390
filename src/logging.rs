//! Logs: `tracing` events to stderr, filtered by `RUST_LOG` (default `info`); with `--console`,
//! tokio's task spans too, for tokio-console.

use std::io::IsTerminal;
use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::console;

pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// [`init`], and with `console` an address, serves tokio-console there; returns the address
/// bound. The log is filtered on its own, so `RUST_LOG` does not hide tasks from the console.
pub fn init_with_console(console: Option<SocketAddr>) -> Result<Option<SocketAddr>, String> {
    let Some(addr) = console else {
        init();
        return Ok(None);
    };
    let (console, bound) = console::start(addr)?;
    let log = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(env_filter());
    tracing_subscriber::registry()
        .with(console)
        .with(log)
        .init();
    tracing::info!(
        "tokio-console: listening on {bound}; attach with: tokio-console http://{bound}"
    );
    Ok(Some(bound))
}

fn env_filter() -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).unwrap_or_else(|err| {
            eprintln!("warning: ignoring RUST_LOG={spec:?} ({err}); logging at info");
            EnvFilter::new("info")
        }),
        Err(_) => EnvFilter::new("info"),
    }
}
