//! `mesh-bench gateway`: streamed chat completions through the
//! OpenAI-compatible gateway against the same requests through the
//! subnet's own client, in one run, on the same servers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mesh_core::{KeyType, PeerKey};
use mesh_dht::{Dht, DhtConfig};
use mesh_gateway::{Gateway, GatewayConfig};
use mesh_server::{Runtime, RuntimeConfig};
use mesh_subnet_inference::client::InferenceClient;
use mesh_subnet_inference::proto::{generate_request, Chat, ChatMessage, GenerateRequest};
use mesh_subnet_inference::{InferenceInfo, InferenceSubnet};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{percentile, print_report, round, rss_kb};

const PROMPT: &str = "Write a short poem about the sea.";

/// Options of `mesh-bench gateway`.
#[derive(clap::Args, Debug)]
pub(crate) struct GatewayArgs {
    /// Inference servers in this process (each its own engine).
    #[arg(long, default_value_t = 1)]
    servers: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests per path (gateway, direct).
    #[arg(long, default_value_t = 16)]
    requests: usize,
    /// Tokens generated per request (greedy).
    #[arg(long, default_value_t = 32)]
    tokens: u32,
    /// Print one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One request's timings.
struct Sample {
    ttft_ms: f64,
    tokens: usize,
}

pub(crate) async fn bench_gateway(args: GatewayArgs) -> Result<()> {
    if args.servers == 0 || args.concurrency == 0 || args.requests == 0 {
        bail!("--servers, --concurrency and --requests must be at least 1");
    }
    let model = mesh_inference::find_smollm2()?;
    let mut servers = Vec::new();
    let mut first = None;
    for _ in 0..args.servers {
        let mut config = mesh_inference::EngineConfig::new(&model);
        config.max_batch = args.concurrency.clamp(1, 16);
        let engine = Arc::new(mesh_inference::Engine::start(config)?);
        let mut dht = DhtConfig::new(PeerKey::generate(KeyType::Ed25519)?);
        dht.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
        dht.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        dht.initial_peers = first.iter().cloned().collect();
        let config = RuntimeConfig {
            dht,
            update_period: Duration::from_secs(2),
            authorizers: vec![],
            chain: None,
        };
        let node = Runtime::start(config, Arc::new(InferenceSubnet::new(engine, None))).await?;
        if first.is_none() {
            first = node.context().dht.listen_addrs().await?.into_iter().next();
        }
        servers.push(node);
    }
    let key = PeerKey::generate(KeyType::Ed25519)?;
    let mut dht = DhtConfig::new(key.clone());
    dht.subnet_id = mesh_dht::test_utils::TEST_SUBNET;
    dht.client_mode = true;
    dht.initial_peers = first.iter().cloned().collect();
    let dht = Dht::start(dht).await?;
    let key = Arc::new(key);
    let direct = InferenceClient::new(dht.clone(), key.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let model_name = loop {
        let alive = mesh_server::alive_peers::<InferenceInfo>(&dht).await?;
        if alive.len() == args.servers {
            break alive[0].info.model.clone();
        }
        if Instant::now() > deadline {
            bail!("the servers' heartbeats did not appear");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut config = GatewayConfig::new("127.0.0.1:0".parse()?);
    config.rate_limit = None;
    let gateway = Gateway::start(config, dht.clone(), key).await?;
    let addr = gateway.addr();

    let request = GenerateRequest {
        prompt: Some(generate_request::Prompt::Chat(Chat {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: PROMPT.into(),
            }],
        })),
        max_tokens: args.tokens,
        ..Default::default()
    };
    let body = json!({
        "model": model_name,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.tokens,
        "temperature": 0,
        "stream": true,
    })
    .to_string();

    // Warm both paths (connections, the engine's first batch).
    for _ in 0..2 {
        direct_once(&direct, request.clone()).await?;
        gateway_once(addr, &body).await?;
    }
    let (direct_samples, direct_wall) = run_many(args.concurrency, args.requests, {
        let direct = direct.clone();
        let request = request.clone();
        move || {
            let direct = direct.clone();
            let request = request.clone();
            async move { direct_once(&direct, request).await }
        }
    })
    .await?;
    let (gateway_samples, gateway_wall) = run_many(args.concurrency, args.requests, {
        let body = body.clone();
        move || {
            let body = body.clone();
            async move { gateway_once(addr, &body).await }
        }
    })
    .await?;

    let stats = |samples: &[Sample], wall: Duration| {
        let mut ttft: Vec<f64> = samples.iter().map(|s| s.ttft_ms).collect();
        ttft.sort_by(f64::total_cmp);
        let tokens: usize = samples.iter().map(|s| s.tokens).sum();
        (
            samples.len() as f64 / wall.as_secs_f64(),
            percentile(&ttft, 0.5),
            percentile(&ttft, 0.99),
            tokens as f64 / wall.as_secs_f64(),
        )
    };
    let (rps, p50, p99, tps) = stats(&gateway_samples, gateway_wall);
    let (d_rps, d_p50, d_p99, d_tps) = stats(&direct_samples, direct_wall);
    let report = json!({
        "system": "mesh",
        "bench": "gateway",
        "servers": args.servers,
        "concurrency": args.concurrency,
        "requests": args.requests,
        "max_tokens": args.tokens,
        "requests_per_s": round(rps, 2),
        "ttft_ms_p50": round(p50, 1),
        "ttft_ms_p99": round(p99, 1),
        "tokens_per_s": round(tps, 1),
        "direct_requests_per_s": round(d_rps, 2),
        "direct_ttft_ms_p50": round(d_p50, 1),
        "direct_ttft_ms_p99": round(d_p99, 1),
        "direct_tokens_per_s": round(d_tps, 1),
        "ttft_overhead_p50": round(p50 / d_p50 - 1.0, 3),
        "rss_mb": round(rss_kb("VmHWM:") as f64 / 1024.0, 1),
    });
    print_report(&report, args.json);
    gateway.shutdown().await;
    dht.shutdown().await;
    for s in servers {
        s.shutdown().await;
    }
    Ok(())
}

/// `requests` calls of `call`, `concurrency` at a time; their samples and
/// the wall time.
async fn run_many<F, Fut>(
    concurrency: usize,
    requests: usize,
    call: F,
) -> Result<(Vec<Sample>, Duration)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Sample>> + Send,
{
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let left = left.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while left
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                samples.push(call().await?);
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok((samples, started.elapsed()))
}

async fn direct_once(client: &InferenceClient, request: GenerateRequest) -> Result<Sample> {
    let started = Instant::now();
    let mut first = None;
    let outcome = client
        .generate(request, |_| {
            first.get_or_insert_with(|| started.elapsed());
        })
        .await?;
    Ok(Sample {
        ttft_ms: first.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1000.0,
        tokens: outcome.ids.len(),
    })
}

/// One streamed chat completion over plain HTTP/1.0 (the body is the
/// server-sent events, delimited by the connection's end).
async fn gateway_once(addr: std::net::SocketAddr, body: &str) -> Result<Sample> {
    let started = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    sock.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut lines = BufReader::new(sock).lines();
    let status = lines.next_line().await?.context("no answer")?;
    if !status.contains(" 200") {
        bail!("the gateway answered {status}");
    }
    let (mut first, mut tokens) = (None, 0);
    while let Some(line) = lines.next_line().await? {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: serde_json::Value = serde_json::from_str(data)?;
        if chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            first.get_or_insert_with(|| started.elapsed());
            tokens += 1;
        }
    }
    Ok(Sample {
        ttft_ms: first.unwrap_or_else(|| started.elapsed()).as_secs_f64() * 1000.0,
        tokens,
    })
}
