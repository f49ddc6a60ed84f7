//! The inference benchmark: load time, memory, prefill and decode rates, and
//! time to first token, for one stream and for `concurrency` simultaneous
//! streams (`mesh-bench infer` and `examples/bench.rs` print [`BenchReport`]
//! as JSON).
//!
//! Workload: prompts of exactly `prompt_tokens` tokens (a fixed English
//! paragraph repeated, each stream starting at a different offset), greedy
//! decoding of exactly `new_tokens` tokens (end-of-sequence ignored).

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::{BackendKind, Engine, EngineConfig, Error, GenerateRequest, Prompt, SamplingParams};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// Model file (default: [`crate::default_model_path`]).
    pub model_path: Option<PathBuf>,
    /// Backend.
    pub backend: BackendKind,
    /// CPU threads (default: all cores).
    pub threads: Option<usize>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated per stream.
    pub new_tokens: usize,
    /// Simultaneous streams.
    pub concurrency: usize,
    /// Prompt tokens per engine step (default: the engine's).
    pub prefill_budget: Option<usize>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            model_path: None,
            backend: BackendKind::Cpu,
            threads: None,
            prompt_tokens: 64,
            new_tokens: 64,
            concurrency: 1,
            prefill_budget: None,
        }
    }
}

/// Decode rates of a concurrent run.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeRates {
    /// Mean tokens per second of one stream.
    pub per_stream: f64,
    /// Tokens per second of all streams together.
    pub aggregate: f64,
}

/// One stream alone.
#[derive(Debug, Clone, Serialize)]
pub struct SingleStream {
    /// Time to first token.
    pub ttft_ms: f64,
    /// Prompt tokens per second (prompt length / time to first token).
    pub prefill_tok_per_s: f64,
    /// Tokens per second after the first.
    pub decode_tok_per_s: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Model name from the file.
    pub model: String,
    /// Backend in use.
    pub backend: String,
    /// CPU threads.
    pub threads: usize,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Tokens generated per stream.
    pub new_tokens: usize,
    /// Simultaneous streams.
    pub concurrency: usize,
    /// Seconds to load the model.
    pub load_s: f64,
    /// Resident memory after the run, MB.
    pub rss_mb: f64,
    /// Peak resident memory, MB.
    pub rss_peak_mb: f64,
    /// Prompt tokens per second of a single stream.
    pub prefill_tok_per_s: f64,
    /// Median time to first token over the `concurrency` streams.
    pub ttft_ms_p50: f64,
    /// Decode rates with `concurrency` streams.
    pub decode_tok_per_s: DecodeRates,
    /// The single-stream run.
    pub single_stream: SingleStream,
}

const TEXT: &str = "The history of computing is a story of people trying to make machines do \
arithmetic faster than they could by hand. Early mechanical calculators used gears and levers; \
later, relays and vacuum tubes switched electric currents to represent numbers. The transistor \
made computers smaller, cheaper and more reliable, and integrated circuits put thousands, then \
billions, of transistors on a single chip. Today a phone in a pocket holds more computing power \
than the machines that guided astronauts to the moon. ";

fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Run {
    submitted_s: f64,
    first_s: f64,
    done_s: f64,
    tokens: usize,
}

fn run_streams(
    engine: &Engine,
    prompts: Vec<Vec<u32>>,
    new_tokens: usize,
) -> Result<Vec<Run>, Error> {
    let t0 = Instant::now();
    let params = SamplingParams {
        max_tokens: new_tokens,
        stop_at_eos: false,
        ..SamplingParams::default()
    };
    let mut gens = Vec::new();
    for p in prompts {
        let submitted_s = t0.elapsed().as_secs_f64();
        let g = engine.generate(GenerateRequest {
            prompt: Prompt::Tokens(p),
            params: params.clone(),
        })?;
        gens.push((submitted_s, g));
    }
    let handles: Vec<_> = gens
        .into_iter()
        .map(|(submitted_s, g)| {
            std::thread::spawn(move || {
                g.collect_blocking().map(|c| Run {
                    submitted_s,
                    first_s: submitted_s + c.finished.ttft_ms / 1e3,
                    done_s: submitted_s + c.finished.total_ms / 1e3,
                    tokens: c.finished.completion_tokens,
                })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| Error::Engine("bench thread panicked".into()))?
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Loads the model and runs the workload.
pub fn run(args: &BenchArgs) -> Result<BenchReport, Error> {
    let path = match &args.model_path {
        Some(p) => p.clone(),
        None => crate::find_smollm2()?,
    };
    let mut cfg = EngineConfig::new(path);
    cfg.backend = args.backend.clone();
    cfg.threads = args.threads;
    cfg.max_batch = args.concurrency.max(1);
    if let Some(b) = args.prefill_budget {
        cfg.prefill_budget = b.max(1);
    }
    let t = Instant::now();
    let engine = Engine::start(cfg)?;
    let load_s = t.elapsed().as_secs_f64();
    let base = engine
        .tokenizer()
        .encode(&TEXT.repeat(4 + args.prompt_tokens / 64), false);
    let prompt = |i: usize| -> Vec<u32> {
        let start = (i * 7) % (base.len() / 4).max(1);
        base.iter()
            .cycle()
            .skip(start)
            .take(args.prompt_tokens.max(1))
            .copied()
            .collect()
    };
    // Warm-up (allocations, caches).
    run_streams(&engine, vec![prompt(99)], 4)?;
    let single = run_streams(&engine, vec![prompt(0)], args.new_tokens)?;
    let s = &single[0];
    let ttft = s.first_s - s.submitted_s;
    let single = SingleStream {
        ttft_ms: ttft * 1e3,
        prefill_tok_per_s: args.prompt_tokens as f64 / ttft,
        decode_tok_per_s: s.tokens.saturating_sub(1) as f64 / (s.done_s - s.first_s).max(1e-9),
    };
    let (ttft_ms_p50, decode) = if args.concurrency <= 1 {
        (
            single.ttft_ms,
            DecodeRates {
                per_stream: single.decode_tok_per_s,
                aggregate: single.decode_tok_per_s,
            },
        )
    } else {
        let runs = run_streams(
            &engine,
            (0..args.concurrency).map(prompt).collect(),
            args.new_tokens,
        )?;
        let per_stream = runs
            .iter()
            .map(|r| r.tokens.saturating_sub(1) as f64 / (r.done_s - r.first_s).max(1e-9))
            .sum::<f64>()
            / runs.len() as f64;
        let first = runs.iter().map(|r| r.first_s).fold(f64::INFINITY, f64::min);
        let last = runs.iter().map(|r| r.done_s).fold(0.0, f64::max);
        let total: usize = runs.iter().map(|r| r.tokens.saturating_sub(1)).sum();
        (
            median(
                runs.iter()
                    .map(|r| (r.first_s - r.submitted_s) * 1e3)
                    .collect(),
            ),
            DecodeRates {
                per_stream,
                aggregate: total as f64 / (last - first).max(1e-9),
            },
        )
    };
    let (rss_mb, rss_peak_mb) = memory_mb();
    let info = engine.info();
    Ok(BenchReport {
        model: info.model.clone(),
        backend: info.backend.clone(),
        threads: info.threads,
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        concurrency: args.concurrency.max(1),
        load_s,
        rss_mb,
        rss_peak_mb,
        prefill_tok_per_s: single.prefill_tok_per_s,
        ttft_ms_p50,
        decode_tok_per_s: decode,
        single_stream: single,
    })
}
