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
    print()
    print("| file | batch | candle-serving | onnxruntime | PyTorch | vs onnxruntime | vs PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for file in ("short", "long"):
        for batch in (1, 8, 32):
            ours = rate.get(("candle-serving", file, batch))
            ort = rate.get(("onnxruntime", file, batch))
            torch = rate.get(("torch", file, batch))
            if ours is None or ort is None or torch is None:
                continue
            print(f"| {file} | {batch} | {ours:.0f} | {ort:.0f} | {torch:.0f} "
                  f"| {ours / ort:.2f}x | {ours / torch:.2f}x |")

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
             and r["transport"] == transport), None)
        grpc_b, rest_b, grpc_n = pick(True, "gRPC"), pick(True, "REST"), pick(False, "gRPC")
        f = flask.get(c)
        ratio = f"{grpc_b['rps'] / f['rps']:.2f}x" if grpc_b and f else "-"
        print(f"| {c} | {cell(grpc_b)} | {cell(rest_b)} | {cell(grpc_n)} | {cell(f)} | {ratio} |")

    short32 = rate.get(("candle-serving", "short", 32))
    grpc32 = next((r for r in load if r["concurrency"] == 32 and r["batching"]
                   and r["transport"] == "gRPC"), None)
    if short32 and grpc32:
        print()
        print(f"gRPC at concurrency 32 with batching: {grpc32['rps']:.0f} requests/s = "
              f"{grpc32['rps'] / short32:.2f}x the in-process short batch-32 figure ({short32:.0f}/s)")


if __name__ == "__main__":
    main()
