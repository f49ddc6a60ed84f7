//! The serving engine: one thread owns the model and runs a continuous-batching
//! loop; callers submit requests through a bounded queue and read tokens from
//! a per-request stream.
//!
//! Each step of the loop is one forward pass over every active sequence:
//! sequences still reading their prompt contribute a chunk of it (within a
//! per-step budget), the others their last sampled token. The weights are
//! read once per step however many sequences there are, which is where
//! batching wins. A new request joins at the next step; a finished or
//! abandoned one (its receiver dropped) leaves at the next step.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backend::{self, BackendKind};
use crate::gguf::GgufFile;
use crate::model::{KvCache, Llama, LlamaConfig, LoadReport};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, Tokenizer, Utf8Stream};
use crate::Error;

/// How to start an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Path of the GGUF model file.
    pub model_path: PathBuf,
    /// Where to run.
    pub backend: BackendKind,
    /// Run on the CPU when the requested backend cannot start.
    pub fallback_to_cpu: bool,
    /// Worker threads for the CPU kernels (default: all cores).
    pub threads: Option<usize>,
    /// Most sequences decoded together; more wait in the queue.
    pub max_batch: usize,
    /// Requests that may wait for a batch slot before `generate` answers `Busy`.
    pub queue_capacity: usize,
    /// Longest sequence (prompt + generated), capped by the model's context.
    pub max_context: usize,
    /// Prompt tokens processed per step across all sequences (prefill chunking).
    pub prefill_budget: usize,
}

impl EngineConfig {
    /// Defaults for a model file: CPU, 16 sequences per batch.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            backend: BackendKind::Cpu,
            fallback_to_cpu: false,
            threads: None,
            max_batch: 16,
            queue_capacity: 256,
            max_context: 2048,
            prefill_budget: 512,
        }
    }
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Prompt {
    /// Raw text; control-token strings such as `<|im_start|>` are honoured.
    Text(String),
    /// Messages formatted with the model's chat template, ending with the
    /// assistant's turn.
    Chat(Vec<ChatMessage>),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// A generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling and stopping.
    pub params: SamplingParams,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_tokens` reached, or the context is full.
    Length,
    /// A stop string appeared (it is not part of the text).
    Stop,
    /// The model produced its end-of-sequence token.
    Eos,
}

/// Summary sent at the end of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Why it ended.
    pub reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (including a final end-of-sequence token).
    pub completion_tokens: usize,
    /// Milliseconds from submission to the first generated token.
    pub ttft_ms: f64,
    /// Milliseconds from submission to the end.
    pub total_ms: f64,
}

/// One item of a generation stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A generated token and the text it completes (may be empty while a
    /// multi-byte character or a possible stop string is incomplete).
    Token {
        /// Token id.
        id: u32,
        /// Text released with this token.
        text: String,
    },
    /// The last event of a stream.
    Done(Finished),
    /// The engine failed; the stream ends.
    Error(String),
}

/// A finished generation, collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Generated token ids.
    pub ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Summary.
    pub finished: Finished,
}

/// The stream of one request. Dropping it cancels the request.
#[derive(Debug)]
pub struct Generation {
    rx: mpsc::Receiver<Event>,
}

impl Generation {
    /// The next event, `None` after the last.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
    /// The next event, blocking the thread (not for use inside async code).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }
    /// The underlying receiver.
    pub fn into_receiver(self) -> mpsc::Receiver<Event> {
        self.rx
    }
    /// Reads the whole stream, blocking the thread.
    pub fn collect_blocking(mut self) -> Result<Completion, Error> {
        let mut sink = Collected::default();
        while let Some(ev) = self.blocking_next() {
            if let Some(done) = sink.take(ev) {
                return done;
            }
        }
        Err(Error::Stopped)
    }
    /// Reads the whole stream.
    pub async fn collect(mut self) -> Result<Completion, Error> {
        let mut sink = Collected::default();
        while let Some(ev) = self.next().await {
            if let Some(done) = sink.take(ev) {
                return done;
            }
        }
        Err(Error::Stopped)
    }
}

/// A stream being collected into a [`Completion`].
#[derive(Default)]
struct Collected {
    ids: Vec<u32>,
    text: String,
}

impl Collected {
    /// Take one event; the result once the stream has ended.
    fn take(&mut self, ev: Event) -> Option<Result<Completion, Error>> {
        match ev {
            Event::Token { id, text } => {
                self.ids.push(id);
                self.text.push_str(&text);
                None
            }
            Event::Done(finished) => Some(Ok(Completion {
                ids: std::mem::take(&mut self.ids),
                text: std::mem::take(&mut self.text),
                finished,
            })),
            Event::Error(e) => Some(Err(Error::Engine(e))),
        }
    }
}

/// What an engine runs, for reports and heartbeats.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// `general.name` of the model file.
    pub model: String,
    /// The backend actually in use (`cpu`, `cuda:0`).
    pub backend: String,
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Loading figures.
    pub load: LoadReport,
    /// CPU worker threads.
    pub threads: usize,
    /// Most sequences per batch.
    pub max_batch: usize,
}

/// Current load, for heartbeats and schedulers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Load {
    /// Sequences being decoded.
    pub active: usize,
    /// Requests waiting for a batch slot.
    pub queued: usize,
    /// Batch slots free now.
    pub free_slots: usize,
    /// Forward passes run since the engine started (one per batch step).
    pub steps: u64,
}

struct Job {
    tokens: Vec<u32>,
    params: SamplingParams,
    events: mpsc::Sender<Event>,
    submitted: Instant,
}

#[derive(Default)]
struct Shared {
    active: AtomicUsize,
    queued: AtomicUsize,
    steps: AtomicU64,
}

/// A loaded model serving requests. Cheap to share behind an `Arc`; dropping
/// the last handle stops the engine thread.
pub struct Engine {
    tx: Option<std_mpsc::SyncSender<Job>>,
    shared: Arc<Shared>,
    tokenizer: Arc<Tokenizer>,
    info: EngineInfo,
    max_context: usize,
    /// Longer prompt text cannot fit `max_context` tokens (computed once:
    /// it scans the vocabulary).
    max_prompt_bytes: usize,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

struct Ready {
    backend: String,
    config: LlamaConfig,
    load: LoadReport,
}

impl Engine {
    /// Loads the model and starts the engine thread.
    pub fn start(cfg: EngineConfig) -> Result<Self, Error> {
        let t0 = Instant::now();
        let file = GgufFile::open(&cfg.model_path)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&file)?);
        let config = LlamaConfig::from_gguf(&file)?;
        let model_name = file
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
        let max_context = cfg.max_context.min(config.context_len).max(2);
        let threads = cfg
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let max_batch = cfg.max_batch.max(1);
        let (tx, rx) = std_mpsc::sync_channel::<Job>(cfg.queue_capacity.max(1));
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<Ready, Error>>();
        let shared = Arc::new(Shared::default());
        let stop_ids: Vec<u32> = [Some(tokenizer.eos_id), tokenizer.token_id("<|endoftext|>")]
            .into_iter()
            .flatten()
            .collect();
        let loop_cfg = LoopConfig {
            max_batch,
            max_context,
            prefill_budget: cfg.prefill_budget.max(1),
            stop_ids,
        };
        let args = LoopArgs {
            rx,
            shared: shared.clone(),
            tok: tokenizer.clone(),
            cfg: loop_cfg,
            ready: ready_tx,
            t0,
        };
        let backend = cfg.backend.clone();
        let fallback = cfg.fallback_to_cpu;
        let thread = std::thread::Builder::new()
            .name("mesh-inference".into())
            .spawn(move || {
                let pool = match rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("mesh-inference-{i}"))
                    .build()
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = args
                            .ready
                            .send(Err(Error::Engine(format!("thread pool: {e}"))));
                        return;
                    }
                };
                pool.install(|| engine_main(backend, fallback, file, args));
            })
            .map_err(|e| Error::Engine(format!("spawning engine thread: {e}")))?;
        let ready = match ready_rx.recv() {
            Ok(r) => r?,
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Engine("engine thread ended while loading".into()));
            }
        };
        let load = ready.load;
        tracing::info!(
            model = %model_name,
            backend = %ready.backend,
            weight_mb = load.weight_bytes as f64 / 1e6,
            seconds = load.seconds,
            "model loaded"
        );
        let max_prompt_bytes = max_context * tokenizer.max_token_bytes();
        Ok(Self {
            tx: Some(tx),
            shared,
            tokenizer,
            info: EngineInfo {
                model: model_name,
                backend: ready.backend,
                config: ready.config,
                load,
                threads,
                max_batch,
            },
            max_context,
            max_prompt_bytes,
            thread: Some(thread),
        })
    }

    /// What is being served.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Current load.
    pub fn load(&self) -> Load {
        let active = self.shared.active.load(Ordering::Relaxed);
        Load {
            active,
            queued: self.shared.queued.load(Ordering::Relaxed),
            free_slots: self.info.max_batch.saturating_sub(active),
            steps: self.shared.steps.load(Ordering::Relaxed),
        }
    }

    /// Token ids of a prompt.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Vec<u32> {
        match prompt {
            Prompt::Text(t) => self.tokenizer.encode(t, true),
            Prompt::Chat(m) => self
                .tokenizer
                .encode(&Tokenizer::apply_chat_template(m, true), true),
            Prompt::Tokens(t) => t.clone(),
        }
    }

    /// Submits a request; tokens arrive on the returned stream. Fails at
    /// once when the prompt is empty or too long, or the queue is full.
    pub fn generate(&self, req: GenerateRequest) -> Result<Generation, Error> {
        // Tokenizing costs CPU in proportion to the text: a prompt whose
        // text alone is more than the context could hold is refused first.
        let bytes = match &req.prompt {
            Prompt::Text(t) => t.len(),
            Prompt::Chat(m) => m.iter().map(|m| m.content.len() + m.role.len()).sum(),
            Prompt::Tokens(_) => 0,
        };
        if bytes > self.max_prompt_bytes {
            return Err(Error::PromptTooLarge {
                bytes,
                max: self.max_prompt_bytes,
            });
        }
        let tokens = self.encode_prompt(&req.prompt);
        if tokens.is_empty() {
            return Err(Error::InvalidRequest("empty prompt".into()));
        }
        if tokens.len() >= self.max_context {
            return Err(Error::PromptTooLong {
                tokens: tokens.len(),
                context: self.max_context,
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.info.config.vocab)
        {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        let p = &req.params;
        if p.max_tokens == 0 {
            return Err(Error::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        if !(p.temperature >= 0.0 && p.top_p > 0.0 && p.top_p <= 1.0) {
            return Err(Error::InvalidRequest(
                "temperature must be >= 0 and top_p in (0, 1]".into(),
            ));
        }
        // Room for every token plus the summary: sending never blocks the batch.
        let cap = req.params.max_tokens.min(self.max_context) + 2;
        let (etx, erx) = mpsc::channel(cap);
        let job = Job {
            tokens,
            params: req.params,
            events: etx,
            submitted: Instant::now(),
        };
        let tx = self.tx.as_ref().ok_or(Error::Stopped)?;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(Generation { rx: erx }),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    std_mpsc::TrySendError::Full(_) => Err(Error::Busy),
                    std_mpsc::TrySendError::Disconnected(_) => Err(Error::Stopped),
                }
            }
        }
    }

    /// Generates to the end, blocking the thread.
    pub fn generate_blocking(&self, req: GenerateRequest) -> Result<Completion, Error> {
        self.generate(req)?.collect_blocking()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct LoopArgs {
    rx: std_mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    tok: Arc<Tokenizer>,
    cfg: LoopConfig,
    ready: std_mpsc::Sender<Result<Ready, Error>>,
    t0: Instant,
}

/// Body of the engine thread: picks the backend, loads, serves.
fn engine_main(kind: BackendKind, fallback: bool, file: GgufFile, args: LoopArgs) {
    match kind {
        BackendKind::Cpu => {
            serve::<backend::Cpu>(&Default::default(), true, "cpu".into(), file, args)
        }
        BackendKind::Cuda(index) => match backend::probe_cuda(index) {
            #[cfg(feature = "cuda")]
            Ok(()) => serve::<backend::Gpu>(
                &backend::cuda_device(index),
                false,
                format!("cuda:{index}"),
                file,
                args,
            ),
            #[cfg(not(feature = "cuda"))]
            Ok(never) => match never {},
            Err(reason) if fallback => {
                tracing::warn!("cuda:{index} unavailable ({reason}); falling back to the CPU");
                serve::<backend::Cpu>(&Default::default(), true, "cpu".into(), file, args)
            }
            Err(reason) => {
                let _ = args.ready.send(Err(Error::BackendUnavailable {
                    backend: format!("cuda:{index}"),
                    reason,
                }));
            }
        },
    }
}

fn serve<B: Backend>(
    device: &B::Device,
    native: bool,
    name: String,
    file: GgufFile,
    args: LoopArgs,
) {
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Llama::<B>::from_gguf(&file, native, device)
    }));
    drop(file);
    match loaded {
        Ok(Ok((model, load))) => {
            let ready = Ready {
                backend: name,
                config: model.config.clone(),
                load: LoadReport {
                    seconds: args.t0.elapsed().as_secs_f64(),
                    ..load
                },
            };
            if args.ready.send(Ok(ready)).is_ok() {
                run_loop(model, args.rx, args.shared, args.tok, args.cfg);
            }
        }
        Ok(Err(e)) => {
            let _ = args.ready.send(Err(e));
        }
        Err(p) => {
            let _ = args.ready.send(Err(Error::BackendUnavailable {
                backend: name,
                reason: backend::panic_message(&p),
            }));
        }
    }
}

struct LoopConfig {
    max_batch: usize,
    max_context: usize,
    prefill_budget: usize,
    stop_ids: Vec<u32>,
}

/// Releases generated text, holding back what may be the start of a stop string.
struct TextState {
    utf8: Utf8Stream,
    text: String,
    emitted: usize,
    stops: Vec<String>,
}

impl TextState {
    fn new(stops: Vec<String>) -> Self {
        Self {
            utf8: Utf8Stream::default(),
            text: String::new(),
            emitted: 0,
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    /// Adds bytes; returns the text to release and whether a stop string appeared.
    fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        let new = self.utf8.push(bytes);
        let from = self.text.len();
        self.text.push_str(&new);
        // Only a stop string overlapping the new text can be new.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut start = from.saturating_sub(longest);
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.text[start..].find(s.as_str()).map(|p| start + p))
            .min();
        if let Some(at) = hit {
            let out = self.text[self.emitted.min(at)..at].to_string();
            self.emitted = at;
            return (out, true);
        }
        let mut safe = self.text.len();
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// The rest of the text at the end of the stream.
    fn finish(&mut self) -> String {
        let tail = self.utf8.finish();
        self.text.push_str(&tail);
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

struct Seq<B: Backend> {
    cache: KvCache<B>,
    pending: Vec<u32>,
    prompt_len: usize,
    generated: usize,
    params: SamplingParams,
    sampler: Sampler,
    text: TextState,
    events: mpsc::Sender<Event>,
    submitted: Instant,
    first_token: Option<Instant>,
    done: bool,
}

impl<B: Backend> Seq<B> {
    fn send(&mut self, ev: Event) {
        if self.events.try_send(ev).is_err() {
            // Receiver gone (or, impossibly, full): the caller went away.
            self.done = true;
        }
    }

    fn finish(&mut self, reason: FinishReason) {
        let now = Instant::now();
        let ms = |t: Instant| t.duration_since(self.submitted).as_secs_f64() * 1e3;
        let f = Finished {
            reason,
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated,
            ttft_ms: self.first_token.map_or(0.0, ms),
            total_ms: ms(now),
        };
        self.send(Event::Done(f));
        self.done = true;
    }
}

fn run_loop<B: Backend>(
    model: Llama<B>,
    rx: std_mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    tok: Arc<Tokenizer>,
    cfg: LoopConfig,
) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut active: Vec<Seq<B>> = Vec::new();
    let mut open = true;
    loop {
        if active.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while open {
            match rx.try_recv() {
                Ok(j) => waiting.push_back(j),
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => open = false,
            }
        }
        while active.len() < cfg.max_batch {
            let Some(j) = waiting.pop_front() else { break };
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            if j.events.is_closed() {
                continue;
            }
            active.push(Seq {
                cache: model.new_cache(),
                prompt_len: j.tokens.len(),
                pending: j.tokens,
                generated: 0,
                sampler: Sampler::new(&j.params),
                text: TextState::new(j.params.stop.clone()),
                params: j.params,
                events: j.events,
                submitted: j.submitted,
                first_token: None,
                done: false,
            });
        }
        active.retain(|s| !s.events.is_closed());
        shared.active.store(active.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        // This step's tokens: decoders one each, prompts within the budget.
        let mut budget = cfg.prefill_budget;
        let feeds: Vec<usize> = active
            .iter()
            .map(|s| {
                if s.generated > 0 {
                    s.pending.len()
                } else {
                    let n = s.pending.len().min(budget);
                    budget -= n;
                    n
                }
            })
            .collect();
        let (mut caches, toks): (Vec<&mut KvCache<B>>, Vec<&[u32]>) = active
            .iter_mut()
            .zip(&feeds)
            .map(|(s, &n)| (&mut s.cache, &s.pending[..n]))
            .unzip();
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.forward(&mut caches, &toks)
        }));
        drop(caches);
        shared.steps.fetch_add(1, Ordering::Relaxed);
        let logits = match step {
            Ok(l) => l,
            Err(p) => {
                let msg = crate::backend::panic_message(&p);
                tracing::error!("forward pass failed: {msg}");
                for s in &mut active {
                    s.send(Event::Error(format!("forward pass failed: {msg}")));
                }
                active.clear();
                continue;
            }
        };
        for ((s, lg), n) in active.iter_mut().zip(logits).zip(feeds) {
            if n == 0 {
                continue;
            }
            s.pending.drain(..n);
            if !s.pending.is_empty() {
                continue; // prompt not finished
            }
            let id = s.sampler.sample(&lg);
            s.generated += 1;
            if s.first_token.is_none() {
                s.first_token = Some(Instant::now());
            }
            let is_eos = s.params.stop_at_eos && cfg.stop_ids.contains(&id);
            let (mut text, stopped) = if is_eos {
                (String::new(), false)
            } else {
                s.text.push(&tok.token_bytes(id))
            };
            let reason = if stopped {
                Some(FinishReason::Stop)
            } else if is_eos {
                Some(FinishReason::Eos)
            } else if s.generated >= s.params.max_tokens || s.cache.len() + 1 >= cfg.max_context {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(r) = reason {
                if r != FinishReason::Stop {
                    text.push_str(&s.text.finish());
                }
                s.send(Event::Token { id, text });
                s.finish(r);
            } else {
                s.send(Event::Token { id, text });
                s.pending.push(id);
            }
        }
        active.retain(|s| !s.done);
        shared.active.store(active.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_held_back_and_cut() {
        let mut t = TextState::new(vec!["END".into()]);
        assert_eq!(t.push(b"abc E"), ("abc ".into(), false));
        assert_eq!(t.push(b"N"), (String::new(), false));
        assert_eq!(t.push(b"Dxyz"), (String::new(), true));
        let mut t = TextState::new(vec!["END".into()]);
        assert_eq!(t.push(b"abc E"), ("abc ".into(), false));
        assert_eq!(t.push(b"x"), ("Ex".into(), false));
        assert_eq!(t.finish(), "");
        let mut t = TextState::new(vec!["\n\n".into(), "User:".into()]);
        assert_eq!(t.push(b"hi\nthere User"), ("hi\nthere ".into(), false));
        assert_eq!(t.push(b":"), (String::new(), true));
    }

    #[test]
    fn text_without_stops_streams_through() {
        let mut t = TextState::new(vec![]);
        assert_eq!(t.push("é".as_bytes()).0, "é");
        assert_eq!(t.push(&"🙂".as_bytes()[..2]).0, "");
        assert_eq!(t.push(&"🙂".as_bytes()[2..]).0, "🙂");
    }
}
