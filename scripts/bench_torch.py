#!/usr/bin/env python3
"""The mesh-inference benchmark workload through PyTorch + transformers, for a
side-by-side figure with `mesh-bench infer` / `cargo run --example bench`.

    /tmp/golden-venv/bin/python scripts/bench_torch.py --prompt-tokens 64 \
        --new-tokens 64 --concurrency 8 [--threads 2] [--device cpu|cuda]

Same model file (the GGUF, dequantized to f32 by transformers), same
prompts (the paragraph the Rust bench uses, cycled to exactly P tokens,
stream i starting at token 7*i), greedy decoding of exactly N tokens with a
KV cache. Concurrent streams run as one batch (equal prompt lengths, so no
padding). Prints JSON with the same fields as the Rust report.
"""
import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

TEXT = ("The history of computing is a story of people trying to make machines do "
        "arithmetic faster than they could by hand. Early mechanical calculators used gears and levers; "
        "later, relays and vacuum tubes switched electric currents to represent numbers. The transistor "
        "made computers smaller, cheaper and more reliable, and integrated circuits put thousands, then "
        "billions, of transistors on a single chip. Today a phone in a pocket holds more computing power "
        "than the machines that guided astronauts to the moon. ")

MODELS = Path(os.environ.get("MESH_MODELS", Path.home() / ".cache/mesh-models"))


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def run(model, prompts, new_tokens, device):
    """Greedy-decodes a batch; returns (ttft_s, decode_s) for the batch."""
    x = torch.tensor(prompts, device=device)
    t0 = time.perf_counter()
    with torch.no_grad():
        o = model(input_ids=x, use_cache=True)
        past = o.past_key_values
        nxt = o.logits[:, -1].argmax(-1, keepdim=True)
        sync(device)
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            o = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past = o.past_key_values
            nxt = o.logits[:, -1].argmax(-1, keepdim=True)
        sync(device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = time.perf_counter()
    d, f = MODELS / "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).to(a.device).eval()
    sync(a.device)
    load_s = time.perf_counter() - t
    base = tok(TEXT * (4 + a.prompt_tokens // 64), add_special_tokens=False)["input_ids"]

    def prompt(i):
        start = (i * 7) % max(len(base) // 4, 1)
        return [base[(start + j) % len(base)] for j in range(a.prompt_tokens)]

    run(model, [prompt(99)], 4, a.device)  # warm-up
    ttft, dec = run(model, [prompt(0)], a.new_tokens, a.device)
    single = {
        "ttft_ms": ttft * 1e3,
        "prefill_tok_per_s": a.prompt_tokens / ttft,
        "decode_tok_per_s": (a.new_tokens - 1) / dec,
    }
    if a.concurrency > 1:
        cttft, cdec = run(model, [prompt(i) for i in range(a.concurrency)], a.new_tokens, a.device)
        rates = {"per_stream": (a.new_tokens - 1) / cdec,
                 "aggregate": a.concurrency * (a.new_tokens - 1) / cdec}
        ttft_p50 = cttft * 1e3
    else:
        rates = {"per_stream": single["decode_tok_per_s"], "aggregate": single["decode_tok_per_s"]}
        ttft_p50 = single["ttft_ms"]
    rss = [l for l in open("/proc/self/status") if l.startswith("VmRSS:")][0].split()[1]
    print(json.dumps({
        "model": "SmolLM2-135M-Instruct (transformers f32)",
        "backend": f"torch-{a.device}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "prompt_tokens": a.prompt_tokens,
        "new_tokens": a.new_tokens,
        "concurrency": a.concurrency,
        "load_s": load_s,
        "rss_mb": int(rss) / 1024,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prefill_tok_per_s": single["prefill_tok_per_s"],
        "ttft_ms_p50": ttft_p50,
        "decode_tok_per_s": rates,
        "single_stream": single,
    }, indent=1))


if __name__ == "__main__":
    main()
