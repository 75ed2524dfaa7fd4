#!/usr/bin/env bash
# Benchmarks the Python "peers" of this server on the MiniLM weights: PyTorch and onnxruntime
# in process, and a Flask+gunicorn+PyTorch server over HTTP (see benches/peers.py).
# Creates or reuses the venv .cache/venv-peers; arguments go to benches/peers.py, e.g.
#   scripts/bench_peers.sh --seconds 2 --only inprocess --json /tmp/peers.json
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv and its pinned requirements are in scripts/peers_venv.sh.
source scripts/peers_venv.sh
ensure_peers_venv

./scripts/fetch_weights.sh
exec "$peers_venv/bin/python" benches/peers.py "$@"
