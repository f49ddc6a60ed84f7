//! `mesh-bench`: benchmarks of mesh, each printing one JSON line with
//! `--json`. Field names are stable: they are compared side by side with
//! other systems (the Python hivemind DHT of the Hypertensor mesh).
//!
//! ```text
//! mesh-bench dht --peers 32 --keys 300 --value-bytes 128 --json
//! mesh-bench dht --peers 1000 --keys 1000 --transport memory --json
//! mesh-bench rpc --peers 4 --concurrency 8 --calls 2000 --json
//! mesh-bench rpc --peers 4 --concurrency 8 --calls 2000 --no-auth --json
//! mesh-bench pubsub --peers 32 --messages 2000 --json
//! mesh-bench infer --model smollm2 --prompt-tokens 64 --new-tokens 64 --concurrency 8 --json
//! mesh-bench gateway --concurrency 8 --requests 32 --json
//! mesh-bench churn --peers 32 --keys 200 --waves 3 --json
//! ```

mod churn;
mod gateway;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use futures::stream::{self, StreamExt};
use mesh_core::{
    CachedStakeOracle, Expiration, KeyType, NodeClass, PeerId, PeerKey, StakeOracle, StoredValue,
    SubnetId,
};
use mesh_dht::test_utils::FixedOracle;
use mesh_dht::{Dht, DhtConfig, Multiaddr};
use mesh_server::{
    connect, incoming, rpc_protocol, signed, AuthLayer, Authorizer, RateLimitAuthorizer,
    RateLimits, SignResponsesLayer, SignatureAuthorizer, SignedChannel, StakeAuthorizer,
};
use mesh_subnet_echo::proto::echo_client::EchoClient;
use mesh_subnet_echo::proto::echo_server::EchoServer;
use mesh_subnet_echo::proto::SayRequest;
use mesh_subnet_echo::EchoService;
use rand::Rng;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-bench",
    version,
    about = "Benchmarks of mesh; each prints one JSON line with --json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N DHT nodes in this process: store K keys through random peers, read
    /// each back through another random peer.
    Dht(DhtArgs),
    /// N RPC servers (DHT node + echo service) in this process; client
    /// nodes make K unary calls to them round-robin, C at a time, through
    /// every authorizer and signed channels, or through none (`--no-auth`).
    Rpc(RpcArgs),
    /// N nodes in this process, all subscribed to one topic; P of them
    /// publish M messages in all: delivery rate to every subscriber, delivery
    /// latency, duplicates.
    Pubsub(PubsubArgs),
    /// Load the inference engine and generate: prefill and decode rates
    /// (single stream and C concurrent streams), time to first token, load
    /// time and memory.
    Infer(InferArgs),
    /// Streamed chat completions through the OpenAI-compatible gateway and
    /// the same requests through the subnet's own client, on the same
    /// in-process servers: requests/s, time to first token, tokens/s, and
    /// the gateway's overhead.
    Gateway(gateway::GatewayArgs),
    /// N DHT nodes in this process hold K records; W waves each kill a
    /// quarter of the starting nodes: time until every record is back on
    /// `replicas` live nodes, repair traffic, reads during the churn, and
    /// recall after the last wave.
    Churn(churn::ChurnArgs),
}

#[derive(clap::Args, Debug)]
struct InferArgs {
    /// `smollm2` (the file scripts/fetch-models.sh writes) or a GGUF path.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Prompt length in tokens.
    #[arg(long = "prompt-tokens", default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens generated per stream.
    #[arg(long = "new-tokens", default_value_t = 64)]
    new_tokens: usize,
    /// Simultaneous streams (continuous batching).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// cpu, cuda or cuda:N (cuda needs `--features cuda`).
    #[arg(long, default_value = "cpu")]
    backend: mesh_inference::BackendKind,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Prompt tokens processed per engine step across all streams (lower:
    /// earlier first tokens under load, lower aggregate rate).
    #[arg(long = "prefill-budget")]
    prefill_budget: Option<usize>,
    /// Print one JSON line (default: one line per field).
    #[arg(long)]
    json: bool,
}

fn bench_infer(args: InferArgs) -> Result<()> {
    let model_path = match args.model.as_str() {
        "smollm2" => mesh_inference::find_smollm2()?,
        path => path.into(),
    };
    let report = mesh_inference::bench::run(&mesh_inference::bench::BenchArgs {
        model_path: Some(model_path),
        backend: args.backend,
        threads: args.threads,
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        concurrency: args.concurrency.max(1),
        prefill_budget: args.prefill_budget,
    })?;
    let mut json = serde_json::to_value(&report)?;
    if let Some(fields) = json.as_object_mut() {
        fields.insert("system".into(), "mesh".into());
        fields.insert("bench".into(), "infer".into());
    }
    print_report(&json, args.json);
    Ok(())
}

/// One JSON line with `--json`, else one `field  value` line per field.
fn print_report(report: &serde_json::Value, json: bool) {
    if json {
        println!("{report}");
    } else if let Some(fields) = report.as_object() {
        for (k, v) in fields {
            println!("{k:>14}  {v}");
        }
    }
}

#[derive(clap::Args, Debug)]
struct RpcArgs {
    /// Number of server nodes, each its own swarm and identity.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// Number of client nodes making the calls.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Calls in flight at once (all clients together).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Calls made in all (after one warm-up call per client and server).
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Bytes of text each call echoes.
    #[arg(long = "text-bytes", default_value_t = 64)]
    text_bytes: usize,
    /// No authorizers, no signed requests or responses: plain channels.
    #[arg(long = "no-auth")]
    no_auth: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Transport {
    /// TCP on 127.0.0.1 (Noise + Yamux).
    Tcp,
    /// libp2p's in-process memory transport (Noise + Yamux), for many peers.
    Memory,
}

#[derive(clap::Args, Debug)]
struct DhtArgs {
    /// Number of full DHT nodes, each its own swarm and identity.
    #[arg(long, default_value_t = 32)]
    peers: usize,
    /// Number of distinct keys stored and read.
    #[arg(long, default_value_t = 300)]
    keys: usize,
    /// Size of each value in bytes.
    #[arg(long = "value-bytes", default_value_t = 128)]
    value_bytes: usize,
    /// Operations in flight at once. 1 measures latency without queueing
    /// (the Python DHT's published figures are at 1).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Transport between the nodes.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Replicas per key.
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Nodes joining at once during start-up.
    #[arg(long = "join-concurrency", default_value_t = 8)]
    join_concurrency: usize,
    /// Close connections idle for this many seconds. Shorter than a real
    /// node's default (60 s): one process plays every peer, so every open
    /// connection end (~50 KB) is paid N times over in one address space.
    #[arg(long = "idle-timeout", default_value_t = 5.0)]
    idle_timeout: f64,
    /// Run gossipsub on every node too, as subnet nodes do (off: the DHT
    /// alone, as the Python DHT it is compared with).
    #[arg(long)]
    pubsub: bool,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `x` rounded to `d` decimals.
fn round(x: f64, d: i32) -> f64 {
    (x * 10f64.powi(d)).round() / 10f64.powi(d)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn listen(t: Transport) -> Multiaddr {
    match t {
        Transport::Tcp => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        Transport::Memory => format!("/memory/{}", rand::random::<u64>())
            .parse()
            .unwrap(),
    }
}

async fn start_node(args: &DhtArgs, initial: Vec<Multiaddr>) -> Result<(Dht, Multiaddr)> {
    let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
    c.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
    c.listen = vec![listen(args.transport)];
    c.initial_peers = initial;
    c.replicas = args.replicas;
    c.refresh_period = Duration::from_secs(300);
    c.bootstrap_timeout = Duration::from_secs(60);
    // One process plays every peer: per-peer limits would throttle the benchmark, not a peer.
    c.rate_limit = None;
    c.max_connections = 4096;
    c.max_outbound = 4096;
    // Every peer shares 127.0.0.1: per-address limits would throttle the run.
    c.inbound = mesh_dht::InboundLimits {
        max_established: 4096,
        max_pending: 4096,
        max_pending_per_ip: 4096,
        max_established_per_ip: 4096,
        ..Default::default()
    };
    c.idle_connection_timeout = Duration::from_secs_f64(args.idle_timeout);
    c.pubsub.enabled = args.pubsub;
    start_with_addr(c).await
}

/// Starts a node and returns it with the first address it listens on.
async fn start_with_addr(config: DhtConfig) -> Result<(Dht, Multiaddr)> {
    let dht = Dht::start(config).await?;
    let addr = dht
        .listen_addrs()
        .await?
        .into_iter()
        .next()
        .context("node has no address")?;
    Ok((dht, addr))
}

async fn bench_dht(args: DhtArgs) -> Result<()> {
    if args.peers < 2 {
        bail!("--peers must be at least 2 (reads go through a different peer than writes)");
    }
    if args.keys == 0 || args.concurrency == 0 || args.join_concurrency == 0 {
        bail!("--keys, --concurrency and --join-concurrency must be positive");
    }
    if !(args.idle_timeout.is_finite() && args.idle_timeout > 0.0) {
        bail!("--idle-timeout must be a positive number of seconds");
    }

    // Start-up: the first node alone, then the rest joining through random
    // nodes that are already up.
    let t0 = Instant::now();
    let mut nodes: Vec<(Dht, Multiaddr)> = vec![start_node(&args, vec![]).await?];
    while nodes.len() < args.peers {
        let batch = (args.peers - nodes.len()).min(args.join_concurrency);
        let mut rng = rand::thread_rng();
        let joins: Vec<Vec<Multiaddr>> = (0..batch)
            .map(|_| {
                let mut peers: Vec<Multiaddr> = (0..2)
                    .map(|_| nodes[rng.gen_range(0..nodes.len())].1.clone())
                    .collect();
                peers.dedup();
                peers
            })
            .collect();
        let started: Vec<Result<(Dht, Multiaddr)>> = stream::iter(joins)
            .map(|initial| start_node(&args, initial))
            .buffer_unordered(batch)
            .collect()
            .await;
        for s in started {
            nodes.push(s?);
        }
        if nodes.len() % 100 < batch {
            eprintln!(
                "[mesh-bench] {} of {} nodes up after {:.1} s, rss {:.0} MB",
                nodes.len(),
                args.peers,
                t0.elapsed().as_secs_f64(),
                rss_kb("VmRSS:") as f64 / 1024.0
            );
        }
    }
    let startup_s = t0.elapsed().as_secs_f64();
    let dhts: Vec<Dht> = nodes.into_iter().map(|(d, _)| d).collect();

    let value = vec![b'x'; args.value_bytes];
    let expiration = Expiration::in_(Duration::from_secs(3600));
    let plan: Vec<(usize, usize, Vec<u8>)> = {
        let mut rng = rand::thread_rng();
        (0..args.keys)
            .map(|i| {
                let w = rng.gen_range(0..dhts.len());
                let mut r = rng.gen_range(0..dhts.len() - 1);
                if r >= w {
                    r += 1;
                }
                (w, r, format!("bench-key-{i}").into_bytes())
            })
            .collect()
    };

    let t_put = Instant::now();
    let puts: Vec<(f64, bool)> = stream::iter(plan.iter())
        .map(|(w, _, key)| {
            let dht = dhts[*w].clone();
            let (key, value) = (key.clone(), value.clone());
            async move {
                let t = Instant::now();
                let ok = matches!(dht.store(key, None, value, expiration).await, Ok(r) if r.accepted > 0);
                (t.elapsed().as_secs_f64() * 1e3, ok)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let put_s = t_put.elapsed().as_secs_f64();

    let t_get = Instant::now();
    let gets: Vec<(f64, bool)> = stream::iter(plan.iter())
        .map(|(_, r, key)| {
            let dht = dhts[*r].clone();
            let (key, value) = (key.clone(), value.clone());
            async move {
                let t = Instant::now();
                let got = dht.get(key, false).await;
                let ok =
                    matches!(got, Ok(Some(StoredValue::Regular(ref item))) if item.value == value);
                (t.elapsed().as_secs_f64() * 1e3, ok)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let get_s = t_get.elapsed().as_secs_f64();

    let mut connections = 0usize;
    let mut routing = 0usize;
    for d in &dhts {
        let s = d.stats().await?;
        connections += s.connected_peers;
        routing += s.routing_table_size;
    }
    let rss_mb = rss_kb("VmRSS:") as f64 / 1024.0;
    let rss_peak_mb = rss_kb("VmHWM:") as f64 / 1024.0;
    let mut put_ms: Vec<f64> = puts.iter().map(|x| x.0).collect();
    let mut get_ms: Vec<f64> = gets.iter().map(|x| x.0).collect();
    put_ms.sort_by(f64::total_cmp);
    get_ms.sort_by(f64::total_cmp);
    let n = args.keys as f64;
    let out = serde_json::json!({
        "system": "mesh",
        "bench": "dht",
        "peers": args.peers,
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "concurrency": args.concurrency,
        "pubsub": args.pubsub,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "idle_timeout_s": args.idle_timeout,
        "replicas": args.replicas,
        "startup_s": round(startup_s, 3),
        "put_ops_per_s": round(n / put_s, 1),
        "get_ops_per_s": round(n / get_s, 1),
        "put_p50_ms": round(percentile(&put_ms, 0.50), 3),
        "put_p99_ms": round(percentile(&put_ms, 0.99), 3),
        "get_p50_ms": round(percentile(&get_ms, 0.50), 3),
        "get_p99_ms": round(percentile(&get_ms, 0.99), 3),
        "put_success": round(puts.iter().filter(|x| x.1).count() as f64 / n, 4),
        "get_recall": round(gets.iter().filter(|x| x.1).count() as f64 / n, 4),
        "rss_mb": round(rss_mb, 1),
        "connections_per_peer": round(connections as f64 / args.peers as f64, 1),
        "routing_table_per_peer": round(routing as f64 / args.peers as f64, 1),
        "rss_peak_mb": round(rss_peak_mb, 1),
    });
    for d in &dhts {
        d.shutdown().await;
    }
    print_report(&out, args.json);
    Ok(())
}

const RPC_SUBNET: SubnetId = SubnetId::new(1);

async fn rpc_node(key: PeerKey, initial: Vec<Multiaddr>, client_mode: bool) -> Result<Dht> {
    let mut c = DhtConfig::new(key);
    c.subnet_id = RPC_SUBNET;
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.initial_peers = initial;
    c.client_mode = client_mode;
    c.rate_limit = None;
    c.refresh_period = Duration::from_secs(300);
    Ok(Dht::start(c).await?)
}

// A handful of these live in one Vec, cloned per call: boxing would only
// add an allocation to every call.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Echo {
    Plain(EchoClient<Channel>),
    Signed(EchoClient<SignedChannel>),
}

impl Echo {
    async fn say(&mut self, text: String) -> Result<(), tonic::Status> {
        let request = SayRequest { text, delay_ms: 0 };
        match self {
            Echo::Plain(c) => c.say(request).await.map(|_| ()),
            Echo::Signed(c) => c.say(request).await.map(|_| ()),
        }
    }
}

async fn bench_rpc(args: RpcArgs) -> Result<()> {
    if args.peers == 0 || args.clients == 0 || args.concurrency == 0 || args.calls == 0 {
        bail!("--peers, --clients, --concurrency and --calls must be positive");
    }
    let auth = !args.no_auth;
    let server_keys: Vec<PeerKey> = (0..args.peers)
        .map(|_| PeerKey::generate(KeyType::Ed25519))
        .collect::<Result<_, _>>()?;
    let client_keys: Vec<Arc<PeerKey>> = (0..args.clients)
        .map(|_| PeerKey::generate(KeyType::Ed25519).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let staked: HashSet<PeerId> = server_keys
        .iter()
        .map(PeerKey::peer_id)
        .chain(client_keys.iter().map(|k| k.peer_id()))
        .collect();
    // Staked: the bench's own peers, as a chain would say for registered
    // nodes; asked through the same cache a real node uses.
    let oracle: Arc<dyn StakeOracle> = Arc::new(CachedStakeOracle::new(
        FixedOracle::new(staked),
        mesh_core::stake::DEFAULT_STAKE_TTL,
    ));

    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for key in server_keys {
        let signing = Arc::new(key.clone());
        let id = key.peer_id();
        let dht = rpc_node(key, addrs.clone(), false).await?;
        let connections = incoming(&mut dht.streams(), rpc_protocol(RPC_SUBNET))?;
        let echo = EchoServer::new(EchoService::default());
        if auth {
            let unlimited = RateLimits {
                per_second: 1e9,
                burst: 1e9,
                per_minute: u32::MAX,
                per_hour: u32::MAX,
                ..RateLimits::default()
            };
            let layer = AuthLayer::new(vec![
                Arc::new(SignatureAuthorizer::new(id)) as Arc<dyn Authorizer>,
                Arc::new(StakeAuthorizer::new(
                    oracle.clone(),
                    RPC_SUBNET,
                    NodeClass::Registered,
                )),
                Arc::new(RateLimitAuthorizer::new(unlimited)),
            ]);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .layer(SignResponsesLayer::new(signing))
                    .layer(layer)
                    .add_service(echo)
                    .serve_with_incoming(connections),
            );
        } else {
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(echo)
                    .serve_with_incoming(connections),
            );
        }
        addrs.push(
            dht.listen_addrs()
                .await?
                .into_iter()
                .next()
                .context("node has no address")?,
        );
        servers.push((dht, id));
    }
    let mut clients = Vec::new();
    for key in &client_keys {
        clients.push(rpc_node((**key).clone(), addrs.clone(), true).await?);
    }

    // One channel per client and server, servers varying fastest: call i
    // goes to server i mod N.
    let mut echoes = Vec::new();
    for (client, key) in clients.iter().zip(&client_keys) {
        for (_, id) in &servers {
            let channel = connect(
                client.streams(),
                *id,
                rpc_protocol(RPC_SUBNET),
                Duration::from_secs(10),
            );
            echoes.push(if auth {
                Echo::Signed(EchoClient::new(signed(channel, key.clone(), *id)))
            } else {
                Echo::Plain(EchoClient::new(channel))
            });
        }
    }
    let text = "x".repeat(args.text_bytes);
    // Warm-up: connections, streams, the stake cache.
    for echo in &mut echoes {
        echo.say(text.clone())
            .await
            .context("warm-up call failed")?;
    }

    let libp2p = run_calls(&echoes, args.calls, args.concurrency, &text).await;

    // The baseline: the same service through tonic on plain loopback TCP
    // sockets (no libp2p, no Noise, no Yamux, no authorizers), same calls.
    let mut tcp_echoes = Vec::new();
    for _ in 0..args.peers {
        let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())?
            .with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        // Plain TCP authenticates nobody: name a caller, as the libp2p
        // connection does, so the echo service answers the same way.
        let caller = mesh_server::Caller {
            peer_id: client_keys[0].peer_id(),
        };
        let echo = EchoServer::with_interceptor(
            EchoService::default(),
            move |mut request: tonic::Request<()>| {
                request.extensions_mut().insert(caller);
                Ok(request)
            },
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(echo)
                .serve_with_incoming(incoming),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        tcp_echoes.push(Echo::Plain(EchoClient::new(channel)));
    }
    let tcp_echoes: Vec<Echo> = (0..args.clients).flat_map(|_| tcp_echoes.clone()).collect();
    for echo in &mut tcp_echoes.clone() {
        echo.say(text.clone())
            .await
            .context("baseline warm-up call failed")?;
    }
    let tcp = run_calls(&tcp_echoes, args.calls, args.concurrency, &text).await;
    let (elapsed, ms, errors) = libp2p;
    let (tcp_elapsed, tcp_ms, _) = tcp;
    let rss_mb = rss_kb("VmRSS:") as f64 / 1024.0;
    let out = serde_json::json!({
        "system": "mesh",
        "bench": "rpc",
        "peers": args.peers,
        "clients": args.clients,
        "concurrency": args.concurrency,
        "calls": args.calls,
        "auth": auth,
        "calls_per_s": round(args.calls as f64 / elapsed, 1),
        "p50_ms": round(percentile(&ms, 0.50), 3),
        "p99_ms": round(percentile(&ms, 0.99), 3),
        "errors": errors,
        "rss_mb": round(rss_mb, 1),
        "tcp_calls_per_s": round(args.calls as f64 / tcp_elapsed, 1),
        "tcp_p50_ms": round(percentile(&tcp_ms, 0.50), 3),
        "tcp_p99_ms": round(percentile(&tcp_ms, 0.99), 3),
        "p50_vs_tcp": round(percentile(&ms, 0.50) / percentile(&tcp_ms, 0.50), 2),
    });
    for d in clients
        .into_iter()
        .chain(servers.into_iter().map(|(d, _)| d))
    {
        d.shutdown().await;
    }
    print_report(&out, args.json);
    Ok(())
}

/// Makes `calls` calls round-robin over `echoes`, `concurrency` at a time:
/// the elapsed seconds, each call's milliseconds (sorted), the failures.
async fn run_calls(
    echoes: &[Echo],
    calls: usize,
    concurrency: usize,
    text: &str,
) -> (f64, Vec<f64>, usize) {
    let t0 = Instant::now();
    let results: Vec<(f64, bool)> = stream::iter(0..calls)
        .map(|i| {
            let mut echo = echoes[i % echoes.len()].clone();
            let text = text.to_string();
            async move {
                let t = Instant::now();
                let ok = echo.say(text).await.is_ok();
                (t.elapsed().as_secs_f64() * 1e3, ok)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = results.iter().map(|r| r.0).collect();
    ms.sort_by(f64::total_cmp);
    let errors = results.iter().filter(|r| !r.1).count();
    (elapsed, ms, errors)
}

#[derive(clap::Args, Debug)]
struct PubsubArgs {
    /// Number of nodes, each its own swarm and identity; all subscribe.
    #[arg(long, default_value_t = 32)]
    peers: usize,
    /// Messages published in all.
    #[arg(long, default_value_t = 2_000)]
    messages: usize,
    /// Nodes that publish (round-robin).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Bytes of each message (at least 16: publisher, sequence, send time).
    #[arg(long = "message-bytes", default_value_t = 128)]
    message_bytes: usize,
    /// Messages published per second, all publishers together (0: as fast
    /// as the publishers can, which measures the network saturated: queues
    /// fill and gossipsub drops what waits too long).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Transport between the nodes.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Stop waiting for deliveries after this many seconds without one.
    #[arg(long = "idle-timeout", default_value_t = 5.0)]
    idle_timeout: f64,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one subscriber saw.
#[derive(Default)]
struct Received {
    latencies_ms: Vec<f64>,
    duplicates: u64,
    /// Deliveries per message (index = publisher * per_publisher + seq).
    seen: HashSet<u64>,
    last: Option<Instant>,
}

async fn bench_pubsub(args: PubsubArgs) -> Result<()> {
    if args.peers < 2 {
        bail!("--peers must be at least 2 (a publisher and a subscriber)");
    }
    if args.publishers == 0 || args.publishers > args.peers {
        bail!("--publishers must be between 1 and --peers");
    }
    if args.messages == 0 {
        bail!("--messages must be positive");
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        bail!("--rate must be a number of messages per second, 0 for as fast as possible");
    }
    if args.message_bytes < 16 {
        bail!("--message-bytes must be at least 16 (publisher, sequence, send time)");
    }
    if !(args.idle_timeout.is_finite() && args.idle_timeout > 0.0) {
        bail!("--idle-timeout must be a positive number of seconds");
    }
    let topic = mesh_dht::Topic::new("bench")?;
    let start = |initial: Vec<Multiaddr>| async move {
        let mut c = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
        c.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
        c.listen = vec![listen(args.transport)];
        c.initial_peers = initial;
        c.refresh_period = Duration::from_secs(300);
        c.bootstrap_timeout = Duration::from_secs(60);
        c.max_connections = 4096;
        c.max_outbound = 4096;
        // Every peer shares 127.0.0.1: per-address limits would throttle the run.
        c.inbound = mesh_dht::InboundLimits {
            max_established: 4096,
            max_pending: 4096,
            max_pending_per_ip: 4096,
            max_established_per_ip: 4096,
            ..Default::default()
        };
        // One process plays every peer: per-peer limits would throttle the
        // benchmark, not a peer.
        c.rate_limit = None;
        c.pubsub.rate_limit = None;
        c.pubsub.queue_len = 65_536;
        start_with_addr(c).await
    };
    let mut nodes: Vec<(Dht, Multiaddr)> = vec![start(vec![]).await?];
    while nodes.len() < args.peers {
        let via = nodes[rand::thread_rng().gen_range(0..nodes.len())]
            .1
            .clone();
        nodes.push(start(vec![via]).await?);
    }
    let mut subs = Vec::new();
    for (d, _) in &nodes {
        subs.push(d.pubsub().subscribe(&topic).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (d, _) in &nodes {
        while d.pubsub().peers(&topic).await?.is_empty() {
            if Instant::now() > deadline {
                bail!("the topic's mesh did not form within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Two gossipsub heartbeats: the meshes are grafted.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t0 = Instant::now();
    let per_publisher = args.messages.div_ceil(args.publishers) as u64;
    let receivers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut r = Received::default();
                while let Some(m) = sub.recv().await {
                    let now = Instant::now();
                    let publisher = u32::from_be_bytes(m.data[0..4].try_into().unwrap());
                    let seq = u32::from_be_bytes(m.data[4..8].try_into().unwrap());
                    let sent_ns = u64::from_be_bytes(m.data[8..16].try_into().unwrap());
                    let sent = t0 + Duration::from_nanos(sent_ns);
                    r.latencies_ms
                        .push(now.saturating_duration_since(sent).as_secs_f64() * 1e3);
                    if !r
                        .seen
                        .insert(u64::from(publisher) * per_publisher + u64::from(seq))
                    {
                        r.duplicates += 1;
                    }
                    r.last = Some(now);
                }
                r
            })
        })
        .collect();

    let publish_start = Instant::now();
    let mut publish_errors = 0u64;
    for i in 0..args.messages {
        if args.rate > 0.0 {
            let due = publish_start + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let p = i % args.publishers;
        let seq = (i / args.publishers) as u32;
        let mut data = vec![0u8; args.message_bytes];
        data[0..4].copy_from_slice(&(p as u32).to_be_bytes());
        data[4..8].copy_from_slice(&seq.to_be_bytes());
        let sent_ns = t0.elapsed().as_nanos() as u64;
        data[8..16].copy_from_slice(&sent_ns.to_be_bytes());
        if nodes[p].0.pubsub().publish(&topic, data).await.is_err() {
            publish_errors += 1;
        }
    }
    let published = args.messages as u64 - publish_errors;
    // Each message reaches every node but its publisher.
    let expected = published * (args.peers as u64 - 1);
    let idle = Duration::from_secs_f64(args.idle_timeout);
    let deliveries = || {
        nodes
            .iter()
            .map(|(d, _)| d.registry())
            .map(|r| {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(
                    &mut text,
                    &r.lock().unwrap_or_else(|e| e.into_inner()),
                );
                text.lines()
                    .find(|l| l.starts_with("mesh_pubsub_messages_total{outcome=\"delivered\"}"))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let count = deliveries();
        if count >= expected {
            break;
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_mb = rss_kb("VmRSS:") as f64 / 1024.0;
    for (d, _) in &nodes {
        d.shutdown().await;
    }
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    let mut delivered = 0u64;
    let mut last = publish_start;
    for r in receivers {
        let r = r.await?;
        delivered += r.latencies_ms.len() as u64 - r.duplicates;
        duplicates += r.duplicates;
        latencies.extend(r.latencies_ms);
        last = last.max(r.last.unwrap_or(publish_start));
    }
    latencies.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(publish_start).as_secs_f64().max(1e-9);
    let out = serde_json::json!({
        "system": "mesh",
        "bench": "pubsub",
        "peers": args.peers,
        "publishers": args.publishers,
        "messages": args.messages,
        "message_bytes": args.message_bytes,
        "offered_per_s": args.rate,
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "publish_errors": publish_errors,
        "delivered": delivered,
        "expected": expected,
        "delivery_ratio": round(delivered as f64 / expected.max(1) as f64, 4),
        "messages_per_s": round(delivered as f64 / (args.peers as f64 - 1.0) / elapsed, 1),
        "deliveries_per_s": round(delivered as f64 / elapsed, 1),
        "p50_ms": round(percentile(&latencies, 0.50), 3),
        "p99_ms": round(percentile(&latencies, 0.99), 3),
        "duplicates": duplicates,
        "rss_mb": round(rss_mb, 1),
    });
    print_report(&out, args.json);
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Dht(args) => rt.block_on(bench_dht(args)),
        Command::Rpc(args) => rt.block_on(bench_rpc(args)),
        Command::Pubsub(args) => rt.block_on(bench_pubsub(args)),
        Command::Infer(args) => bench_infer(args),
        Command::Gateway(args) => rt.block_on(gateway::bench_gateway(args)),
        Command::Churn(args) => rt.block_on(churn::bench_churn(args)),
    }
}
