#!/usr/bin/env bash
# Thread scaling of the C engine alone (no Python, no peers): runs tether-run on each model
# for each thread count and prints one JSON object per line. Useful on boards and on machines
# where LiteRT / ONNX Runtime are not installed; bench/engine.py gives the peer ratios.
#
#   bench/threads.sh [--tool PATH] [--threads "1 2 4 8"] [--repeat N] MODEL.tmodel...
#
# TETHER_ISA (scalar, avx2, avx512, neon) picks the kernels as for any tether process.
set -euo pipefail
tool="$(dirname "$0")/../device/runtime/build/tether-run"
threads="1 2 4 8"
repeat=200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tool) tool="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    *) break ;;
  esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--tool PATH] [--threads LIST] [--repeat N] MODEL..." >&2; exit 2; }
[[ -x "$tool" ]] || { echo "$0: no tether-run at $tool (build device/runtime first)" >&2; exit 2; }
for model in "$@"; do
  for t in $threads; do
    out="$("$tool" "$model" --repeat "$repeat" --threads "$t")"
    isa="$(sed -n 's/.*isa \([a-z0-9]*\).*/\1/p' <<<"$out")"
    arena="$(sed -n 's/^arena: \([0-9]*\) bytes.*/\1/p' <<<"$out")"
    median="$(sed -n 's/^latency: median \([0-9.]*\) ms.*/\1/p' <<<"$out")"
    min="$(sed -n 's/.*min \([0-9.]*\) ms.*/\1/p' <<<"$out")"
    printf '{"model": "%s", "threads": %s, "isa": "%s", "repeat": %s, "median_ms": %s, "min_ms": %s, "arena_bytes": %s, "cpu": "%s"}\n' \
      "$(basename "$model")" "$t" "$isa" "$repeat" "$median" "$min" "$arena" \
      "$( (lscpu 2>/dev/null || true) | sed -n 's/^Model name: *//p' | head -1)"
  done
done
