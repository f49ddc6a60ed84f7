//! OpenAI's HTTP API shapes, as far as the gateway serves them.
//!
//! Requests accept and ignore fields the subnet has no use for (`user`,
//! `presence_penalty`, …) so existing clients work unchanged; fields whose
//! meaning the subnet cannot honour (`n` other than 1) are refused.

use serde::{Deserialize, Serialize};

/// One message of a chat.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text: a string, a list of parts, or `null`.
    #[serde(default)]
    pub content: Content,
}

/// A message's content as clients send it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts; the text parts are served, in order.
    Parts(Vec<Part>),
    /// `null` (e.g. an assistant turn that only called tools).
    #[default]
    None,
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// `text` (other kinds, such as images, are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: String,
}

impl Content {
    /// The text, or which kind of part the model cannot take.
    pub fn text(&self) -> Result<String, String> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::None => Ok(String::new()),
            Content::Parts(parts) => {
                let mut text = String::new();
                for part in parts {
                    if part.kind != "text" {
                        return Err(format!(
                            "content parts of type {:?} are not served (text only)",
                            part.kind
                        ));
                    }
                    text.push_str(&part.text);
                }
                Ok(text)
            }
        }
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the token counts.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling fields shared by chat completions and completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// 0: greedy.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// A fixed seed makes sampled output reproducible (and failover seamless).
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Choices to generate: only 1 is served.
    pub n: Option<u32>,
    /// Stream chunks as server-sent events (`null` or absent: no).
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// A model the subnet's servers advertise.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt` of a completion: one string (or a list holding one).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    /// One prompt.
    One(String),
    /// A list of prompts (only one is served).
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A model the subnet's servers advertise.
    pub model: String,
    /// The raw prompt.
    pub prompt: PromptInput,
    /// Sampling and streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `input` of an embedding request.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    /// The embedding model.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64` (little-endian f32s).
    pub encoding_format: Option<String>,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Both.
    pub total_tokens: u32,
}

impl Usage {
    /// From the two counts.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// OpenAI's `finish_reason` for the engine's reason.
pub fn finish_reason(engine: &str) -> &'static str {
    match engine {
        "length" => "length",
        _ => "stop",
    }
}

/// `GET /v1/models` entry.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The model's name as servers advertise it.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unknown: 0.
    pub created: u64,
    /// Always `mesh`.
    pub owned_by: &'static str,
}
