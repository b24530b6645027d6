/* 4x8c1-scalar.c — the portable 4x8c1 int8 GEMM tile (scalar-template.h). */
#include "scalar-template.h"

TETHER_QS8_GEMM_SCALAR(4, 8, 1, 0, scalar)
