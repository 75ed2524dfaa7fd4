#!/usr/bin/env bash
# Creates .cache/venv-validate, the venv of scripts/validate_kserve.py, which checks the
# manifests in deploy/kserve/ against KServe's generated API model classes. Idempotent: a venv
# that already imports what the validator needs is left as it is.
#
# kserve is installed without its dependencies: they are a full inference server (FastAPI,
# grpcio, pandas, ...), and the validator only reads the model classes in kserve/models/, which
# need six, urllib3 and the kubernetes client's own model classes (V1Container, V1Probe, ...).
# kubernetes is pinned: in this release its model classes are pydantic models (strict types, a
# ValidationError naming each missing field), and the validator reads their errors that way.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.cache/venv-validate
# The validator never runs kserve/__init__.py; this check loads the models the same way.
check="import yaml, six, dateutil, urllib3, kubernetes.client.models, importlib.util, sys, types
spec = importlib.util.find_spec('kserve')
pkg = types.ModuleType('kserve'); pkg.__path__ = list(spec.submodule_search_locations)
sys.modules['kserve'] = pkg
import kserve.models"
if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; }; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "kubernetes==37.0.2" "six>=1.16" "python-dateutil>=2.8" \
    "pyyaml>=6.0" "urllib3>=2"
  "$venv/bin/pip" install --quiet --no-deps "kserve==0.21.0"
  "$venv/bin/python" -c "$check"
  echo "manifest validator ready in $venv" >&2
fi
