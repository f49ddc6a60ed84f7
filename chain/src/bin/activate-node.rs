//! `activate-node`: activate a registered subnet node (coldkey-signed).

mod common;

use clap::Parser;

/// Activate a registered subnet node (the Python mesh's `activate-node`).
#[derive(Debug, Parser)]
#[command(
    name = "activate-node",
    version,
    about = "Activate a registered subnet node: it becomes Idle next epoch and climbs a class per epoch",
    after_help = "Example (dev chain):\n  activate-node --phrase //Alice --subnet_id 1"
)]
struct Cli {
    #[command(flatten)]
    chain: common::ChainOpts,
    #[command(flatten)]
    signer: common::SignerOpts,
    #[command(flatten)]
    args: common::ActivateArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    common::activate_node(&cli.chain, &cli.signer, &cli.args).await
}
