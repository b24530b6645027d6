/* 6x8-scalar.c — the portable 6x8 float GEMM tile (scalar-template.h). */
#include "scalar-template.h"

TETHER_F32_GEMM_SCALAR(6, 8)
