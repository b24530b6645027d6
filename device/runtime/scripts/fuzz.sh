#!/usr/bin/env bash
# Builds the .tmodel loader fuzzer with clang (libFuzzer + ASan + UBSan, CMake's
# TETHER_FUZZ=ON, so it compiles exactly the engine's own source list) and runs it for a
# bounded time on a seed corpus of small valid models plus any saved findings.
#
#   device/runtime/scripts/fuzz.sh SECONDS [extra libFuzzer flags...]
#
# Needs clang with libFuzzer (Debian: apt-get install clang llvm libclang-rt-14-dev). The
# corpus grows in device/runtime/build-fuzz/corpus (ignored); crashes are written to
# build-fuzz/ as crash-*, and belong, once fixed, in tests/fuzz/regressions/ (ctest replays
# that folder).
set -euo pipefail
seconds="${1:?usage: fuzz.sh SECONDS [libFuzzer flags]}"
shift
runtime="$(cd "$(dirname "$0")/.." && pwd)"
build="$runtime/build-fuzz"
mkdir -p "$build/corpus" "$build/seeds"
CC="${CC:-clang}" cmake -S "$runtime" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTETHER_FUZZ=ON -DTETHER_BUILD_TESTS=ON >/dev/null
cmake --build "$build" -j2 --target fuzz_loader fuzz_seeds
"$build/fuzz_seeds" "$build/seeds"
cd "$build"
exec ./fuzz_loader -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 "$@" corpus seeds "$runtime/tests/fuzz/regressions"
