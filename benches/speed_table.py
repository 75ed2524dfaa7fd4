#!/usr/bin/env python3
"""Prints the tables of scripts/bench_speed.sh: candle-serving beside its peers, measured in
the same run, with ratios. Standard library only.

usage: speed_table.py CANDLE_INPROCESS.json CANDLE_LOAD.json PEERS.json
"""

import json
import sys


def main():
    inprocess, load, peers = (json.load(open(p)) for p in sys.argv[1:4])
    rate = {(r["runtime"], r["file"], r["batch"]): r["sentences_per_s"] for r in inprocess}
    for r in peers["results"]:
        if "runtime" in r:
            rate[(r["runtime"], r["file"], r["batch"])] = r["sentences_per_s"]

    print("In process, MiniLM, sentences/s (tokenise, encode, pool, normalise), 2 threads each")
    rounds = max((len(r.get("rounds", [])) for r in inprocess), default=0)
    if rounds > 1:
        print(f"(each figure the median of {rounds} rounds, the runtimes taking turns cell by cell)")
    print()
    print("| file | batch | candle-serving fp32 | int8 | onnxruntime fp32 | PyTorch "
          "| fp32 vs onnxruntime | int8 vs onnxruntime | int8 vs fp32 | fp32 vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for file in ("short", "long"):
        for batch in (1, 8, 32):
            ours = rate.get(("candle-serving", file, batch))
            int8 = rate.get(("candle-serving-int8", file, batch))
            ort = rate.get(("onnxruntime", file, batch))
            torch = rate.get(("torch", file, batch))
            if ours is None or ort is None or torch is None:
                continue
            i8 = f"{int8:.0f}" if int8 else "-"
            i8_ort = f"{int8 / ort:.2f}x" if int8 else "-"
            i8_fp32 = f"{int8 / ours:.2f}x" if int8 else "-"
            print(f"| {file} | {batch} | {ours:.0f} | {i8} | {ort:.0f} | {torch:.0f} "
                  f"| {ours / ort:.2f}x | {i8_ort} | {i8_fp32} | {ours / torch:.2f}x |")

    avx2 = [(f, b) for f in ("short", "long") for b in (1, 8, 32)
            if ("candle-serving-avx2", f, b) in rate]
    if avx2:
        print()
        print("The AVX2 dense-layer kernels on the same host (CANDLE_SERVING_KERNELS=avx2)")
        print()
        print("| file | batch | fp32 AVX2+FMA | int8 AVX-VNNI | onnxruntime fp32 | fp32 vs onnxruntime "
              "| int8 vs onnxruntime | int8 vs fp32 |")
        print("|---|---|---|---|---|---|---|---|")
        for f, b in avx2:
            ours, ort = rate[("candle-serving-avx2", f, b)], rate.get(("onnxruntime", f, b))
            int8 = rate.get(("candle-serving-int8-avx2", f, b))
            if ort is None:
                continue
            i8 = f"{int8:.0f}" if int8 else "-"
            i8_ort = f"{int8 / ort:.2f}x" if int8 else "-"
            i8_fp32 = f"{int8 / ours:.2f}x" if int8 else "-"
            print(f"| {f} | {b} | {ours:.0f} | {i8} | {ort:.0f} | {ours / ort:.2f}x | {i8_ort} | {i8_fp32} |")

    flask = {r["concurrency"]: r for r in peers["results"] if "server" in r}
    print()
    print("Servers, one short sentence per request, closed loop: requests/s (p50 / p99 ms)")
    print()
    print("| concurrency | candle-serving gRPC, batching | REST, batching | gRPC, no batching "
          "| Flask+gunicorn+PyTorch | gRPC batching vs Flask |")
    print("|---|---|---|---|---|---|")

    def cell(r):
        return f"{r['rps']:.0f} ({r['p50_ms']:.1f} / {r['p99_ms']:.1f})" if r else "-"

    for c in (1, 8, 32, 64):
        pick = lambda batching, transport: next(
            (r for r in load if r["concurrency"] == c and r["batching"] == batching
             and r["transport"] == transport and not r.get("int8")), None)
        grpc_b, rest_b, grpc_n = pick(True, "gRPC"), pick(True, "REST"), pick(False, "gRPC")
        f = flask.get(c)
        ratio = f"{grpc_b['rps'] / f['rps']:.2f}x" if grpc_b and f else "-"
        print(f"| {c} | {cell(grpc_b)} | {cell(rest_b)} | {cell(grpc_n)} | {cell(f)} | {ratio} |")

    def grpc(c, int8):
        return next((r for r in load if r["concurrency"] == c and r["batching"]
                     and r["transport"] == "gRPC" and bool(r.get("int8")) == int8), None)

    print()
    for int8, name in ((False, "fp32"), (True, "int8")):
        short1 = rate.get(("candle-serving-int8" if int8 else "candle-serving", "short", 1))
        one, many = grpc(1, int8), grpc(32, int8)
        ort32 = rate.get(("onnxruntime", "short", 32))
        if one and short1:
            # The server's own cost per request: transport, admission, the queue hop.
            print(f"- {name}: one request at concurrency 1, gRPC p50 {one['p50_ms']:.2f} ms against "
                  f"{1e3 / short1:.2f} ms per sentence in process at batch 1: "
                  f"{one['p50_ms'] - 1e3 / short1:.2f} ms of server overhead")
        if many and ort32:
            print(f"- {name}: gRPC with batching at concurrency 32, {many['rps']:.0f} requests/s = "
                  f"{many['rps'] / ort32:.2f}x onnxruntime's in-process short batch 32 ({ort32:.0f}/s)")


if __name__ == "__main__":
    main()
