//! Byte-level BPE built from a GGUF file's own vocabulary and merges
//! (`tokenizer.ggml.model = "gpt2"`), with the pre-tokenizer SmolLM2 uses
//! (llama.cpp's `smollm`: every digit on its own, then the GPT-2 split), and
//! the ChatML chat template of SmolLM2-Instruct.
//!
//! Written here rather than pulling in the `tokenizers` crate (onig, esaxx,
//! rayon, serde trees…): the whole algorithm is a regex split, a byte→char
//! map and rank-ordered merges.

use std::collections::HashMap;

use fancy_regex::Regex;

use crate::gguf::{GgufFile, Value};

/// Why a tokenizer could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A metadata key is absent or has the wrong type.
    #[error("GGUF tokenizer metadata: {0}")]
    Metadata(String),
    /// The file's tokenizer is not a byte-level BPE.
    #[error("unsupported tokenizer model {0:?} (only gpt2-style byte-level BPE)")]
    UnsupportedModel(String),
}

/// GPT-2's split, as in HF `ByteLevel(use_regex=true)`.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// A chat message for [`Tokenizer::apply_chat_template`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Byte-level BPE tokenizer.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), (u32, u32)>, // (left, right) -> (rank, merged id)
    special: Vec<(String, u32)>,            // control tokens, longest first
    is_special: Vec<bool>,
    split: Regex,
    byte_char: [char; 256],
    char_byte: HashMap<char, u8>,
    /// Beginning-of-sequence token id.
    pub bos_id: u32,
    /// End-of-sequence token id (for SmolLM2-Instruct: `<|im_end|>`).
    pub eos_id: u32,
    /// `tokenizer.chat_template` from the file, if any.
    pub chat_template: Option<String>,
}

/// GPT-2's reversible byte → printable char map.
fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("small code point")
        };
    }
    out
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, TokenizerError> {
        let md = |k: &str| {
            f.get(k)
                .ok_or_else(|| TokenizerError::Metadata(format!("{k} missing")))
        };
        let model = md("tokenizer.ggml.model")?.as_str().unwrap_or_default();
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let strings = |k: &str| -> Result<Vec<String>, TokenizerError> {
            md(k)?
                .as_array()
                .ok_or_else(|| TokenizerError::Metadata(format!("{k} is not an array")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| TokenizerError::Metadata(format!("{k}: non-string entry")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match f.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let id_of = |k: &str, default: u32| {
            f.get(k)
                .and_then(Value::as_u64)
                .map_or(default, |v| v as u32)
        };
        let bos_id = id_of("tokenizer.ggml.bos_token_id", 1);
        let eos_id = id_of("tokenizer.ggml.eos_token_id", 2);
        let chat_template = f
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        Self::new(tokens, &merges, &types, bos_id, eos_id, chat_template)
    }

    /// Builds the tokenizer from its parts; `types[i] == 3` (control) or 4
    /// (user-defined) marks tokens matched verbatim before BPE.
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        types: &[u64],
        bos_id: u32,
        eos_id: u32,
        chat_template: Option<String>,
    ) -> Result<Self, TokenizerError> {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(TokenizerError::Metadata(format!(
                    "merge {m:?} has no space"
                )));
            };
            let (Some(&ia), Some(&ib), Some(&im)) =
                (ids.get(a), ids.get(b), ids.get(&format!("{a}{b}")))
            else {
                continue; // a merge whose parts are not in the vocabulary can never apply
            };
            ranks.entry((ia, ib)).or_insert((rank as u32, im));
        }
        let is_special: Vec<bool> = (0..tokens.len())
            .map(|i| matches!(types.get(i), Some(3) | Some(4)))
            .collect();
        let mut special: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| is_special[*i] && !t.is_empty())
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        special.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let byte_char = bytes_to_unicode();
        let char_byte = byte_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        Ok(Self {
            tokens,
            ids,
            ranks,
            special,
            is_special,
            split: Regex::new(GPT2_SPLIT).expect("static regex"),
            byte_char,
            char_byte,
            bos_id,
            eos_id,
            chat_template,
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The most bytes of text one token stands for (each token string
    /// holds one char per byte, control tokens their literal text): a
    /// prompt of more than `n` times this many bytes has more than `n`
    /// tokens, whatever it says.
    pub fn max_token_bytes(&self) -> usize {
        self.tokens
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The id of a token string, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// True for control tokens (`<|im_start|>`, `<|endoftext|>`, …).
    pub fn is_special(&self, id: u32) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// Encodes text. With `special`, control-token strings in the text
    /// (e.g. `<|im_start|>`) become their ids; without, they are plain text.
    pub fn encode(&self, text: &str, special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if !special {
            self.encode_plain(text, &mut out);
            return out;
        }
        let mut rest = text;
        while !rest.is_empty() {
            // Earliest special token occurrence (longest on ties).
            let hit = self
                .special
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|p| (p, s.len(), *id)))
                .min_by_key(|&(p, len, _)| (p, std::cmp::Reverse(len)));
            match hit {
                Some((p, len, id)) => {
                    self.encode_plain(&rest[..p], &mut out);
                    out.push(id);
                    rest = &rest[p + len..];
                }
                None => {
                    self.encode_plain(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        // `smollm` pre-tokenizer: each digit is its own piece; the GPT-2
        // split then runs on the pieces in between.
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                self.encode_gpt2(&text[start..i], out);
                self.encode_gpt2(&text[i..i + c.len_utf8()], out);
                start = i + c.len_utf8();
            }
        }
        self.encode_gpt2(&text[start..], out);
    }

    fn encode_gpt2(&self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        for m in self.split.find_iter(text) {
            let Ok(m) = m else {
                // Backtracking limit: fall back to the whole piece.
                self.bpe(text, out);
                return;
            };
            self.bpe(m.as_str(), out);
        }
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let mapped: String = piece.bytes().map(|b| self.byte_char[b as usize]).collect();
        if let Some(&id) = self.ids.get(&mapped) {
            out.push(id);
            return;
        }
        let mut syms: Vec<u32> = Vec::with_capacity(mapped.len());
        for c in mapped.chars() {
            let mut buf = [0u8; 4];
            match self.ids.get(&*c.encode_utf8(&mut buf)) {
                Some(&id) => syms.push(id),
                None => syms.push(0), // unknown byte: cannot happen with a full byte-level vocab
            }
        }
        loop {
            let best = syms
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        out.extend_from_slice(&syms);
    }

    /// The raw bytes a token stands for (empty for control tokens).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        if self.is_special(id) {
            return Vec::new();
        }
        self.tokens
            .get(id as usize)
            .map(|t| {
                t.chars()
                    .filter_map(|c| self.char_byte.get(&c).copied())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Decodes ids to text, skipping control tokens; invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// SmolLM2-Instruct's ChatML template (`tokenizer.chat_template`):
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, a default
    /// system message when the first is not one, and
    /// `<|im_start|>assistant\n` when `add_generation_prompt`.
    pub fn apply_chat_template(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        if messages.first().is_some_and(|m| m.role != "system") {
            s.push_str(
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
            );
        }
        for m in messages {
            s.push_str("<|im_start|>");
            s.push_str(&m.role);
            s.push('\n');
            s.push_str(&m.content);
            s.push_str("<|im_end|>\n");
        }
        if add_generation_prompt {
            s.push_str("<|im_start|>assistant\n");
        }
        s
    }
}

/// Turns a stream of token bytes into valid UTF-8 text pieces, holding back
/// an incomplete multi-byte character until its remaining bytes arrive.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Appends bytes, returns the text that is complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid prefix"));
                    match e.error_len() {
                        // Invalid bytes: replace and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + n);
                        }
                        // Incomplete sequence at the end: wait for more.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }
    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: all 256 byte chars, a few merges, two control tokens.
    fn toy() -> Tokenizer {
        let bc = bytes_to_unicode();
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
        tokens.extend(bc.iter().map(|c| c.to_string()));
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![3, 3];
        types.resize(tokens.len(), 1);
        Tokenizer::new(tokens, &merges, &types, 1, 0, None).unwrap()
    }

    #[test]
    fn bpe_merges_by_rank() {
        let t = toy();
        let ids = t.encode("hello wo", false);
        let strs: Vec<&str> = ids.iter().map(|&i| t.tokens[i as usize].as_str()).collect();
        assert_eq!(strs, ["hello", "Ġwo"]);
        assert_eq!(t.decode(&ids), "hello wo");
    }

    #[test]
    fn digits_split_and_special_tokens() {
        let t = toy();
        let ids = t.encode("<|im_start|>x12", true);
        assert_eq!(ids[0], 1);
        let strs: Vec<&str> = ids[1..]
            .iter()
            .map(|&i| t.tokens[i as usize].as_str())
            .collect();
        assert_eq!(strs, ["x", "1", "2"]);
        // Without `special`, the marker is ordinary text.
        assert!(t.encode("<|im_start|>", false).len() > 1);
        assert_eq!(t.decode(&ids), "x12");
    }

    #[test]
    fn round_trip_unicode() {
        let t = toy();
        let s = "héllo — 你好 \n\t 🙂";
        assert_eq!(t.decode(&t.encode(s, false)), s);
    }

    #[test]
    fn utf8_stream_holds_partial_chars() {
        let mut u = Utf8Stream::default();
        let b = "é🙂".as_bytes();
        assert_eq!(u.push(&b[..1]), "");
        assert_eq!(u.push(&b[1..3]), "é");
        assert_eq!(u.push(&b[3..]), "🙂");
        assert_eq!(u.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(u.push(&[0xe4]), "");
        assert_eq!(u.finish(), "\u{fffd}");
    }

    #[test]
    fn chat_template() {
        let s = Tokenizer::apply_chat_template(&[ChatMessage::new("user", "Hi")], true);
        assert_eq!(
            s,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let s = Tokenizer::apply_chat_template(
            &[
                ChatMessage::new("system", "S"),
                ChatMessage::new("user", "U"),
            ],
            false,
        );
        assert_eq!(
            s,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        );
    }
}
