# The Python "peers" venv, .cache/venv-peers: PyTorch (CPU use), onnxruntime, transformers,
# sentence-transformers, Flask and gunicorn, at pinned versions. Sourced, from the repository
# root, by scripts/bench_peers.sh (the peers' speed) and scripts/make_reference.sh (the
# sentence-transformers reference embeddings of tests/data/); they call ensure_peers_venv, which
# creates the venv or reuses it when it holds exactly these requirements.

peers_venv=.cache/venv-peers
peers_stamp=$peers_venv/.peers-requirements

# PyPI's Linux torch wheel is built with CUDA: its libraries link cudart, cublas, cudnn, nccl,
# ... at load time, so `import torch` fails without them even on a CPU-only machine. We install
# torch without its dependencies and then only the CUDA runtime packages its libraries need to
# load, at the versions torch itself pins; triton (1 GB, only for torch.compile), cusolver (loaded
# lazily for linear algebra) and cuda-bindings are left out.
peers_torch_req="torch==2.15.0"
# Packages that depend on torch: installed without dependencies as well, since letting pip
# resolve them would pull torch's full CUDA set back in. Their other dependencies are in
# peers_reqs below.
peers_no_deps=(
  "sentence-transformers==6.2.0"
)
peers_torch_libs=(
  "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2"
  "nvidia-cudnn-cu13==9.26.0.51"
  "nvidia-cusparselt-cu13==0.8.1"
  "nvidia-nccl-cu13==2.30.7"
  "nvidia-nvshmem-cu13==3.7.2"
)
peers_reqs=(
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
  # sentence-transformers' other dependencies (huggingface-hub and tqdm come with transformers)
  "scikit-learn==1.9.1"
  "scipy==1.17.1"
)
peers_want=$(printf '%s\n' "$peers_torch_req" "${peers_no_deps[@]}" "${peers_torch_libs[@]}" "${peers_reqs[@]}")

peers_venv_ready() {
  [ -x "$peers_venv/bin/python" ] && [ -f "$peers_stamp" ] && [ "$(cat "$peers_stamp")" = "$peers_want" ] &&
    "$peers_venv/bin/python" -c "import torch, onnxruntime, onnx, transformers, tokenizers, flask, gunicorn, sentence_transformers" 2>/dev/null
}

ensure_peers_venv() {
  peers_venv_ready && return 0
  echo "setting up $peers_venv (torch CPU use, onnxruntime, transformers, sentence-transformers, flask, gunicorn)..." >&2
  local start=$SECONDS
  [ -x "$peers_venv/bin/python" ] || python3 -m venv "$peers_venv"
  "$peers_venv/bin/pip" install --quiet --upgrade pip
  "$peers_venv/bin/pip" install --quiet --no-deps "$peers_torch_req" "${peers_no_deps[@]}"
  # pip would complain that torch's other pinned CUDA packages are missing: expected, so the
  # resolver's warning is filtered out (real errors still fail the script).
  "$peers_venv/bin/pip" install --quiet "${peers_torch_libs[@]}" "${peers_reqs[@]}" 2>&1 |
    { grep -vE "dependency resolver|^torch .* requires|which is not installed" >&2 || true; }
  "$peers_venv/bin/python" - <<'PY'
import torch
assert torch.ones(2, 3).matmul(torch.ones(3)).sum().item() == 6.0
import sentence_transformers  # noqa: F401  (fails here if one of its dependencies is missing)
PY
  printf '%s\n' "$peers_want" >"$peers_stamp"
  echo "venv ready in $((SECONDS - start)) s ($(du -sh "$peers_venv" | cut -f1))" >&2
}
