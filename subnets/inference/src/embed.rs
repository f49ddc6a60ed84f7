//! Sentence embeddings with all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide):
//! mean-pooled over tokens, L2-normalised, as sentence-transformers does.
//!
//! Weights come from the package's `model.safetensors` (read with the
//! `safetensors` crate, f32 tensors only), the vocabulary from its `tokenizer.json`
//! (BERT normaliser, BERT pre-tokenizer, WordPiece).

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use unicode_normalization::UnicodeNormalization;

use crate::Error;

fn bad(msg: impl Into<String>) -> Error {
    Error::UnsupportedModel(msg.into())
}

/// Tensors by name: shape and f32 values.
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// The f32 tensors of a safetensors file (read with the `safetensors`
/// crate, which checks the header, the offsets and the sizes).
pub fn read_safetensors(path: &Path) -> Result<Tensors, Error> {
    let bytes = std::fs::read(path).map_err(|_| Error::ModelMissing(path.to_path_buf()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(format!(
            "{}: not a valid safetensors file: {e}",
            path.display()
        ))
    })?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// BERT's uncased WordPiece tokenizer.
#[derive(Debug)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
}

impl WordPiece {
    /// From a HF `tokenizer.json` with a WordPiece model.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|_| Error::ModelMissing(path.to_path_buf()))?;
        let j: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("tokenizer.json: {e}")))?;
        let vocab: HashMap<String, u32> = j["model"]["vocab"]
            .as_object()
            .ok_or_else(|| bad("tokenizer.json: no model.vocab"))?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0) as u32))
            .collect();
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("vocabulary lacks {t}")))
        };
        Ok(Self {
            unk: id("[UNK]")?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            vocab,
        })
    }

    /// `[CLS] tokens [SEP]`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        // Normaliser: clean, space out CJK, lowercase, strip accents.
        let mut norm = String::new();
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
                continue;
            }
            let cjk = matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF
                | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F);
            if cjk {
                norm.push(' ');
                norm.push(c);
                norm.push(' ');
            } else if c.is_whitespace() {
                norm.push(' ');
            } else {
                norm.push(c);
            }
        }
        let norm: String = norm
            .to_lowercase()
            .nfd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .collect();
        let mut ids = vec![self.cls];
        for word in norm.split_whitespace() {
            // Pre-tokenizer: punctuation characters stand alone.
            let mut start = 0;
            for (i, c) in word.char_indices() {
                let punct = c.is_ascii_punctuation()
                    || (!c.is_alphanumeric() && !c.is_whitespace() && !c.is_ascii());
                if punct {
                    self.wordpiece(&word[start..i], &mut ids);
                    self.wordpiece(&word[i..i + c.len_utf8()], &mut ids);
                    start = i + c.len_utf8();
                }
            }
            self.wordpiece(&word[start..], &mut ids);
        }
        ids.push(self.sep);
        ids
    }

    fn wordpiece(&self, word: &str, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > 100 {
            out.push(self.unk);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                let sub = if start == 0 {
                    word[start..end].to_string()
                } else {
                    format!("##{}", &word[start..end])
                };
                if let Some(&id) = self.vocab.get(&sub) {
                    found = Some(id);
                    break;
                }
                end -= 1;
                while !word.is_char_boundary(end) {
                    end -= 1;
                }
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => {
                    out.push(self.unk);
                    return;
                }
            }
        }
        out.extend(pieces);
    }
}

struct Dense<B: Backend> {
    w: Tensor<B, 2>, // [in, out]
    b: Tensor<B, 1>,
}

impl<B: Backend> Dense<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.w.clone()) + self.b.clone().unsqueeze::<2>()
    }
}

struct Norm<B: Backend> {
    g: Tensor<B, 1>,
    b: Tensor<B, 1>,
}

impl<B: Backend> Norm<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mean = x.clone().mean_dim(1);
        let c = x - mean;
        let var = (c.clone() * c.clone()).mean_dim(1);
        c / (var + 1e-12).sqrt() * self.g.clone().unsqueeze::<2>() + self.b.clone().unsqueeze::<2>()
    }
}

struct BertLayer<B: Backend> {
    q: Dense<B>,
    k: Dense<B>,
    v: Dense<B>,
    o: Dense<B>,
    n1: Norm<B>,
    up: Dense<B>,
    down: Dense<B>,
    n2: Norm<B>,
}

/// all-MiniLM-L6-v2 sentence embedder on backend `B`.
pub struct MiniLm<B: Backend> {
    /// Its tokenizer.
    pub tokenizer: WordPiece,
    word: Vec<f32>,
    pos: Vec<f32>,
    tok_type: Vec<f32>,
    emb_norm: Norm<B>,
    layers: Vec<BertLayer<B>>,
    heads: usize,
    width: usize,
    device: B::Device,
}

impl<B: Backend> MiniLm<B> {
    /// Loads `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, Error> {
        let mut t = read_safetensors(&dir.join("model.safetensors"))?;
        let tokenizer = WordPiece::from_tokenizer_json(&dir.join("tokenizer.json"))?;
        let mut take = |k: &str| {
            t.remove(k)
                .ok_or_else(|| bad(format!("tensor {k} missing")))
        };
        let vec1 = |(s, v): (Vec<usize>, Vec<f32>)| {
            Tensor::<B, 1>::from_data(TensorData::new(v, [s[0]]), device)
        };
        let mut dense = |p: &str| -> Result<Dense<B>, Error> {
            let (s, w) = take(&format!("{p}.weight"))?;
            let w = Tensor::<B, 2>::from_data(TensorData::new(w, [s[0], s[1]]), device).transpose();
            Ok(Dense {
                w,
                b: vec1(take(&format!("{p}.bias"))?),
            })
        };
        let mut layers = Vec::new();
        for i in 0..6 {
            let p = format!("encoder.layer.{i}");
            layers.push((
                dense(&format!("{p}.attention.self.query"))?,
                dense(&format!("{p}.attention.self.key"))?,
                dense(&format!("{p}.attention.self.value"))?,
                dense(&format!("{p}.attention.output.dense"))?,
                dense(&format!("{p}.intermediate.dense"))?,
                dense(&format!("{p}.output.dense"))?,
            ));
        }
        let mut norm = |p: &str| -> Result<Norm<B>, Error> {
            Ok(Norm {
                g: vec1(take(&format!("{p}.weight"))?),
                b: vec1(take(&format!("{p}.bias"))?),
            })
        };
        let mut norms = Vec::new();
        for i in 0..6 {
            let p = format!("encoder.layer.{i}");
            norms.push((
                norm(&format!("{p}.attention.output.LayerNorm"))?,
                norm(&format!("{p}.output.LayerNorm"))?,
            ));
        }
        let emb_norm = norm("embeddings.LayerNorm")?;
        let layers = layers
            .into_iter()
            .zip(norms)
            .map(|((q, k, v, o, up, down), (n1, n2))| BertLayer {
                q,
                k,
                v,
                o,
                n1,
                up,
                down,
                n2,
            })
            .collect();
        Ok(Self {
            word: take("embeddings.word_embeddings.weight")?.1,
            pos: take("embeddings.position_embeddings.weight")?.1,
            tok_type: take("embeddings.token_type_embeddings.weight")?.1,
            tokenizer,
            emb_norm,
            layers,
            heads: 12,
            width: 384,
            device: device.clone(),
        })
    }

    /// The normalised, mean-pooled embedding of each text (384 values).
    pub fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        texts
            .iter()
            .map(|t| self.embed_ids(&self.tokenizer.encode(t)))
            .collect()
    }

    /// The embedding of token ids (`[CLS] … [SEP]`, at most 512).
    pub fn embed_ids(&self, ids: &[u32]) -> Vec<f32> {
        let (d, h) = (self.width, self.heads);
        let hd = d / h;
        let ids = &ids[..ids.len().min(512)];
        let n = ids.len();
        let mut e = vec![0f32; n * d];
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            for j in 0..d {
                e[i * d + j] = self.word.get(id * d + j).copied().unwrap_or(0.0)
                    + self.pos[i * d + j]
                    + self.tok_type[j];
            }
        }
        let mut x = self.emb_norm.forward(Tensor::<B, 2>::from_data(
            TensorData::new(e, [n, d]),
            &self.device,
        ));
        let scale = 1.0 / (hd as f32).sqrt();
        for l in &self.layers {
            let split = |t: Tensor<B, 2>| t.reshape([n, h, hd]).swap_dims(0, 1); // [h, n, hd]
            let q = split(l.q.forward(x.clone()));
            let k = split(l.k.forward(x.clone()));
            let v = split(l.v.forward(x.clone()));
            let a = softmax(q.matmul(k.swap_dims(1, 2)) * scale, 2).matmul(v);
            let a = a.swap_dims(0, 1).reshape([n, d]);
            x = l.n1.forward(x + l.o.forward(a));
            let f = l.down.forward(gelu(l.up.forward(x.clone())));
            x = l.n2.forward(x + f);
        }
        let mean = x.mean_dim(0); // [1, d]
        let norm = (mean.clone() * mean.clone()).sum().sqrt().clamp_min(1e-12);
        let v = mean / norm.unsqueeze::<2>();
        v.into_data().to_vec::<f32>().expect("f32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_weight_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("mesh-embed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A header length past the end, garbage JSON, and a tensor whose
        // offsets point outside the data.
        let header = br#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let mut out_of_bounds = (header.len() as u64).to_le_bytes().to_vec();
        out_of_bounds.extend_from_slice(header);
        out_of_bounds.extend_from_slice(&[0; 8]);
        let mut valid = (header.len() as u64).to_le_bytes().to_vec();
        valid.extend_from_slice(header);
        valid.extend([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|f| f.to_le_bytes()));
        let cases: [(&str, Vec<u8>); 3] = [
            ("short", vec![0xff; 12]),
            (
                "garbage",
                [8u64.to_le_bytes().to_vec(), b"not json".to_vec()].concat(),
            ),
            ("bounds", out_of_bounds),
        ];
        for (name, bytes) in cases {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            match read_safetensors(&path) {
                Err(Error::UnsupportedModel(m)) => {
                    assert!(m.contains("not a valid safetensors file"), "{name}: {m}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        let path = dir.join("valid");
        std::fs::write(&path, valid).unwrap();
        let t = read_safetensors(&path).unwrap();
        assert_eq!(t["w"], (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        assert!(matches!(
            read_safetensors(&dir.join("missing")),
            Err(Error::ModelMissing(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
