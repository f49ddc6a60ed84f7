//! all-MiniLM-L6-v2 sentence embeddings against sentence-transformers'
//! (`tests/fixtures/minilm_golden.json`, made by `scripts/make_golden.py`).

use mesh_inference::backend::Cpu;
use mesh_inference::embed::MiniLm;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[test]
fn embeddings_match_reference() {
    let dir = mesh_inference::models_dir().join("all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} missing: run scripts/fetch-models.sh minilm (or set MESH_MODELS)",
        dir.display()
    );
    let g: Golden = serde_json::from_str(include_str!("fixtures/minilm_golden.json")).unwrap();
    let m = MiniLm::<Cpu>::load(&dir, &Default::default()).unwrap();
    for c in &g.cases {
        assert_eq!(m.tokenizer.encode(&c.text), c.ids, "{:?}", c.text);
        let e = m.embed(&[&c.text]).remove(0);
        let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        let cos: f32 = e.iter().zip(&c.embedding).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "cosine {cos} for {:?}", c.text);
    }
}
