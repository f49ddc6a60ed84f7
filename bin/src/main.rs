//! `mesh`: `mesh devnet` runs a whole local subnet; `mesh server` is `mesh-server`.

use clap::{Parser, Subcommand};

/// mesh: decentralized AI subnets on a Kademlia DHT and a Substrate chain.
#[derive(Parser, Debug)]
#[command(name = "mesh", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A local subnet: the dev chain, a subnet, N registered nodes running
    /// the reference subnet and a bootnode; waits for the first consensus
    /// and stops everything on Ctrl-C.
    Devnet(mesh_cli::devnet::DevnetArgs),
    /// One node of a subnet (the same as `mesh-server`).
    Server(Box<mesh_cli::server::ServerArgs>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Devnet(args) => mesh_cli::devnet::run(args).await,
        Command::Server(args) => mesh_cli::server::run(*args).await,
    }
}
