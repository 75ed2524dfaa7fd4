#!/usr/bin/env bash
# Installs what the manifest validators need, each part only when it is missing (idempotent):
# - .cache/venv-validate, the venv of scripts/validate_kserve.py (deploy/kserve/ against
#   KServe's generated API model classes) and of scripts/validate_manifests.py (deploy/kubernetes/
#   against the strict Kubernetes JSON schemas of kubernetes-validate);
# - .cache/npm-validate, the npm packages scripts/validate_manifests.py checks ServiceMonitors
#   with: @kubernetes-models/prometheus-operator (the CRD's schema, compiled) and typescript (to
#   read that package's type declarations, which list each object's fields).
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
  "$venv/bin/pip" install --quiet -c scripts/constraints/validate.txt "kubernetes==37.0.2" "six>=1.16" "python-dateutil>=2.8" \
    "pyyaml>=6.0" "urllib3>=2"
  "$venv/bin/pip" install --quiet --no-deps -c scripts/constraints/validate.txt "kserve==0.21.0"
  "$venv/bin/python" -c "$check"
  echo "manifest validator ready in $venv" >&2
fi

# kubernetes-validate pinned: scripts/validate_manifests.py reads the schema files of this
# release (it ships Kubernetes 1.25 to 1.37; the validator uses 1.30 and 1.37).
k8s_check="import kubernetes_validate.utils, jsonschema, referencing"
if ! "$venv/bin/python" -c "$k8s_check" 2>/dev/null; then
  "$venv/bin/pip" install --quiet -c scripts/constraints/validate.txt "kubernetes-validate==1.37.0"
  "$venv/bin/python" -c "$k8s_check"
  echo "kubernetes-validate ready in $venv" >&2
fi

# Exact versions. The @kubernetes-models packages declare node >= 22 but run on the node 20 of
# this machine (npm warns, hence --loglevel=error); the validator's own run is the real test.
npm_dir=.cache/npm-validate
npm_check='const fs = require("fs");
const version = (p) =>
  JSON.parse(fs.readFileSync(`${process.argv[1]}/node_modules/${p}/package.json`)).version;
process.exit(version("@kubernetes-models/prometheus-operator") === "6.0.0"
  && version("typescript") === "5.9.3" ? 0 : 1);'
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "no node/npm: scripts/validate_manifests.py cannot check ServiceMonitors" >&2
elif ! node -e "$npm_check" "$npm_dir" 2>/dev/null; then
  # The lockfile in scripts/npm-validate/ pins every package, dependencies included.
  rm -rf "$npm_dir"
  mkdir -p "$npm_dir"
  cp scripts/npm-validate/package.json scripts/npm-validate/package-lock.json "$npm_dir/"
  npm ci --prefix "$npm_dir" --no-audit --no-fund --loglevel=error
  node -e "$npm_check" "$npm_dir"
  echo "ServiceMonitor validator packages ready in $npm_dir" >&2
fi

# systemd units are checked with systemd-analyze (Debian's systemd package, on this kind of
# machine already); without it scripts/validate_manifests.py skips them with a note.
command -v systemd-analyze >/dev/null || echo "no systemd-analyze: units will be skipped" >&2
