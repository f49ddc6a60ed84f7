//! # mesh-gateway
//!
//! An OpenAI-compatible HTTP gateway to the inference subnet. It joins the
//! subnet as a client (its key should be a registered client PeerId, so the
//! servers' stake authorizers admit it) and serves, on a local address:
//!
//! - `POST /v1/chat/completions` (the model's chat template; `max_tokens`,
//!   `temperature`, `top_p`, `seed`, `stop`, `n=1`; `stream` as server-sent
//!   `chat.completion.chunk` events ending in `data: [DONE]`; `usage`),
//! - `POST /v1/completions` (a raw prompt), `POST /v1/embeddings`,
//! - `GET /v1/models` (what the live servers advertise in their heartbeats),
//!   `GET /health`, `GET /metrics` (Prometheus),
//! - `GET /v1/nodes` (the live servers and their load) and
//!   `GET /v1/dht/{key}` (a key's merged value), a small read API for
//!   front-ends,
//! - `GET /`: a chat page that uses only the API above.
//!
//! Requests go through [`InferenceClient`]: the least-loaded server first,
//! failing over mid-stream to the next (the stream continues where it
//! was). Errors come in OpenAI's JSON shape with the status clients expect
//! ([`ApiError`]); a client that disconnects drops the generation, which
//! cancels it on the server.
//!
//! ```no_run
//! # async fn demo(dht: mesh_dht::Dht, key: std::sync::Arc<mesh_core::PeerKey>) -> Result<(), mesh_gateway::GatewayError> {
//! let config = mesh_gateway::GatewayConfig::new("127.0.0.1:8000".parse().unwrap());
//! let gateway = mesh_gateway::Gateway::start(config, dht, key).await?;
//! println!("OpenAI API on http://{}/v1", gateway.addr());
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use mesh_core::{PeerKey, RateLimit, StoredValue, TokenBucket};
use mesh_dht::Dht;
use mesh_server::heartbeat::Heartbeat;
use mesh_subnet_inference::client::{ClientError, InferenceClient, Outcome};
use mesh_subnet_inference::proto::{self, generate_request, Chat, ChatMessage};
use mesh_subnet_inference::InferenceInfo;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod error;
mod metrics;
pub mod openai;

pub use error::ApiError;
use metrics::GatewayMetrics;
use openai::{
    ChatRequest, CompletionRequest, EmbeddingInput, EmbeddingRequest, PromptInput, Sampling, Usage,
};

/// The name `/v1/models` and `/v1/embeddings` use for the embedding model.
pub const EMBEDDING_MODEL: &str = "all-MiniLM-L6-v2";

/// Tokens generated when a request does not say.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// How the gateway serves.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen (keep it on 127.0.0.1 unless API keys are set).
    pub listen: SocketAddr,
    /// Accepted `Authorization: Bearer` keys (`None`: no key needed).
    pub api_keys: Option<ApiKeys>,
    /// Requests per key (or for everyone, without keys).
    pub rate_limit: Option<RateLimit>,
    /// `Access-Control-Allow-Origin` to send (`None`: no CORS headers).
    pub cors_origin: Option<HeaderValue>,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
}

impl GatewayConfig {
    /// No keys, 10 requests/s with bursts of 20, no CORS, 1 MiB bodies.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            api_keys: None,
            rate_limit: Some(RateLimit {
                per_second: 10.0,
                burst: 20.0,
            }),
            cors_origin: None,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// API keys, each with a name for logs and metrics.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_key: HashMap<String, String>,
}

impl ApiKeys {
    /// Parses a keys file: one key per line, optionally `NAME KEY`; blank
    /// lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        let mut by_key = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (name, key) = match (parts.next(), parts.next(), parts.next()) {
                (Some(key), None, None) => (format!("key-{}", n + 1), key),
                (Some(name), Some(key), None) => (name.to_string(), key),
                _ => {
                    return Err(GatewayError::Keys(format!(
                        "line {}: want `KEY` or `NAME KEY`",
                        n + 1
                    )))
                }
            };
            if key.len() < 16 {
                return Err(GatewayError::Keys(format!(
                    "line {}: a key needs at least 16 characters",
                    n + 1
                )));
            }
            by_key.insert(key.to_string(), name);
        }
        if by_key.is_empty() {
            return Err(GatewayError::Keys("the file holds no key".into()));
        }
        Ok(Self { by_key })
    }

    /// Reads and parses a keys file.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Keys(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn name(&self, key: &str) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }
}

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API keys file is unusable.
    #[error("API keys: {0}")]
    Keys(String),
}

/// An HTTP server this crate started (the gateway, or a metrics endpoint):
/// it serves until [`shutdown`](Self::shutdown) or until it is dropped.
#[must_use = "the server stops when this is dropped"]
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `router` on `listener` (axum) until shut down or dropped.
    fn spawn(listener: TcpListener, router: Router, what: &'static str) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!("the {what} HTTP server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            cancel,
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish, and waits.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `registry` as Prometheus text on `http://<addr>/metrics` (the
/// daemons' metrics endpoint) until the returned server is shut down or
/// dropped.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(addr).await?;
    HttpServer::spawn(listener, metrics_router(registry), "metrics")
}

/// A running gateway: it serves until [`shutdown`](Self::shutdown) or
/// until it is dropped.
#[must_use = "the gateway stops when this is dropped"]
#[derive(Debug)]
pub struct Gateway {
    server: HttpServer,
}

impl Gateway {
    /// Binds `config.listen` and serves the subnet `dht` is in, calling it
    /// with `key` (the DHT's own key). The gateway's metrics join the DHT's
    /// registry, which `GET /metrics` serves.
    pub async fn start(
        config: GatewayConfig,
        dht: Dht,
        key: Arc<PeerKey>,
    ) -> Result<Self, GatewayError> {
        let bind = |source| GatewayError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind)?;
        let registry = dht.registry();
        let metrics = GatewayMetrics::new(&mut registry.lock().unwrap_or_else(|e| e.into_inner()));
        let state = Arc::new(Shared {
            client: InferenceClient::new(dht.clone(), key),
            dht,
            registry,
            config: config.clone(),
            buckets: Mutex::new(HashMap::new()),
            servers: tokio::sync::Mutex::new(None),
            metrics,
        });
        let router = router(state, config.max_body_bytes);
        let server = HttpServer::spawn(listener, router, "gateway").map_err(bind)?;
        tracing::info!(addr = %server.addr(), "gateway serving the OpenAI API");
        Ok(Self { server })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops accepting, lets open requests finish, and waits.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// How long a heartbeat read serves requests before the DHT is read again.
const SERVERS_FRESH_FOR: Duration = Duration::from_secs(1);

struct Shared {
    client: InferenceClient,
    dht: Dht,
    registry: Arc<Mutex<Registry>>,
    config: GatewayConfig,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    servers: tokio::sync::Mutex<Option<(Instant, Vec<Heartbeat<InferenceInfo>>)>>,
    metrics: GatewayMetrics,
}

type AppState = Arc<Shared>;

fn router(state: AppState, max_body: usize) -> Router {
    let metrics = metrics_router(state.registry.clone());
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/nodes", get(nodes))
        .route("/v1/dht/{key}", get(dht_key))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
        .merge(metrics)
}

// ---- access ----------------------------------------------------------------

impl Shared {
    /// The caller's key is one of ours and within its rate; returns its name.
    fn admit(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let name = match &self.config.api_keys {
            None => "anonymous".to_string(),
            Some(keys) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                let Some(given) = given else {
                    return Err(ApiError::unauthorized(
                        "no API key: send `Authorization: Bearer <key>`",
                    ));
                };
                match keys.name(given) {
                    Some(name) => name.to_string(),
                    None => {
                        return Err(ApiError::unauthorized(
                            "that API key is not one of this gateway's",
                        ))
                    }
                }
            }
        };
        if let Some(limit) = self.config.rate_limit {
            let now = Instant::now();
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let ok = buckets
                .entry(name.clone())
                .or_insert_with(|| TokenBucket::full(limit, now))
                .try_take(limit, now);
            if !ok {
                return Err(ApiError::rate_limited(
                    "rate_limit_exceeded",
                    format!(
                        "over this key's rate limit ({} requests/s, bursts of {})",
                        limit.per_second, limit.burst
                    ),
                ));
            }
        }
        Ok(name)
    }

    /// The live servers (read at most once a second).
    async fn servers(&self) -> Result<Vec<Heartbeat<InferenceInfo>>, ApiError> {
        let mut cached = self.servers.lock().await;
        if let Some((at, servers)) = cached.as_ref() {
            // A cached heartbeat that expired since is asked for again (it
            // may have been renewed, or its server may be gone).
            let now = mesh_core::Expiration::now();
            if at.elapsed() < SERVERS_FRESH_FOR && servers.iter().all(|h| h.expiration > now) {
                return Ok(servers.clone());
            }
        }
        let servers = self.client.servers().await.map_err(ApiError::from)?;
        *cached = Some((Instant::now(), servers.clone()));
        Ok(servers)
    }

    /// The models live servers serve (generation models, then the
    /// embedding model when a server embeds).
    async fn models(&self) -> Result<Vec<String>, ApiError> {
        let servers = self.servers().await?;
        let mut models: Vec<String> = servers.iter().map(|s| s.info.model.clone()).collect();
        models.sort();
        models.dedup();
        if servers.iter().any(|s| s.info.embeddings) {
            models.push(EMBEDDING_MODEL.to_string());
        }
        Ok(models)
    }

    /// 503 when no server is alive, 404 when none serves `model`.
    async fn check_model(&self, model: &str, embedding: bool) -> Result<(), ApiError> {
        let models = self.models().await?;
        if models.is_empty() {
            return Err(ApiError::unavailable(
                "no inference server is alive in the subnet",
            ));
        }
        let known = if embedding {
            model == EMBEDDING_MODEL && models.iter().any(|m| m == EMBEDDING_MODEL)
        } else {
            model != EMBEDDING_MODEL && models.iter().any(|m| m == model)
        };
        if known {
            Ok(())
        } else {
            Err(ApiError::unknown_model(model, &models))
        }
    }

    /// Counts the answer and turns an error into its JSON response.
    fn respond(&self, route: &'static str, result: Result<Response, ApiError>) -> Response {
        let status = match &result {
            Ok(r) => r.status(),
            Err(e) => {
                self.metrics.error(e.label());
                e.status
            }
        };
        self.metrics.request(route, status);
        result.unwrap_or_else(IntoResponse::into_response)
    }
}

async fn cors(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(origin) = state.config.cors_origin.clone() else {
        return next.run(request).await;
    };
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("the request body is too large: {e}"))
        } else {
            ApiError::bad_request(format!("unreadable request body: {e}"))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request: {e}")))
}

// ---- pages and reads --------------------------------------------------------

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn health(State(state): State<AppState>) -> Response {
    match state.servers().await {
        Ok(servers) if !servers.is_empty() => {
            Json(json!({ "status": "ok", "servers": servers.len() })).into_response()
        }
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "no_servers", "servers": 0 })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /metrics`: `registry` in Prometheus' text format. The gateway serves
/// it beside its API; mesh's other binaries serve it alone.
pub fn metrics_router(registry: Arc<Mutex<Registry>>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { metrics_text(&registry) }
        }),
    )
}

fn metrics_text(registry: &Mutex<Registry>) -> Response {
    let mut body = String::new();
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    if encode(&mut body, &registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route: the gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /v1/nodes, /v1/dht/{key}, /health and /metrics")
}

async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        state.admit(&headers)?;
        let data: Vec<openai::Model> = state
            .models()
            .await?
            .into_iter()
            .map(|id| openai::Model {
                id,
                object: "model",
                created: 0,
                owned_by: "mesh",
            })
            .collect();
        Ok(Json(json!({ "object": "list", "data": data })).into_response())
    }
    .await;
    state.respond("models", result)
}

async fn nodes(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let result = async {
        state.admit(&headers)?;
        let servers = state.servers().await?;
        let now = mesh_core::Expiration::now();
        let data: Vec<serde_json::Value> = servers
            .into_iter()
            .filter(|h| h.expiration > now)
            .map(|h| {
                json!({
                    "peer_id": h.peer_id.to_base58(),
                    "model": h.info.model,
                    "backend": h.info.backend,
                    "max_batch": h.info.max_batch,
                    "free_slots": h.info.free_slots,
                    "queued": h.info.queued,
                    "embeddings": h.info.embeddings,
                    "version": h.info.version,
                    "expires_in_s": h.expiration.as_millis().saturating_sub(now.as_millis()) as f64 / 1000.0,
                })
            })
            .collect();
        Ok(Json(json!({ "object": "list", "data": data })).into_response())
    }
    .await;
    state.respond("nodes", result)
}

async fn dht_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(key): UrlPath<String>,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let value = state
            .dht
            .get(key.clone().into_bytes(), true)
            .await
            .map_err(|e| ApiError::unavailable(format!("reading the DHT: {e}")))?;
        let Some(value) = value else {
            return Err(ApiError::not_found(format!("no live value under {key:?}")));
        };
        let entry = |bytes: &[u8], expiration: mesh_core::Expiration| {
            json!({
                "value": std::str::from_utf8(bytes).ok(),
                "bytes": bytes.len(),
                "expiration_ms": expiration.as_millis(),
            })
        };
        let body = match value {
            StoredValue::Regular(item) => json!({
                "key": key,
                "kind": "value",
                "value": entry(&item.value, item.expiration),
            }),
            StoredValue::Dictionary(dict) => {
                let subkeys: serde_json::Map<String, serde_json::Value> = dict
                    .iter()
                    .map(|(subkey, item)| {
                        (
                            String::from_utf8_lossy(subkey).into_owned(),
                            entry(&item.value, item.expiration),
                        )
                    })
                    .collect();
                json!({ "key": key, "kind": "dictionary", "subkeys": subkeys })
            }
        };
        Ok(Json(body).into_response())
    }
    .await;
    state.respond("dht", result)
}

// ---- generation -------------------------------------------------------------

/// The subnet request for OpenAI's sampling fields.
fn generate_request(
    prompt: generate_request::Prompt,
    sampling: &Sampling,
) -> Result<proto::GenerateRequest, ApiError> {
    if let Some(n) = sampling.n {
        if n != 1 {
            return Err(ApiError::bad_request("only n=1 is served"));
        }
    }
    let max_tokens = sampling
        .max_completion_tokens
        .or(sampling.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(ApiError::bad_request("max_tokens must be at least 1"));
    }
    let temperature = sampling.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_request("temperature must be within 0 and 2"));
    }
    let top_p = sampling.top_p.unwrap_or(1.0);
    if !(top_p.is_finite() && top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(
            "top_p must be within 0 (excluded) and 1",
        ));
    }
    let stop = sampling
        .stop
        .clone()
        .map(openai::Stop::into_vec)
        .unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::bad_request("at most 4 stop strings"));
    }
    Ok(proto::GenerateRequest {
        prompt: Some(prompt),
        max_tokens,
        temperature,
        top_p,
        top_k: 0,
        seed: sampling.seed.unwrap_or(0),
        stop,
    })
}

/// A piece of a generation, in order: tokens, then its end.
enum Piece {
    Token(proto::Token),
    Done(Result<Outcome, ClientError>),
}

type GenerateFuture = Pin<Box<dyn Future<Output = Result<Outcome, ClientError>> + Send>>;

/// A generation as a stream of [`Piece`]s. Dropping it drops the call,
/// which cancels the generation on the server.
struct Generation {
    tokens: Arc<Mutex<VecDeque<proto::Token>>>,
    call: Option<GenerateFuture>,
    done: Option<Result<Outcome, ClientError>>,
}

impl Generation {
    fn start(client: InferenceClient, model: String, request: proto::GenerateRequest) -> Self {
        let tokens = Arc::new(Mutex::new(VecDeque::new()));
        let sink = tokens.clone();
        let call = Box::pin(async move {
            client
                .generate_on(Some(&model), request, |t| {
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back(t.clone());
                })
                .await
        });
        Self {
            tokens,
            call: Some(call),
            done: None,
        }
    }
}

impl Stream for Generation {
    type Item = Piece;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Piece>> {
        if let Some(call) = self.call.as_mut() {
            if let Poll::Ready(result) = call.as_mut().poll(cx) {
                self.call = None;
                self.done = Some(result);
            }
        }
        let next = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        match next {
            Some(token) => Poll::Ready(Some(Piece::Token(token))),
            None => match self.done.take() {
                Some(result) => Poll::Ready(Some(Piece::Done(result))),
                None if self.call.is_none() => Poll::Ready(None),
                None => Poll::Pending,
            },
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// What a finished generation tells a caller besides its text: the servers
/// that served it, last one first in charge.
fn served_by(outcome: &Outcome) -> serde_json::Value {
    json!({
        "servers": outcome.servers.iter().map(|p| p.to_base58()).collect::<Vec<_>>(),
        "ttft_ms": outcome.finished.ttft_ms,
        "total_ms": outcome.finished.total_ms,
    })
}

#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let req: ChatRequest = parse(body)?;
        if req.messages.is_empty() {
            return Err(ApiError::bad_request("messages must not be empty"));
        }
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            messages.push(ChatMessage {
                role: m.role.clone(),
                content: m.content.text().map_err(ApiError::bad_request)?,
            });
        }
        let prompt = generate_request::Prompt::Chat(Chat { messages });
        let request = generate_request(prompt, &req.sampling)?;
        state.check_model(&req.model, false).await?;
        run(&state, Shape::Chat, req.model, request, &req.sampling).await
    }
    .await;
    state.respond("chat", result)
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let req: CompletionRequest = parse(body)?;
        let prompt = match req.prompt {
            PromptInput::One(p) => p,
            PromptInput::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptInput::Many(_) => return Err(ApiError::bad_request("send one prompt")),
        };
        let mut sampling = req.sampling.clone();
        // OpenAI's completions default to 16 tokens.
        if sampling.max_tokens.is_none() && sampling.max_completion_tokens.is_none() {
            sampling.max_tokens = Some(16);
        }
        let request = generate_request(generate_request::Prompt::Text(prompt), &sampling)?;
        state.check_model(&req.model, false).await?;
        run(&state, Shape::Text, req.model, request, &sampling).await
    }
    .await;
    state.respond("completions", result)
}

/// Runs a generation: one JSON answer, or server-sent chunks. Errors before
/// the first token are answered with their status; later ones end the
/// stream with an error event.
async fn run(
    state: &AppState,
    shape: Shape,
    model: String,
    request: proto::GenerateRequest,
    sampling: &Sampling,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut generation = Generation::start(state.client.clone(), model.clone(), request);
    let first = generation.next().await;
    if let Some(Piece::Done(Err(e))) = first {
        return Err(e.into());
    }
    state.metrics.first_token(started.elapsed());
    let id = response_id(match shape {
        Shape::Chat => "chatcmpl",
        Shape::Text => "cmpl",
    });
    let created = now_unix();
    if !sampling.stream.unwrap_or(false) {
        let mut pieces = futures::stream::iter(first).chain(generation);
        let mut outcome = None;
        while let Some(piece) = pieces.next().await {
            if let Piece::Done(result) = piece {
                outcome = Some(result.map_err(ApiError::from)?);
            }
        }
        let outcome = outcome.ok_or_else(|| ApiError::upstream("the generation ended early"))?;
        state.metrics.tokens(&outcome.finished);
        let usage = Usage::new(
            outcome.finished.prompt_tokens,
            outcome.finished.completion_tokens,
        );
        let reason = openai::finish_reason(&outcome.finished.reason);
        let body = match shape {
            Shape::Chat => json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": outcome.text },
                    "finish_reason": reason,
                }],
                "usage": usage,
                "mesh": served_by(&outcome),
            }),
            Shape::Text => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{
                    "index": 0, "text": outcome.text, "logprobs": null, "finish_reason": reason,
                }],
                "usage": usage,
                "mesh": served_by(&outcome),
            }),
        };
        return Ok(Json(body).into_response());
    }

    let include_usage = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let chunk = move |delta: serde_json::Value, reason: Option<&str>| -> serde_json::Value {
        match shape {
            Shape::Chat => json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": reason }],
            }),
            Shape::Text => json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "choices": [{
                    "index": 0,
                    "text": delta.get("content").and_then(|c| c.as_str()).unwrap_or(""),
                    "logprobs": null,
                    "finish_reason": reason,
                }],
            }),
        }
    };
    let state = state.clone();
    let opening = match shape {
        Shape::Chat => Some(chunk(json!({ "role": "assistant", "content": "" }), None)),
        Shape::Text => None,
    };
    let pieces = futures::stream::iter(first).chain(generation);
    let events = futures::stream::iter(opening.map(|c| event(&c)))
        .chain(pieces.flat_map(move |piece| {
            let events: Vec<Event> = match piece {
                Piece::Token(token) => {
                    if token.text.is_empty() {
                        Vec::new()
                    } else {
                        vec![event(&chunk(json!({ "content": token.text }), None))]
                    }
                }
                Piece::Done(Ok(outcome)) => {
                    state.metrics.tokens(&outcome.finished);
                    let reason = openai::finish_reason(&outcome.finished.reason);
                    let mut last = chunk(json!({}), Some(reason));
                    last["mesh"] = served_by(&outcome);
                    let mut events = vec![event(&last)];
                    if include_usage {
                        let mut usage = chunk(json!({}), None);
                        usage["choices"] = json!([]);
                        usage["usage"] = json!(Usage::new(
                            outcome.finished.prompt_tokens,
                            outcome.finished.completion_tokens,
                        ));
                        events.push(event(&usage));
                    }
                    events.push(Event::default().data("[DONE]"));
                    events
                }
                Piece::Done(Err(e)) => {
                    let e = ApiError::from(e);
                    state.metrics.error(e.label());
                    vec![event(&e.body())]
                }
            };
            futures::stream::iter(events)
        }))
        .map(Ok::<Event, std::convert::Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

// ---- embeddings ---------------------------------------------------------------

async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let req: EmbeddingRequest = parse(body)?;
        // The official SDKs ask for base64 (little-endian f32s) by default.
        let as_base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "encoding_format is \"float\" or \"base64\", not {other:?}"
                )))
            }
        };
        let texts = match req.input {
            EmbeddingInput::One(t) => vec![t],
            EmbeddingInput::Many(v) => v,
        };
        if texts.is_empty() || texts.len() > 256 {
            return Err(ApiError::bad_request("send 1 to 256 inputs"));
        }
        state.check_model(&req.model, true).await?;
        let servers: Vec<_> = state
            .servers()
            .await?
            .into_iter()
            .filter(|s| s.info.embeddings)
            .collect();
        let mut failures = Vec::new();
        for server in servers {
            let mut rpc = state.client.rpc(server.peer_id);
            let call = rpc.embed(proto::EmbedRequest {
                texts: texts.clone(),
            });
            match call.await {
                Ok(reply) => {
                    let data: Vec<serde_json::Value> = reply
                        .into_inner()
                        .vectors
                        .into_iter()
                        .enumerate()
                        .map(|(index, v)| {
                            let embedding = if as_base64 {
                                let bytes: Vec<u8> =
                                    v.values.iter().flat_map(|x| x.to_le_bytes()).collect();
                                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                            } else {
                                json!(v.values)
                            };
                            json!({ "object": "embedding", "index": index, "embedding": embedding })
                        })
                        .collect();
                    return Ok(Json(json!({
                        "object": "list",
                        "data": data,
                        "model": req.model,
                        "usage": { "prompt_tokens": 0, "total_tokens": 0 },
                    }))
                    .into_response());
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    return Err(ApiError::bad_request(status.message()));
                }
                Err(status) => failures.push((server.peer_id, status)),
            }
        }
        Err(ClientError::AllFailed(failures).into())
    }
    .await;
    state.respond("embeddings", result)
}
