//! Shared by the integration tests: the model file and the golden fixture.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::OnceLock;

use mesh_inference::{Engine, EngineConfig};
use serde::Deserialize;

/// The SmolLM2 GGUF; fails the test with the way to get it.
pub fn model_path() -> PathBuf {
    match mesh_inference::find_smollm2() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// One engine per test process.
pub fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let mut cfg = EngineConfig::new(model_path());
        cfg.max_batch = 8;
        Engine::start(cfg).expect("engine starts")
    })
}

#[derive(Debug, Deserialize)]
pub struct Top {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
    pub top20_at_last_prompt_position: Top,
}

#[derive(Debug, Deserialize)]
pub struct Golden {
    pub cases: Vec<Case>,
}

pub fn golden() -> Golden {
    // Embedded, so the test binary does not depend on where it was built.
    serde_json::from_str(include_str!("../fixtures/smollm2_golden.json")).expect("fixture JSON")
}
