#!/usr/bin/env python3
"""Predict over gRPC with the official TensorFlow Serving client (tensorflow-serving-api),
written exactly as against TensorFlow Serving: PredictionServiceStub and make_tensor_proto.

    python predict_grpc.py --server localhost:8500 --model minilm "How do I reset my password?"
    python predict_grpc.py --model minilm --reference ../../tests/data/minilm_embeddings.json
"""
import argparse
import json
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def predict(stub, model, inputs, version=None, label=None, timeout=30.0):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, timeout)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    return response.model_spec, outputs


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="localhost:8500")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--version", type=int)
    parser.add_argument("--label")
    parser.add_argument("--pair", action="append", help="a second text per text (classifiers)")
    parser.add_argument("--reference", help="minilm_embeddings.json: predict its sentences and check them")
    parser.add_argument("texts", nargs="*")
    args = parser.parse_args()

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(args.server))

    if args.reference:
        return check_reference(stub, args)

    if not args.texts:
        parser.error("give texts to predict, or --reference")
    inputs = {"text": args.texts}
    if args.pair:
        inputs["text_pair"] = args.pair
    spec, outputs = predict(stub, args.model, inputs, args.version, args.label)
    print(f"model {spec.name} version {spec.version.value} signature {spec.signature_name}")
    for name, value in sorted(outputs.items()):
        if value.dtype == object:
            value = [v.decode("utf-8") for v in value.reshape(-1)]
        print(f"{name} {np.shape(value)}: {np.array2string(np.asarray(value), precision=4, threshold=12)}")
    return 0


def check_reference(stub, args):
    """Checks the served embeddings against sentence-transformers' reference values, and
    that pre-tokenised ids sent as a numpy array (tensor_content) give the same vector."""
    reference = json.load(open(args.reference, encoding="utf-8"))
    texts = [case["text"] for case in reference["cases"]]
    spec, outputs = predict(stub, args.model, {"text": texts}, args.version, args.label)
    embeddings = outputs["embeddings"]
    print(f"model {spec.name} version {spec.version.value}: embeddings {embeddings.shape}")
    ok = embeddings.shape == (len(texts), reference["cases"][0]["dim"])
    for case, row in zip(reference["cases"], embeddings):
        cos = cosine(row[:8], np.array(case["first8"]))
        good = cos >= 0.9999 and abs(float(row.sum()) - case["sum"]) < 1e-3
        ok &= good
        print(f"{'OK ' if good else 'BAD'} cosine(first8)={cos:.6f} sum={row.sum():+.6f} (ref {case['sum']:+.6f}) {case['text']}")
    cos01 = cosine(embeddings[0], embeddings[1])
    good = abs(cos01 - reference["cosine_0_1"]) < 1e-4
    ok &= good
    print(f"{'OK ' if good else 'BAD'} cosine(sentence 0, sentence 1)={cos01:.6f} (ref {reference['cosine_0_1']:.6f})")

    # "hello world" for MiniLM's uncased vocabulary: [CLS] hello world [SEP].
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    _, by_ids = predict(stub, args.model, {"input_ids": ids}, args.version, args.label)
    _, by_text = predict(stub, args.model, {"text": ["hello world"]}, args.version, args.label)
    cos = cosine(by_ids["embeddings"][0], by_text["embeddings"][0])
    good = cos >= 0.9999
    ok &= good
    print(f"{'OK ' if good else 'BAD'} input_ids as a numpy int64 array equal the text path: cosine={cos:.6f}")
    print("reference check passed" if ok else "reference check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
