//! `register-node`: register a subnet node on the chain, signed by its coldkey.
//!
//! Quotes stake + burn + fee first and refuses to submit when the burn is above
//! `--max_burn_amount` or the balance does not cover the total.

mod common;

use clap::Parser;

/// Register a subnet node (the Python mesh's `register-node`).
#[derive(Debug, Parser)]
#[command(
    name = "register-node",
    version,
    about = "Register a subnet node on the mesh chain, signed by its coldkey",
    long_about = "Register a subnet node on the mesh chain. The signing key (--phrase, --private_key or \
--key_file, or the PHRASE / PRIVATE_KEY / MESH_KEY_FILE variables) is the coldkey that pays stake, burn and \
fee; --hotkey is the node machine's account. Amounts are tokens with 18 decimals. The cost is quoted before \
anything is submitted.",
    after_help = "Example (dev chain):\n  register-node --phrase //Alice --subnet_id 1 --hotkey 5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty \\\n    --peer_id 12D3Koo… --bootnode_peer_id 12D3Koo… --client_peer_id 12D3Koo… --stake_to_be_added 100"
)]
struct Cli {
    #[command(flatten)]
    chain: common::ChainOpts,
    #[command(flatten)]
    signer: common::SignerOpts,
    #[command(flatten)]
    args: common::RegisterArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    common::register_node(&cli.chain, &cli.signer, &cli.args).await
}
