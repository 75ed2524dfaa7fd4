#!/usr/bin/env python3
"""Predict, status and metadata over TF Serving's REST API with `requests`, exactly as
against TensorFlow Serving (only the host and model name differ).

    python predict_rest.py --server http://localhost:8501 --model minilm "How do I reset my password?"
    python predict_rest.py --model minilm --reference ../../tests/data/minilm_embeddings.json
"""
import argparse
import json
import math
import sys

import requests


def url(args, suffix=""):
    path = f"{args.server}/v1/models/{args.model}"
    if args.version is not None:
        path += f"/versions/{args.version}"
    elif args.label:
        path += f"/labels/{args.label}"
    return path + suffix


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="http://localhost:8501")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--version", type=int)
    parser.add_argument("--label")
    parser.add_argument("--reference", help="minilm_embeddings.json: predict its sentences and check them")
    parser.add_argument("texts", nargs="*")
    args = parser.parse_args()

    status = requests.get(url(args), timeout=10)
    print(f"GET {url(args)} -> {status.status_code}")
    print(json.dumps(status.json(), ensure_ascii=False))
    metadata = requests.get(url(args, "/metadata"), timeout=10).json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    print(f"signature serving_default: inputs {sorted(signature['inputs'])} -> outputs {sorted(signature['outputs'])}")

    texts = [c["text"] for c in json.load(open(args.reference, encoding="utf-8"))["cases"]] if args.reference else args.texts
    if not texts:
        parser.error("give texts to predict, or --reference")
    response = requests.post(url(args, ":predict"), json={"instances": texts}, timeout=30)
    print(f"POST {url(args, ':predict')} -> {response.status_code}")
    if response.status_code != 200:
        print(response.json()["error"])
        return 1
    predictions = response.json()["predictions"]
    if not args.reference:
        for text, prediction in zip(texts, predictions):
            print(text, "->", json.dumps(prediction, ensure_ascii=False)[:200])
        return 0

    reference = json.load(open(args.reference, encoding="utf-8"))
    ok = True
    for case, row in zip(reference["cases"], predictions):
        cos = cosine(row[:8], case["first8"])
        good = cos >= 0.9999 and abs(sum(row) - case["sum"]) < 1e-3
        ok &= good
        print(f"{'OK ' if good else 'BAD'} cosine(first8)={cos:.6f} sum={sum(row):+.6f} (ref {case['sum']:+.6f}) {case['text']}")
    # Columnar format gives the same numbers.
    columnar = requests.post(url(args, ":predict"), json={"inputs": {"text": texts}}, timeout=30).json()["outputs"]
    same = all(abs(a - b) < 1e-6 for r1, r2 in zip(predictions, columnar) for a, b in zip(r1, r2))
    ok &= same
    print(f"{'OK ' if same else 'BAD'} columnar format equals row format")
    print("reference check passed" if ok else "reference check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
