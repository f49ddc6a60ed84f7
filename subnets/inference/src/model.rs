//! The Llama forward pass (SmolLM2), with a KV cache and several sequences
//! per call.
//!
//! Q and K rows come from llama.cpp's converter, which permutes them so that
//! RoPE rotates *adjacent* pairs `(x[2i], x[2i+1])` by `pos·base^(-2i/d)`;
//! the forward pass does exactly that (equivalent to HF's `rotate_half` on
//! the unpermuted weights).
//!
//! Two paths: on other backends (CUDA) the weights are dequantized to f32
//! burn tensors and the pass is burn tensor ops; on the CPU backend the
//! weights stay quantized, the projections run through [`crate::kernels`],
//! and the small steps between them (norms, RoPE, attention, the MLP gate)
//! are loops over host vectors (`forward_host`). Through burn's ndarray ops
//! those steps cost as much as the projections themselves in a batch of 8
//! sequences. The kernel path is checked against the reference fixture,
//! and the burn path against the kernel path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::attention::Shape;
use crate::gguf::{GgmlType, GgufError, GgufFile};
use crate::kernels::QMatrix;
use crate::Error;

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Hidden width.
    pub d_model: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// MLP width.
    pub d_ff: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RoPE frequency base.
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Trained context length.
    pub context_len: usize,
}

impl LlamaConfig {
    /// Reads the configuration of a `general.architecture = llama` file.
    pub fn from_gguf(f: &GgufFile) -> Result<Self, Error> {
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if arch != "llama" {
            return Err(Error::UnsupportedModel(format!("architecture {arch:?}")));
        }
        let u = |k: &str| f.get_u64(&format!("llama.{k}")).map(|v| v as usize);
        let d_model = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let vocab = match u("vocab_size") {
            Ok(v) => v,
            Err(_) => f
                .tensor("token_embd.weight")
                .map(|t| t.dims[1] as usize)
                .ok_or_else(|| GgufError::Missing("tensor token_embd.weight".into()))?,
        };
        Ok(Self {
            n_layer: u("block_count")?,
            d_model,
            n_head,
            n_kv_head: u("attention.head_count_kv").unwrap_or(n_head),
            head_dim: d_model / n_head,
            d_ff: u("feed_forward_length")?,
            vocab,
            rope_base: f.get_f64("llama.rope.freq_base").unwrap_or(10000.0) as f32,
            eps: f
                .get_f64("llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f32,
            context_len: u("context_length").unwrap_or(2048),
        })
    }
}

/// A projection `y = x · Wᵀ`.
#[derive(Debug, Clone)]
pub enum Linear<B: Backend> {
    /// Quantized weights run by the CPU kernels.
    Native(Arc<QMatrix>),
    /// f32 weights as a burn tensor, stored transposed (`[in, out]`).
    Dense(Tensor<B, 2>),
}

impl<B: Backend> Linear<B> {
    fn new(m: QMatrix, native: bool, device: &B::Device) -> Self {
        if native {
            Linear::Native(Arc::new(m))
        } else {
            let w = Tensor::<B, 2>::from_data(
                TensorData::new(m.dequantize(), [m.rows, m.cols]),
                device,
            );
            Linear::Dense(w.transpose())
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Linear::Dense(w) => x.matmul(w.clone()),
            Linear::Native(_) => unreachable!("quantized weights run in forward_host"),
        }
    }

    /// The quantized weights of the kernel path.
    fn quantized(&self) -> &QMatrix {
        match self {
            Linear::Native(m) => m,
            Linear::Dense(_) => unreachable!("the host path holds quantized weights"),
        }
    }
}

struct Layer<B: Backend> {
    /// Norm weights as tensors (burn path) and on the host (kernel path).
    norms: [Vec<f32>; 2],
    attn_norm: Tensor<B, 1>,
    wqkv: Linear<B>,
    wo: Linear<B>,
    ffn_norm: Tensor<B, 1>,
    w_gate_up: Linear<B>,
    w_down: Linear<B>,
}

/// Per-sequence key/value cache: for each layer `[kv_heads, len, head_dim]`
/// burn tensors, or (CPU kernels) host vectors: keys and values in
/// `crate::attention`'s blocked layouts.
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 3>, Tensor<B, 3>)>>,
    host: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What loading took.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// Bytes of the model file.
    pub file_bytes: u64,
    /// Bytes of weights held after loading.
    pub weight_bytes: u64,
    /// Seconds from opening the file to a usable model.
    pub seconds: f64,
}

/// SmolLM2 / Llama model on backend `B`.
pub struct Llama<B: Backend> {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    embed: QMatrix,
    layers: Vec<Layer<B>>,
    out_norm: Tensor<B, 1>,
    out_norm_host: Vec<f32>,
    output: Linear<B>,
    inv_freq: Vec<f32>,
    native: bool,
    device: B::Device,
}

/// Dot product in eight lanes (vectorizes without reassociation flags).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// What [`Llama::inputs`] prepares for a forward pass.
struct Inputs {
    /// `[n, d_model]` embeddings.
    x: Vec<f32>,
    /// `[n, head_dim / 2]` rotary angles.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The step's row of each sequence's last new token (sequences without new
/// tokens have none): the rows whose logits the step returns.
fn last_rows(tokens: &[&[u32]]) -> Vec<usize> {
    let mut end = 0;
    tokens
        .iter()
        .filter_map(|t| {
            end += t.len();
            (!t.is_empty()).then(|| end - 1)
        })
        .collect()
}

/// Rows of `logits` (`vocab` each, one per sequence with new tokens) handed
/// back per sequence; sequences without new tokens get an empty vector.
fn per_sequence(logits: &[f32], vocab: usize, tokens: &[&[u32]]) -> Vec<Vec<f32>> {
    let mut rows = logits.chunks_exact(vocab).map(|r| r.to_vec());
    tokens
        .iter()
        .map(|t| {
            if t.is_empty() {
                Vec::new()
            } else {
                rows.next().expect("one row per sequence")
            }
        })
        .collect()
}

fn qmatrix(f: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<QMatrix, Error> {
    let t = f
        .tensor(name)
        .ok_or_else(|| GgufError::Missing(format!("tensor {name}")))?;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if dims != [cols, rows] {
        return Err(Error::UnsupportedModel(format!(
            "{name}: dims {dims:?}, want [{cols}, {rows}]"
        )));
    }
    let raw = f.raw(t)?.to_vec();
    QMatrix::new(rows, cols, t.ty, raw).ok_or_else(|| {
        GgufError::UnsupportedTensorType {
            name: name.into(),
            ty: t.ty.id(),
        }
        .into()
    })
}

fn vector(f: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, Error> {
    let v = f.dequantize(name)?;
    if v.len() != len {
        return Err(Error::UnsupportedModel(format!(
            "{name}: {} values, want {len}",
            v.len()
        )));
    }
    Ok(v)
}

fn tensor1<B: Backend>(v: &[f32], dev: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), dev)
}

impl<B: Backend> Llama<B> {
    /// Builds the model from a parsed file. `native` keeps the weights
    /// quantized for the CPU kernels (use it with CPU backends only).
    pub fn from_gguf(
        f: &GgufFile,
        native: bool,
        device: &B::Device,
    ) -> Result<(Self, LoadReport), Error> {
        let start = Instant::now();
        let c = LlamaConfig::from_gguf(f)?;
        let (d, kvd, ff) = (c.d_model, c.n_kv_head * c.head_dim, c.d_ff);
        let embed = qmatrix(f, "token_embd.weight", c.vocab, d)?;
        let mut weight_bytes = embed.byte_len() as u64;
        let mut last_note = Instant::now();
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let q = qmatrix(f, &p("attn_q"), d, d)?;
            let k = qmatrix(f, &p("attn_k"), kvd, d)?;
            let v = qmatrix(f, &p("attn_v"), kvd, d)?;
            let gate = qmatrix(f, &p("ffn_gate"), ff, d)?;
            let up = qmatrix(f, &p("ffn_up"), ff, d)?;
            let wo = qmatrix(f, &p("attn_output"), d, d)?;
            let down = qmatrix(f, &p("ffn_down"), d, ff)?;
            let qkv = QMatrix::concat(&[&q, &k, &v]).ok_or_else(|| {
                Error::UnsupportedModel(format!("blk.{i}: q/k/v of different types"))
            })?;
            let gate_up = QMatrix::concat(&[&gate, &up]).ok_or_else(|| {
                Error::UnsupportedModel(format!("blk.{i}: gate/up of different types"))
            })?;
            weight_bytes +=
                (qkv.byte_len() + gate_up.byte_len() + wo.byte_len() + down.byte_len()) as u64;
            let norms = [
                vector(f, &p("attn_norm"), d)?,
                vector(f, &p("ffn_norm"), d)?,
            ];
            layers.push(Layer {
                attn_norm: tensor1(&norms[0], device),
                ffn_norm: tensor1(&norms[1], device),
                norms,
                wqkv: Linear::new(qkv, native, device),
                wo: Linear::new(wo, native, device),
                w_gate_up: Linear::new(gate_up, native, device),
                w_down: Linear::new(down, native, device),
            });
            if start.elapsed() > Duration::from_secs(1)
                && last_note.elapsed() > Duration::from_millis(500)
            {
                tracing::info!("loading model: layer {}/{}", i + 1, c.n_layer);
                eprintln!("loading model: layer {}/{}", i + 1, c.n_layer);
                last_note = Instant::now();
            }
        }
        let output = match f.tensor("output.weight") {
            Some(_) => Linear::new(qmatrix(f, "output.weight", c.vocab, d)?, native, device),
            // Tied embeddings.
            None => Linear::new(embed.clone(), native, device),
        };
        let half = c.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / c.rope_base.powf((2 * i) as f32 / c.head_dim as f32))
            .collect();
        let out_norm_host = vector(f, "output_norm.weight", d)?;
        let model = Self {
            out_norm: tensor1(&out_norm_host, device),
            out_norm_host,
            config: c,
            embed,
            layers,
            output,
            inv_freq,
            native,
            device: device.clone(),
        };
        let report = LoadReport {
            file_bytes: f.data_len() as u64,
            weight_bytes,
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok((model, report))
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache {
            layers: (0..self.config.n_layer).map(|_| None).collect(),
            host: (0..self.config.n_layer)
                .map(|_| (Vec::new(), Vec::new()))
                .collect(),
            len: 0,
        }
    }

    fn rms_norm(&self, x: Tensor<B, 2>, w: &Tensor<B, 1>) -> Tensor<B, 2> {
        let ms = (x.clone() * x.clone()).mean_dim(1);
        x * (ms + self.config.eps).sqrt().recip() * w.clone().unsqueeze::<2>()
    }

    /// Rotates adjacent pairs of `x` (`[n, heads, head_dim]`).
    fn rope(x: Tensor<B, 3>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, h, hd] = x.dims();
        let x = x.reshape([n, h, hd / 2, 2]);
        let x0 = x.clone().slice([0..n, 0..h, 0..hd / 2, 0..1]);
        let x1 = x.slice([0..n, 0..h, 0..hd / 2, 1..2]);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin.clone() + x1 * cos.clone();
        Tensor::cat(vec![r0, r1], 3).reshape([n, h, hd])
    }

    /// Runs `tokens[i]` through the model on top of `caches[i]` for every
    /// sequence at once, appends them to the caches, and returns the logits
    /// after the last token of each sequence (`vocab` values each).
    pub fn forward(&self, caches: &mut [&mut KvCache<B>], tokens: &[&[u32]]) -> Vec<Vec<f32>> {
        assert_eq!(caches.len(), tokens.len());
        if self.native {
            return self.forward_host(caches, tokens);
        }
        let c = &self.config;
        let (d, hd, nh, nkv) = (c.d_model, c.head_dim, c.n_head, c.n_kv_head);
        let rep = nh / nkv;
        let n: usize = tokens.iter().map(|t| t.len()).sum();
        if n == 0 {
            return vec![Vec::new(); tokens.len()];
        }
        // Embeddings and rotary tables on the host.
        let Inputs {
            x: emb, cos, sin, ..
        } = self.inputs(caches, tokens, n);
        let dev = &self.device;
        let mut x = Tensor::<B, 2>::from_data(TensorData::new(emb, [n, d]), dev);
        let cos = Tensor::<B, 4>::from_data(TensorData::new(cos, [n, 1, hd / 2, 1]), dev);
        let sin = Tensor::<B, 4>::from_data(TensorData::new(sin, [n, 1, hd / 2, 1]), dev);
        // Causal masks for sequences with more than one new token.
        let masks: Vec<Option<Tensor<B, 3>>> = caches
            .iter()
            .zip(tokens)
            .map(|(cache, toks)| {
                let l = toks.len();
                (l > 1).then(|| {
                    let t = cache.len + l;
                    let mut m = vec![0f32; rep * l * t];
                    for g in 0..rep {
                        for i in 0..l {
                            for j in cache.len + i + 1..t {
                                m[(g * l + i) * t + j] = f32::NEG_INFINITY;
                            }
                        }
                    }
                    Tensor::from_data(TensorData::new(m, [1, rep * l, t]), dev)
                })
            })
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &layer.attn_norm);
            let qkv = layer.wqkv.forward(h);
            let q = qkv.clone().slice([0..n, 0..d]).reshape([n, nh, hd]);
            let k = qkv
                .clone()
                .slice([0..n, d..d + nkv * hd])
                .reshape([n, nkv, hd]);
            let v = qkv
                .slice([0..n, d + nkv * hd..d + 2 * nkv * hd])
                .reshape([n, nkv, hd]);
            let q = Self::rope(q, &cos, &sin);
            let k = Self::rope(k, &cos, &sin);
            let att = {
                let mut outs = Vec::with_capacity(tokens.len());
                let mut off = 0;
                for (si, cache) in caches.iter_mut().enumerate() {
                    let l = tokens[si].len();
                    if l == 0 {
                        continue;
                    }
                    let r = off..off + l;
                    off += l;
                    // [l, heads, hd] -> [heads, l, hd]
                    let qs = q.clone().slice([r.clone(), 0..nh, 0..hd]).swap_dims(0, 1);
                    let ks = k.clone().slice([r.clone(), 0..nkv, 0..hd]).swap_dims(0, 1);
                    let vs = v.clone().slice([r, 0..nkv, 0..hd]).swap_dims(0, 1);
                    let (kc, vc) = match cache.layers[li].take() {
                        Some((kc, vc)) => {
                            (Tensor::cat(vec![kc, ks], 1), Tensor::cat(vec![vc, vs], 1))
                        }
                        None => (ks, vs),
                    };
                    cache.layers[li] = Some((kc.clone(), vc.clone()));
                    // Query heads sharing a kv head side by side: [kv, rep*l, hd].
                    let qs = qs.reshape([nkv, rep * l, hd]);
                    let mut s = qs.matmul(kc.swap_dims(1, 2)) * scale;
                    if let Some(m) = &masks[si] {
                        s = s + m.clone();
                    }
                    let a = softmax(s, 2).matmul(vc); // [kv, rep*l, hd]
                    outs.push(a.reshape([nh, l, hd]).swap_dims(0, 1).reshape([l, nh * hd]));
                }
                if outs.len() == 1 {
                    outs.pop().expect("one")
                } else {
                    Tensor::cat(outs, 0)
                }
            };
            x = x + layer.wo.forward(att);
            let h = self.rms_norm(x.clone(), &layer.ffn_norm);
            let gu = layer.w_gate_up.forward(h);
            let g = gu.clone().slice([0..n, 0..c.d_ff]);
            let u = gu.slice([0..n, c.d_ff..2 * c.d_ff]);
            x = x + layer.w_down.forward(silu(g) * u);
        }
        for (cache, toks) in caches.iter_mut().zip(tokens) {
            cache.len += toks.len();
        }
        // Last position of each sequence -> logits.
        let mut lasts: Vec<_> = last_rows(tokens)
            .into_iter()
            .map(|r| x.clone().slice([r..r + 1, 0..d]))
            .collect();
        let m = lasts.len();
        let h = if m == 1 {
            lasts.pop().expect("one")
        } else {
            Tensor::cat(lasts, 0)
        };
        let h = self.rms_norm(h, &self.out_norm);
        let logits = self.output.forward(h);
        let data = logits.into_data().to_vec::<f32>().expect("f32 logits");
        per_sequence(&data, c.vocab, tokens)
    }

    /// The forward pass of the CPU kernels, on host vectors: the
    /// projections run through [`crate::kernels`] on the quantized weights,
    /// attention and the MLP gate through `crate::attention`'s vector code,
    /// and norms and RoPE are plain loops. (Through burn's ndarray ops these
    /// small steps cost as much as the projections in a batch of 8.)
    fn forward_host(&self, caches: &mut [&mut KvCache<B>], tokens: &[&[u32]]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (d, hd, nh, nkv, ff) = (c.d_model, c.head_dim, c.n_head, c.n_kv_head, c.d_ff);
        let kvw = nkv * hd;
        let qkv_w = d + 2 * kvw;
        let n: usize = tokens.iter().map(|t| t.len()).sum();
        if n == 0 {
            return vec![Vec::new(); tokens.len()];
        }
        let Inputs { mut x, cos, sin } = self.inputs(caches, tokens, n);
        let mut h = vec![0f32; n * d];
        let mut qkv = vec![0f32; n * qkv_w];
        let mut att = vec![0f32; n * d];
        let mut proj = vec![0f32; n * d];
        let mut gu = vec![0f32; n * 2 * ff];
        let mut act = vec![0f32; n * ff];
        let shape = Shape {
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
        };
        for (li, layer) in self.layers.iter().enumerate() {
            host::rms_norm(&x, &layer.norms[0], c.eps, &mut h);
            layer.wqkv.quantized().matmul_t(&h, &mut qkv);
            // RoPE, the cache append and attention, one sequence per task.
            host::attend_sequences(caches, tokens, li, &mut qkv, &cos, &sin, shape, &mut att);
            layer.wo.quantized().matmul_t(&att, &mut proj);
            host::add(&mut x, &proj);
            host::rms_norm(&x, &layer.norms[1], c.eps, &mut h);
            layer.w_gate_up.quantized().matmul_t(&h, &mut gu);
            host::silu_mul(&gu, ff, &mut act);
            layer.w_down.quantized().matmul_t(&act, &mut proj);
            host::add(&mut x, &proj);
        }
        for (cache, toks) in caches.iter_mut().zip(tokens) {
            cache.len += toks.len();
        }
        // Last position of each sequence -> logits.
        let rows = last_rows(tokens);
        let lasts: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &x[r * d..(r + 1) * d])
            .copied()
            .collect();
        let m = rows.len();
        let mut hn = vec![0f32; m * d];
        host::rms_norm(&lasts, &self.out_norm_host, c.eps, &mut hn);
        let mut logits = vec![0f32; m * c.vocab];
        self.output.quantized().matmul_t(&hn, &mut logits);
        per_sequence(&logits, c.vocab, tokens)
    }

    /// Each new token's embedding and rotary angles.
    fn inputs(&self, caches: &[&mut KvCache<B>], tokens: &[&[u32]], n: usize) -> Inputs {
        let c = &self.config;
        let d = c.d_model;
        let mut inp = Inputs {
            x: vec![0f32; n * d],
            cos: Vec::with_capacity(n * c.head_dim / 2),
            sin: Vec::with_capacity(n * c.head_dim / 2),
        };
        let mut row = 0;
        for (cache, toks) in caches.iter().zip(tokens) {
            for (i, &t) in toks.iter().enumerate() {
                let t = (t as usize).min(c.vocab - 1);
                self.embed
                    .dequantize_row(t, &mut inp.x[row * d..(row + 1) * d]);
                let pos = cache.len + i;
                for &f in &self.inv_freq {
                    let a = pos as f32 * f;
                    inp.cos.push(a.cos());
                    inp.sin.push(a.sin());
                }
                row += 1;
            }
        }
        inp
    }

    /// The output projection's encoding (for reports).
    pub fn embed_type(&self) -> GgmlType {
        self.embed.ty
    }
}

/// The element-wise steps of [`Llama::forward_host`].
mod host {
    use rayon::prelude::*;

    use super::dot;
    use crate::attention::{append_key, append_value, attend, Shape};

    /// `out[t] = x[t] / sqrt(mean(x[t]²) + eps) · w` for each row.
    pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let ms = dot(xr, xr) / d as f32;
            let r = (ms + eps).sqrt().recip();
            for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
                *o = v * r * g;
            }
        }
    }

    /// Rotates the adjacent pairs of every head in `row` by the token's angles.
    pub(super) fn rope(row: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
        for head in row.chunks_exact_mut(hd) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * cos[i] - x1 * sin[i];
                pair[1] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }

    pub(super) fn add(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }

    /// `out = silu(gate) · up` with `gu` rows laid out `[gate | up]`.
    pub(super) fn silu_mul(gu: &[f32], ff: usize, out: &mut [f32]) {
        for (row, o) in gu.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
            let (g, u) = row.split_at(ff);
            crate::attention::silu_mul(g, u, o);
        }
    }

    /// For each sequence, in parallel: rotates the queries and keys of its
    /// new tokens (`qkv` rows `[q | k | v]`, `cos`/`sin` rows per token),
    /// appends their keys and values to its layer-`li` cache, then attends
    /// each new token over that cache (the tokens of a long prompt in
    /// parallel too), writing `att` rows. In one task a sequence's appends
    /// run next to its attention, so the cache lines they miss are
    /// overlapped with other sequences' work instead of stalling one thread
    /// (the appends, one key every 64 bytes, cost 22 µs a layer in a batch
    /// of 8 when they ran alone).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attend_sequences<B: burn::tensor::backend::Backend>(
        caches: &mut [&mut super::KvCache<B>],
        tokens: &[&[u32]],
        li: usize,
        qkv: &mut [f32],
        cos: &[f32],
        sin: &[f32],
        shape: Shape,
        att: &mut [f32],
    ) {
        let (hd, d) = (shape.head_dim, shape.heads * shape.head_dim);
        let kvw = shape.kv_heads * hd;
        let qkv_w = d + 2 * kvw;
        let half = hd / 2;
        // Carve each sequence's rows out of the step's buffers.
        let mut tasks = Vec::with_capacity(tokens.len());
        let (mut qkv, mut att, mut t0) = (qkv, att, 0);
        for (cache, toks) in caches.iter_mut().zip(tokens) {
            let m = toks.len();
            let (q, rest) = std::mem::take(&mut qkv).split_at_mut(m * qkv_w);
            qkv = rest;
            let (a, rest) = std::mem::take(&mut att).split_at_mut(m * d);
            att = rest;
            let angles = (
                &cos[t0 * half..(t0 + m) * half],
                &sin[t0 * half..(t0 + m) * half],
            );
            t0 += m;
            if m > 0 {
                tasks.push((cache.len, &mut cache.host[li], q, a, angles));
            }
        }
        tasks
            .into_par_iter()
            .for_each(|(len, (kc, vc), q, a, (cs, sn))| {
                for (i, row) in q.chunks_exact_mut(qkv_w).enumerate() {
                    rope(
                        &mut row[..d + kvw],
                        hd,
                        &cs[i * half..(i + 1) * half],
                        &sn[i * half..(i + 1) * half],
                    );
                    append_key(kc, len + i, &row[d..d + kvw]);
                    append_value(vc, len + i, &row[d + kvw..], hd);
                }
                let (kc, vc, q) = (&*kc, &*vc, &*q);
                a.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
                    attend(
                        &q[i * qkv_w..i * qkv_w + d],
                        kc,
                        vc,
                        len + i + 1,
                        shape,
                        out,
                    );
                });
            });
    }
}
