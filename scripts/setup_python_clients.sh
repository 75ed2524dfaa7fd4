#!/usr/bin/env bash
# Creates the venvs of the "clients we did not write" that the tests run against the server.
# Idempotent. Every package's version, dependencies included, is pinned in
# scripts/constraints/ (a pip freeze of the venvs the tests last passed with).
#  .cache/venv-clients: the official TensorFlow Serving client (and requests).
#  .cache/venv-triton:  Triton's tritonclient (gRPC and HTTP), for the Open Inference
#                       Protocol; in its own venv, since its grpcio/protobuf pins need not
#                       agree with TensorFlow's.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.cache/venv-clients
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import tensorflow_serving.apis, tensorflow, requests" 2>/dev/null; }; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  # tensorflow-cpu provides the `tensorflow` module at half the download of `tensorflow`;
  # tensorflow-serving-api is then installed without pulling `tensorflow` again.
  "$venv/bin/pip" install --quiet -c scripts/constraints/clients.txt "tensorflow-cpu==2.21.0" "grpcio>=1.60" "protobuf>=6.31.1,<8" "requests>=2.28" numpy
  "$venv/bin/pip" install --quiet --no-deps -c scripts/constraints/clients.txt "tensorflow-serving-api==2.21.0"
  "$venv/bin/python" -c "import tensorflow_serving.apis.prediction_service_pb2_grpc" 2>/dev/null
  echo "python clients ready in $venv" >&2
fi

venv=.cache/venv-triton
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import tritonclient.grpc, tritonclient.http" 2>/dev/null; }; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  # The grpc and http extras only: `all` would add the CUDA shared-memory client.
  "$venv/bin/pip" install --quiet -c scripts/constraints/triton.txt "tritonclient[grpc,http]==2.73.0" numpy
  "$venv/bin/python" -c "import tritonclient.grpc, tritonclient.http"
  echo "tritonclient ready in $venv" >&2
fi
