/*
 * 4x8-neon.c — f32 GEMM micro-kernel, 4 rows x 8 columns, NEON with FMA, for armv7 with
 * -mfpu=neon-vfpv4 (16 quad registers). Body: neon-template.h.
 * Twin: tether_f32_gemm_minmax_ukernel_4x8__scalar.
 */
#define TETHER_NEON_MR 4
#define TETHER_NEON_NAME tether_f32_gemm_minmax_ukernel_4x8__neon
#include "neon-template.h"
