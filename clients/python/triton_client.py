#!/usr/bin/env python3
"""Talk to the server with Triton's own client (tritonclient), over the Open Inference
Protocol, written exactly as against Triton: InferInput, set_data_from_numpy, as_numpy.

    python triton_client.py --url localhost:8500 --protocol grpc --model minilm "How do I reset my password?"
    python triton_client.py --url localhost:8501 --protocol http --model symptom_ner "我头疼，还有点发烧"
    python triton_client.py --url localhost:8501 --protocol http --model dialog_relevance --pair "痰是黄的" "我咳嗽"
    python triton_client.py --url localhost:8500 --protocol grpc --model minilm --reference ../../tests/data/minilm_embeddings.json
    python triton_client.py --url localhost:8500 --protocol grpc --server-info --model minilm

Each check prints one line starting with OK or BAD; the exit status is 1 if any is BAD.
"""
import argparse
import json
import sys

import numpy as np


def client_module(protocol):
    if protocol == "grpc":
        import tritonclient.grpc as client
    else:
        import tritonclient.http as client
    return client


def infer(client, triton, model, inputs, version="", binary=True, outputs=None, parameters=None):
    """inputs: name -> numpy array. Returns (result, {name: numpy array})."""
    infer_inputs = []
    for name, value in inputs.items():
        datatype = "BYTES" if value.dtype == object else client.np_to_triton_dtype(value.dtype)
        tensor = client.InferInput(name, list(value.shape), datatype)
        if client.__name__.endswith("http"):
            tensor.set_data_from_numpy(value, binary_data=binary)
        else:
            tensor.set_data_from_numpy(value)
        infer_inputs.append(tensor)
    requested = None
    if outputs:
        if client.__name__.endswith("http"):
            requested = [client.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        else:
            requested = [client.InferRequestedOutput(o) for o in outputs]
    result = triton.infer(model, infer_inputs, model_version=version, outputs=requested, parameters=parameters)
    names = outputs or [o["name"] for o in response_dict(result)["outputs"]]
    return result, {n: result.as_numpy(n) for n in names}


def response_dict(result):
    """The response header as a dict, from either client (the gRPC one returns a protobuf
    message unless asked for JSON)."""
    if type(result).__module__.startswith("tritonclient.grpc"):
        return result.get_response(as_json=True)
    return result.get_response()


def texts(values):
    return np.array([v.encode("utf-8") for v in values], dtype=object)


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def report(ok, message):
    print(f"{'OK ' if ok else 'BAD'} {message}")
    return ok


def server_info(client, triton, model):
    ok = report(triton.is_server_live(), "server live")
    ok &= report(triton.is_server_ready(), "server ready")
    ok &= report(triton.is_model_ready(model), f"model {model} ready")
    meta = triton.get_server_metadata()
    meta = meta if isinstance(meta, dict) else json.loads(json_format(meta))
    ok &= report(meta["name"] == "candle-serving", f"server metadata {meta['name']} {meta['version']} extensions={meta.get('extensions')}")
    try:
        model_meta = triton.get_model_metadata(model)
    except client.InferenceServerException as e:
        return report(False, f"model metadata {model}: {e.message()}")
    model_meta = model_meta if isinstance(model_meta, dict) else json.loads(json_format(model_meta))
    inputs = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in model_meta["inputs"]]
    outputs = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in model_meta["outputs"]]
    ok &= report(model_meta["name"] == model and len(model_meta["versions"]) > 0,
                 f"model metadata {model} versions={model_meta['versions']} inputs={inputs} outputs={outputs}")
    return ok


def json_format(message):
    from google.protobuf import json_format as jf
    return jf.MessageToJson(message, preserving_proto_field_name=True)


def check_reference(client, triton, args):
    """The served embeddings against sentence-transformers' reference values; over HTTP
    both as binary data (tritonclient's default) and as JSON."""
    reference = json.load(open(args.reference, encoding="utf-8"))
    sentences = [case["text"] for case in reference["cases"]]
    ok = True
    modes = [True, False] if args.protocol == "http" else [True]
    for binary in modes:
        result, outputs = infer(client, triton, args.model, {"text": texts(sentences)}, binary=binary, outputs=["embeddings"])
        embeddings = outputs["embeddings"]
        how = "binary" if binary else "json"
        ok &= report(embeddings.shape == (len(sentences), reference["cases"][0]["dim"]) and embeddings.dtype == np.float32,
                     f"{args.protocol}/{how}: embeddings {embeddings.shape} {embeddings.dtype}")
        for case, row in zip(reference["cases"], embeddings):
            cos = cosine(row[:8], np.array(case["first8"]))
            good = cos >= 0.9999 and abs(float(row.sum()) - case["sum"]) < 1e-3
            ok &= report(good, f"{args.protocol}/{how}: cosine(first8)={cos:.6f} sum={row.sum():+.6f} (ref {case['sum']:+.6f}) {case['text']}")
    if args.save:
        np.save(args.save, embeddings)
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="localhost:8500", help="host:port (the gRPC port for grpc, the REST port for http)")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--version", default="")
    parser.add_argument("--label", help="a version label, sent as the `version_label` request parameter")
    parser.add_argument("--pair", action="append", help="a second text per text (classifiers)")
    parser.add_argument("--reference", help="minilm_embeddings.json: embed its sentences and check them")
    parser.add_argument("--save", help="with --reference: write the embeddings to this .npy file")
    parser.add_argument("--server-info", action="store_true", help="liveness, readiness and metadata")
    parser.add_argument("--json", action="store_true", help="over http: JSON tensors instead of binary data")
    parser.add_argument("texts", nargs="*")
    args = parser.parse_args()

    client = client_module(args.protocol)
    triton = client.InferenceServerClient(url=args.url)

    if args.server_info:
        return 0 if server_info(client, triton, args.model) else 1
    if args.reference:
        return 0 if check_reference(client, triton, args) else 1
    if not args.texts:
        parser.error("give texts, or --reference, or --server-info")
    inputs = {"text": texts(args.texts)}
    if args.pair:
        inputs["text_pair"] = texts(args.pair)
    parameters = {"version_label": args.label} if args.label else None
    try:
        result, outputs = infer(client, triton, args.model, inputs, version=args.version, binary=not args.json, parameters=parameters)
    except client.InferenceServerException as e:
        print(f"ERROR {e.status()} {e.message()}")
        return 2
    response = response_dict(result)
    print(f"model {response['model_name']} version {response['model_version']}")
    for name, value in outputs.items():
        if value.dtype == object:
            value = np.vectorize(lambda b: b.decode("utf-8") if isinstance(b, bytes) else b)(value)
        print(f"{name} {value.shape}: {json.dumps(value.tolist(), ensure_ascii=False) if value.dtype != np.float32 else np.array2string(value, precision=4, threshold=12)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
