#!/usr/bin/env bash
# The speed benchmark of the README, in one run on one machine: candle-serving's MiniLM in
# process (benches/encoder.rs) and under gRPC/REST load with and without batching
# (benches/load.rs), then the peers on the same sentences (scripts/bench_peers.sh: PyTorch and
# onnxruntime with 2 threads, Flask+gunicorn+PyTorch), then the tables with ratios.
# Results: .cache/speed/*.json. Run it on an otherwise idle machine.
#   scripts/bench_speed.sh [SECONDS_PER_CELL]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-5}
out=.cache/speed
mkdir -p "$out"
./scripts/fetch_weights.sh
cargo bench --locked --all-features --bench encoder -- --seconds "$seconds" --json "$out/candle_inprocess.json"
cargo bench --locked --all-features --bench load -- --seconds "$seconds" --json "$out/candle_load.json"
./scripts/bench_peers.sh --seconds "$seconds" --json "$out/peers.json"
echo
echo "== $(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 benches/speed_table.py "$out/candle_inprocess.json" "$out/candle_load.json" "$out/peers.json"
