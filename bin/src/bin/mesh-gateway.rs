//! `mesh-gateway`: the inference subnet behind OpenAI's HTTP API.
//!
//! ```text
//! mesh-gateway --initial_peers /ip4/127.0.0.1/tcp/31330/p2p/12D3... --subnet_id 1 \
//!     --identity_path client_private_key.key
//! curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
//!     -d '{"model": "Smollm2 135M 8k Lc100K Mix1 Ep2", "messages": [{"role": "user", "content": "Hi"}]}'
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mesh_cli::client::JoinArgs;
use mesh_core::RateLimit;
use mesh_gateway::{ApiKeys, Gateway, GatewayConfig};

/// Serve a mesh inference subnet over OpenAI's HTTP API (chat completions,
/// completions, embeddings, models) with a chat page at `/`. Joins the DHT
/// as a client: in a staked subnet its identity must be a registered
/// node's client PeerId.
#[derive(Parser, Debug)]
#[command(name = "mesh-gateway", version)]
struct Cli {
    #[command(flatten)]
    join: JoinArgs,
    /// Where to serve HTTP. Keep it on 127.0.0.1 unless --api_keys is set.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: SocketAddr,
    /// A file of API keys (one per line, or `NAME KEY`; `#` comments):
    /// every request then needs `Authorization: Bearer <key>`.
    #[arg(long = "api_keys", alias = "api-keys", value_name = "FILE")]
    api_keys: Option<PathBuf>,
    /// Requests per second per key (everyone shares one budget without keys); 0: unlimited.
    #[arg(long = "rate_limit", alias = "rate-limit", default_value_t = 10.0)]
    rate_limit: f64,
    /// Send CORS headers allowing this origin (e.g. http://localhost:3000, or *).
    #[arg(long = "cors_origin", alias = "cors-origin", value_name = "ORIGIN")]
    cors_origin: Option<String>,
    /// Log as JSON lines instead of text (RUST_LOG sets the level, default info).
    #[arg(long = "log_json", alias = "log-json")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    mesh_cli::init_logs(cli.log_json);
    let mut config = GatewayConfig::new(cli.listen);
    if let Some(path) = &cli.api_keys {
        let keys = ApiKeys::load(path)?;
        tracing::info!(keys = keys.len(), "API keys loaded");
        config.api_keys = Some(keys);
    } else if !cli.listen.ip().is_loopback() {
        tracing::warn!(listen = %cli.listen, "serving beyond this machine without --api_keys: anyone who reaches it may use the subnet");
    }
    config.rate_limit = if cli.rate_limit > 0.0 {
        Some(RateLimit {
            per_second: cli.rate_limit,
            burst: (cli.rate_limit * 2.0).max(1.0),
        })
    } else if cli.rate_limit == 0.0 {
        None
    } else {
        bail!("--rate_limit must be 0 (unlimited) or a positive number of requests per second");
    };
    if let Some(origin) = &cli.cors_origin {
        config.cors_origin = Some(
            origin
                .parse()
                .with_context(|| format!("--cors_origin {origin:?} is not a header value"))?,
        );
    }
    let key = cli.join.key()?;
    let dht = cli.join.join(key.clone()).await?;
    let stop = mesh_cli::stop_signal()?;
    let gateway = Gateway::start(config, dht.clone(), Arc::new(key)).await?;
    println!(
        "mesh-gateway {} serving subnet {} on http://{}/ (OpenAI API under /v1)",
        dht.peer_id(),
        cli.join.subnet_id,
        gateway.addr()
    );
    stop.await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    dht.shutdown().await;
    Ok(())
}
