//! Engine behaviour: streaming, stop strings, sampling, cancellation, errors.

mod common;

use std::time::{Duration, Instant};

use common::{engine, golden, model_path};
use mesh_inference::{
    BackendKind, ChatMessage, Engine, EngineConfig, Error, Event, FinishReason, GenerateRequest,
    Prompt, SamplingParams,
};

fn req(ids: &[u32], params: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        prompt: Prompt::Tokens(ids.to_vec()),
        params,
    }
}

#[tokio::test]
async fn streams_tokens_then_done() {
    let c = &golden().cases[0];
    let mut g = engine()
        .generate(req(
            &c.prompt_ids,
            SamplingParams {
                stop_at_eos: false,
                ..SamplingParams::greedy(10)
            },
        ))
        .unwrap();
    let mut ids = Vec::new();
    let mut text = String::new();
    loop {
        match g.next().await.expect("stream ends with Done") {
            Event::Token { id, text: t } => {
                ids.push(id);
                text.push_str(&t);
            }
            Event::Done(f) => {
                assert_eq!(f.reason, FinishReason::Length);
                assert_eq!(f.completion_tokens, 10);
                assert_eq!(f.prompt_tokens, c.prompt_ids.len());
                assert!(f.ttft_ms > 0.0 && f.total_ms >= f.ttft_ms);
                break;
            }
            Event::Error(e) => panic!("{e}"),
        }
    }
    assert!(g.next().await.is_none());
    assert_eq!(ids, c.greedy_ids[..10]);
    assert_eq!(text, engine().tokenizer().decode(&ids));
}

#[test]
fn stop_string_ends_generation_before_it() {
    let c = &golden().cases[1]; // "1. The Moon is a celestial body ..."
    let done = engine()
        .generate_blocking(req(
            &c.prompt_ids,
            SamplingParams {
                stop: vec!["celestial".into()],
                ..SamplingParams::greedy(32)
            },
        ))
        .unwrap();
    assert_eq!(done.finished.reason, FinishReason::Stop);
    assert_eq!(done.text, "1. The Moon is a ");
}

#[test]
fn eos_ends_generation() {
    let e = engine();
    let done = e
        .generate_blocking(GenerateRequest {
            prompt: Prompt::Chat(vec![mesh_inference::ChatMessage::new("user", "Say hi.")]),
            params: SamplingParams::greedy(200),
        })
        .unwrap();
    assert_eq!(done.finished.reason, FinishReason::Eos, "{:?}", done.text);
    assert_eq!(*done.ids.last().unwrap(), e.tokenizer().eos_id);
    assert!(!done.text.contains("<|im_end|>"));
}

#[test]
fn sampling_is_seeded() {
    let c = &golden().cases[0];
    let p = |seed| SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed,
        stop_at_eos: false,
        ..SamplingParams::greedy(24)
    };
    let e = engine();
    let a = e.generate_blocking(req(&c.prompt_ids, p(7))).unwrap();
    let b = e.generate_blocking(req(&c.prompt_ids, p(7))).unwrap();
    let d = e.generate_blocking(req(&c.prompt_ids, p(8))).unwrap();
    assert_eq!(a.ids, b.ids);
    assert_ne!(a.ids, d.ids);
    assert_ne!(a.ids, c.greedy_ids[..24]);
}

#[test]
fn dropping_the_stream_cancels() {
    let e = engine();
    let c = &golden().cases[0];
    let mut g = e
        .generate(req(
            &c.prompt_ids,
            SamplingParams {
                stop_at_eos: false,
                ..SamplingParams::greedy(2000)
            },
        ))
        .unwrap();
    assert!(matches!(g.blocking_next(), Some(Event::Token { .. })));
    drop(g);
    let t = Instant::now();
    while e.load().active > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sequence still active after cancel"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The engine still serves.
    let done = e
        .generate_blocking(req(&c.prompt_ids, SamplingParams::greedy(3)))
        .unwrap();
    assert_eq!(done.ids, c.greedy_ids[..3]);
}

#[test]
fn concurrent_requests_share_forward_passes() {
    // Four simultaneous requests are decoded together: far fewer forward
    // passes than four requests one after another (steps, not wall time, so
    // the test holds on a busy machine), and the same tokens. Its own
    // engine, so no other test's requests count.
    let e = &Engine::start(EngineConfig::new(model_path())).unwrap();
    let c = &golden().cases[2];
    let p = || {
        req(
            &c.prompt_ids,
            SamplingParams {
                stop_at_eos: false,
                ..SamplingParams::greedy(16)
            },
        )
    };
    let s0 = e.load().steps;
    for _ in 0..4 {
        e.generate_blocking(p()).unwrap();
    }
    let sequential = e.load().steps - s0;
    assert_eq!(sequential, 64);
    let s0 = e.load().steps;
    let t = Instant::now();
    let gens: Vec<_> = (0..4).map(|_| e.generate(p()).unwrap()).collect();
    for g in gens {
        assert_eq!(g.collect_blocking().unwrap().ids, c.greedy_ids[..16]);
    }
    let batched = e.load().steps - s0;
    assert!(
        batched <= 24,
        "4 concurrent requests took {batched} steps ({:?})",
        t.elapsed()
    );
}

#[test]
fn invalid_requests_are_refused() {
    let e = engine();
    assert!(matches!(
        e.generate(req(&[], SamplingParams::default())),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        e.generate(req(&[1, 999_999], SamplingParams::default())),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        e.generate(req(
            &[1],
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            }
        )),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        e.generate(req(&[1], SamplingParams::greedy(0))),
        Err(Error::InvalidRequest(_))
    ));
    let long = vec![1u32; 5000];
    assert!(matches!(
        e.generate(req(&long, SamplingParams::default())),
        Err(Error::PromptTooLong { tokens: 5000, .. })
    ));
    // Text longer than any prompt that fits: refused before tokenizing (the
    // error names bytes, not tokens), as text and as chat.
    // (8192 tokens is the model's whole context; the engine's is at most that.)
    let huge = "word ".repeat(e.tokenizer().max_token_bytes() * 8192 / 5 + 1);
    let text = GenerateRequest {
        prompt: Prompt::Text(huge.clone()),
        params: SamplingParams::default(),
    };
    match e.generate(text) {
        Err(Error::PromptTooLarge { bytes, max: m }) => assert!(bytes > m, "{bytes} {m}"),
        other => panic!("{:?}", other.err()),
    }
    let chat = GenerateRequest {
        prompt: Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: huge,
        }]),
        params: SamplingParams::default(),
    };
    assert!(matches!(
        e.generate(chat),
        Err(Error::PromptTooLarge { .. })
    ));
    // A prompt that is long but could fit is tokenized and judged by tokens.
    let words = GenerateRequest {
        prompt: Prompt::Text("word ".repeat(2100)),
        params: SamplingParams::default(),
    };
    assert!(matches!(
        e.generate(words),
        Err(Error::PromptTooLong { .. })
    ));
}

#[test]
fn unavailable_gpu_is_an_error_not_a_panic() {
    if std::env::var_os("MESH_EXPECT_GPU").is_some() {
        return;
    }
    let mut cfg = EngineConfig::new(model_path());
    cfg.backend = BackendKind::Cuda(0);
    match Engine::start(cfg.clone()) {
        Err(Error::BackendUnavailable { backend, .. }) => assert_eq!(backend, "cuda:0"),
        other => panic!("expected BackendUnavailable, got {other:?}"),
    }
    cfg.fallback_to_cpu = true;
    let e = Engine::start(cfg).unwrap();
    assert_eq!(e.info().backend, "cpu");
}

#[test]
fn missing_model_names_the_fetch_script() {
    let e = Engine::start(EngineConfig::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(matches!(e, Error::Gguf(_)));
    let msg = Error::ModelMissing("/x".into()).to_string();
    assert!(msg.contains("scripts/fetch-models.sh"), "{msg}");
}
