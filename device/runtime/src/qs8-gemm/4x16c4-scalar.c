/* 4x16c4-scalar.c — the portable 4x16c4 int8 GEMM tile (scalar-template.h). */
#include "scalar-template.h"

TETHER_QS8_GEMM_SCALAR(4, 16, 4, 0, scalar)
