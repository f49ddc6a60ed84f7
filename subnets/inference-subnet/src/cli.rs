//! The inference subnet's command-line flags (feature `cli`), for binaries
//! that host it: `mesh-server --subnet inference --model … --backend cuda`.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_inference::{BackendKind, Engine, EngineConfig};

use crate::InferenceSubnet;

/// Flags of `--subnet inference`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Inference subnet (--subnet inference)")]
pub struct InferenceArgs {
    /// The GGUF model file (default: the SmolLM2 file scripts/fetch-models.sh
    /// writes under $MESH_MODELS or ~/.cache/mesh-models).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Where the model runs: cpu, cuda or cuda:N (cuda needs a build with
    /// `--features cuda`) [default: cpu].
    #[arg(long)]
    pub backend: Option<BackendKind>,
    /// Run on the CPU when the backend cannot start.
    #[arg(long = "fallback_to_cpu", alias = "fallback-to-cpu")]
    pub fallback_to_cpu: bool,
    /// Sequences decoded together [default: 8].
    #[arg(long = "max_batch", alias = "max-batch")]
    pub max_batch: Option<usize>,
    /// Also serve Embed with the all-MiniLM-L6-v2 directory
    /// (model.safetensors + tokenizer.json).
    #[arg(long = "embed_model", alias = "embed-model", value_name = "DIR")]
    pub embed_model: Option<PathBuf>,
}

/// Why the subnet could not be built from its flags.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No `--model` and no SmolLM2 file where the fetch script puts it.
    #[error("{0}")]
    NoModel(#[source] mesh_inference::Error),
    /// The model did not load.
    #[error("loading the model {path}: {source}")]
    Model {
        /// The GGUF file.
        path: PathBuf,
        /// Why.
        #[source]
        source: mesh_inference::Error,
    },
    /// The embedding model did not load.
    #[error("loading the embedding model {path}: {source}")]
    Embedder {
        /// The model directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: mesh_inference::Error,
    },
}

impl InferenceArgs {
    /// The flags given on the command line, by name (to refuse them when
    /// another subnet is hosted).
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        if self.model.is_some() {
            given.push("--model");
        }
        if self.backend.is_some() {
            given.push("--backend");
        }
        if self.fallback_to_cpu {
            given.push("--fallback_to_cpu");
        }
        if self.max_batch.is_some() {
            given.push("--max_batch");
        }
        if self.embed_model.is_some() {
            given.push("--embed_model");
        }
        given
    }

    /// Loads the model (and the embedding model) and builds the subnet.
    pub fn load(&self) -> Result<InferenceSubnet, LoadError> {
        let path = match &self.model {
            Some(path) => path.clone(),
            None => mesh_inference::find_smollm2().map_err(LoadError::NoModel)?,
        };
        let mut config = EngineConfig::new(&path);
        config.backend = self.backend.clone().unwrap_or(BackendKind::Cpu);
        config.fallback_to_cpu = self.fallback_to_cpu;
        config.max_batch = self.max_batch.unwrap_or(8).max(1);
        let engine = Engine::start(config).map_err(|source| LoadError::Model {
            path: path.clone(),
            source,
        })?;
        let info = engine.info();
        tracing::info!(model = %info.model, backend = %info.backend, max_batch = info.max_batch, "model loaded");
        let embedder = match &self.embed_model {
            Some(dir) => {
                let model = mesh_inference::embed::MiniLm::load(dir, &Default::default()).map_err(
                    |source| LoadError::Embedder {
                        path: dir.clone(),
                        source,
                    },
                )?;
                Some(Arc::new(model))
            }
            None => None,
        };
        Ok(InferenceSubnet::new(Arc::new(engine), embedder))
    }
}
