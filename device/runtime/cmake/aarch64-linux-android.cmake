# Android arm64-v8a without the NDK: Debian's clang and lld, no C library. Only the
# freestanding core builds here (TETHER_FREESTANDING_ONLY; its libc services come from
# src/platform/freestanding.c and its two libc headers from include-freestanding/); the
# project that includes the engine links it into a shared library with -nostdlib
# (android_demo/app/src/main/cpp/CMakeLists.txt). 16 KB pages (Android 15) are honoured.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER clang)
set(CMAKE_C_COMPILER_TARGET aarch64-linux-android24)
set(CMAKE_C_FLAGS_INIT "-ffreestanding -nostdlibinc")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-fuse-ld=lld -nostdlib -Wl,-z,max-page-size=16384 -Wno-unused-command-line-argument")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(TETHER_FREESTANDING_ONLY ON CACHE BOOL "Build only the freestanding core" FORCE)
