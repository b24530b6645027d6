/*
 * math.h for toolchains with no C library headers (see string.h beside this file): the
 * functions the core calls, defined by src/platform/freestanding.c, and the two macros it
 * uses, from the compiler's builtins.
 */
#ifndef TETHER_FREESTANDING_MATH_H_
#define TETHER_FREESTANDING_MATH_H_

#define INFINITY (__builtin_inff())
#define isfinite(x) __builtin_isfinite(x)

float expf(float x);
float tanhf(float x);
float roundf(float x);
double round(double x);
double frexp(double x, int* e);
float logf(float x);
float sqrtf(float x);
float cosf(float x);
float erff(float x);
float erfcf(float x);
float expm1f(float x);

#endif  /* TETHER_FREESTANDING_MATH_H_ */
