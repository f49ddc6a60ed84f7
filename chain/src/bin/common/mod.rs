//! What the chain CLIs share: chain and signer options, and the commands.
//!
//! Included by each binary; not every binary uses every item.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use mesh_chain::{AccountId32, Amount, ChainClient, Keypair, RegisterNode, SignerSource};
use mesh_core::{NodeClass, PeerId, SubnetId};
use std::path::PathBuf;
use std::time::Duration;

/// Where the chain is.
#[derive(Debug, clap::Args)]
pub(crate) struct ChainOpts {
    /// The chain node's JSON-RPC URL.
    #[arg(
        long = "rpc_url",
        alias = "rpc-url",
        env = "MESH_RPC_URL",
        default_value = "ws://127.0.0.1:9944"
    )]
    pub(crate) rpc_url: String,
    /// Seconds to wait for a transaction to be finalized.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub(crate) timeout: u64,
    /// Print results as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ChainOpts {
    pub(crate) async fn connect(&self) -> Result<ChainClient> {
        Ok(ChainClient::connect(&self.rpc_url)
            .await?
            .with_tx_timeout(Duration::from_secs(self.timeout)))
    }
}

/// The key that signs (the coldkey for registration, activation and stake).
#[derive(Debug, clap::Args)]
pub(crate) struct SignerOpts {
    /// Secret URI or BIP-39 mnemonic of the signing key, e.g. "//Alice" on a dev chain.
    #[arg(long, env = "PHRASE", hide_env_values = true)]
    pub(crate) phrase: Option<String>,
    /// The signing key's 32-byte secret seed in hex.
    #[arg(
        long = "private_key",
        alias = "private-key",
        env = "PRIVATE_KEY",
        hide_env_values = true
    )]
    pub(crate) private_key: Option<String>,
    /// A file holding the phrase or the hex seed.
    #[arg(long = "key_file", alias = "key-file", env = "MESH_KEY_FILE")]
    pub(crate) key_file: Option<PathBuf>,
}

impl SignerOpts {
    pub(crate) fn keypair(&self) -> Result<Keypair> {
        let source = SignerSource::from_options(
            self.phrase.clone(),
            self.private_key.clone(),
            self.key_file.clone(),
        )?;
        Ok(source.keypair()?)
    }
}

pub(crate) fn account(text: &str) -> Result<AccountId32, String> {
    text.parse::<AccountId32>()
        .map_err(|e| format!("{text:?} is not an ss58 account address: {e}"))
}

pub(crate) fn peer_id(text: &str) -> Result<PeerId, String> {
    text.parse::<PeerId>()
        .map_err(|e| format!("{text:?} is not a libp2p PeerId: {e}"))
}

fn parse_rate(text: &str) -> Result<Amount, String> {
    let rate: Amount = text
        .parse()
        .map_err(|e: mesh_chain::AmountError| e.to_string())?;
    if rate > Amount::tokens(1) {
        return Err(format!("{text} is above 1 (100 %)"));
    }
    Ok(rate)
}

/// `register-node`: the Python mesh's flags.
#[derive(Debug, clap::Args)]
pub(crate) struct RegisterArgs {
    /// The subnet to join.
    #[arg(long = "subnet_id", alias = "subnet-id")]
    pub(crate) subnet_id: SubnetId,
    /// The node machine's account (ss58); must differ from the signing coldkey.
    #[arg(long, value_parser = account)]
    pub(crate) hotkey: AccountId32,
    /// PeerId of the node's server (e.g. from `keygen`).
    #[arg(long = "peer_id", alias = "peer-id", value_parser = peer_id)]
    pub(crate) peer_id: PeerId,
    /// PeerId of the node's DHT bootnode.
    #[arg(long = "bootnode_peer_id", alias = "bootnode-peer-id", value_parser = peer_id)]
    pub(crate) bootnode_peer_id: PeerId,
    /// PeerId of the node's client.
    #[arg(long = "client_peer_id", alias = "client-peer-id", value_parser = peer_id)]
    pub(crate) client_peer_id: PeerId,
    /// Multiaddr others may bootstrap from, e.g. /ip4/1.2.3.4/tcp/31330/p2p/12D3Koo….
    #[arg(long)]
    pub(crate) bootnode: Option<String>,
    /// Share of rewards for delegators, 0 to 1.
    #[arg(long = "delegate_reward_rate", alias = "delegate-reward-rate", default_value = "0", value_parser = parse_rate)]
    pub(crate) delegate_reward_rate: Amount,
    /// Stake to add, in tokens (18 decimals), e.g. 100 or 100.5.
    #[arg(long = "stake_to_be_added", alias = "stake-to-be-added")]
    pub(crate) stake_to_be_added: Amount,
    /// Refuse if registering burns more than this many tokens (default: the burn quoted now).
    #[arg(long = "max_burn_amount", alias = "max-burn-amount")]
    pub(crate) max_burn_amount: Option<Amount>,
    /// A value no other node of the subnet may carry.
    #[arg(long)]
    pub(crate) unique: Option<String>,
    /// A free-form value.
    #[arg(long = "non_unique", alias = "non-unique")]
    pub(crate) non_unique: Option<String>,
}

pub(crate) async fn register_node(
    chain: &ChainOpts,
    signer: &SignerOpts,
    args: &RegisterArgs,
) -> Result<()> {
    let coldkey = signer.keypair()?;
    let client = chain.connect().await?;
    let (min_stake, burn) = client.registration_terms().await?;
    if args.stake_to_be_added < min_stake {
        bail!(
            "--stake_to_be_added {} is below the subnet minimum stake of {} tokens: not submitted",
            args.stake_to_be_added,
            min_stake
        );
    }
    if let Some(max) = args.max_burn_amount {
        if burn > max {
            bail!(
                "registering burns {burn} tokens, more than --max_burn_amount {max}: not submitted"
            );
        }
    }
    let node = RegisterNode {
        subnet_id: args.subnet_id,
        hotkey: args.hotkey,
        peer_id: args.peer_id,
        bootnode_peer_id: args.bootnode_peer_id,
        client_peer_id: args.client_peer_id,
        bootnode: args.bootnode.clone(),
        delegate_reward_rate: args.delegate_reward_rate.planck(),
        stake_to_be_added: args.stake_to_be_added,
        unique: args.unique.clone(),
        non_unique: args.non_unique.clone(),
        max_burn_amount: args.max_burn_amount.unwrap_or(burn),
    };
    let quote = client.quote_registration(&coldkey, &node).await?;
    eprintln!(
        "quote: stake {} + burn {} + fee ~{} = {} tokens (balance {})",
        quote.stake,
        quote.burn,
        quote.fee,
        quote.total(),
        quote.balance
    );
    if quote.total() > quote.balance {
        bail!(
            "the signing account holds {} tokens, not enough for {}: not submitted",
            quote.balance,
            quote.total()
        );
    }
    let subnet_node_id = client.register_node(&coldkey, &node).await?;
    if chain.json {
        println!(
            "{}",
            serde_json::json!({
                "subnet_id": args.subnet_id,
                "subnet_node_id": subnet_node_id,
                "stake": quote.stake.planck().to_string(),
                "burned": quote.burn.planck().to_string(),
            })
        );
    } else {
        println!(
            "registered subnet node {subnet_node_id} in subnet {} (stake {} tokens); \
             activate it with: activate-node --subnet_id {} --subnet_node_id {subnet_node_id}",
            args.subnet_id, quote.stake, args.subnet_id
        );
    }
    Ok(())
}

/// `activate-node`.
#[derive(Debug, clap::Args)]
pub(crate) struct ActivateArgs {
    /// The subnet.
    #[arg(long = "subnet_id", alias = "subnet-id")]
    pub(crate) subnet_id: SubnetId,
    /// The node; when left out, the one node of the signing coldkey in the subnet.
    #[arg(long = "subnet_node_id", alias = "subnet-node-id")]
    pub(crate) subnet_node_id: Option<u32>,
}

pub(crate) async fn owned_node(
    client: &ChainClient,
    coldkey: &Keypair,
    subnet_id: SubnetId,
    given: Option<u32>,
) -> Result<u32> {
    if let Some(id) = given {
        return Ok(id);
    }
    let account = coldkey.public_key().to_account_id();
    let ids = client.nodes_owned_by(subnet_id, &account).await?;
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => bail!("{account} owns no node in subnet {subnet_id}; register one with register-node"),
        many => bail!(
            "{account} owns several nodes in subnet {subnet_id} ({many:?}); choose one with --subnet_node_id"
        ),
    }
}

pub(crate) async fn activate_node(
    chain: &ChainOpts,
    signer: &SignerOpts,
    args: &ActivateArgs,
) -> Result<()> {
    let coldkey = signer.keypair()?;
    let client = chain.connect().await?;
    let id = owned_node(&client, &coldkey, args.subnet_id, args.subnet_node_id).await?;
    client.activate_node(&coldkey, args.subnet_id, id).await?;
    let node = client
        .subnet_node(args.subnet_id, id)
        .await?
        .context("the node vanished right after activation")?;
    if chain.json {
        println!("{}", serde_json::to_string(&node)?);
    } else {
        println!(
            "activated subnet node {id} in subnet {}: now {} from epoch {}",
            args.subnet_id, node.class, node.class_since_epoch
        );
    }
    Ok(())
}

/// Logs to stderr; `RUST_LOG` sets levels (default `warn`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Parse a node class name.
pub(crate) fn parse_class(text: &str) -> Result<NodeClass, String> {
    text.parse::<NodeClass>().map_err(|e| e.to_string())
}
