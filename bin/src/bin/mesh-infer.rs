//! `mesh-infer`: ask the inference subnet, stream the answer to the terminal.
//!
//! ```text
//! mesh-infer --initial_peers /ip4/127.0.0.1/tcp/31330/p2p/12D3... --subnet_id 1 \
//!     --identity_path client_private_key.key "What is the capital of France?"
//! ```

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use mesh_cli::client::JoinArgs;
use mesh_subnet_inference::client::InferenceClient;
use mesh_subnet_inference::proto::{generate_request::Prompt, Chat, ChatMessage, GenerateRequest};

/// Ask a mesh inference subnet: joins the DHT as a client, picks the
/// least-loaded server from the heartbeats, streams the tokens to stdout
/// and fails over to another server if one dies mid-stream.
#[derive(Parser, Debug)]
#[command(name = "mesh-infer", version)]
struct Cli {
    /// The prompt (a user message, unless --raw).
    prompt: String,
    #[command(flatten)]
    join: JoinArgs,
    /// A system message before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as raw text instead of a chat message.
    #[arg(long)]
    raw: bool,
    /// Most tokens to generate.
    #[arg(long = "max_tokens", alias = "max-tokens", default_value_t = 128)]
    max_tokens: u32,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold (1 keeps all).
    #[arg(long = "top_p", alias = "top-p", default_value_t = 1.0)]
    top_p: f32,
    /// Keep the k most likely tokens (0 keeps all).
    #[arg(long = "top_k", alias = "top-k", default_value_t = 0)]
    top_k: u32,
    /// Sampler seed (0: a random one).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeat for several).
    #[arg(long)]
    stop: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    mesh_cli::init_logs(false);
    let key = cli.join.key()?;
    let prompt = if cli.raw {
        Prompt::Text(cli.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &cli.system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: cli.prompt.clone(),
        });
        Prompt::Chat(Chat { messages })
    };
    let request = GenerateRequest {
        prompt: Some(prompt),
        max_tokens: cli.max_tokens,
        temperature: cli.temperature,
        top_p: cli.top_p,
        top_k: cli.top_k,
        seed: cli.seed,
        stop: cli.stop.clone(),
    };

    let dht = cli.join.join(key.clone()).await?;
    let client = InferenceClient::new(dht.clone(), Arc::new(key));

    let mut stdout = std::io::stdout();
    let outcome = client
        .generate(request, |token| {
            let _ = stdout.write_all(token.text.as_bytes());
            let _ = stdout.flush();
        })
        .await;
    dht.shutdown().await;
    let outcome = outcome?;
    println!();
    let servers: Vec<String> = outcome.servers.iter().map(|p| p.to_string()).collect();
    eprintln!(
        "{} tokens ({}), first after {:.0} ms, {:.0} ms in all; served by {}",
        outcome.finished.completion_tokens,
        outcome.finished.reason,
        outcome.finished.ttft_ms,
        outcome.finished.total_ms,
        servers.join(" after ")
    );
    Ok(())
}
