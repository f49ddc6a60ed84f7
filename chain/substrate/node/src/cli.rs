//! Command line: Substrate's `RunCmd` plus the block interval.

use crate::{chain_spec, service};
use sc_cli::SubstrateCli;

/// The mesh dev chain node.
#[derive(Debug, clap::Parser)]
#[command(
    about = "The mesh dev chain: a Substrate node with the network pallet, blocks sealed every --block-millis.",
    after_help = "Typical use: `mesh-chain-node --dev` (temporary state, RPC on ws://127.0.0.1:9944).\n\
                  Tests: `mesh-chain-node --dev --rpc-port 0 --port 0` picks free ports."
)]
pub(crate) struct Cli {
    /// Seal a block every this many milliseconds (blocks are final at once).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub(crate) block_millis: u64,

    #[command(subcommand)]
    pub(crate) subcommand: Option<Subcommand>,

    #[command(flatten)]
    pub(crate) run: sc_cli::RunCmd,
}

/// Chain maintenance commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Subcommand {
    /// Export the chain specification (JSON).
    ExportChainSpec(sc_cli::ExportChainSpecCmd),
    /// Remove the chain's database.
    PurgeChain(sc_cli::PurgeChainCmd),
}

impl SubstrateCli for Cli {
    fn impl_name() -> String {
        "mesh dev chain node".into()
    }

    fn impl_version() -> String {
        env!("SUBSTRATE_CLI_IMPL_VERSION").into()
    }

    fn description() -> String {
        env!("CARGO_PKG_DESCRIPTION").into()
    }

    fn author() -> String {
        "the mesh developers".into()
    }

    fn support_url() -> String {
        "https://example.invalid/mesh/issues".into()
    }

    fn copyright_start_year() -> i32 {
        2026
    }

    fn load_spec(&self, id: &str) -> Result<Box<dyn sc_service::ChainSpec>, String> {
        Ok(match id {
            "" | "dev" | "local" => Box::new(chain_spec::development_chain_spec()?),
            path => Box::new(chain_spec::ChainSpec::from_json_file(
                std::path::PathBuf::from(path),
            )?),
        })
    }
}

/// Parse the command line and run.
pub(crate) fn run() -> sc_cli::Result<()> {
    let cli = Cli::from_args();
    match &cli.subcommand {
        Some(Subcommand::ExportChainSpec(cmd)) => {
            let chain_spec = cli.load_spec(&cmd.chain)?;
            cmd.run(chain_spec)
        }
        Some(Subcommand::PurgeChain(cmd)) => {
            let runner = cli.create_runner(cmd)?;
            runner.sync_run(|config| cmd.run(config.database))
        }
        None => {
            let runner = cli.create_runner(&cli.run)?;
            let block_millis = cli.block_millis;
            runner.run_node_until_exit(|config| async move {
                match config.network.network_backend {
                    sc_network::config::NetworkBackendType::Libp2p => {
                        service::new_full::<sc_network::NetworkWorker<_, _>>(config, block_millis)
                            .await
                            .map_err(sc_cli::Error::Service)
                    }
                    sc_network::config::NetworkBackendType::Litep2p => {
                        service::new_full::<sc_network::Litep2pNetworkBackend>(config, block_millis)
                            .await
                            .map_err(sc_cli::Error::Service)
                    }
                }
            })
        }
    }
}
