//! `mesh-server`: one node of a subnet. See `mesh-server --help`.
//!
//! ```text
//! mesh-server --subnet echo --subnet_id 1 --identity_path private_key.key \
//!     --initial_peers /ip4/127.0.0.1/tcp/31330/p2p/12D3... --phrase //Bob
//! ```

use clap::Parser;

/// One node of a mesh subnet: the DHT (stake-gated), the subnet's RPC
/// services behind the authorizers (rate limit, stake), signed heartbeats
/// and the per-epoch consensus loop, until SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "mesh-server", version)]
struct Cli {
    #[command(flatten)]
    server: mesh_cli::server::ServerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_cli::server::run(Cli::parse().server).await
}
