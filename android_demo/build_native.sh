#!/usr/bin/env bash
# Builds the bridge's native library, libtether_jni.so, without the NDK:
#   build/lib/arm64-v8a/   and  build/lib/armeabi-v7a/   Debian's clang + lld, the engine's
#                          freestanding core, -nostdlib (what the APK packs);
#   build/lib/host/        the desktop JVM's build over the hosted engine (the host test).
# One CMake project (app/src/main/cpp/CMakeLists.txt) over device/runtime's own source lists,
# the same one Android Studio's Gradle build uses with the NDK.
#
#   android_demo/build_native.sh [--out DIR]      (default android_demo/build)
set -euo pipefail
demo="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$demo/.." && pwd)"
out="$demo/build"
if [ "${1:-}" = "--out" ]; then out="$2"; fi

missing=""
for pair in cmake:cmake clang:clang ld.lld:lld javac:default-jdk-headless \
            arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair##*:}"
done
if [ -n "$missing" ]; then
  echo "build_native.sh needs:$missing (apt-get install$missing)" >&2
  exit 1
fi

build() {  # build ABI [cmake args...]
  local abi="$1"; shift
  cmake -S "$demo/app/src/main/cpp" -B "$out/native-$abi" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$out/native-$abi" --target tether_jni -j2 >/dev/null
  mkdir -p "$out/lib/$abi"
  cp "$out/native-$abi/libtether_jni.so" "$out/lib/$abi/.libtether_jni.so.tmp"
  mv "$out/lib/$abi/.libtether_jni.so.tmp" "$out/lib/$abi/libtether_jni.so"
  echo "$out/lib/$abi/libtether_jni.so"
}
build arm64-v8a -DCMAKE_TOOLCHAIN_FILE="$root/device/runtime/cmake/aarch64-linux-android.cmake"
build armeabi-v7a -DCMAKE_TOOLCHAIN_FILE="$root/device/runtime/cmake/armv7-linux-androideabi.cmake"
build host
