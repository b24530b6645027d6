/*
 * timing.h — what the command-line tools share for timing invokes: a monotonic clock in
 * milliseconds and the comparison qsort needs to take medians. Header-only (static), hosted.
 */
#ifndef TETHER_TOOLS_TIMING_H_
#define TETHER_TOOLS_TIMING_H_

#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int compare_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

/* Median of `n` values already sorted ascending. */
static double sorted_median(const double* v, long n) {
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif  /* TETHER_TOOLS_TIMING_H_ */
