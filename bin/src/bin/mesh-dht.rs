//! `mesh-dht`: a DHT bootnode daemon, and a small client to store and read
//! records from the command line.
//!
//! ```text
//! mesh-dht --identity_path bootstrap_private_key.key --host_maddrs /ip4/0.0.0.0/tcp/31330
//! mesh-dht store --initial_peers /ip4/127.0.0.1/tcp/31330/p2p/12D3... greeting hello
//! mesh-dht get   --initial_peers /ip4/127.0.0.1/tcp/31330/p2p/12D3... greeting
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mesh_cli::metrics::serve_metrics;
use mesh_cli::reach::ReachArgs;
use mesh_cli::{init_logs, secs, stop_signal};
use mesh_core::{
    Expiration, KeyType, NodeClass, PeerKey, StakeGate, StoreLimits, StoredValue, SubnetId,
};
use mesh_dht::{Dht, DhtConfig, Multiaddr};

/// A mesh DHT node. Without a subcommand it runs a bootnode/DHT server until
/// SIGINT or SIGTERM; `store` and `get` join the DHT as a short-lived client.
#[derive(Parser, Debug)]
#[command(name = "mesh-dht", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store a value (as a short-lived client node) and report how many replicas accepted it.
    Store(StoreArgs),
    /// Read a key (as a short-lived client node) and print what it holds.
    Get(GetArgs),
}

/// Options shared by the daemon and the client subcommands.
#[derive(Args, Debug, Clone)]
struct NetArgs {
    /// The subnet: nodes of different subnets never talk (protocols are /mesh/<subnet_id>/...).
    #[arg(long = "subnet_id", alias = "subnet-id", default_value = "0")]
    subnet_id: SubnetId,
    /// Seconds to wait for the initial peers.
    #[arg(
        long = "bootstrap_timeout",
        alias = "bootstrap-timeout",
        default_value_t = 15.0
    )]
    bootstrap_timeout: f64,
    /// Log as JSON lines instead of text (RUST_LOG sets the level, default info).
    #[arg(long = "log_json", alias = "log-json")]
    log_json: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Peers to join through, each a multiaddr ending in /p2p/<PeerId>
    /// (several may follow one flag). Start-up fails if none of them answers.
    /// Without initial peers the node starts a new DHT.
    #[arg(long = "initial_peers", alias = "initial-peers", num_args = 1.., value_name = "MULTIADDR")]
    initial_peers: Vec<Multiaddr>,
    /// Addresses to listen on (TCP and QUIC multiaddrs).
    #[arg(
        long = "host_maddrs",
        alias = "host-maddrs",
        num_args = 1..,
        value_name = "MULTIADDR",
        default_values_t = ["/ip4/0.0.0.0/tcp/31330".parse::<Multiaddr>().unwrap(), "/ip4/0.0.0.0/udp/31330/quic-v1".parse().unwrap()]
    )]
    host_maddrs: Vec<Multiaddr>,
    /// Addresses to announce to other peers instead of the listen addresses
    /// (e.g. a public IP behind port forwarding).
    #[arg(long = "announce_maddrs", alias = "announce-maddrs", num_args = 1.., value_name = "MULTIADDR")]
    announce_maddrs: Vec<Multiaddr>,
    /// The node's key file: created (mode 0600) if missing, reused if present,
    /// so the PeerId survives restarts. Without it a fresh identity is used.
    #[arg(long = "identity_path", alias = "identity-path", value_name = "PATH")]
    identity_path: Option<PathBuf>,
    /// Key type when the identity file is created.
    #[arg(long = "key_type", alias = "key-type", default_value = "ed25519")]
    key_type: KeyType,
    /// Seconds between routing-table refreshes (also logs table size and stored keys).
    #[arg(
        long = "refresh_period",
        alias = "refresh-period",
        default_value_t = 30.0
    )]
    refresh_period: f64,
    /// Keep stored records in this file (redb) across restarts.
    #[arg(long = "store_path", alias = "store-path", value_name = "PATH")]
    store_path: Option<PathBuf>,
    /// Serve Prometheus metrics on http://<ADDR>/metrics (e.g. 127.0.0.1:9100).
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Largest value stored, in bytes.
    #[arg(long = "max_value_bytes", alias = "max-value-bytes", default_value_t = StoreLimits::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Most entries stored; when full, the earliest-expiring entry of the
    /// publisher holding the most is evicted.
    #[arg(long = "max_records", alias = "max-records", default_value_t = StoreLimits::default().max_records)]
    max_records: usize,
    /// Most bytes stored (keys, subkeys and values, plus 128 bytes an entry).
    #[arg(long = "max_store_bytes", alias = "max-store-bytes", default_value_t = StoreLimits::default().max_bytes)]
    max_store_bytes: usize,
    /// The chain node's JSON-RPC URL: with it only peers staked in
    /// --subnet_id (at --min_class or above) enter the routing table and
    /// store here; reads stay open. Without it every peer is admitted.
    #[arg(
        long = "rpc_url",
        alias = "rpc-url",
        env = "MESH_RPC_URL",
        value_name = "URL"
    )]
    rpc_url: Option<String>,
    /// With --rpc_url: seconds a stake answer (yes or no) is trusted before
    /// the chain is asked again.
    #[arg(
        long = "stake_cache_ttl",
        alias = "stake-cache-ttl",
        default_value_t = 300.0
    )]
    stake_cache_ttl: f64,
    /// With --rpc_url: the least class on chain a peer needs to enter the
    /// routing table and store.
    #[arg(long = "min_class", alias = "min-class", default_value = "registered")]
    min_class: NodeClass,
    /// Longest a stored record may live, in seconds: later expirations are
    /// refused, so nobody squats a key for good.
    #[arg(long = "max_ttl", alias = "max-ttl", value_name = "SECONDS", default_value_t = StoreLimits::default().max_ttl.as_secs_f64())]
    max_ttl: f64,
    /// Relay connections for nodes behind NAT that hold a slot here (bounded:
    /// 256 slots, 128 relayed connections, each up to an hour and 1 GiB).
    /// Bootnodes relay by default; `--relay_server false` turns it off.
    #[arg(long = "relay_server", alias = "relay-server", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    relay_server: bool,
    #[command(flatten)]
    reach: ReachArgs,
}

#[derive(Args, Debug)]
struct StoreArgs {
    #[command(flatten)]
    net: NetArgs,
    /// A node to join through: a multiaddr ending in /p2p/<PeerId>
    /// (repeat the flag for several).
    #[arg(
        long = "initial_peers",
        alias = "initial-peers",
        value_name = "MULTIADDR"
    )]
    initial_peers: Vec<Multiaddr>,
    /// The key.
    key: String,
    /// The value (UTF-8).
    value: String,
    /// Store one subkey of a dictionary instead of a regular value.
    #[arg(long)]
    subkey: Option<String>,
    /// Seconds until the value expires.
    #[arg(long, default_value_t = 3600.0)]
    ttl: f64,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    net: NetArgs,
    /// A node to join through: a multiaddr ending in /p2p/<PeerId>
    /// (repeat the flag for several).
    #[arg(
        long = "initial_peers",
        alias = "initial-peers",
        value_name = "MULTIADDR"
    )]
    initial_peers: Vec<Multiaddr>,
    /// The key.
    key: String,
    /// Ask every closest replica and merge dictionaries, instead of taking the first answer.
    #[arg(long)]
    latest: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run).await,
        Some(Command::Store(a)) => store(a).await,
        Some(Command::Get(a)) => get(a).await,
    }
}

async fn run(args: RunArgs) -> Result<()> {
    init_logs(args.net.log_json);
    let key = match &args.identity_path {
        Some(path) => {
            let (key, created) = PeerKey::load_or_generate(path, args.key_type)
                .with_context(|| format!("identity file {}", path.display()))?;
            if created {
                tracing::info!(path = %path.display(), peer_id = %key.peer_id(), "created a new identity");
            } else {
                tracing::info!(path = %path.display(), peer_id = %key.peer_id(), "loaded identity");
            }
            key
        }
        None => {
            let key = PeerKey::generate(args.key_type)?;
            tracing::warn!(peer_id = %key.peer_id(), "no --identity_path: using a fresh identity that will change on restart");
            key
        }
    };
    let mut config = DhtConfig::new(key);
    config.subnet_id = args.net.subnet_id;
    config.listen = args.host_maddrs.clone();
    config.announce = args.announce_maddrs.clone();
    config.initial_peers = args.initial_peers.clone();
    config.refresh_period = secs(args.refresh_period, "--refresh_period")?;
    config.bootstrap_timeout = secs(args.net.bootstrap_timeout, "--bootstrap_timeout")?;
    config.store_path = args.store_path.clone();
    config.limits.max_value_bytes = args.max_value_bytes;
    config.limits.max_records = args.max_records;
    config.limits.max_bytes = args.max_store_bytes;
    config.limits.max_ttl = secs(args.max_ttl, "--max_ttl")?;
    args.reach.apply(&mut config, args.relay_server)?;
    // Follows finalized blocks to keep the stake cache honest; stops on drop.
    let mut _watcher = None;
    if let Some(url) = &args.rpc_url {
        let client = mesh_chain::ChainClient::connect(url)
            .await
            .with_context(|| {
                format!("cannot reach the chain at {url} (leave out --rpc_url to admit every peer)")
            })?;
        let watcher = mesh_chain::chain_stake_oracle(
            client,
            secs(args.stake_cache_ttl, "--stake_cache_ttl")?,
        );
        config.stake_gate = Some(StakeGate::new(
            watcher.oracle(),
            args.net.subnet_id,
            args.min_class,
        ));
        tracing::info!(%url, subnet_id = %args.net.subnet_id, min_class = %args.min_class,
            "stake gate on: only staked peers enter the routing table and store here");
        _watcher = Some(watcher);
    } else {
        tracing::warn!("no --rpc_url: every peer is admitted (no stake gate)");
    }

    let registry = config.registry.clone();
    let dht = Dht::start(config).await.context("starting the DHT node")?;
    // Before the addresses are printed: a signal right after them stops us cleanly.
    let stop = stop_signal()?;
    let metrics = match args.metrics {
        Some(addr) => {
            let server = serve_metrics(addr, registry)
                .await
                .with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!("metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    println!(
        "mesh-dht {} running; other peers can join with:",
        dht.peer_id()
    );
    for addr in dht.listen_addrs().await? {
        println!("  --initial_peers {addr}");
    }

    stop.await;
    tracing::info!("shutting down");
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    dht.shutdown().await;
    Ok(())
}

async fn client(net: &NetArgs, initial_peers: &[Multiaddr]) -> Result<Dht> {
    init_logs(net.log_json);
    if initial_peers.is_empty() {
        bail!("--initial_peers is required: give at least one /ip4/.../p2p/<PeerId> of a running node");
    }
    let mut config = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
    config.subnet_id = net.subnet_id;
    config.client_mode = true;
    config.initial_peers = initial_peers.to_vec();
    config.bootstrap_timeout = secs(net.bootstrap_timeout, "--bootstrap_timeout")?;
    Dht::start(config).await.context("joining the DHT")
}

async fn store(args: StoreArgs) -> Result<()> {
    let ttl = secs(args.ttl, "--ttl")?;
    let dht = client(&args.net, &args.initial_peers).await?;
    let report = dht
        .store(
            args.key.into_bytes(),
            args.subkey.map(String::into_bytes),
            args.value.into_bytes(),
            Expiration::in_(ttl),
        )
        .await?;
    dht.shutdown().await;
    for r in &report.refused {
        eprintln!("refused by {}: {}", r.peer, r.reason);
    }
    for (p, e) in &report.unreachable {
        eprintln!("unreachable {p}: {e}");
    }
    println!("stored on {} replicas", report.accepted);
    if report.accepted == 0 {
        bail!("no replica accepted the record");
    }
    Ok(())
}

async fn get(args: GetArgs) -> Result<()> {
    let dht = client(&args.net, &args.initial_peers).await?;
    let value = dht.get(args.key.clone().into_bytes(), args.latest).await?;
    dht.shutdown().await;
    let Some(value) = value else {
        eprintln!("key {:?} not found", args.key);
        std::process::exit(1);
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let now = Expiration::now().as_millis() as f64;
    let ttl = |e: Expiration| ((e.as_millis() as f64 - now) / 1000.0).max(0.0);
    match (&value, args.json) {
        (StoredValue::Regular(item), false) => println!("{}", text(&item.value)),
        (StoredValue::Dictionary(d), false) => {
            for (sk, item) in d {
                println!("{}\t{}", text(sk), text(&item.value));
            }
        }
        (StoredValue::Regular(item), true) => println!(
            "{}",
            serde_json::json!({"key": args.key, "value": text(&item.value), "expires_in_s": ttl(item.expiration)})
        ),
        (StoredValue::Dictionary(d), true) => {
            let entries: serde_json::Map<String, serde_json::Value> = d
                .iter()
                .map(|(sk, item)| {
                    (text(sk), serde_json::json!({"value": text(&item.value), "expires_in_s": ttl(item.expiration)}))
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"key": args.key, "dictionary": entries})
            );
        }
    }
    Ok(())
}
