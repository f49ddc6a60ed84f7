//! `mesh-chain`: every chain command for node operators and subnet owners.

mod common;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use common::{ActivateArgs, ChainOpts, RegisterArgs, SignerOpts};
use mesh_chain::{AccountId32, Amount};
use mesh_core::{NodeClass, PeerId, SubnetId};
use std::path::PathBuf;

/// Talk to the mesh chain: subnets, nodes, stake, epochs.
#[derive(Debug, Parser)]
#[command(
    name = "mesh-chain",
    version,
    about = "Subnets, nodes, stake and epochs on the mesh chain",
    long_about = "Subnets, nodes, stake and epochs on the mesh chain.\n\nSigning commands take the key from \
--phrase, --private_key or --key_file (or PHRASE / PRIVATE_KEY / MESH_KEY_FILE). On a dev chain \
(`mesh-chain-node --dev`) the funded dev keys are //Alice, //Bob, … ; Alice owns the sudo key.",
    after_help = "First steps on a dev chain:\n  mesh-chain create-subnet --phrase //Alice --name demo\n  \
register-node --phrase //Alice --subnet_id 1 --hotkey <ss58 of //Bob> --peer_id … --bootnode_peer_id … \
--client_peer_id … --stake_to_be_added 100\n  activate-node --phrase //Alice --subnet_id 1\n  \
mesh-chain show-node --subnet_id 1 --subnet_node_id 1"
)]
struct Cli {
    #[command(flatten)]
    chain: ChainOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Register a subnet owned by the signer and activate it (dev-friendly, no deposit).
    CreateSubnet {
        #[command(flatten)]
        signer: SignerOpts,
        /// The subnet's name.
        #[arg(long)]
        name: String,
        /// Only register; do not activate.
        #[arg(long = "no_activate", alias = "no-activate")]
        no_activate: bool,
    },
    /// Register a subnet node (same flags as `register-node`).
    RegisterNode {
        #[command(flatten)]
        signer: SignerOpts,
        #[command(flatten)]
        args: RegisterArgs,
    },
    /// Activate a registered node (same flags as `activate-node`).
    ActivateNode {
        #[command(flatten)]
        signer: SignerOpts,
        #[command(flatten)]
        args: ActivateArgs,
    },
    /// Take an active node out of the subnet's epochs; it keeps its stake.
    DeactivateNode {
        #[command(flatten)]
        signer: SignerOpts,
        #[command(flatten)]
        args: ActivateArgs,
    },
    /// Remove a node and free its PeerIds; withdraw its stake with remove-stake.
    RemoveNode {
        #[command(flatten)]
        signer: SignerOpts,
        #[command(flatten)]
        args: ActivateArgs,
    },
    /// Add stake (tokens) to a node's hotkey from the signing coldkey.
    AddStake {
        #[command(flatten)]
        signer: SignerOpts,
        #[command(flatten)]
        args: ActivateArgs,
        /// Tokens to add.
        #[arg(long)]
        amount: Amount,
    },
    /// Return stake (tokens) from a hotkey to the signing coldkey.
    RemoveStake {
        #[command(flatten)]
        signer: SignerOpts,
        /// The subnet.
        #[arg(long = "subnet_id", alias = "subnet-id")]
        subnet_id: SubnetId,
        /// The hotkey holding the stake (ss58).
        #[arg(long, value_parser = common::account)]
        hotkey: AccountId32,
        /// Tokens to remove.
        #[arg(long)]
        amount: Amount,
    },
    /// Show a node: class, stake, PeerIds.
    ShowNode {
        /// The subnet.
        #[arg(long = "subnet_id", alias = "subnet-id")]
        subnet_id: SubnetId,
        /// The node's id.
        #[arg(
            long = "subnet_node_id",
            alias = "subnet-node-id",
            conflicts_with = "peer_id"
        )]
        subnet_node_id: Option<u32>,
        /// Or its server PeerId.
        #[arg(long = "peer_id", alias = "peer-id", value_parser = common::peer_id)]
        peer_id: Option<PeerId>,
    },
    /// Ask whether a PeerId is staked in a subnet with at least a class.
    ProofOfStake {
        /// The subnet.
        #[arg(long = "subnet_id", alias = "subnet-id")]
        subnet_id: SubnetId,
        /// The PeerId (server, bootnode or client).
        #[arg(long = "peer_id", alias = "peer-id", value_parser = common::peer_id)]
        peer_id: PeerId,
        /// Least class: deactivated, registered, idle, included or validator.
        #[arg(long = "min_class", alias = "min-class", default_value = "registered", value_parser = common::parse_class)]
        min_class: NodeClass,
    },
    /// Show a subnet's epoch clock and elected validator.
    Epoch {
        /// The subnet.
        #[arg(long = "subnet_id", alias = "subnet-id")]
        subnet_id: SubnetId,
    },
    /// Show an account's free balance in tokens.
    Balance {
        /// The account (ss58).
        #[arg(long, value_parser = common::account)]
        account: AccountId32,
    },
    /// Write the node's runtime metadata (SCALE) to a file.
    Metadata {
        /// Where to write it.
        #[arg(long, default_value = "chain/metadata/mesh-dev.scale")]
        out: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let chain = &cli.chain;
    match &cli.command {
        Command::CreateSubnet {
            signer,
            name,
            no_activate,
        } => {
            let owner = signer.keypair()?;
            let client = chain.connect().await?;
            let subnet_id = client.create_subnet(&owner, name, !no_activate).await?;
            if chain.json {
                println!(
                    "{}",
                    serde_json::json!({ "subnet_id": subnet_id, "active": !no_activate })
                );
            } else {
                let state = if *no_activate {
                    "registered"
                } else {
                    "registered and activated"
                };
                println!("subnet {subnet_id} ({name}) {state}");
            }
        }
        Command::RegisterNode { signer, args } => {
            common::register_node(chain, signer, args).await?
        }
        Command::ActivateNode { signer, args } => {
            common::activate_node(chain, signer, args).await?
        }
        Command::DeactivateNode { signer, args } => {
            let coldkey = signer.keypair()?;
            let client = chain.connect().await?;
            let id =
                common::owned_node(&client, &coldkey, args.subnet_id, args.subnet_node_id).await?;
            client.deactivate_node(&coldkey, args.subnet_id, id).await?;
            println!("deactivated subnet node {id} in subnet {}", args.subnet_id);
        }
        Command::RemoveNode { signer, args } => {
            let coldkey = signer.keypair()?;
            let client = chain.connect().await?;
            let id =
                common::owned_node(&client, &coldkey, args.subnet_id, args.subnet_node_id).await?;
            client.remove_node(&coldkey, args.subnet_id, id).await?;
            println!("removed subnet node {id} from subnet {}", args.subnet_id);
        }
        Command::AddStake {
            signer,
            args,
            amount,
        } => {
            let coldkey = signer.keypair()?;
            let client = chain.connect().await?;
            let id =
                common::owned_node(&client, &coldkey, args.subnet_id, args.subnet_node_id).await?;
            let Some(node) = client.subnet_node(args.subnet_id, id).await? else {
                bail!("no node {id} in subnet {}", args.subnet_id);
            };
            let hotkey: AccountId32 = node.hotkey.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            client
                .add_stake(&coldkey, args.subnet_id, id, &hotkey, *amount)
                .await?;
            println!("added {amount} tokens of stake to node {id} (hotkey {hotkey})");
        }
        Command::RemoveStake {
            signer,
            subnet_id,
            hotkey,
            amount,
        } => {
            let coldkey = signer.keypair()?;
            let client = chain.connect().await?;
            client
                .remove_stake(&coldkey, *subnet_id, hotkey, *amount)
                .await?;
            println!("returned {amount} tokens of stake from {hotkey} in subnet {subnet_id}");
        }
        Command::ShowNode {
            subnet_id,
            subnet_node_id,
            peer_id,
        } => {
            let client = chain.connect().await?;
            let id = match (subnet_node_id, peer_id) {
                (Some(id), _) => *id,
                (None, Some(peer)) => match client.node_id_by_peer(*subnet_id, peer).await? {
                    Some(id) => id,
                    None => bail!("no node with PeerId {peer} in subnet {subnet_id}"),
                },
                (None, None) => bail!("give --subnet_node_id or --peer_id"),
            };
            let Some(node) = client.subnet_node(*subnet_id, id).await? else {
                bail!("no node {id} in subnet {subnet_id}");
            };
            if chain.json {
                println!("{}", serde_json::to_string_pretty(&node)?);
            } else {
                println!(
                    "subnet node {} in subnet {}",
                    node.subnet_node_id, node.subnet_id
                );
                println!(
                    "  class          {} (since epoch {})",
                    node.class, node.class_since_epoch
                );
                println!("  stake          {} tokens", Amount(node.stake));
                println!("  hotkey         {}", node.hotkey);
                println!(
                    "  coldkey        {}",
                    node.coldkey.as_deref().unwrap_or("?")
                );
                println!("  peer_id        {}", node.peer_id);
                println!("  bootnode_peer  {}", node.bootnode_peer_id);
                println!("  client_peer    {}", node.client_peer_id);
                if let Some(bootnode) = &node.bootnode {
                    println!("  bootnode       {bootnode}");
                }
            }
        }
        Command::ProofOfStake {
            subnet_id,
            peer_id,
            min_class,
        } => {
            let client = chain.connect().await?;
            let staked = client
                .proof_of_stake(*subnet_id, peer_id, *min_class)
                .await?;
            if chain.json {
                println!("{}", serde_json::json!({ "staked": staked }));
            } else {
                println!("{staked}");
            }
            if !staked {
                std::process::exit(1);
            }
        }
        Command::Epoch { subnet_id } => {
            let client = chain.connect().await?;
            let info = client.epoch_info(*subnet_id).await?;
            let elected = client.elected_validator(*subnet_id, info.epoch).await?;
            if chain.json {
                let mut value = serde_json::to_value(info)?;
                value["elected_validator"] = serde_json::json!(elected);
                println!("{value}");
            } else {
                println!(
                    "subnet {subnet_id}: block {}, epoch {} ({}/{} blocks in), elected validator {}",
                    info.block,
                    info.epoch,
                    info.blocks_into_epoch,
                    info.epoch_length,
                    elected.map_or("none".to_owned(), |id| id.to_string())
                );
            }
        }
        Command::Balance { account } => {
            let client = chain.connect().await?;
            let free = client.free_balance(account).await?;
            println!("{free}");
        }
        Command::Metadata { out } => {
            let client = chain.connect().await?;
            let bytes = client.fetch_metadata_bytes().await?;
            std::fs::write(out, &bytes)?;
            println!("wrote {} ({} bytes)", out.display(), bytes.len());
        }
    }
    Ok(())
}
