#!/usr/bin/env bash
# Benchmarks the Python "peers" of this server on the MiniLM weights: PyTorch and onnxruntime
# in process, and a Flask+gunicorn+PyTorch server over HTTP (see benches/peers.py).
# Creates or reuses the venv .cache/venv-peers; arguments go to benches/peers.py, e.g.
#   scripts/bench_peers.sh --seconds 2 --only inprocess --json /tmp/peers.json
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.cache/venv-peers
stamp=$venv/.peers-requirements

# PyPI's Linux torch wheel is built with CUDA: its libraries link cudart, cublas, cudnn, nccl,
# ... at load time, so `import torch` fails without them even on a CPU-only machine. We install
# torch without its dependencies and then only the CUDA runtime packages its libraries need to
# load, at the versions torch itself pins; triton (1 GB, only for torch.compile), cusolver (loaded
# lazily for linear algebra) and cuda-bindings are left out.
torch_req="torch==2.15.0"
torch_libs=(
  "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2"
  "nvidia-cudnn-cu13==9.26.0.51"
  "nvidia-cusparselt-cu13==0.8.1"
  "nvidia-nccl-cu13==2.30.7"
  "nvidia-nvshmem-cu13==3.7.2"
)
reqs=(
  # torch's own pure-Python dependencies
  "filelock" "typing-extensions>=4.13.0" "setuptools>=77.0.3" "sympy>=1.13.3" "networkx>=2.5.1"
  "jinja2" "fsspec>=0.8.5"
  "numpy==2.4.6"
  "tokenizers==0.23.3"
  "transformers==5.23.0"
  "safetensors==0.8.0"
  "onnxruntime==1.31.1"
  "onnx==1.23.2"
  "flask==3.1.3"
  "gunicorn==27.0.1"
)
want=$(printf '%s\n' "$torch_req" "${torch_libs[@]}" "${reqs[@]}")

ready() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    "$venv/bin/python" -c "import torch, onnxruntime, onnx, transformers, tokenizers, flask, gunicorn" 2>/dev/null
}

if ! ready; then
  echo "setting up $venv (torch CPU use, onnxruntime, transformers, flask, gunicorn)..." >&2
  start=$SECONDS
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet --no-deps "$torch_req"
  # pip would complain that torch's other pinned CUDA packages are missing: expected, so the
  # resolver's warning is filtered out (real errors still fail the script).
  "$venv/bin/pip" install --quiet "${torch_libs[@]}" "${reqs[@]}" 2>&1 |
    { grep -vE "dependency resolver|^torch .* requires|which is not installed" >&2 || true; }
  "$venv/bin/python" - <<'PY'
import torch
assert torch.ones(2, 3).matmul(torch.ones(3)).sum().item() == 6.0
PY
  printf '%s\n' "$want" >"$stamp"
  echo "venv ready in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))" >&2
fi

./scripts/fetch_weights.sh
exec "$venv/bin/python" benches/peers.py "$@"
