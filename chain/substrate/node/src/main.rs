//! `mesh-chain-node`: the mesh dev chain node.
//!
//! A Substrate node for development and tests: blocks sealed on a timer
//! (manual seal, instantly final), the mesh runtime with its network pallet,
//! JSON-RPC on 127.0.0.1 (`--rpc-port`, 9944 by default) including
//! `network_proofOfStake`. Start it with `mesh-chain-node --dev` (implies
//! `--tmp`: state lives in a temporary directory and is gone on exit).

// sc_cli::Error (Substrate's, 176 bytes) is the error type every node returns.
#![allow(clippy::result_large_err)]

mod chain_spec;
mod cli;
mod rpc;
mod service;

fn main() -> sc_cli::Result<()> {
    cli::run()
}
