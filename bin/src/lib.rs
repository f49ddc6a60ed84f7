//! # mesh-cli
//!
//! The node binaries, in a thin crate above `subnets/` so the
//! framework crates never depend on an application:
//!
//! - `mesh-dht`: a DHT bootnode, and `store`/`get` from the command line.
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

pub mod client;
pub mod daemon;
pub mod metrics;
pub mod reach;

pub use daemon::{init_logs, stop_signal};

/// A positive number of seconds from a flag.
pub fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("{what} must be a positive number of seconds, got {s}");
    }
    Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("{what} is too large: {s} seconds"))
}
