/*
 * 6x8-neon.c — f32 GEMM micro-kernel, 6 rows x 8 columns, NEON with FMA, for aarch64
 * (32 NEON registers). Body: neon-template.h.
 * Twin: tether_f32_gemm_minmax_ukernel_6x8__scalar.
 */
#define TETHER_NEON_MR 6
#define TETHER_NEON_NAME tether_f32_gemm_minmax_ukernel_6x8__neon
#include "neon-template.h"
