//! `mesh devnet`: a whole local subnet with one command.
//!
//! 1. starts the dev chain (`mesh-chain-node --dev`, state in a temp dir);
//! 2. creates and activates a subnet (//Alice owns it and every node: she
//!    is the dev chain's funded coldkey);
//! 3. writes a bootnode key and one key per node under `--dir`/keys, and
//!    gives every node its own hotkey (`//Alice//devnet//<i>`, funded by
//!    Alice) — coldkey and hotkey differ, as the pallet requires;
//! 4. registers and activates the nodes (node 1 carries the bootnode's
//!    PeerId, so the stake-gated servers admit it);
//! 5. runs the bootnode in this process and the nodes as `mesh server`
//!    processes on 127.0.0.1 with the reference echo subnet (or, with
//!    `--subnet inference`, the inference subnet: SmolLM2 on every node,
//!    MiniLM embeddings on the first, and an OpenAI-compatible gateway in
//!    this process whose key is node 1's client PeerId), logs in
//!    `--dir`/logs;
//! 6. waits until every node's heartbeat is in the DHT and the first
//!    epoch's consensus has landed on chain, prints what runs where, keeps
//!    reporting each epoch's consensus, and stops everything on Ctrl-C.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mesh_chain::devnode::{find_node_binary, DevNode, DevNodeOptions};
use mesh_chain::{Amount, ChainClient, HotkeyChain, Keypair, RegisterNode, SignerSource};
use mesh_core::consensus::{ConsensusChain, Submission};
use mesh_core::{KeyType, PeerId, PeerKey, SubnetId};
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use mesh_server::heartbeat::alive_peers;
use tokio::process::{Child, Command};

use crate::server::Hosted;
use crate::{init_logs, secs, stop_signal};

/// Options of `mesh devnet`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevnetArgs {
    /// The subnet the nodes run: echo, or inference (the model from
    /// scripts/fetch-models.sh, and the OpenAI-compatible gateway).
    #[arg(long, value_enum, default_value_t = Hosted::Echo)]
    pub subnet: Hosted,
    /// With --subnet inference: where the gateway serves HTTP (0: a free port).
    #[arg(long = "gateway_port", alias = "gateway-port", default_value_t = 8000)]
    pub gateway_port: u16,
    /// Nodes to register and run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub nodes: u32,
    /// Where keys and logs go; a previous devnet's keys and logs there are replaced.
    #[arg(long, default_value = "mesh-devnet")]
    pub dir: PathBuf,
    /// First port: the bootnode listens on it, node i on base_port + i and
    /// serves metrics on base_port + 100 + i. 0 picks free ports.
    #[arg(long = "base_port", alias = "base-port", default_value_t = 31330)]
    pub base_port: u16,
    /// The chain's JSON-RPC port (0: a free one).
    #[arg(
        long = "chain_rpc_port",
        alias = "chain-rpc-port",
        default_value_t = 9944
    )]
    pub chain_rpc_port: u16,
    /// Milliseconds between blocks; an epoch is 10 blocks.
    #[arg(long = "block_millis", alias = "block-millis", default_value_t = 500)]
    pub block_millis: u64,
    /// Seconds between a node's heartbeats.
    #[arg(long = "update_period", alias = "update-period", default_value_t = 3.0)]
    pub update_period: f64,
    /// Share of an epoch within which nodes attest. The design's 15 % is
    /// 1.5 blocks of a 10-block dev epoch, too tight for a dev chain.
    #[arg(long = "attest_window", alias = "attest-window", default_value_t = 0.5)]
    pub attest_window: f64,
    /// Give up when the first consensus has not landed after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// The `mesh-chain-node` binary (default: $MESH_CHAIN_NODE, then the build output).
    #[arg(long = "chain_binary", alias = "chain-binary")]
    pub chain_binary: Option<PathBuf>,
}

/// The inference devnet's gateway: its key until it starts, then it and its DHT node.
#[derive(Default)]
struct GatewaySlot {
    key: Option<PeerKey>,
    /// The chain the gateway checks stake on.
    chain_url: String,
    running: Option<(mesh_gateway::Gateway, Dht)>,
}

/// One node of the devnet.
struct Node {
    index: u32,
    node_id: u32,
    peer_id: PeerId,
    port: u16,
    metrics: u16,
    log: PathBuf,
    child: Child,
}

/// Run the devnet until Ctrl-C (or SIGTERM).
pub async fn run(args: DevnetArgs) -> Result<()> {
    init_logs(false);
    if !(0.0..=1.0).contains(&args.attest_window) {
        bail!("--attest_window is a share of an epoch, 0 to 1");
    }
    let timeout = secs(args.timeout, "--timeout")?;
    let binary = match &args.chain_binary {
        Some(path) => path.clone(),
        None => find_node_binary().context("the devnet runs the dev chain")?,
    };
    let options = DevNodeOptions {
        block_millis: args.block_millis,
        binary: Some(binary),
        rpc_port: (args.chain_rpc_port != 0).then_some(args.chain_rpc_port),
        ..Default::default()
    };
    println!("starting the dev chain ...");
    let chain = tokio::task::spawn_blocking(move || DevNode::start_with(options))
        .await?
        .context("starting mesh-chain-node")?;
    println!(
        "chain: {} (a block every {} ms, epochs of 10 blocks)",
        chain.url(),
        args.block_millis
    );

    let interrupted = stop_signal()?;
    let mut nodes = Vec::new();
    let mut bootnode = None;
    let mut gateway = GatewaySlot::default();
    let outcome = tokio::select! {
        r = async {
            let (boot, subnet_id, client, key) = setup(&args, &chain, &mut nodes).await?;
            let boot = bootnode.insert(boot);
            gateway.key = key;
            gateway.chain_url = chain.url().to_string();
            watch(&args, subnet_id, &client, boot, &mut nodes, timeout, &mut gateway).await
        } => r,
        () = interrupted => Ok(()),
    };
    println!("stopping ...");
    if let Some((gateway, dht)) = gateway.running {
        gateway.shutdown().await;
        dht.shutdown().await;
    }
    for node in &mut nodes {
        stop(node).await;
    }
    if let Some(boot) = bootnode {
        boot.shutdown().await;
    }
    drop(chain);
    println!(
        "devnet stopped; keys and logs stay in {}",
        args.dir.display()
    );
    outcome
}

/// A port from `base + offset`, or a free one when `base` is 0.
fn port(base: u16, offset: u16) -> Result<u16> {
    if base != 0 {
        return base
            .checked_add(offset)
            .context("--base_port leaves no room for every node's ports");
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn dev_key(uri: &str) -> Result<Keypair> {
    Ok(SignerSource::Phrase(uri.to_owned()).keypair()?)
}

/// Chain, subnet, keys, registrations, the bootnode and the node processes.
async fn setup(
    args: &DevnetArgs,
    chain: &DevNode,
    nodes: &mut Vec<Node>,
) -> Result<(Dht, SubnetId, ChainClient, Option<PeerKey>)> {
    // The model first: a missing file fails in the first second.
    let model = match args.subnet {
        Hosted::Echo => None,
        Hosted::Inference => Some(mesh_inference_model()?),
    };
    let client = ChainClient::connect(chain.url()).await?;
    let alice = dev_key("//Alice")?;
    let subnet_id = client.create_subnet(&alice, "devnet", true).await?;
    println!("subnet {subnet_id} registered and activated (owner //Alice)");

    let keys = args.dir.join("keys");
    let logs = args.dir.join("logs");
    fresh_dir(&keys)?;
    fresh_dir(&logs)?;

    let boot_key = PeerKey::generate(KeyType::Ed25519)?;
    boot_key.write_file(&keys.join("bootstrap_private_key.key"), true)?;
    let mut config = DhtConfig::new(boot_key);
    config.subnet_id = subnet_id;
    config.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", port(args.base_port, 0)?).parse()?];
    // The bootnode admits staked peers only, like the nodes: an unstaked
    // client may read through it but not store (answers cached 2 s: the
    // nodes register right after it starts).
    let oracle = mesh_core::stake::CachedStakeOracle::new(
        mesh_chain::ChainStakeOracle::new(client.clone()),
        Duration::from_secs(2),
    );
    config.stake_gate = Some(mesh_core::StakeGate::new(
        std::sync::Arc::new(oracle),
        subnet_id,
        mesh_core::NodeClass::Registered,
    ));
    let boot = Dht::start(config).await.context("starting the bootnode")?;
    let boot_addr: Multiaddr = boot
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("the bootnode listens nowhere")?;
    println!("bootnode: {boot_addr}");
    // The gateway calls the subnet as node 1's client.
    let gateway_key = match args.subnet {
        Hosted::Echo => None,
        Hosted::Inference => {
            let key = PeerKey::generate(KeyType::Ed25519)?;
            key.write_file(&keys.join("gateway.key"), true)?;
            Some(key)
        }
    };

    for i in 1..=args.nodes {
        let key = PeerKey::generate(KeyType::Ed25519)?;
        let key_path = keys.join(format!("node-{i}.key"));
        key.write_file(&key_path, true)?;
        let hotkey_uri = format!("//Alice//devnet//{i}");
        let hotkey = dev_key(&hotkey_uri)?;
        let hotkey_account = hotkey.public_key().to_account_id();
        // The hotkey pays the fees of its proposals and attestations.
        client
            .transfer(&alice, &hotkey_account, Amount::tokens(1_000))
            .await?;
        let registration = RegisterNode {
            subnet_id,
            hotkey: hotkey_account,
            peer_id: key.peer_id(),
            bootnode_peer_id: if i == 1 {
                boot.peer_id()
            } else {
                PeerId::random()
            },
            client_peer_id: match (&gateway_key, i) {
                (Some(key), 1) => key.peer_id(),
                _ => PeerId::random(),
            },
            bootnode: (i == 1).then(|| boot_addr.to_string()),
            delegate_reward_rate: 0,
            stake_to_be_added: Amount::tokens(100),
            unique: None,
            non_unique: None,
            max_burn_amount: Amount::tokens(1),
        };
        let node_id = client.register_node(&alice, &registration).await?;
        client.activate_node(&alice, subnet_id, node_id).await?;
        println!("node {i}: registered as subnet node {node_id}, activated");

        let (port, metrics) = (
            port(args.base_port, i as u16)?,
            port(args.base_port, 100 + i as u16)?,
        );
        let log = logs.join(format!("node-{i}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("server").args(["--subnet", args.subnet.name()]);
        if let Some((model, minilm)) = &model {
            command.arg("--model").arg(model).args(["--max_batch", "4"]);
            if let (1, Some(dir)) = (i, minilm) {
                command.arg("--embed_model").arg(dir);
            }
        }
        let child = command
            .args(["--subnet_id", &subnet_id.to_string()])
            .args(["--subnet_node_id", &node_id.to_string()])
            .arg("--identity_path")
            .arg(&key_path)
            .args(["--host_maddrs", &format!("/ip4/127.0.0.1/tcp/{port}")])
            .args(["--initial_peers", &boot_addr.to_string()])
            .args(["--rpc_url", chain.url()])
            .args(["--update_period", &args.update_period.to_string()])
            .args(["--attest_window", &args.attest_window.to_string()])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            // The hotkey's secret goes by environment, never on the command line.
            .env("PHRASE", &hotkey_uri)
            .env_remove("PRIVATE_KEY")
            .env_remove("MESH_KEY_FILE")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting a mesh server process")?;
        nodes.push(Node {
            index: i,
            node_id,
            peer_id: key.peer_id(),
            port,
            metrics,
            log,
            child,
        });
    }
    Ok((boot, subnet_id, client, gateway_key))
}

/// The SmolLM2 file, and the MiniLM directory when it is there too.
fn mesh_inference_model() -> Result<(PathBuf, Option<PathBuf>)> {
    let model = mesh_inference::find_smollm2().context(
        "the inference devnet serves SmolLM2: fetch it first with scripts/fetch-models.sh all \
         (scripts/devnet.sh --subnet inference does)",
    )?;
    let minilm = mesh_inference::models_dir().join("all-minilm-l6-v2");
    Ok((
        model,
        minilm.join("model.safetensors").is_file().then_some(minilm),
    ))
}

/// Fails when a node process has exited.
fn check_alive(nodes: &mut [Node]) -> Result<()> {
    for node in nodes {
        if let Some(status) = node.child.try_wait()? {
            bail!(
                "node {} exited ({status}); see {}",
                node.index,
                node.log.display()
            );
        }
    }
    Ok(())
}

fn describe(submission: &Submission) -> String {
    format!(
        "proposed by node {} with scores for {} node(s), attested by {:?}",
        submission.validator,
        submission.scores.len(),
        submission.attested_by
    )
}

/// Wait for the heartbeats and the first consensus; then report each epoch.
async fn watch(
    args: &DevnetArgs,
    subnet_id: SubnetId,
    client: &ChainClient,
    boot: &Dht,
    nodes: &mut [Node],
    timeout: Duration,
    gateway: &mut GatewaySlot,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want = nodes.len();
    loop {
        check_alive(nodes)?;
        // Any subnet's heartbeats: only who published them matters here.
        let alive = alive_peers::<serde_json::Value>(boot)
            .await
            .unwrap_or_default();
        if nodes
            .iter()
            .all(|n| alive.iter().any(|h| h.peer_id == n.peer_id))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} nodes published heartbeats within {timeout:?}; see the logs in {}",
                alive.len(),
                args.dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("\nall {want} nodes are up and see each other (heartbeats in the DHT):");
    println!("  node  subnet_node_id  peer id                                               rpc/dht address                     metrics                                log");
    for n in nodes.iter() {
        println!(
            "  {:<4}  {:<14}  {:<52}  {:<34}  {:<37}  {}",
            n.index,
            n.node_id,
            n.peer_id.to_string(),
            format!("/ip4/127.0.0.1/tcp/{}", n.port),
            format!("http://127.0.0.1:{}/metrics", n.metrics),
            n.log.display()
        );
    }
    if let Some(key) = gateway.key.take() {
        let chain_url = gateway.chain_url.clone();
        gateway.running = Some(start_gateway(args, subnet_id, boot, key, &chain_url).await?);
    }
    println!("waiting for the first epoch's consensus (nodes become validators two epochs after activation) ...");

    // Any account reads; this one never signs here.
    let reader = HotkeyChain::new(client.clone(), dev_key("//Alice")?);
    let mut next = client.epoch_info(subnet_id).await?.epoch;
    let mut landed = false;
    loop {
        check_alive(nodes)?;
        let epoch = client.epoch_info(subnet_id).await?.epoch;
        // An epoch is reported once it is over: its attestations are all in.
        while next < epoch {
            if let Some(s) = reader.submission(subnet_id, next).await? {
                if !landed {
                    println!("\nfirst consensus landed: epoch {next} {}", describe(&s));
                    println!("devnet ready: chain, bootnode and {want} nodes running. Ctrl-C stops everything.");
                    landed = true;
                } else {
                    println!("epoch {next}: {}", describe(&s));
                }
            }
            next += 1;
        }
        if !landed && Instant::now() > deadline {
            bail!(
                "no consensus landed within {timeout:?}; see the logs in {}",
                args.dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(args.block_millis.max(100))).await;
    }
}

/// The OpenAI-compatible gateway in this process, as node 1's client; prints
/// how to call it.
async fn start_gateway(
    args: &DevnetArgs,
    subnet_id: SubnetId,
    boot: &Dht,
    key: PeerKey,
    chain_url: &str,
) -> Result<(mesh_gateway::Gateway, Dht)> {
    let join = crate::client::JoinArgs {
        initial_peers: boot.listen_addrs().await?,
        subnet_id,
        identity_path: None,
        bootstrap_timeout: 15.0,
        rpc_url: Some(chain_url.to_string()),
    };
    let dht = join.join(key.clone()).await?;
    let listen = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, args.gateway_port));
    let gateway = mesh_gateway::Gateway::start(
        mesh_gateway::GatewayConfig::new(listen),
        dht.clone(),
        std::sync::Arc::new(key),
    )
    .await?;
    let base = format!("http://{}", gateway.addr());
    let models = mesh_server::heartbeat::alive_peers::<mesh_subnet_inference::InferenceInfo>(&dht)
        .await
        .unwrap_or_default();
    let model = models
        .first()
        .map(|h| h.info.model.clone())
        .unwrap_or_else(|| "(see /v1/models)".into());
    println!("\ngateway: {base}/ (a chat page; OpenAI's API under {base}/v1)");
    println!("  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\");
    println!("    -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}]}}'");
    println!("  python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{base}/v1\", api_key=\"none\"); \\");
    println!("    print(c.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hi\"}}]).choices[0].message.content)'");
    Ok((gateway, dht))
}

/// SIGTERM, then up to 15 s for a clean exit, then SIGKILL.
async fn stop(node: &mut Node) {
    if let Some(pid) = node.child.id() {
        // SAFETY: a signal to our own child process.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(Duration::from_secs(15), node.child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("node {} exited with {status}", node.index),
        _ => {
            eprintln!("node {} did not stop in 15 s: killing it", node.index);
            let _ = node.child.kill().await;
        }
    }
}
