/* 8x16c4-scalar-u8.c — the portable 8x16c4 int8 GEMM tile (reading A as u8 x ^ 0x80, scalar-template.h). */
#include "scalar-template.h"

TETHER_QS8_GEMM_SCALAR(8, 16, 4, 1, scalar_u8)
