#!/usr/bin/env bash
# Cross-compiles the engine and its C tests for aarch64 and armv7 and runs them under qemu
# (ctest uses the toolchain file's CMAKE_CROSSCOMPILING_EMULATOR).
set -euo pipefail
runtime="$(cd "$(dirname "$0")/.." && pwd)"
for target in aarch64-linux-gnu armv7-linux-gnueabihf; do
  build="$runtime/build-$target"
  echo "== $target =="
  cmake -S "$runtime" -B "$build" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_TOOLCHAIN_FILE="$runtime/cmake/$target.cmake" -DTETHER_BUILD_TESTS=ON >/dev/null
  cmake --build "$build" -j2
  ctest --test-dir "$build" --output-on-failure
done
