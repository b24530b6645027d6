/*
 * resize.c — RESIZE: 2-D nearest or bilinear resize of an NHWC tensor (ONNX Resize / Upsample,
 * TFLite RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR, Keras UpSampling2D / Resizing).
 *
 * Each output row/column maps to a source coordinate in float32 exactly as ONNX Runtime
 * computes it (FORMAT.md's coordinate modes; an axis whose scale is 1 maps to itself). Nearest
 * rounds it by nearest_mode (a coordinate within 2^-20 of a half counts as the half, as in
 * ONNX Runtime) and clamps to the input; bilinear clamps it to [0, n - 1] and blends the two
 * neighbours. int8: nearest copies values; bilinear is TFLite's reference ResizeBilinearInteger
 * (10-bit fixed-point coordinates, (Σ q·w + 2^19) / 2^20 rounded half away from zero), so the
 * integers equal LiteRT's; both keep the input's quantization. Any fused activation is the
 * float epilogue's (int8 rejects one).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ops/ops.h"

enum { RESIZE_NEAREST = 0, RESIZE_BILINEAR = 1 };
enum {
  COORD_HALF_PIXEL = 0,
  COORD_PYTORCH_HALF_PIXEL = 1,
  COORD_ALIGN_CORNERS = 2,
  COORD_ASYMMETRIC = 3,
  COORD_TF_HALF_PIXEL_FOR_NN = 4,
  COORD_MODES = 5,
};
enum {
  NEAREST_ROUND_PREFER_FLOOR = 0,
  NEAREST_ROUND_PREFER_CEIL = 1,
  NEAREST_FLOOR = 2,
  NEAREST_CEIL = 3,
  NEAREST_SIMPLE = 4,  /* ceil where the axis's scale < 1, else floor (ONNX opset < 11) */
  NEAREST_MODES = 5,
};

/* op->quantized: the int8 paths. */
enum { Q8_NEAREST = 1, Q8_BILINEAR = 2 };

/* The scale of one axis: the attribute's, or out / in as ONNX Runtime derives it from sizes. */
static float axis_scale(const tether_op_params* p, int axis_w, int32_t in, int32_t out) {
  if (p->scales_count != 0) return axis_w ? p->scale_w : p->scale_h;
  return (float)out / (float)in;
}

/* Source coordinate of output index x (float32 arithmetic as ONNX Runtime's). */
static float source_coordinate(int mode, size_t x, float scale, size_t out, size_t in) {
  const float xf = (float)x;
  if (scale == 1.0f) return xf;
  switch (mode) {
    case COORD_PYTORCH_HALF_PIXEL: return out > 1 ? (xf + 0.5f) / scale - 0.5f : 0.0f;
    case COORD_ALIGN_CORNERS:
      return out == 1 ? 0.0f : xf * (float)(in - 1) / (float)(out - 1);
    case COORD_ASYMMETRIC: return xf / scale;
    case COORD_TF_HALF_PIXEL_FOR_NN: return (xf + 0.5f) / scale;
    default: return (xf + 0.5f) / scale - 0.5f;
  }
}

/* floor() without libm, for |v| < 2^62 (callers clamp first). */
static double floor_of(double v) {
  const double t = (double)(int64_t)v;
  return t > v ? t - 1.0 : t;
}

/* Clamps a coordinate to [-1, in] so that the integer conversions stay defined. */
static double clamp_coordinate(float c, size_t in) {
  const double d = (double)c;
  return d < -1.0 ? -1.0 : d > (double)in ? (double)in : d;
}

static size_t nearest_index(int mode, float c, float scale, size_t in) {
  const double d = clamp_coordinate(c, in);
  const double k = floor_of(d);
  const double f = d - k;
  double i;
  switch (mode) {
    case NEAREST_FLOOR: i = k; break;
    case NEAREST_CEIL: i = f > 0.0 ? k + 1.0 : k; break;
    case NEAREST_SIMPLE: i = scale < 1.0f && f > 0.0 ? k + 1.0 : k; break;
    default: {
      const double tol = (d > 1.0 || d < -1.0 ? (d < 0 ? -d : d) : 1.0) * (1.0 / 1048576.0);
      const double off = f - 0.5;
      if (off <= tol && off >= -tol) {
        i = mode == NEAREST_ROUND_PREFER_CEIL ? k + 1.0 : k;
      } else {
        i = f < 0.5 ? k : k + 1.0;
      }
    }
  }
  if (i < 0.0) return 0;
  if (i > (double)(in - 1)) return in - 1;
  return (size_t)i;
}

/* The two neighbours of a bilinear coordinate and the weight of the second. */
static void bilinear_taps(float c, size_t in, size_t* i0, size_t* i1, float* frac) {
  float v = c < 0.0f ? 0.0f : c;
  if (v > (float)(in - 1)) v = (float)(in - 1);
  if (!(v == v)) v = 0.0f;
  size_t a = (size_t)v;
  if (a > in - 1) a = in - 1;
  *i0 = a;
  *i1 = a + 1 < in ? a + 1 : in - 1;
  *frac = v - (float)a;
}

/* ---- reference kernels ------------------------------------------------------------------ */

typedef struct resize_geometry {
  size_t batch, in_h, in_w, channels, out_h, out_w;
  float scale_h, scale_w;
  int coordinate_mode, nearest_mode;
} resize_geometry;

/* Nearest: copies elements of `esize` bytes (float32 or int8 alike). */
static void ref_resize_nearest(const resize_geometry* g, size_t esize, const uint8_t* x,
                               uint8_t* y) {
  const size_t row = g->channels * esize;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      const float ch = source_coordinate(g->coordinate_mode, oh, g->scale_h, g->out_h, g->in_h);
      const size_t ih = nearest_index(g->nearest_mode, ch, g->scale_h, g->in_h);
      const uint8_t* xrow = x + (n * g->in_h + ih) * g->in_w * row;
      uint8_t* yrow = y + (n * g->out_h + oh) * g->out_w * row;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        const float cw = source_coordinate(g->coordinate_mode, ow, g->scale_w, g->out_w, g->in_w);
        const size_t iw = nearest_index(g->nearest_mode, cw, g->scale_w, g->in_w);
        memcpy(yrow + ow * row, xrow + iw * row, row);
      }
    }
  }
}

static void ref_f32_resize_bilinear(const resize_geometry* g, const float* x, float* y) {
  const size_t c_count = g->channels;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      size_t h0, h1;
      float fy;
      bilinear_taps(source_coordinate(g->coordinate_mode, oh, g->scale_h, g->out_h, g->in_h),
                    g->in_h, &h0, &h1, &fy);
      const float* r0 = x + (n * g->in_h + h0) * g->in_w * c_count;
      const float* r1 = x + (n * g->in_h + h1) * g->in_w * c_count;
      float* yp = y + (n * g->out_h + oh) * g->out_w * c_count;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        size_t w0, w1;
        float fx;
        bilinear_taps(source_coordinate(g->coordinate_mode, ow, g->scale_w, g->out_w, g->in_w),
                      g->in_w, &w0, &w1, &fx);
        for (size_t c = 0; c < c_count; c++) {
          const float top = r0[w0 * c_count + c] * (1.0f - fx) + r0[w1 * c_count + c] * fx;
          const float bottom = r1[w0 * c_count + c] * (1.0f - fx) + r1[w1 * c_count + c] * fx;
          yp[ow * c_count + c] = top * (1.0f - fy) + bottom * fy;
        }
      }
    }
  }
}

/* TFLite's ComputeInterpolationValuesInteger: a 10-bit fixed-point coordinate and its taps. */
static void q8_taps(int32_t value, int32_t scale_10, int half_pixel, int32_t in, int32_t* scaled,
                    int32_t* lower, int32_t* upper) {
  *scaled = half_pixel ? value * scale_10 + scale_10 / 2 - (1 << 9) : value * scale_10;
  const int32_t lo = *scaled / (1 << 10);
  const int32_t hi = (*scaled + (1 << 10) - 1) / (1 << 10);
  *lower = lo > 0 ? lo : 0;
  *upper = hi < in - 1 ? hi : in - 1;
}

static int32_t q8_scale_10(int32_t in, int32_t out, int align_corners) {
  if (align_corners && out > 1) return ((1 << 10) * (in - 1) + (out - 1) / 2) / (out - 1);
  return ((1 << 10) * in + out / 2) / out;
}

static void ref_qs8_resize_bilinear(const resize_geometry* g, const int8_t* x, int8_t* y) {
  const int align = g->coordinate_mode == COORD_ALIGN_CORNERS;
  const int half = g->coordinate_mode == COORD_HALF_PIXEL;
  const int32_t in_h = (int32_t)g->in_h, in_w = (int32_t)g->in_w;
  const int32_t sh = q8_scale_10(in_h, (int32_t)g->out_h, align);
  const int32_t sw = q8_scale_10(in_w, (int32_t)g->out_w, align);
  const size_t c_count = g->channels;
  for (size_t n = 0; n < g->batch; n++) {
    for (size_t oh = 0; oh < g->out_h; oh++) {
      int32_t iy, y0, y1;
      q8_taps((int32_t)oh, sh, half, in_h, &iy, &y0, &y1);
      const int64_t wy1 = iy - (1 << 10) * y0, wy0 = (1 << 10) - wy1;
      const int8_t* r0 = x + (n * g->in_h + (size_t)y0) * g->in_w * c_count;
      const int8_t* r1 = x + (n * g->in_h + (size_t)y1) * g->in_w * c_count;
      int8_t* yp = y + (n * g->out_h + oh) * g->out_w * c_count;
      for (size_t ow = 0; ow < g->out_w; ow++) {
        int32_t ix, x0, x1;
        q8_taps((int32_t)ow, sw, half, in_w, &ix, &x0, &x1);
        const int64_t wx1 = ix - (1 << 10) * x0, wx0 = (1 << 10) - wx1;
        for (size_t c = 0; c < c_count; c++) {
          const int64_t acc = r0[(size_t)x0 * c_count + c] * wy0 * wx0 +
                              r1[(size_t)x0 * c_count + c] * wy1 * wx0 +
                              r0[(size_t)x1 * c_count + c] * wy0 * wx1 +
                              r1[(size_t)x1 * c_count + c] * wy1 * wx1;
          const int64_t round = acc > 0 ? (1 << 19) : -(1 << 19);
          yp[ow * c_count + c] = (int8_t)((acc + round) / (1 << 20));
        }
      }
    }
  }
}

/* ---- the op ----------------------------------------------------------------------------- */

static tether_status resize_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  char xs[96], ys[96];
  if (x->dtype != TETHER_DTYPE_FLOAT32 && x->dtype != TETHER_DTYPE_INT8) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "input 0 has dtype %u; RESIZE takes float32 or int8",
                           (unsigned)x->dtype);
  }
  if (x->ndim != 4 || y->ndim != 4 || y->dtype != x->dtype || y->shape[0] != x->shape[0] ||
      y->shape[3] != x->shape[3]) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input [N,H,W,C] and output [N,OH,OW,C] of the same dtype, got "
                           "%s (dtype %u) -> %s (dtype %u)",
                           tether_shape_string(x, xs, sizeof(xs)), (unsigned)x->dtype,
                           tether_shape_string(y, ys, sizeof(ys)), (unsigned)y->dtype);
  }
  if (p->interpolation != RESIZE_NEAREST && p->interpolation != RESIZE_BILINEAR) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute interpolation=%d; allowed: 0 (nearest), 1 (bilinear)",
                           p->interpolation);
  }
  if (p->coordinate_mode < 0 || p->coordinate_mode >= COORD_MODES) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute coordinate_mode=%d; allowed: 0..%d", p->coordinate_mode,
                           COORD_MODES - 1);
  }
  if (p->nearest_mode < 0 || p->nearest_mode >= NEAREST_MODES) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute nearest_mode=%d; allowed: 0..%d", p->nearest_mode,
                           NEAREST_MODES - 1);
  }
  /* finite and > 0 (NaN fails both comparisons) */
  if (p->scales_count != 0 &&
      !(p->scale_h > 0.0f && p->scale_h <= 3.0e38f && p->scale_w > 0.0f &&
        p->scale_w <= 3.0e38f)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "attribute scales must be finite and > 0");
  }
  op->quantized = 0;
  if (x->dtype == TETHER_DTYPE_INT8) {
    tether_status status = tether_q8_need_per_tensor(model, op_index, x, "input 0");
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
    }
    if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, x, y);
    if (status != TETHER_STATUS_SUCCESS) return status;
    if (p->interpolation == RESIZE_BILINEAR &&
        ((p->coordinate_mode != COORD_HALF_PIXEL && p->coordinate_mode != COORD_ALIGN_CORNERS &&
          p->coordinate_mode != COORD_ASYMMETRIC) ||
         p->scales_count != 0)) {
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "int8 bilinear takes coordinate_mode 0 (half_pixel), 2 "
                             "(align_corners) or 3 (asymmetric) and no scales attribute "
                             "(TFLite's integer kernel), got mode %d%s",
                             p->coordinate_mode, p->scales_count != 0 ? " with scales" : "");
    }
    op->quantized = p->interpolation == RESIZE_BILINEAR ? Q8_BILINEAR : Q8_NEAREST;
  }
  return TETHER_STATUS_SUCCESS;
}

static void resize_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  (void)pool;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  const resize_geometry g = {
      .batch = (size_t)x->shape[0], .in_h = (size_t)x->shape[1], .in_w = (size_t)x->shape[2],
      .channels = (size_t)x->shape[3], .out_h = (size_t)y->shape[1],
      .out_w = (size_t)y->shape[2],
      .scale_h = axis_scale(p, 0, x->shape[1], y->shape[1]),
      .scale_w = axis_scale(p, 1, x->shape[2], y->shape[2]),
      .coordinate_mode = p->coordinate_mode, .nearest_mode = p->nearest_mode,
  };
  const void* xp = data[op->inputs[0]];
  void* yp = data[op->outputs[0]];
  if (p->interpolation == RESIZE_NEAREST) {
    ref_resize_nearest(&g, tether_dtype_size(x->dtype), (const uint8_t*)xp, (uint8_t*)yp);
  } else if (op->quantized == Q8_BILINEAR) {
    ref_qs8_resize_bilinear(&g, (const int8_t*)xp, (int8_t*)yp);
  } else {
    ref_f32_resize_bilinear(&g, (const float*)xp, (float*)yp);
  }
}

TETHER_OP_DEF(RESIZE) = {1, 1, TETHER_NO_OPTIONAL,
                         TETHER_ATTR(INTERPOLATION) | TETHER_ATTR(COORDINATE_MODE) |
                             TETHER_ATTR(NEAREST_MODE) | TETHER_ATTR(SCALES),
                         0, resize_prepare, NULL, resize_eval};
