/*
 * freestanding.c — what the core needs from a C library, for builds without one
 * (TETHER_FREESTANDING; the hosted build uses libc and libm and leaves this file out):
 *   - memcpy, memset, memcmp, strcmp;
 *   - expf, expm1f, tanhf, erff, erfcf, roundf, round, frexp: portable implementations, not
 *     libm's. roundf / round / frexp are exact; expf is within 2 ulp and tanhf within ~2e-7
 *     absolute of libm on the whole float range (used by LOGISTIC, TANH, SOFTMAX, the fused
 *     TANH and SIGMOID activations), expm1f (int8 ELU) and erfcf (int8 GELU) are evaluated in
 *     double, so float results may differ from a hosted build in the last bits;
 *   - logf, sqrtf, cosf for the trainer (the loss, Adam, the cosine schedule): evaluated in
 *     double, within 1 ulp of libm (sqrtf correctly rounded);
 *   - the hosted hooks: no default allocator (a NULL allocator argument is an error), no
 *     TETHER_ISA environment variable, no clock (profiling unavailable).
 * Threads: serial.c runs every task on the calling thread. On ARM EABI, libgcc's integer
 * division calls __aeabi_idiv0 / __aeabi_ldiv0 on a zero divisor (libgcc's versions call
 * raise()); validated models never divide by zero, so these return 0.
 */
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "compute/compute.h"

const tether_allocator* tether_default_allocator(void) { return NULL; }
const char* tether_isa_from_environment(void) { return NULL; }
uint64_t tether_now_ns(void) { return 0; }

/* Built with -fno-tree-loop-distribute-patterns (and -fno-builtin) so these loops are not
 * turned back into calls to themselves. */
void* memcpy(void* restrict dst, const void* restrict src, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  const unsigned char* s = (const unsigned char*)src;
  for (size_t i = 0; i < n; i++) d[i] = s[i];
  return dst;
}

void* memset(void* dst, int c, size_t n) {
  unsigned char* d = (unsigned char*)dst;
  for (size_t i = 0; i < n; i++) d[i] = (unsigned char)c;
  return dst;
}

int memcmp(const void* a, const void* b, size_t n) {
  const unsigned char* x = (const unsigned char*)a;
  const unsigned char* y = (const unsigned char*)b;
  for (size_t i = 0; i < n; i++) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}

int strcmp(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) {
    a++;
    b++;
  }
  return (unsigned char)*a < (unsigned char)*b ? -1 : (unsigned char)*a > (unsigned char)*b;
}

float roundf(float x) {
  if (!(x > -8388608.0f && x < 8388608.0f)) return x;  /* |x| >= 2^23 (or NaN): integral */
  const float t = (float)(int32_t)x;                      /* toward zero, exact */
  const float d = x - t;                                  /* exact */
  if (d >= 0.5f) return t + 1.0f;
  if (d <= -0.5f) return t - 1.0f;
  return t;
}

double round(double x) {
  if (!(x > -4503599627370496.0 && x < 4503599627370496.0)) return x;  /* 2^52 */
  const double t = (double)(int64_t)x;
  const double d = x - t;
  if (d >= 0.5) return t + 1.0;
  if (d <= -0.5) return t - 1.0;
  return t;
}

double frexp(double x, int* e) {
  union { double d; uint64_t u; } v = {x};
  int exp = (int)((v.u >> 52) & 0x7FF);
  *e = 0;
  if (exp == 0x7FF || x == 0.0) return x;  /* inf, NaN, zero */
  int bias = 0;
  if (exp == 0) {  /* subnormal: scale into the normal range first */
    v.d = x * 18014398509481984.0;  /* 2^54 */
    exp = (int)((v.u >> 52) & 0x7FF);
    bias = 54;
  }
  *e = exp - 1022 - bias;
  v.u = (v.u & ~(0x7FFull << 52)) | (1022ull << 52);
  return v.d;
}

/* e^x = 2^n * e^r, r = x - n ln2 in [-ln2/2, ln2/2], e^r by a degree-7 Taylor polynomial
 * evaluated in double (error < 1e-9 relative); x in [-104, 89]. */
static double exp_reduced(double x) {
  const double n = round(x * 1.4426950408889634);
  const double r = x - n * 0.6931471805599453;
  double p = 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  union { double d; uint64_t u; } s;
  s.u = (uint64_t)((int64_t)n + 1023) << 52;  /* 2^n, n in [-150, 128]: a normal double */
  return p * s.d;
}

float expf(float xf) {
  if (xf != xf) return xf;
  if (xf > 88.7228394f) return (float)1e300;  /* overflows to +inf */
  if (xf < -103.972084f) return 0.0f;
  return (float)exp_reduced((double)xf);
}

/* e^x - 1: the Taylor series in double where |x| < 1/2 (no cancellation; 20 terms leave an
 * error below 1e-19), else e^x in double minus 1 (relative error < 1e-9). */
float expm1f(float xf) {
  if (xf != xf) return xf;
  if (xf > 88.7228394f) return (float)1e300;
  if (xf < -40.0f) return -1.0f;  /* e^-40 < 2^-57: -1 in float */
  const double x = (double)xf;
  if (x > -0.5 && x < 0.5) {
    double term = x, sum = x;
    for (int n = 2; n < 22; n++) {
      term *= x / (double)n;
      sum += term;
    }
    return (float)sum;
  }
  return (float)(exp_reduced(x) - 1.0);
}

float tanhf(float x) {
  if (x != x) return x;
  const float a = x < 0.0f ? -x : x;
  if (a > 9.0f) return x < 0.0f ? -1.0f : 1.0f;
  if (a < 0.125f) {  /* odd Taylor series, error < 1e-10 here */
    const double d = (double)x, d2 = d * d;
    return (float)(d * (1.0 + d2 * (-1.0 / 3.0 + d2 * (2.0 / 15.0 + d2 * (-17.0 / 315.0)))));
  }
  const double t = (double)expf(2.0f * a);  /* 2a <= 18: no overflow; relative error ~1e-7 */
  const double r = (t - 1.0) / (t + 1.0);
  return (float)(x < 0.0f ? -r : r);
}

/* erf by its Maclaurin series summed in double: for |x| < 4 the largest term is below 1e6, so
 * the cancellation leaves an absolute error under 1e-9; beyond 4, erf rounds to +-1 in float
 * (1 - erf(4) = 1.5e-8). Used by GELU. */
float erff(float xf) {
  if (xf != xf) return xf;
  if (xf >= 4.0f) return 1.0f;
  if (xf <= -4.0f) return -1.0f;
  const double x = (double)xf, x2 = x * x;
  double term = x, sum = x; /* term_n = (-1)^n x^(2n+1) / n! */
  for (int n = 1; n < 120; n++) {
    term *= -x2 / (double)n;
    const double add = term / (double)(2 * n + 1);
    sum += add;
    if (add < 1e-17 && add > -1e-17) break;
  }
  return (float)(sum * 1.1283791670955126); /* 2 / sqrt(pi) */
}

/* erfc = 1 - erf (the series above in double) below 2; from 2 on, Laplace's continued
 * fraction e^(-x^2)/sqrt(pi) / (x + 1/2 / (x + 1 / (x + 3/2 / (x + ...)))), 80 levels
 * evaluated from the bottom (converged to double precision for x >= 2); 0 beyond 10.1 (the
 * result underflows float). Used by the int8 GELU table. */
float erfcf(float xf) {
  if (xf != xf) return xf;
  if (xf < 2.0f) {
    if (xf <= -4.0f) return 2.0f;
    const double x = (double)xf, x2 = x * x;
    double term = x, sum = x;
    for (int n = 1; n < 120; n++) {
      term *= -x2 / (double)n;
      const double add = term / (double)(2 * n + 1);
      sum += add;
      if (add < 1e-17 && add > -1e-17) break;
    }
    return (float)(1.0 - sum * 1.1283791670955126);
  }
  if (xf > 10.1f) return 0.0f;
  const double x = (double)xf;
  double f = x;
  for (int k = 80; k >= 1; k--) f = x + (double)k * 0.5 / f;
  return (float)(exp_reduced(-x * x) * 0.5641895835477563 / f);  /* 1 / sqrt(pi) */
}

/* sqrt by Newton's iteration in double from an exponent-halved start (6 steps: quadratic
 * convergence from a factor-of-2 guess reaches double precision). */
float sqrtf(float xf) {
  if (xf != xf || xf < 0.0f) return (xf - xf) / (xf - xf);  /* NaN */
  if (xf == 0.0f || xf > 3.4e38f) return xf;                 /* 0, -0, +inf */
  const double x = (double)xf;
  int e = 0;
  (void)frexp(x, &e);
  union { double d; uint64_t u; } g;
  g.u = (uint64_t)(1023 + e / 2) << 52;  /* 2^(e/2) */
  double y = g.d;
  for (int i = 0; i < 6; i++) y = 0.5 * (y + x / y);
  return (float)y;
}

/* log x = e ln 2 + 2 atanh(s), x = m 2^e with m in [sqrt(1/2), sqrt(2)), s = (m-1)/(m+1),
 * |s| < 0.1716: the odd series to s^21 is exact to double precision. */
float logf(float xf) {
  if (xf != xf || xf < 0.0f) return (xf - xf) / (xf - xf);
  if (xf == 0.0f) return -1.0f / 0.0f;
  if (xf > 3.4e38f) return xf;
  int e = 0;
  double m = frexp((double)xf, &e);  /* [0.5, 1) */
  if (m < 0.7071067811865476) {
    m *= 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 21.0;
  for (int k = 19; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
  return (float)((double)e * 0.6931471805599453 + 2.0 * s * p);
}

/* cos by reduction to [-pi, pi] and the even series to x^26 (error < 1e-10 there). */
float cosf(float xf) {
  if (xf != xf || xf > 3.4e38f || xf < -3.4e38f) return (xf - xf) / (xf - xf);
  const double two_pi = 6.283185307179586;
  double x = (double)xf;
  x -= two_pi * round(x / two_pi);
  const double x2 = x * x;
  double p = 1.0, term = 1.0;
  for (int k = 1; k <= 13; k++) {
    term *= -x2 / (double)((2 * k - 1) * (2 * k));
    p += term;
  }
  return (float)p;
}

#if defined(__ARM_EABI__)
/* ARM EABI: clang lowers some block copies and clears to the run-time ABI's memory helpers
 * (base calling convention, arguments as memcpy / memset with memset's last two swapped). */
#if defined(__ARM_EABI__)
void __aeabi_memcpy(void* d, const void* s, size_t n);
void __aeabi_memcpy4(void* d, const void* s, size_t n);
void __aeabi_memcpy8(void* d, const void* s, size_t n);
void __aeabi_memset(void* d, size_t n, int c);
void __aeabi_memclr(void* d, size_t n);
void __aeabi_memclr4(void* d, size_t n);
void __aeabi_memclr8(void* d, size_t n);
void __aeabi_memcpy(void* d, const void* s, size_t n) { memcpy(d, s, n); }
void __aeabi_memcpy4(void* d, const void* s, size_t n) { memcpy(d, s, n); }
void __aeabi_memcpy8(void* d, const void* s, size_t n) { memcpy(d, s, n); }
void __aeabi_memset(void* d, size_t n, int c) { memset(d, c, n); }
void __aeabi_memclr(void* d, size_t n) { memset(d, 0, n); }
void __aeabi_memclr4(void* d, size_t n) { memset(d, 0, n); }
void __aeabi_memclr8(void* d, size_t n) { memset(d, 0, n); }
#endif

int __aeabi_idiv0(int r);
long long __aeabi_ldiv0(long long r);
int __aeabi_idiv0(int r) { return r; }
long long __aeabi_ldiv0(long long r) { return r; }
#endif
