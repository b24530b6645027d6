#!/usr/bin/env bash
# Builds the .tmodel loader fuzzer with clang (libFuzzer + ASan + UBSan) and runs it for a
# bounded time on a seed corpus of small valid models plus any saved findings.
#
#   device/runtime/scripts/fuzz.sh SECONDS [extra libFuzzer flags...]
#
# Needs clang with libFuzzer (Debian: apt-get install clang llvm). The corpus grows in
# device/runtime/build-fuzz/corpus (ignored); crashes are written to build-fuzz/ as crash-*,
# and belong, once fixed, in tests/fuzz/regressions/ (ctest replays that folder).
set -euo pipefail
seconds="${1:?usage: fuzz.sh SECONDS [libFuzzer flags]}"
shift
runtime="$(cd "$(dirname "$0")/.." && pwd)"
build="$runtime/build-fuzz"
mkdir -p "$build/corpus" "$build/seeds"
CC="${CC:-clang}"
flags=(-std=c11 -O1 -g -fno-omit-frame-pointer -D_POSIX_C_SOURCE=200809L -DTETHER_DEBUG
       -I"$runtime/include" -I"$runtime/src" -I"$runtime/tests")
core=("$runtime"/src/*.c "$runtime"/src/ops/*.c "$runtime"/src/f32-gemm/scalar.c
      "$runtime"/src/f32-dwconv/c1-scalar.c)
x86=()
if [[ "$(uname -m)" == "x86_64" ]]; then
  x86=("$runtime"/src/f32-gemm/*avx*.c "$runtime"/src/f32-dwconv/*avx*.c)
fi
core=($(printf '%s\n' "${core[@]}" | grep -v -e '/serial\.c$' -e '/freestanding\.c$'))
# Kernels with ISA flags are compiled one by one; everything else in one go.
objs=()
for f in "${x86[@]}"; do
  case "$f" in
    *avx512*) isa=(-mavx512f -mavx2 -mfma) ;;
    *) isa=(-mavx2 -mfma) ;;
  esac
  o="$build/$(basename "$f" .c).o"
  "$CC" "${flags[@]}" "${isa[@]}" -fsanitize=fuzzer-no-link,address,undefined -c "$f" -o "$o"
  objs+=("$o")
done
"$CC" "${flags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "${core[@]}" "$runtime/tests/fuzz/fuzz_loader.c" "${objs[@]}" -lm -lpthread \
  -o "$build/fuzz_loader"
"$CC" -std=c11 -O1 -D_POSIX_C_SOURCE=200809L -I"$runtime/include" -I"$runtime/tests" \
  "$runtime/tests/fuzz/fuzz_seeds.c" -o "$build/fuzz_seeds"
"$build/fuzz_seeds" "$build/seeds"
cd "$build"
exec ./fuzz_loader -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 "$@" corpus seeds "$runtime/tests/fuzz/regressions"
