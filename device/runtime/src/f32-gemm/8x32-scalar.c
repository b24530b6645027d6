/* 8x32-scalar.c — the portable 8x32 float GEMM tile (scalar-template.h). */
#include "scalar-template.h"

TETHER_F32_GEMM_SCALAR(8, 32)
