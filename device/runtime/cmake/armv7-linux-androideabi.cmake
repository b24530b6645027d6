# Android armeabi-v7a without the NDK: as aarch64-linux-android.cmake, for ARMv7-A with NEON
# and VFPv4 in Android's softfp calling convention (floats passed in core registers).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7-a)
set(CMAKE_C_COMPILER clang)
set(CMAKE_C_COMPILER_TARGET armv7a-linux-androideabi24)
set(CMAKE_C_FLAGS_INIT "-ffreestanding -nostdlibinc -march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=softfp -mthumb")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-fuse-ld=lld -nostdlib -Wl,-z,max-page-size=16384 -Wno-unused-command-line-argument")
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
# ARMv7 has no integer division instruction and no 64-bit conversions: the run-time ABI's
# helpers (__aeabi_uidiv, __aeabi_l2d, ...) come from the ARM cross compiler's libgcc
# (gcc-arm-linux-gnueabihf). They use the base calling convention, so they serve softfp too.
execute_process(COMMAND arm-linux-gnueabihf-gcc -print-libgcc-file-name
                OUTPUT_VARIABLE TETHER_LIBGCC OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE _tether_libgcc_status)
if(NOT _tether_libgcc_status EQUAL 0 OR NOT EXISTS "${TETHER_LIBGCC}")
  message(FATAL_ERROR "armv7 needs libgcc's ABI helpers: apt-get install gcc-arm-linux-gnueabihf")
endif()
set(CMAKE_C_STANDARD_LIBRARIES "${TETHER_LIBGCC}")
set(TETHER_FREESTANDING_ONLY ON CACHE BOOL "Build only the freestanding core" FORCE)
