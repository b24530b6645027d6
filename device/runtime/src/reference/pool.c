/*
 * pool.c — whole-op scalar max and average pooling, float32 and int8 (TFLite's reference
 * arithmetic for int8: max of the cells; (sum ± count/2) / count, clamped). Windows may be
 * dilated: tap (a, b) of the window of output cell (oh, ow) reads input row
 * oh·stride_h − pad_top + a·dilation_h and column ow·stride_w − pad_left + b·dilation_w, and
 * only the taps inside the input take part (tether_window_taps).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "reference/reference.h"

/* The taps of one output cell that fall inside the input: rows h0 + a·dilation_h for a in
 * [a0, a1), columns w0 + b·dilation_w for b in [b0, b1). */
typedef struct pool_window {
  ptrdiff_t h0, w0;
  size_t a0, a1, b0, b1;
} pool_window;

static pool_window window_at(const tether_conv_geometry* g, size_t oh, size_t ow) {
  pool_window win;
  win.h0 = (ptrdiff_t)oh * g->stride_h - g->pad_top;
  win.w0 = (ptrdiff_t)ow * g->stride_w - g->pad_left;
  tether_window_taps(win.h0, g->kernel_h, g->dilation_h, (ptrdiff_t)g->in_h, &win.a0, &win.a1);
  tether_window_taps(win.w0, g->kernel_w, g->dilation_w, (ptrdiff_t)g->in_w, &win.b0, &win.b1);
  return win;
}

/* Element offset of tap (a, b) of `win` in image n, channel 0. */
static size_t tap_offset(const tether_conv_geometry* g, const pool_window* win, size_t n,
                         size_t a, size_t b) {
  const size_t ih = (size_t)(win->h0 + (ptrdiff_t)a * g->dilation_h);
  const size_t iw = (size_t)(win->w0 + (ptrdiff_t)b * g->dilation_w);
  return ((n * g->in_h + ih) * g->in_w + iw) * g->in_c;
}

void tether_ref_f32_maxpool(const tether_conv_geometry* g, const float* x, float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const pool_window win = window_at(g, oh, ow);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        /* Prepare guarantees every window at least one tap inside the input. */
        const float* first = x + tap_offset(g, &win, n, win.a0, win.b0);
        for (size_t c = 0; c < c_count; c++) yp[c] = first[c];
        for (size_t a = win.a0; a < win.a1; a++) {
          for (size_t b = win.b0; b < win.b1; b++) {
            const float* xp = x + tap_offset(g, &win, n, a, b);
            for (size_t c = 0; c < c_count; c++) {  /* branch-free: it vectorizes */
              const float v = xp[c], m = yp[c];
              yp[c] = v > m || v != v ? v : m;  /* NaN wins and stays, as in the peers */
            }
          }
        }
      }
    }
  }
}

void tether_ref_f32_avgpool(const tether_conv_geometry* g, int count_include_pad, const float* x,
                            float* y) {
  const size_t c_count = g->in_c;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const pool_window win = window_at(g, oh, ow);
        const size_t count = count_include_pad ? g->kernel_h * g->kernel_w
                                               : (win.a1 - win.a0) * (win.b1 - win.b0);
        float* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        for (size_t c = 0; c < c_count; c++) yp[c] = 0.0f;
        for (size_t a = win.a0; a < win.a1; a++) {
          for (size_t b = win.b0; b < win.b1; b++) {
            const float* xp = x + tap_offset(g, &win, n, a, b);
            for (size_t c = 0; c < c_count; c++) yp[c] += xp[c];
          }
        }
        for (size_t c = 0; c < c_count; c++) yp[c] /= (float)count;
      }
    }
  }
}

/* Max (avg == 0) or average pooling over NHWC int8, output clamped to [lo, hi]. Channels
 * innermost in blocks of POOL_Q8_BLOCK (int32 sums on the stack), so the loops vectorize. */
#define POOL_Q8_BLOCK 256

void tether_ref_qs8_pool(const tether_conv_geometry* g, int avg, int count_include_pad,
                         int32_t x_zero, int32_t lo, int32_t hi, const int8_t* x, int8_t* y) {
  const size_t c_count = g->in_c;
  const int8_t lo8 = (int8_t)lo, hi8 = (int8_t)hi;  /* lo, hi within [-128, 127] */
  int32_t sum[POOL_Q8_BLOCK];
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const pool_window win = window_at(g, oh, ow);
        int8_t* yp = y + ((n * g->out_h + oh) * g->out_w + ow) * c_count;
        if (!avg) {
          /* Prepare guarantees every window at least one tap inside the input. */
          const int8_t* first = x + tap_offset(g, &win, n, win.a0, win.b0);
          for (size_t c = 0; c < c_count; c++) yp[c] = first[c];
          for (size_t a = win.a0; a < win.a1; a++) {
            for (size_t b = win.b0; b < win.b1; b++) {
              const int8_t* xp = x + tap_offset(g, &win, n, a, b);
              for (size_t c = 0; c < c_count; c++) yp[c] = xp[c] > yp[c] ? xp[c] : yp[c];
            }
          }
          for (size_t c = 0; c < c_count; c++) {
            const int8_t v = yp[c] < lo8 ? lo8 : yp[c];
            yp[c] = v > hi8 ? hi8 : v;
          }
          continue;
        }
        const int32_t cells = (int32_t)((win.a1 - win.a0) * (win.b1 - win.b0));
        const int32_t count = count_include_pad ? (int32_t)(g->kernel_h * g->kernel_w) : cells;
        /* Padding cells counted in the divisor hold the real value 0, i.e. q = z_x. */
        const int32_t pad_sum = (count - cells) * x_zero;
        for (size_t c0 = 0; c0 < c_count; c0 += POOL_Q8_BLOCK) {
          const size_t cn = c_count - c0 < POOL_Q8_BLOCK ? c_count - c0 : POOL_Q8_BLOCK;
          for (size_t c = 0; c < cn; c++) sum[c] = pad_sum;
          for (size_t a = win.a0; a < win.a1; a++) {
            for (size_t b = win.b0; b < win.b1; b++) {
              const int8_t* xp = x + tap_offset(g, &win, n, a, b) + c0;
              for (size_t c = 0; c < cn; c++) sum[c] += xp[c];
            }
          }
          for (size_t c = 0; c < cn; c++) {
            const int32_t s = sum[c];
            const int32_t v = s > 0 ? (s + count / 2) / count : (s - count / 2) / count;
            yp[c0 + c] = (int8_t)tether_clamp_i32(v, lo, hi);
          }
        }
      }
    }
  }
}
