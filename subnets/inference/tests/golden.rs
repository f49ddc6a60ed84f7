//! The engine against transformers in f32 on the same GGUF
//! (`tests/fixtures/smollm2_golden.json`, made by `scripts/make_golden.py`).

mod common;

use common::{engine, golden, model_path};
use mesh_inference::backend::Cpu;
use mesh_inference::gguf::GgufFile;
use mesh_inference::model::Llama;
use mesh_inference::{GenerateRequest, Prompt, SamplingParams, Tokenizer};

#[test]
fn tokenizer_gives_reference_prompt_ids() {
    let f = GgufFile::open(model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    for c in golden().cases {
        assert_eq!(
            tok.encode(&c.prompt, true),
            c.prompt_ids,
            "prompt {:?}",
            c.prompt
        );
        assert_eq!(tok.decode(&c.greedy_ids), c.greedy_text);
    }
}

#[test]
fn logits_at_last_prompt_position_within_1e_3() {
    let f = GgufFile::open(model_path()).unwrap();
    let device = Default::default();
    let (model, _) = Llama::<Cpu>::from_gguf(&f, true, &device).unwrap();
    for c in golden().cases {
        let mut cache = model.new_cache();
        let logits = model.forward(&mut [&mut cache], &[&c.prompt_ids]).remove(0);
        let top = &c.top20_at_last_prompt_position;
        let mut worst = 0f32;
        for (&id, &want) in top.ids.iter().zip(&top.logits) {
            worst = worst.max((logits[id as usize] - want).abs());
        }
        assert!(worst < 1e-3, "max |Δlogit| {worst} for {:?}", c.prompt);
        // The reference's best token is ours too.
        assert_eq!(mesh_inference::sampling::argmax(&logits), top.ids[0]);
    }
}

#[test]
fn dense_burn_path_matches_quantized_kernels() {
    // The path the GPU takes (f32 weights as burn tensors, burn matmul), run
    // on the CPU backend, against the same reference logits.
    let f = GgufFile::open(model_path()).unwrap();
    let device = Default::default();
    let (model, _) = Llama::<Cpu>::from_gguf(&f, false, &device).unwrap();
    let c = &golden().cases[1];
    let mut cache = model.new_cache();
    let logits = model.forward(&mut [&mut cache], &[&c.prompt_ids]).remove(0);
    let top = &c.top20_at_last_prompt_position;
    for (&id, &want) in top.ids.iter().zip(&top.logits) {
        assert!((logits[id as usize] - want).abs() < 1e-3);
    }
}

fn greedy32(ids: &[u32]) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Tokens(ids.to_vec()),
        params: SamplingParams {
            stop_at_eos: false,
            ..SamplingParams::greedy(32)
        },
    }
}

#[test]
fn greedy_ids_match_reference_one_at_a_time() {
    let e = engine();
    for c in golden().cases {
        let done = e.generate_blocking(greedy32(&c.prompt_ids)).unwrap();
        assert_eq!(done.ids, c.greedy_ids, "prompt {:?}", c.prompt);
        assert_eq!(done.text, c.greedy_text);
    }
}

#[test]
fn greedy_ids_match_reference_when_batched() {
    // All prompts at once (and twice each): continuous batching must not
    // change any sequence's tokens.
    let e = engine();
    let cases = golden().cases;
    let gens: Vec<_> = cases
        .iter()
        .chain(cases.iter())
        .map(|c| e.generate(greedy32(&c.prompt_ids)).unwrap())
        .collect();
    for (g, c) in gens.into_iter().zip(cases.iter().chain(cases.iter())) {
        assert_eq!(g.collect_blocking().unwrap().ids, c.greedy_ids);
    }
}

#[test]
fn chat_prompt_formats_like_the_reference() {
    let e = engine();
    let c = &golden().cases[0];
    let ids = e.encode_prompt(&Prompt::Chat(vec![mesh_inference::ChatMessage::new(
        "user",
        "Write a short story about a robot who learns to paint.",
    )]));
    assert_eq!(ids, c.prompt_ids);
}
