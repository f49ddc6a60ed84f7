//! # mesh-cli
//!
//! The node binaries, in a thin crate above `subnets/` (DESIGN §1) so the
//! framework crates never depend on an application:
//!
//! - `mesh-server` ([`server`]): one node of a subnet, hosting the
//!   application named by `--subnet`, with the Python mesh's flags.
//! - `mesh devnet` ([`devnet`]): a whole local subnet with one command — the
//!   dev chain, a subnet, keys, N registered nodes, a bootnode — that waits
//!   for the first consensus and stops everything on Ctrl-C. `mesh server`
//!   is `mesh-server`.
//!
//! This crate is binaries' glue: it reports errors with `anyhow`.

use std::time::Duration;

use anyhow::{bail, Result};

pub mod devnet;
pub mod server;

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`).
pub fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (a test, an embedding program) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A positive number of seconds from a flag.
pub fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("{what} must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Until SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
