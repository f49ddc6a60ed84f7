//! Prints the inference benchmark as JSON (what `mesh-bench infer` will run).
//!
//! `cargo run --release -p mesh-inference --example bench -- --prompt-tokens 64 --new-tokens 64 --concurrency 8 [--threads 2] [--prefill-budget 512] [--backend cpu|cuda] [--model PATH]`

use mesh_inference::bench::{run, BenchArgs};

fn main() {
    let mut a = BenchArgs::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--prompt-tokens" => a.prompt_tokens = num(&val()),
            "--new-tokens" => a.new_tokens = num(&val()),
            "--concurrency" => a.concurrency = num(&val()),
            "--threads" => a.threads = Some(num(&val())),
            "--prefill-budget" => a.prefill_budget = Some(num(&val())),
            "--backend" => a.backend = val().parse().unwrap_or_else(|e: String| die(&e)),
            "--model" => a.model_path = Some(val().into()),
            "--json" => {}
            other => die(&format!("unknown flag {other}")),
        }
    }
    match run(&a) {
        Ok(r) => println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("serializable")
        ),
        Err(e) => die(&e.to_string()),
    }
}

fn num(s: &str) -> usize {
    s.parse()
        .unwrap_or_else(|_| die(&format!("not a number: {s}")))
}

fn die(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2)
}
