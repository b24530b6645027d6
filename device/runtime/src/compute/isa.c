/*
 * isa.c — run-time kernel selection from the CPU's features.
 *
 * A model picks its kernel table when it loads (tether_kernels_current) and keeps it, so the
 * packed weights and the kernels always agree. The selection is, in order: tether_set_isa,
 * the TETHER_ISA environment variable (hosted builds), or the best the CPU supports:
 * x86-64 avx512 > avx2 > scalar (checked with CPUID and XGETBV, so the OS must save the
 * registers); aarch64 and armv7 built with NEON: neon.
 */
#include <stddef.h>
#include <string.h>

#include "compute/compute.h"

#if defined(__x86_64__) || defined(_M_X64)
#define TETHER_ARCH_X86_64 1
#include <cpuid.h>
#endif
#if defined(__aarch64__) || (defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA))
#define TETHER_ARCH_NEON 1
#endif

static const tether_kernels kScalar = {
    "scalar", 4, 8, tether_f32_gemm_minmax_ukernel_4x8__scalar,
    tether_f32_gemm_minmax_ukernel_4x8__scalar,
    tether_f32_dwconv2d_minmax_ukernel_c1__scalar,
    4, 8, 1, 0, tether_qs8_gemm_minmax_ukernel_4x8c1__scalar,
    tether_qs8_gemm_minmax_ukernel_4x8c1__scalar,
    tether_qs8_dwconv2d_minmax_ukernel_c1__scalar,
    tether_qs8_vadd_minmax_ukernel__scalar,
    tether_f32_qs8_vcvt_ukernel__scalar,
};
#ifdef TETHER_ARCH_X86_64
static const tether_kernels kAvx2 = {
    "avx2", 6, 16, tether_f32_gemm_minmax_ukernel_6x16__avx2,
    tether_f32_gemm_minmax_ukernel_6x16__scalar,
    tether_f32_dwconv2d_minmax_ukernel_c8__avx2,
    4, 16, 2, 0, tether_qs8_gemm_minmax_ukernel_4x16c2__avx2,
    tether_qs8_gemm_minmax_ukernel_4x16c2__scalar,
    tether_qs8_dwconv2d_minmax_ukernel_c8__avx2,
    tether_qs8_vadd_minmax_ukernel__avx2,
    tether_f32_qs8_vcvt_ukernel__scalar,
};
static const tether_kernels kAvx512 = {
    "avx512", 8, 32, tether_f32_gemm_minmax_ukernel_8x32__avx512,
    tether_f32_gemm_minmax_ukernel_8x32__scalar,
    tether_f32_dwconv2d_minmax_ukernel_c16__avx512,
    4, 16, 2, 0, tether_qs8_gemm_minmax_ukernel_4x16c2__avx2,
    tether_qs8_gemm_minmax_ukernel_4x16c2__scalar,
    tether_qs8_dwconv2d_minmax_ukernel_c8__avx2,
    tether_qs8_vadd_minmax_ukernel__avx2,
    tether_f32_qs8_vcvt_ukernel__scalar,
};
/* The same fp32 kernels; int8 with VNNI dot products (AVX512-VNNI, BW, VL). */
static const tether_kernels kAvx512Vnni = {
    "avx512", 8, 32, tether_f32_gemm_minmax_ukernel_8x32__avx512,
    tether_f32_gemm_minmax_ukernel_8x32__scalar,
    tether_f32_dwconv2d_minmax_ukernel_c16__avx512,
    8, 16, 4, 1, tether_qs8_gemm_minmax_ukernel_8x16c4__avx512vnni,
    tether_qs8_gemm_minmax_ukernel_8x16c4__scalar_u8,
    tether_qs8_dwconv2d_minmax_ukernel_c16__avx512,
    tether_qs8_vadd_minmax_ukernel__avx512,
    tether_f32_qs8_vcvt_ukernel__avx512,
};

static unsigned long long xgetbv0(void) {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((unsigned long long)hi << 32) | lo;
}

/* 0 = none, 1 = AVX2 + FMA, 2 = AVX-512F as well (with OS support for the registers),
 * 3 = AVX-512 BW, VL and VNNI too. */
static int x86_level(void) {
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  if (!fma || !osxsave || !avx) return 0;
  const unsigned long long xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1;
  const int avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
  if (!avx2) return 0;
  if (avx512f && (xcr0 & 0xE6) == 0xE6) return avx512bw && avx512vl && vnni ? 3 : 2;
  return 1;
}
#endif
#ifdef TETHER_ARCH_NEON
static const tether_kernels kNeon = {
#ifdef __aarch64__
    "neon", 6, 8, tether_f32_gemm_minmax_ukernel_6x8__neon,
    tether_f32_gemm_minmax_ukernel_6x8__scalar,
#else
    "neon", 4, 8, tether_f32_gemm_minmax_ukernel_4x8__neon,
    tether_f32_gemm_minmax_ukernel_4x8__scalar,
#endif
    tether_f32_dwconv2d_minmax_ukernel_c4__neon,
    4, 8, 1, 0, tether_qs8_gemm_minmax_ukernel_4x8c1__neon,
    tether_qs8_gemm_minmax_ukernel_4x8c1__scalar,
    tether_qs8_dwconv2d_minmax_ukernel_c8__neon,
    tether_qs8_vadd_minmax_ukernel__neon,
    tether_f32_qs8_vcvt_ukernel__scalar,
};
#endif
#if defined(__aarch64__) && defined(__linux__) && __STDC_HOSTED__
#define TETHER_ARCH_NEONDOT 1
#include <sys/auxv.h>
/* The same fp32 kernels; int8 GEMM with the ARMv8.2 dot product (HWCAP asimddp). */
static const tether_kernels kNeonDot = {
    "neon", 6, 8, tether_f32_gemm_minmax_ukernel_6x8__neon,
    tether_f32_gemm_minmax_ukernel_6x8__scalar,
    tether_f32_dwconv2d_minmax_ukernel_c4__neon,
    4, 16, 4, 0, tether_qs8_gemm_minmax_ukernel_4x16c4__neondot,
    tether_qs8_gemm_minmax_ukernel_4x16c4__scalar,
    tether_qs8_dwconv2d_minmax_ukernel_c8__neon,
    tether_qs8_vadd_minmax_ukernel__neon,
    tether_f32_qs8_vcvt_ukernel__scalar,
};

static const tether_kernels* neon_best(void) {
  return (getauxval(AT_HWCAP) & (1ul << 20)) != 0 ? &kNeonDot : &kNeon;  /* HWCAP_ASIMDDP */
}
#elif defined(TETHER_ARCH_NEON)
static const tether_kernels* neon_best(void) { return &kNeon; }
#endif

static const tether_kernels* best(void) {
#ifdef TETHER_ARCH_X86_64
  const int level = x86_level();
  if (level >= 3) return &kAvx512Vnni;
  if (level >= 2) return &kAvx512;
  if (level >= 1) return &kAvx2;
#endif
#ifdef TETHER_ARCH_NEON
  return neon_best();
#endif
  return &kScalar;
}

const tether_kernels* tether_kernels_for(const char* isa) {
  if (isa == NULL) return NULL;
  if (strcmp(isa, "auto") == 0) return best();
  if (strcmp(isa, "scalar") == 0) return &kScalar;
#ifdef TETHER_ARCH_X86_64
  if (strcmp(isa, "avx2") == 0) return x86_level() >= 1 ? &kAvx2 : NULL;
  if (strcmp(isa, "avx512") == 0) {
    return x86_level() >= 3 ? &kAvx512Vnni : x86_level() >= 2 ? &kAvx512 : NULL;
  }
#endif
#ifdef TETHER_ARCH_NEON
  if (strcmp(isa, "neon") == 0) return neon_best();
#endif
  return NULL;
}

/* Set by tether_set_isa; NULL = not chosen yet. Not synchronised (see tether.h). */
static const tether_kernels* g_selected = NULL;

const tether_kernels* tether_kernels_current(void) {
  if (g_selected == NULL) {
    const tether_kernels* k = tether_kernels_for(tether_isa_from_environment());
    g_selected = k != NULL ? k : best();
  }
  return g_selected;
}

const char* tether_isa(void) { return tether_kernels_current()->isa; }

tether_status tether_set_isa(const char* isa) {
  if (isa == NULL) return tether_set_error(TETHER_STATUS_INVALID_ARGUMENT, "isa is NULL");
  const tether_kernels* k = tether_kernels_for(isa);
  if (k == NULL) {
    return tether_set_error(TETHER_STATUS_UNSUPPORTED_HARDWARE,
                            "isa '%s' is unknown or this CPU lacks it (known: auto, scalar, "
                            "avx2, avx512, neon)",
                            isa);
  }
  g_selected = k;
  tether_clear_error();
  return TETHER_STATUS_SUCCESS;
}
