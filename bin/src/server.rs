//! `mesh-server`: one node of a subnet, hosting the application chosen by
//! `--subnet`, with the Python mesh's flags where they apply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mesh_chain::{chain_stake_oracle, ChainClient, ChainError, HotkeyChain, SignerSource};
use mesh_core::{KeyType, NodeClass, PeerKey, SubnetId};
use mesh_dht::{DhtConfig, Multiaddr, StakeGate};
use mesh_server::{
    standard_authorizers, ChainHooks, Runtime, RuntimeConfig, StakeAuthorizer, Subnet,
};

use crate::metrics::serve_metrics;
use crate::{init_logs, secs, stop_signal};

/// The subnets this binary can host (`--subnet NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hosted {
    /// The reference subnet: an echo service, heartbeats, a trivial score.
    #[value(name = "echo")]
    Echo,
    /// The LLM inference subnet (its flags are listed below).
    #[value(name = "inference")]
    Inference,
}

impl Hosted {
    /// The name `--subnet` takes.
    pub fn name(self) -> &'static str {
        match self {
            Hosted::Echo => mesh_subnet_echo::NAME,
            Hosted::Inference => mesh_subnet_inference::NAME,
        }
    }
}

/// Each hosted subnet's own flags (only the chosen subnet's may be given).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SubnetFlags {
    /// `--subnet inference`'s.
    #[command(flatten)]
    pub inference: mesh_subnet_inference::cli::InferenceArgs,
}

/// Options of `mesh-server` (and `mesh server`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The application to host.
    #[arg(long, value_enum, default_value_t = Hosted::Echo)]
    pub subnet: Hosted,
    /// The subnet's id on chain; its DHT and RPC protocols are /mesh/<subnet_id>/….
    #[arg(long = "subnet_id", alias = "subnet-id")]
    pub subnet_id: Option<SubnetId>,
    /// This node's id in the subnet on chain. Optional: the hotkey's node is
    /// looked up; when given, it must be that node.
    #[arg(long = "subnet_node_id", alias = "subnet-node-id")]
    pub subnet_node_id: Option<u32>,
    /// Addresses to listen on (TCP and QUIC multiaddrs).
    #[arg(
        long = "host_maddrs",
        alias = "host-maddrs",
        num_args = 1..,
        value_name = "MULTIADDR",
        default_values_t = ["/ip4/0.0.0.0/tcp/31331".parse::<Multiaddr>().unwrap(), "/ip4/0.0.0.0/udp/31331/quic-v1".parse().unwrap()]
    )]
    pub host_maddrs: Vec<Multiaddr>,
    /// Addresses to announce instead of the listen addresses (e.g. a public IP).
    #[arg(long = "announce_maddrs", alias = "announce-maddrs", num_args = 1.., value_name = "MULTIADDR")]
    pub announce_maddrs: Vec<Multiaddr>,
    /// Peers to join through, each a multiaddr ending in /p2p/<PeerId>
    /// (e.g. the subnet's bootnodes). Start-up fails if none answers.
    #[arg(long = "initial_peers", alias = "initial-peers", num_args = 1.., value_name = "MULTIADDR")]
    pub initial_peers: Vec<Multiaddr>,
    /// Start a new swarm instead of joining one (no --initial_peers).
    #[arg(
        long = "new_swarm",
        alias = "new-swarm",
        conflicts_with = "initial_peers"
    )]
    pub new_swarm: bool,
    /// The node's key file (the PeerId registered on chain): created (0600)
    /// if missing, reused if present. Without it a fresh identity is used.
    #[arg(long = "identity_path", alias = "identity-path", value_name = "PATH")]
    pub identity_path: Option<PathBuf>,
    /// Key type when the identity file is created.
    #[arg(long = "key_type", alias = "key-type", default_value = "ed25519")]
    pub key_type: KeyType,
    /// Seconds between heartbeats; a heartbeat lives twice as long.
    #[arg(
        long = "update_period",
        alias = "update-period",
        default_value_t = 30.0
    )]
    pub update_period: f64,
    /// Seconds to wait for the initial peers.
    #[arg(
        long = "bootstrap_timeout",
        alias = "bootstrap-timeout",
        default_value_t = 15.0
    )]
    pub bootstrap_timeout: f64,
    /// The chain node's JSON-RPC URL.
    #[arg(
        long = "rpc_url",
        alias = "rpc-url",
        env = "MESH_RPC_URL",
        default_value = "ws://127.0.0.1:9944"
    )]
    pub rpc_url: String,
    /// Run without a chain: every peer is admitted and there is no consensus
    /// (local experiments only).
    #[arg(long = "no_chain", alias = "no-chain")]
    pub no_chain: bool,
    /// Secret URI or mnemonic of the node's hotkey (signs attestations; never the coldkey).
    #[arg(long, env = "PHRASE", hide_env_values = true)]
    pub phrase: Option<String>,
    /// The hotkey's 32-byte secret seed in hex.
    #[arg(
        long = "private_key",
        alias = "private-key",
        env = "PRIVATE_KEY",
        hide_env_values = true
    )]
    pub private_key: Option<String>,
    /// A file holding the hotkey's phrase or hex seed.
    #[arg(long = "key_file", alias = "key-file", env = "MESH_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Seconds a stake answer (yes or no) is trusted before the chain is asked again.
    #[arg(
        long = "stake_cache_ttl",
        alias = "stake-cache-ttl",
        default_value_t = 300.0
    )]
    pub stake_cache_ttl: f64,
    /// The least class on chain a peer needs to enter the routing table, store and call.
    #[arg(long = "min_class", alias = "min-class", default_value = "registered")]
    pub min_class: NodeClass,
    /// Share of an epoch within which this node attests (the design's 15 %).
    #[arg(
        long = "attest_window",
        alias = "attest-window",
        default_value_t = mesh_server::consensus::ATTEST_WINDOW
    )]
    pub attest_window: f64,
    /// Serve Prometheus metrics on http://<ADDR>/metrics (e.g. 127.0.0.1:9101).
    #[arg(long = "metrics", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Log as JSON lines instead of text (RUST_LOG sets the level, default info).
    #[arg(long = "log_json", alias = "log-json")]
    pub log_json: bool,
    /// Consume only: join, read and call other nodes, but serve nothing —
    /// no RPC, no heartbeat, no consensus, never in anyone's routing table,
    /// only outbound connections. No hotkey is needed.
    #[arg(long = "client_mode", alias = "client-mode")]
    pub client_mode: bool,
    /// Relay connections for nodes behind NAT (bounded: 256 slots, 128
    /// relayed connections, each up to an hour and 1 GiB). For nodes with a
    /// public address.
    #[arg(
        long = "relay_server",
        alias = "relay-server",
        conflicts_with = "client_mode"
    )]
    pub relay_server: bool,
    /// Reachability (NAT) flags.
    #[command(flatten)]
    pub reach: crate::reach::ReachArgs,
    /// The hosted subnets' own flags.
    #[command(flatten)]
    pub subnets: SubnetFlags,
}

/// Run a node until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<()> {
    init_logs(args.log_json);
    let foreign = match args.subnet {
        Hosted::Inference => Vec::new(),
        _ => args.subnets.inference.given(),
    };
    if !foreign.is_empty() {
        bail!(
            "{} belong to --subnet inference, not --subnet {}",
            foreign.join(", "),
            args.subnet.name()
        );
    }
    match args.subnet {
        Hosted::Echo => serve(args, Arc::new(mesh_subnet_echo::EchoSubnet::new())).await,
        Hosted::Inference => {
            // Load the model (and the embedding model) before joining anything.
            let subnet = args.subnets.inference.load()?;
            serve(args, Arc::new(subnet)).await
        }
    }
}

fn identity(args: &ServerArgs) -> Result<PeerKey> {
    Ok(match &args.identity_path {
        Some(path) => {
            let (key, created) = PeerKey::load_or_generate(path, args.key_type)
                .with_context(|| format!("identity file {}", path.display()))?;
            let what = if created {
                "created a new identity"
            } else {
                "loaded identity"
            };
            tracing::info!(path = %path.display(), peer_id = %key.peer_id(), "{what}");
            key
        }
        None => {
            let key = PeerKey::generate(args.key_type)?;
            tracing::warn!(peer_id = %key.peer_id(), "no --identity_path: using a fresh identity that will change on restart");
            key
        }
    })
}

/// The chain side of a node: stake checks for both gates and the consensus hooks.
struct ChainParts {
    gate: StakeGate,
    hooks: ChainHooks,
    // Follows finalized blocks to keep the stake cache honest; stops on drop.
    _watcher: mesh_chain::WatchedStakeOracle,
}

/// A client's chain side: only the stake gate (it signs nothing).
async fn client_gate(
    args: &ServerArgs,
    subnet_id: SubnetId,
) -> Result<(StakeGate, mesh_chain::WatchedStakeOracle)> {
    let client = ChainClient::connect(&args.rpc_url).await.with_context(|| {
        format!(
            "cannot reach the chain at {} (start one, e.g. `mesh devnet`, or pass --no_chain)",
            args.rpc_url
        )
    })?;
    let watcher = chain_stake_oracle(client, secs(args.stake_cache_ttl, "--stake_cache_ttl")?);
    let gate = StakeGate::new(watcher.oracle(), subnet_id, args.min_class);
    Ok((gate, watcher))
}

async fn chain_parts(args: &ServerArgs, subnet_id: SubnetId, key: &PeerKey) -> Result<ChainParts> {
    let hotkey = SignerSource::from_options(
        args.phrase.clone(),
        args.private_key.clone(),
        args.key_file.clone(),
    )
    .and_then(|s| s.keypair())
    .context("the node's hotkey signs its attestations: give --phrase, --private_key or --key_file (or --no_chain)")?;
    let client = ChainClient::connect(&args.rpc_url).await.with_context(|| {
        format!(
            "cannot reach the chain at {} (start one, e.g. `mesh devnet`, or pass --no_chain)",
            args.rpc_url
        )
    })?;
    let account = hotkey.public_key().to_account_id();
    match client.node_id_by_hotkey(subnet_id, &account).await? {
        Some(id) => {
            if let Some(want) = args.subnet_node_id.filter(|&w| w != id) {
                bail!("--subnet_node_id {want} is not this hotkey's node: hotkey {account} is node {id} of subnet {subnet_id}");
            }
            let node = client
                .subnet_node(subnet_id, id)
                .await?
                .with_context(|| format!("node {id} of subnet {subnet_id} vanished"))?;
            if node.peer_id != key.peer_id() {
                bail!(
                    "node {id} of subnet {subnet_id} is registered with PeerId {} but this node's identity is {}; \
                     start it with the key file of that PeerId (--identity_path)",
                    node.peer_id,
                    key.peer_id()
                );
            }
            tracing::info!(%subnet_id, subnet_node_id = id, class = %node.class, "this node on chain");
        }
        None => tracing::warn!(
            %subnet_id,
            hotkey = %account,
            "this hotkey has no node in the subnet: register it (register-node, activate-node); \
             until then peers refuse this node and it takes no part in consensus"
        ),
    }
    match client.epoch_info(subnet_id).await {
        Ok(info) => tracing::info!(%subnet_id, epoch = info.epoch, "subnet is active"),
        Err(ChainError::NotFound(_)) => {
            tracing::warn!(
                %subnet_id,
                "subnet is not active on chain yet: consensus waits for it"
            )
        }
        Err(e) => return Err(e.into()),
    }
    let watcher = chain_stake_oracle(
        client.clone(),
        secs(args.stake_cache_ttl, "--stake_cache_ttl")?,
    );
    let oracle = watcher.oracle();
    let hooks = ChainHooks {
        chain: Arc::new(HotkeyChain::new(client, hotkey)),
        poll: Duration::from_millis(500),
        attest_window: args.attest_window,
    };
    let gate = StakeGate::new(oracle, subnet_id, args.min_class);
    Ok(ChainParts {
        gate,
        hooks,
        _watcher: watcher,
    })
}

async fn serve<S: Subnet>(args: ServerArgs, subnet: Arc<S>) -> Result<()> {
    if !args.new_swarm && args.initial_peers.is_empty() {
        bail!("give --initial_peers (a bootnode's /ip4/…/p2p/<PeerId>) to join a subnet, or --new_swarm to start a new one");
    }
    if !(0.0..=1.0).contains(&args.attest_window) {
        bail!(
            "--attest_window is a share of an epoch, 0 to 1; got {}",
            args.attest_window
        );
    }
    let subnet_id = match (args.subnet_id, args.no_chain) {
        (Some(id), _) => id,
        (None, true) => SubnetId::default(),
        (None, false) => bail!("--subnet_id is required (the subnet's id on chain)"),
    };
    let key = identity(&args)?;
    let mut client_watcher = None;
    let chain = if args.no_chain {
        tracing::warn!("--no_chain: every peer is admitted and there is no consensus");
        None
    } else if args.client_mode {
        client_watcher = Some(client_gate(&args, subnet_id).await?);
        None
    } else {
        Some(chain_parts(&args, subnet_id, &key).await?)
    };

    let mut dht = DhtConfig::new(key.clone());
    dht.subnet_id = subnet_id;
    // The node's metrics (and the RPC counters the runtime adds) join this
    // registry; /metrics serves it.
    let registry = dht.registry.clone();
    dht.listen = args.host_maddrs.clone();
    dht.announce = args.announce_maddrs.clone();
    dht.initial_peers = args.initial_peers.clone();
    dht.bootstrap_timeout = secs(args.bootstrap_timeout, "--bootstrap_timeout")?;
    dht.client_mode = args.client_mode;
    args.reach.apply(&mut dht, args.relay_server)?;
    if let Some((gate, _)) = &client_watcher {
        dht.stake_gate = Some(gate.clone());
    }
    // Rate limit, stake (one gate shared with the DHT), signature.
    let mut hooks = None;
    let mut stake = None;
    if let Some(parts) = &chain {
        dht.stake_gate = Some(parts.gate.clone());
        stake = Some(StakeAuthorizer::from_gate(parts.gate.clone()));
        hooks = Some(parts.hooks.clone());
    }
    let authorizers = standard_authorizers(key.peer_id(), stake);
    let config = RuntimeConfig {
        dht,
        update_period: secs(args.update_period, "--update_period")?,
        authorizers,
        chain: hooks,
    };
    let node = Runtime::start(config, subnet)
        .await
        .context("starting the node")?;
    let ctx = node.context().clone();
    // Before the ready lines: a signal right after them stops us cleanly.
    let stop = stop_signal()?;
    let metrics = match args.metrics {
        Some(addr) => {
            let server = serve_metrics(addr, registry)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            println!("metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    if args.client_mode {
        println!(
            "mesh-server {} in client mode in subnet {:?} (subnet_id {subnet_id}): it calls and reads, serves nothing",
            ctx.dht.peer_id(),
            args.subnet.name()
        );
    } else {
        println!(
            "mesh-server {} hosting subnet {:?} (subnet_id {subnet_id}); peers reach it with:",
            ctx.dht.peer_id(),
            args.subnet.name()
        );
        for addr in ctx.dht.listen_addrs().await? {
            println!("  --initial_peers {addr}");
        }
    }

    stop.await;
    tracing::info!("shutting down");
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    node.shutdown().await;
    drop(chain);
    drop(client_watcher);
    Ok(())
}
