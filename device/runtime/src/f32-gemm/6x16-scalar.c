/* 6x16-scalar.c — the portable 6x16 float GEMM tile (scalar-template.h). */
#include "scalar-template.h"

TETHER_F32_GEMM_SCALAR(6, 16)
