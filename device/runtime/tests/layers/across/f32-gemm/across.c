/* A layer-check fixture: a micro-kernel including another micro-kernel folder. */
#include "../qs8-gemm/scalar-template.h"
