//! # mesh-subnet-inference
//!
//! The reference inference subnet: a real LLM ([`mesh_inference`], burn)
//! served over mesh RPC, written only against `mesh-server`'s public API.
//!
//! - **Service** `mesh.inference.Inference` (`proto/inference.proto`):
//!   server-streaming `Generate` (one chunk per token, then a summary) and
//!   unary `Embed` (servers started with an embedding model). A caller that
//!   goes away cancels its generation: the engine drops the sequence at its
//!   next step.
//! - **Heartbeat** [`InferenceInfo`]: model, backend, batch slots free, queue
//!   length, whether it embeds.
//! - **Score**: every alive server that serves a model scores
//!   [`ALIVE_SCORE`], so honest nodes agree.
//! - **Client** [`client::InferenceClient`]: reads the heartbeats, picks the
//!   least-loaded server, streams tokens, and fails over to the next server
//!   when one dies mid-stream (see [`client`] for how the stream continues).
//!
//! `mesh-server --subnet inference` hosts it; `mesh-infer` is the client CLI.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use libp2p::PeerId;
use mesh_inference::embed::MiniLm;
use mesh_inference::{backend::Cpu, ChatMessage, Engine, Event, GenerateRequest, Prompt};
use mesh_server::heartbeat::Heartbeat;
use mesh_server::runtime::HookFuture;
use mesh_server::{Subnet, SubnetContext};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
#[cfg(feature = "test-utils")]
pub mod test_utils;

/// Generated messages, client and server of `mesh.inference`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("mesh.inference");
}

/// The name `mesh-server --subnet` knows this subnet by.
pub const NAME: &str = "inference";

/// The score of an alive server (1.0 with 18 decimals).
pub const ALIVE_SCORE: u128 = 1_000_000_000_000_000_000;

/// Most tokens one request may ask for.
pub const MAX_TOKENS: u32 = 2_048;

/// What an inference server publishes in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferenceInfo {
    /// The model served (`general.name` of its file).
    pub model: String,
    /// Where it runs (`cpu`, `cuda:0`).
    pub backend: String,
    /// Sequences it decodes together.
    pub max_batch: usize,
    /// Batch slots free now.
    pub free_slots: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Whether `Embed` is served.
    pub embeddings: bool,
    /// The server's software version.
    pub version: String,
}

/// Longest text `Embed` takes, in bytes: far more than the 512 tokens the
/// model reads (a token is rarely more than a word).
pub const MAX_EMBED_TEXT_BYTES: usize = 32 * 1024;

/// The inference subnet on one node: its engine and, optionally, an
/// embedding model.
pub struct InferenceSubnet {
    engine: Arc<Engine>,
    embedder: Option<Arc<MiniLm<Cpu>>>,
}

impl InferenceSubnet {
    /// Serve `engine`, and `Embed` with `embedder` when given.
    pub fn new(engine: Arc<Engine>, embedder: Option<Arc<MiniLm<Cpu>>>) -> Self {
        Self { engine, embedder }
    }

    /// The tonic service (for hosting it outside the runtime, e.g. in tests).
    pub fn service(&self) -> proto::inference_server::InferenceServer<InferenceService> {
        proto::inference_server::InferenceServer::new(InferenceService {
            engine: self.engine.clone(),
            embedder: self.embedder.clone(),
        })
    }
}

impl Subnet for InferenceSubnet {
    type Info = InferenceInfo;

    fn routes(&self, _ctx: &SubnetContext) -> tonic::service::Routes {
        tonic::service::Routes::new(self.service())
    }

    fn heartbeat(&self) -> InferenceInfo {
        let info = self.engine.info();
        let load = self.engine.load();
        InferenceInfo {
            model: info.model.clone(),
            backend: info.backend.clone(),
            max_batch: info.max_batch,
            free_slots: load.free_slots,
            queued: load.queued,
            embeddings: self.embedder.is_some(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    fn score<'a>(
        &'a self,
        _epoch: u32,
        alive: &'a [Heartbeat<InferenceInfo>],
    ) -> HookFuture<'a, Vec<(PeerId, u128)>> {
        Box::pin(async move { scores(alive) })
    }
}

/// [`ALIVE_SCORE`] for every alive server that serves a model, each once.
pub fn scores(alive: &[Heartbeat<InferenceInfo>]) -> Vec<(PeerId, u128)> {
    let mut peers: Vec<PeerId> = alive
        .iter()
        .filter(|h| !h.info.model.is_empty())
        .map(|h| h.peer_id)
        .collect();
    peers.sort();
    peers.dedup();
    peers.into_iter().map(|p| (p, ALIVE_SCORE)).collect()
}

/// The RPC service over an engine.
pub struct InferenceService {
    engine: Arc<Engine>,
    embedder: Option<Arc<MiniLm<Cpu>>>,
}

/// The engine's request for an RPC request; `InvalidArgument` when malformed.
pub fn engine_request(req: proto::GenerateRequest) -> Result<GenerateRequest, Status> {
    use proto::generate_request::Prompt as P;
    let prompt = match req.prompt {
        Some(P::Text(text)) => Prompt::Text(text),
        Some(P::Chat(chat)) if !chat.messages.is_empty() => Prompt::Chat(
            chat.messages
                .into_iter()
                .map(|m| ChatMessage::new(m.role, m.content))
                .collect(),
        ),
        Some(P::Tokens(t)) if !t.ids.is_empty() => Prompt::Tokens(t.ids),
        _ => return Err(Status::invalid_argument("the request has no prompt")),
    };
    if req.max_tokens == 0 || req.max_tokens > MAX_TOKENS {
        return Err(Status::invalid_argument(format!(
            "max_tokens must be 1 to {MAX_TOKENS}, got {}",
            req.max_tokens
        )));
    }
    if !(req.temperature.is_finite() && req.temperature >= 0.0) {
        return Err(Status::invalid_argument("temperature must be 0 or more"));
    }
    if !(req.top_p.is_finite() && (0.0..=1.0).contains(&req.top_p)) {
        return Err(Status::invalid_argument("top_p must be within 0 and 1"));
    }
    let mut params = mesh_inference::SamplingParams::greedy(req.max_tokens as usize);
    params.temperature = req.temperature;
    params.top_p = if req.top_p == 0.0 { 1.0 } else { req.top_p };
    params.top_k = req.top_k as usize;
    params.seed = req.seed;
    params.stop = req.stop;
    Ok(GenerateRequest { prompt, params })
}

fn status_of(e: mesh_inference::Error) -> Status {
    match e {
        mesh_inference::Error::Busy => Status::resource_exhausted(format!("server busy: {e}")),
        e @ (mesh_inference::Error::PromptTooLong { .. }
        | mesh_inference::Error::PromptTooLarge { .. }) => Status::out_of_range(e.to_string()),
        e => Status::invalid_argument(e.to_string()),
    }
}

#[tonic::async_trait]
impl proto::inference_server::Inference for InferenceService {
    type GenerateStream =
        Pin<Box<dyn Stream<Item = Result<proto::GenerateChunk, Status>> + Send + 'static>>;

    async fn generate(
        &self,
        request: Request<proto::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let caller = mesh_server::caller(&request);
        let req = engine_request(request.into_inner())?;
        // Tokenizing is CPU work: off the async worker threads.
        let engine = self.engine.clone();
        let mut generation = tokio::task::spawn_blocking(move || engine.generate(req))
            .await
            .map_err(|e| Status::internal(format!("engine: {e}")))?
            .map_err(status_of)?;
        tracing::debug!(?caller, "generation started");
        // Dropping this stream (the caller went away) drops `generation`,
        // which cancels the sequence in the engine.
        let stream = async_stream(move |tx| async move {
            use proto::generate_chunk::Item;
            while let Some(event) = generation.next().await {
                let item = match event {
                    Event::Token { id, text } => Ok(Item::Token(proto::Token { id, text })),
                    Event::Done(f) => Ok(Item::Done(proto::Finished {
                        reason: serde_name(&f.reason),
                        prompt_tokens: f.prompt_tokens as u32,
                        completion_tokens: f.completion_tokens as u32,
                        ttft_ms: f.ttft_ms,
                        total_ms: f.total_ms,
                    })),
                    Event::Error(e) => Err(Status::internal(format!("engine: {e}"))),
                };
                let end = !matches!(item, Ok(Item::Token(_)));
                let chunk = item.map(|item| proto::GenerateChunk { item: Some(item) });
                if tx.send(chunk).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn embed(
        &self,
        request: Request<proto::EmbedRequest>,
    ) -> Result<Response<proto::EmbedReply>, Status> {
        let Some(embedder) = self.embedder.clone() else {
            return Err(Status::unimplemented("this server has no embedding model"));
        };
        let texts = request.into_inner().texts;
        if texts.is_empty() || texts.len() > 256 {
            return Err(Status::invalid_argument("send 1 to 256 texts"));
        }
        // The model reads 512 tokens of a text; a longer one is refused
        // before tokenizing it (WordPiece on one huge word is quadratic).
        if let Some((i, t)) = texts
            .iter()
            .enumerate()
            .find(|(_, t)| t.len() > MAX_EMBED_TEXT_BYTES)
        {
            return Err(Status::invalid_argument(format!(
                "text {i} is {} bytes; at most {MAX_EMBED_TEXT_BYTES} a text",
                t.len()
            )));
        }
        let vectors = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embedder.embed(&refs)
        })
        .await
        .map_err(|e| Status::internal(format!("embedding failed: {e}")))?;
        Ok(Response::new(proto::EmbedReply {
            vectors: vectors
                .into_iter()
                .map(|values| proto::Vector { values })
                .collect(),
        }))
    }
}

fn serde_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A stream fed by a task through a small bounded channel; the task stops
/// when the stream is dropped (its sends fail).
fn async_stream<T, F, Fut>(produce: F) -> Pin<Box<dyn Stream<Item = T> + Send>>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
