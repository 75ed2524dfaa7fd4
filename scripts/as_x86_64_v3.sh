#!/usr/bin/env bash
# Runs a command as if on an AVX2-only (x86-64-v3) CPU: every CPUID it executes reports no
# AVX-512, AMX or AVX-VNNI, so candle-serving, onnxruntime and PyTorch all take their AVX2
# kernels. For comparing the AVX2 paths on a host with AVX-512; see benches/support/x86_64_v3.c.
# The view answers CPUID from a SIGSEGV handler, so a program that sets its own (rustc does)
# dies at its first CPUID under it: build first, then run the built binaries under the view.
#   scripts/as_x86_64_v3.sh scripts/bench_peers.sh --only inprocess --seconds 3
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="$root/benches/support/x86_64_v3.c"
lib="$root/.cache/x86_64_v3.so"
if ! grep -qw cpuid_fault /proc/cpuinfo; then
  echo "as_x86_64_v3: this CPU (or its hypervisor) cannot make CPUID fault; no AVX2 view" >&2
  exit 2
fi
if [[ ! -e "$lib" || "$src" -nt "$lib" ]]; then
  mkdir -p "$root/.cache"
  cc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$lib" "$src"
fi
export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
exec "$@"
