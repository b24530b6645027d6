/*
 * test_resize.c — RESIZE: float32 nearest and bilinear against a double-precision blend of the
 * same source coordinates, every coordinate and nearest mode, random shapes and (non-integer)
 * scales up and down; int8 nearest against the float path's indices and int8 bilinear against
 * a separate transcription of TFLite's ResizeBilinearInteger, both through guarded buffers and
 * a session; load checks naming the attribute or shape that is wrong.
 */
#include "kernels_testlib.h"

/* ---- the reference: coordinates as ONNX Runtime computes them (float32), blends in double - */

static float ref_coordinate(int mode, int x, float s, int out, int in) {
  const float xf = (float)x;
  if (s == 1.0f) return xf;
  switch (mode) {
    case 0: return (xf + 0.5f) / s - 0.5f;
    case 1: return out > 1 ? (xf + 0.5f) / s - 0.5f : 0.0f;
    case 2: return out == 1 ? 0.0f : xf * (float)(in - 1) / (float)(out - 1);
    case 3: return xf / s;
    default: return (xf + 0.5f) / s;
  }
}

static int ref_nearest(int mode, float c, float s, int in) {
  const double d = c;
  const double k = floor(d), f = d - k;
  double i;
  if (mode == 2) {
    i = k;
  } else if (mode == 3) {
    i = ceil(d);
  } else if (mode == 4) {
    i = s < 1.0f ? ceil(d) : k;
  } else if (fabs(f - 0.5) <= fmax(1.0, fabs(d)) / 1048576.0) {
    i = mode == 1 ? k + 1 : k;
  } else {
    i = round(d);
  }
  return i < 0 ? 0 : i > in - 1 ? in - 1 : (int)i;
}

/* The blend of x at a clamped coordinate along one axis: taps and weight. */
static void ref_taps(float c, int in, int* a, int* b, double* w) {
  double v = c < 0 ? 0 : c > in - 1 ? in - 1 : c;
  *a = (int)floor(v);
  *b = *a + 1 < in ? *a + 1 : in - 1;
  *w = v - *a;
}

typedef struct rcase {
  int n, h, w, c, oh, ow, interp, cmode, nmode, given;
  float sh, sw;
} rcase;

static void build(tb_builder* b, const rcase* k, uint32_t dtype, uint32_t* x, uint32_t* y) {
  *x = tb_tensor_typed(b, "x", dtype, 4, (const int32_t[]){k->n, k->h, k->w, k->c}, NULL);
  *y = tb_tensor_typed(b, "y", dtype, 4, (const int32_t[]){k->n, k->oh, k->ow, k->c}, NULL);
  tb_op(b, TETHER_OP_RESIZE, 0, "resize", 1, x, *y);
  tb_attr_i(b, 22, 1, &k->interp);
  tb_attr_i(b, 23, 1, &k->cmode);
  tb_attr_i(b, 24, 1, &k->nmode);
  if (k->given) tb_attr_raw(b, 25, 2, 2, (const float[]){k->sh, k->sw});
}

static rcase random_case(int t) {
  rcase k;
  k.n = tb_range(1, 2);
  k.h = tb_range(1, 9);
  k.w = tb_range(1, 9);
  k.c = tb_range(1, 4);
  k.interp = t % 2;
  k.cmode = tb_range(0, 4);
  k.nmode = tb_range(0, 4);
  k.given = tb_range(0, 1);
  /* up, down, non-integer scales; the output size is floor(in * scale) (>= 1) */
  static const float kScales[] = {0.5f, 0.6f, 0.75f, 1.0f, 1.3f, 1.7f, 2.0f, 2.5f, 3.0f};
  k.sh = kScales[tb_range(0, 8)];
  k.sw = kScales[tb_range(0, 8)];
  k.oh = (int)floorf((float)k.h * k.sh);
  k.ow = (int)floorf((float)k.w * k.sw);
  if (k.oh < 1) k.oh = 1;
  if (k.ow < 1) k.ow = 1;
  if (!k.given) {
    k.sh = (float)k.oh / (float)k.h;
    k.sw = (float)k.ow / (float)k.w;
  }
  return k;
}

static void test_f32(void) {
  for (int t = 0; t < 300; t++) {
    const rcase k = random_case(t);
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_FLOAT32, &x, &y);
    const size_t ny = (size_t)k.n * k.oh * k.ow * k.c;
    float* xd = random_data((size_t)k.n * k.h * k.w * k.c);
    float* got = (float*)malloc(ny * 4);
    char name[160];
    snprintf(name, sizeof(name), "%s %dx%d -> %dx%d c%d mode %d nearest %d scales %g,%g%s",
             k.interp ? "bilinear" : "nearest", k.h, k.w, k.oh, k.ow, k.c, k.cmode, k.nmode,
             (double)k.sh, (double)k.sw, k.given ? " given" : "");
    if (run_op(name, b, 1, &x, &xd, y, got)) {
      double* want = (double*)malloc(ny * sizeof(double));
      for (int bn = 0; bn < k.n; bn++)
        for (int i = 0; i < k.oh; i++)
          for (int j = 0; j < k.ow; j++)
            for (int ch = 0; ch < k.c; ch++) {
              const float cy = ref_coordinate(k.cmode, i, k.sh, k.oh, k.h);
              const float cx = ref_coordinate(k.cmode, j, k.sw, k.ow, k.w);
#define X_AT(r, q) ((double)xd[(((size_t)bn * k.h + (r)) * k.w + (q)) * k.c + ch])
              double v;
              if (k.interp == 0) {
                v = X_AT(ref_nearest(k.nmode, cy, k.sh, k.h), ref_nearest(k.nmode, cx, k.sw, k.w));
              } else {
                int y0, y1, x0, x1;
                double wy, wx;
                ref_taps(cy, k.h, &y0, &y1, &wy);
                ref_taps(cx, k.w, &x0, &x1, &wx);
                v = (1 - wy) * (1 - wx) * X_AT(y0, x0) + (1 - wy) * wx * X_AT(y0, x1) +
                    wy * (1 - wx) * X_AT(y1, x0) + wy * wx * X_AT(y1, x1);
              }
#undef X_AT
              want[(((size_t)bn * k.oh + i) * k.ow + j) * k.c + ch] = v;
            }
      compare(name, got, want, ny);
      free(want);
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- int8 ----------------------------------------------------------------------------- */


/* TFLite's ResizeBilinearInteger, written out per output element. */
static int8_t tflite_bilinear(const int8_t* x, const rcase* k, int bn, int i, int j, int ch) {
  const int align = k->cmode == 2, half = k->cmode == 0;
  int32_t sc[2];
  const int ins[2] = {k->h, k->w}, outs[2] = {k->oh, k->ow}, at[2] = {i, j};
  int32_t lo[2], hi[2], pos[2];
  for (int a = 0; a < 2; a++) {
    sc[a] = (1024 * ins[a] + outs[a] / 2) / outs[a];
    if (align && outs[a] > 1) sc[a] = (1024 * (ins[a] - 1) + (outs[a] - 1) / 2) / (outs[a] - 1);
    pos[a] = half ? at[a] * sc[a] + sc[a] / 2 - 512 : at[a] * sc[a];
    lo[a] = pos[a] / 1024 > 0 ? pos[a] / 1024 : 0;
    hi[a] = (pos[a] + 1023) / 1024 < ins[a] - 1 ? (pos[a] + 1023) / 1024 : ins[a] - 1;
  }
#define Q(r, q) ((int64_t)x[(((size_t)bn * k->h + (size_t)(r)) * k->w + (size_t)(q)) * k->c + ch])
  const int64_t dy = pos[0] - 1024 * lo[0], dx = pos[1] - 1024 * lo[1];
  const int64_t sum = Q(lo[0], lo[1]) * (1024 - dy) * (1024 - dx) + Q(hi[0], lo[1]) * dy * (1024 - dx) +
                      Q(lo[0], hi[1]) * (1024 - dy) * dx + Q(hi[0], hi[1]) * dy * dx;
#undef Q
  return (int8_t)((sum + (sum > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20));
}

static void test_q8(void) {
  for (int t = 0; t < 200; t++) {
    rcase k = random_case(t);
    if (k.interp == 1) {  /* the integer kernel: TFLite's three modes, no scales */
      static const int kModes[] = {0, 2, 3};
      k.cmode = kModes[tb_range(0, 2)];
      k.given = 0;
      k.sh = (float)k.oh / (float)k.h;
      k.sw = (float)k.ow / (float)k.w;
    }
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_INT8, &x, &y);
    const float scale = 0.05f;
    const int32_t zero = tb_range(-20, 20);
    tb_quantize(b, x, 0, 1, &scale, &zero);
    tb_quantize(b, y, 0, 1, &scale, &zero);
    const size_t nx = (size_t)k.n * k.h * k.w * k.c, ny = (size_t)k.n * k.oh * k.ow * k.c;
    int8_t* xd = (int8_t*)malloc(nx);
    for (size_t i = 0; i < nx; i++) xd[i] = (int8_t)tb_range(-128, 127);
    int8_t* got = (int8_t*)malloc(ny);
    char name[160];
    snprintf(name, sizeof(name), "int8 %s %dx%d -> %dx%d c%d mode %d nearest %d",
             k.interp ? "bilinear" : "nearest", k.h, k.w, k.oh, k.ow, k.c, k.cmode, k.nmode);
    if (run_q8_op(name, b, x, y, xd, nx, got, ny)) {
      int bad = 0;
      for (int bn = 0; bn < k.n && !bad; bn++)
        for (int i = 0; i < k.oh && !bad; i++)
          for (int j = 0; j < k.ow && !bad; j++)
            for (int ch = 0; ch < k.c && !bad; ch++) {
              int8_t want;
              if (k.interp == 0) {
                const int r = ref_nearest(k.nmode, ref_coordinate(k.cmode, i, k.sh, k.oh, k.h),
                                          k.sh, k.h);
                const int q = ref_nearest(k.nmode, ref_coordinate(k.cmode, j, k.sw, k.ow, k.w),
                                          k.sw, k.w);
                want = xd[(((size_t)bn * k.h + r) * k.w + q) * k.c + ch];
              } else {
                want = tflite_bilinear(xd, &k, bn, i, j, ch);
              }
              const int8_t have = got[(((size_t)bn * k.oh + i) * k.ow + j) * k.c + ch];
              if (have != want) {
                TB_CHECK(0, "%s: element [%d,%d,%d,%d] is %d, want %d", name, bn, i, j, ch, have,
                         want);
                bad = 1;
              }
            }
    }
    free(xd);
    free(got);
    free(b);
  }
}

/* ---- load checks ---------------------------------------------------------------------- */

static void test_load_checks(void) {
  const rcase base = {1, 4, 5, 3, 8, 10, 0, 0, 0, 0, 2.0f, 2.0f};
  struct {
    const char* what;
    int field;  /* 0 interp, 1 cmode, 2 nmode */
    int value;
    const char* needle;
  } bad_attrs[] = {
      {"interpolation 2", 0, 2, "interpolation=2"},
      {"coordinate_mode 5", 1, 5, "coordinate_mode=5"},
      {"coordinate_mode -1", 1, -1, "coordinate_mode=-1"},
      {"nearest_mode 5", 2, 5, "nearest_mode=5"},
  };
  for (size_t i = 0; i < sizeof(bad_attrs) / sizeof(bad_attrs[0]); i++) {
    rcase k = base;
    if (bad_attrs[i].field == 0) k.interp = bad_attrs[i].value;
    if (bad_attrs[i].field == 1) k.cmode = bad_attrs[i].value;
    if (bad_attrs[i].field == 2) k.nmode = bad_attrs[i].value;
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_FLOAT32, &x, &y);
    expect_load(bad_attrs[i].what, b, x, y, TETHER_STATUS_FORMAT_ERROR, bad_attrs[i].needle);
  }
  const float bad_scales[] = {0.0f, -1.0f, NAN, INFINITY};
  for (size_t i = 0; i < 4; i++) {
    rcase k = base;
    k.given = 1;
    k.sh = bad_scales[i];
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_FLOAT32, &x, &y);
    expect_load("bad scale", b, x, y, TETHER_STATUS_FORMAT_ERROR,
                "scales must be finite and > 0");
  }
  {  /* channels differ */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 4, 4, 3}, NULL);
    uint32_t y = tb_tensor(b, "y", 4, (const int32_t[]){1, 8, 8, 2}, NULL);
    tb_op(b, TETHER_OP_RESIZE, 0, "resize", 1, &x, y);
    expect_load("channels", b, x, y, TETHER_STATUS_FORMAT_ERROR, "[1, 4, 4, 3]");
  }
  {  /* rank 3 */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 3, (const int32_t[]){4, 4, 3}, NULL);
    uint32_t y = tb_tensor(b, "y", 3, (const int32_t[]){8, 8, 3}, NULL);
    tb_op(b, TETHER_OP_RESIZE, 0, "resize", 1, &x, y);
    expect_load("rank", b, x, y, TETHER_STATUS_FORMAT_ERROR, "[N,H,W,C]");
  }
  {  /* int8 bilinear, pytorch_half_pixel */
    rcase k = base;
    k.interp = 1;
    k.cmode = 1;
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_INT8, &x, &y);
    const float s = 0.1f;
    const int32_t z = 0;
    tb_quantize(b, x, 0, 1, &s, &z);
    tb_quantize(b, y, 0, 1, &s, &z);
    expect_load("int8 bilinear mode", b, x, y, TETHER_STATUS_FORMAT_ERROR, "int8 bilinear");
  }
  {  /* int8 output quantized differently */
    rcase k = base;
    tb_builder* b = tb_new();
    uint32_t x, y;
    build(b, &k, TETHER_DTYPE_INT8, &x, &y);
    const float s = 0.1f, s2 = 0.2f;
    const int32_t z = 0;
    tb_quantize(b, x, 0, 1, &s, &z);
    tb_quantize(b, y, 0, 1, &s2, &z);
    expect_load("int8 quantization", b, x, y, TETHER_STATUS_FORMAT_ERROR, "quantized");
  }
}

int main(void) {
  printf("test_resize: isa %s\n", tether_isa());
  test_f32();
  test_q8();
  test_load_checks();
  return kernels_report("test_resize");
}
