#!/usr/bin/env bash
# Writes tests/data/minilm_embeddings.json: the embeddings sentence-transformers computes for a
# few sentences with all-MiniLM-L6-v2 from model_repo/minilm/1 (fetched by
# scripts/fetch_weights.sh), which tests/it/minilm.rs and clients/python/predict_*.py compare the
# server's output with. Runs offline in the peers' venv (.cache/venv-peers, scripts/peers_venv.sh).
#   scripts/make_reference.sh [OUTPUT_JSON]
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/peers_venv.sh
ensure_peers_venv
./scripts/fetch_weights.sh

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$peers_venv/bin/python" scripts/make_reference.py \
  --model model_repo/minilm/1 --out "${1:-tests/data/minilm_embeddings.json}"
