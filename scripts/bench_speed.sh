#!/usr/bin/env bash
# The speed benchmark of the README, in one run on one machine: candle-serving's MiniLM in
# process, fp32 and int8 (benches/encoder.rs), in turns with its peers on the same sentences
# (scripts/bench_peers.sh: PyTorch and onnxruntime with 2 threads), then under gRPC/REST load
# with and without batching (benches/load.rs), the dense kernels alone (benches/dense.rs), the
# tagger and the relevance classifier (benches/ner.rs, relevance.rs), the peers'
# Flask+gunicorn+PyTorch server, then the tables with ratios, under the CPU's flags.
# Results: .cache/speed/*.json. Run it on an otherwise idle machine.
#   scripts/bench_speed.sh [SECONDS_PER_CELL]
# With SPEED_AS_X86_64_V3=1 on a host with AVX-512, every process of the run (candle-serving,
# onnxruntime, PyTorch) sees the CPU as AVX2-only (scripts/as_x86_64_v3.sh), so each takes its
# AVX2 kernels; results then go to .cache/speed-x86-64-v3. That compares the AVX2 paths when no
# AVX2-only host is at hand; caches, memory and clock stay this host's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${SPEED_AS_X86_64_V3:-}" == 1 && "${LD_PRELOAD:-}" != *x86_64_v3.so* ]]; then
  # The benchmarks are built first, outside the view: rustc installs its own SIGSEGV handler,
  # which takes the place of the view's, so under it the compiler's first CPUID kills it.
  cargo bench --locked --all-features --no-run
  exec ./scripts/as_x86_64_v3.sh "$0" "$@"
fi
seconds=${1:-5}
out=.cache/speed
view=""
if [[ "${LD_PRELOAD:-}" == *x86_64_v3.so* ]]; then
  out=.cache/speed-x86-64-v3
  view=" (seen as x86-64-v3: AVX-512, AMX and AVX-VNNI hidden from CPUID)"
fi
mkdir -p "$out"
./scripts/fetch_weights.sh
# The host first: kernels are chosen at run time, so the figures depend on these flags.
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
flags="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
  | grep -xE 'avx2|fma|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|avx512_bf16|amx_int8' | xargs)"
if [[ -n "$view" ]]; then
  flags="$(tr ' ' '\n' <<< "$flags" | grep -xE 'avx2|fma' | xargs)"
fi
# Whether the kernels can see a flag (under the x86-64-v3 view, only AVX2 and FMA).
has_flag() { [[ " $flags " == *" $1 "* ]]; }
echo "== host: $(nproc) cores, $cpu; flags: $flags$view"
# In process, candle-serving and its peers (PyTorch and onnxruntime, 2 threads each) take turns
# cell by cell, SPEED_ROUNDS rounds (default 3), and each cell's figure is the median of its
# rounds: on a shared or throttled host the speed drifts by a third within minutes, which one
# program's cells measured minutes before another's would turn into a false ratio.
# The whole of cargo's output is read before the path is picked: stopping at the first match
# closed the pipe while cargo still had messages to write, and it failed with a broken pipe.
encoder=$(cargo bench --locked --all-features --bench encoder --no-run --message-format=json \
  | python3 -c 'import json,sys; ms=[json.loads(l) for l in sys.stdin]
print(next(m["executable"] for m in ms
      if m.get("executable") and m["target"]["name"] == "encoder"))')
encoder=$(printf %q "$encoder")  # peers.py splits each command as a shell would
beside=(--beside "candle-serving=$encoder" --beside "candle-serving-int8=$encoder --int8")
# The AVX2 dense-layer kernels (AVX2+FMA for fp32, AVX-VNNI for int8) measured on this host
# too when it has AVX-512: the run-time choice capped, GELU and softmax unchanged.
if has_flag avx512f; then
  beside+=(--beside "candle-serving-avx2=env CANDLE_SERVING_KERNELS=avx2 $encoder")
  if has_flag avx_vnni; then
    beside+=(--beside "candle-serving-int8-avx2=env CANDLE_SERVING_KERNELS=avx2 $encoder --int8")
  fi
fi
./scripts/bench_peers.sh --only inprocess --seconds "$seconds" --rounds "${SPEED_ROUNDS:-3}" \
  "${beside[@]}" --json "$out/inprocess.json"
python3 -c 'import json,sys; print(json.dumps([r for r in json.load(open(sys.argv[1]))["results"]
    if r["runtime"].startswith("candle-serving")]))' "$out/inprocess.json" > "$out/candle_inprocess.json"
cargo bench --locked --all-features --bench load -- --seconds "$seconds" --json "$out/candle_load_fp32.json"
cargo bench --locked --all-features --bench load -- --seconds "$seconds" --int8 --batching on \
  --concurrency 1,32 --json "$out/candle_load_int8.json"
python3 -c 'import json,sys; print(json.dumps(sum((json.load(open(p)) for p in sys.argv[1:]), [])))' \
  "$out/candle_load_fp32.json" "$out/candle_load_int8.json" > "$out/candle_load.json"
# The dense-layer kernels alone, against this core's FMA peak: weights in cache, then from
# memory (--cold), as the encoder's are at one sentence.
cargo bench --locked --all-features --bench dense -- --seconds 1
cargo bench --locked --all-features --bench dense -- --seconds 1 --cold
cargo bench --locked --all-features --bench dense -- --seconds 1 --int8
cargo bench --locked --all-features --bench dense -- --seconds 1 --int8 --cold
# The small models: the tagger over gRPC (goal 11,000 requests/s at concurrency 10) and the
# relevance classifier's per-call cost.
cargo bench --locked --all-features --bench ner
if has_flag avx512f; then
  CANDLE_SERVING_KERNELS=avx2 cargo bench --locked --all-features --bench ner
fi
cargo bench --locked --all-features --bench relevance
./scripts/bench_peers.sh --only server --seconds "$seconds" --json "$out/server.json"
python3 -c 'import json,sys; a, b = (json.load(open(p)) for p in sys.argv[1:3])
a["results"] = [r for r in a["results"] if not r["runtime"].startswith("candle-serving")] + b["results"]
print(json.dumps(a, indent=2))' "$out/inprocess.json" "$out/server.json" > "$out/peers.json"
echo
echo "== $(date -u +%Y-%m-%d), $(nproc) cores, $cpu; flags: $flags$view"
python3 benches/speed_table.py "$out/candle_inprocess.json" "$out/candle_load.json" "$out/peers.json"
