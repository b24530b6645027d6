/*
 * binary.c — ADD, MUL, SUB, DIV, MAXIMUM, MINIMUM and PRELU (y = a < 0 ? a * b : a, b the
 * slope) with numpy broadcasting over up to 6 dims.
 *
 * Shapes are right-aligned and padded to 6 dims with 1s; a dim of size 1 is broadcast by
 * giving it stride 0. int8 ADD, SUB, MUL and PRELU are TFLite's integer kernels bit for bit
 * (ADD / SUB: inputs rescaled with a left shift of 20, then the output multiplier; same-shape
 * ADD runs the model's qs8 vadd micro-kernel; PRELU: BroadcastPrelu4DSlow, the slope an int8
 * tensor with its own scale and zero point); int8 MAXIMUM and MINIMUM are TFLite's
 * maximum_minimum.cc (MaximumMinimumBroadcastSlow): the raw int8 values compared, which needs
 * both inputs and the output quantized alike (TensorFlow's quantizer gives them one scale and
 * zero point; checked at load), then the int8 clamp of a fused RELU/RELU6/RELU_N1_TO_1; int8
 * DIV is rejected at load. Float MAXIMUM and MINIMUM return NaN when either input is NaN (ONNX
 * Runtime's Max/Min).
 */
#include <stddef.h>

#include "ops/ops.h"

typedef struct broadcast {
  size_t out[TETHER_MAX_DIMS];
  size_t a_stride[TETHER_MAX_DIMS];
  size_t b_stride[TETHER_MAX_DIMS];
} broadcast;

static void padded_shape(const tether_tensor* t, size_t* dims) {
  const uint32_t lead = TETHER_MAX_DIMS - t->ndim;
  for (uint32_t d = 0; d < TETHER_MAX_DIMS; d++) {
    dims[d] = d < lead ? 1 : (size_t)t->shape[d - lead];
  }
}

static void broadcast_strides(const size_t* dims, const size_t* out, size_t* stride) {
  size_t s = 1;
  for (uint32_t d = TETHER_MAX_DIMS; d-- > 0;) {
    stride[d] = dims[d] == 1 && out[d] != 1 ? 0 : s;
    s *= dims[d];
  }
}

#define TETHER_BINARY_UKERNEL(NAME, EXPR)                                                     \
  static void NAME(const broadcast* bc, const float* a, const float* b, float* y) {           \
    const size_t* n = bc->out;                                                                 \
    const size_t* sa = bc->a_stride;                                                           \
    const size_t* sb = bc->b_stride;                                                           \
    for (size_t i0 = 0; i0 < n[0]; i0++)                                                       \
      for (size_t i1 = 0; i1 < n[1]; i1++)                                                     \
        for (size_t i2 = 0; i2 < n[2]; i2++)                                                   \
          for (size_t i3 = 0; i3 < n[3]; i3++)                                                 \
            for (size_t i4 = 0; i4 < n[4]; i4++) {                                             \
              const float* ap = a + i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3] +       \
                                i4 * sa[4];                                                    \
              const float* bp = b + i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3] +       \
                                i4 * sb[4];                                                    \
              for (size_t i5 = 0; i5 < n[5]; i5++) {                                           \
                const float va = ap[i5 * sa[5]], vb = bp[i5 * sb[5]];                          \
                *y++ = EXPR;                                                                   \
              }                                                                                \
            }                                                                                  \
  }

TETHER_BINARY_UKERNEL(binary_f32_vadd, va + vb)
TETHER_BINARY_UKERNEL(binary_f32_vmul, va * vb)
TETHER_BINARY_UKERNEL(binary_f32_vsub, va - vb)
TETHER_BINARY_UKERNEL(binary_f32_vdiv, va / vb)
TETHER_BINARY_UKERNEL(binary_f32_vmax, va > vb || va != va ? va : vb)
TETHER_BINARY_UKERNEL(binary_f32_vmin, va < vb || va != va ? va : vb)
TETHER_BINARY_UKERNEL(binary_f32_vprelu, va < 0.0f ? va * vb : va)

static tether_status check_broadcast(const struct tether_model* model, uint32_t op_index,
                                     const tether_tensor* a, const tether_tensor* b,
                                     const tether_tensor* y);

/* ---- int8 --------------------------------------------------------------------------------- */

static tether_status q8_add_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = tether_q8_need_per_tensor(model, op_index, a, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, b, "input 1");
  if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_per_tensor(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (op->type == TETHER_OP_DIV) {
    return tether_op_error(model, op_index, TETHER_STATUS_UNSUPPORTED_OP,
                           "int8 %s is not implemented yet (int8 ADD, SUB, MUL, MAXIMUM, "
                           "MINIMUM and PRELU are)",
                           tether_op_type_name(op->type));
  }
  const int minmax = op->type == TETHER_OP_MAXIMUM || op->type == TETHER_OP_MINIMUM;
  if (minmax) {  /* compares raw integers: one quantization for all three */
    status = tether_q8_need_same_quant(model, op_index, a, y);
    if (status == TETHER_STATUS_SUCCESS) status = tether_q8_need_same_quant(model, op_index, b, y);
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  int32_t lo, hi;
  if (!tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi)) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "fused activation %u is not supported on int8 outputs",
                           (unsigned)op->activation);
  }
  op->quantized = 1;
  op->fused_activation = 1;
  /* words: ADD/SUB: input 1, input 2 and output multipliers and shifts; MUL: one pair;
   * PRELU: the pairs for x >= z_x and x < z_x; MAXIMUM/MINIMUM: none. */
  op->packed_floats = minmax                       ? 0
                      : op->type == TETHER_OP_MUL   ? 2
                      : op->type == TETHER_OP_PRELU ? 4
                                                    : 6;
  return TETHER_STATUS_SUCCESS;
}

/*
 * ADD/SUB: y = clamp(z_y + R_out(R_1((a - z_a) << 20) ± R_2((b - z_b) << 20))), each R a
 * MultiplyByQuantizedMultiplier; MUL and PRELU below; `a_index`/`b_index` give the broadcast
 * element of each input.
 */
static void q8_add_elements(const tether_kernels* kernels, const tether_node* op,
                            const tether_tensor* a, const tether_tensor* b,
                            const tether_tensor* y, const int8_t* ad, const int8_t* bd,
                            size_t count, const size_t* a_index, const size_t* b_index,
                            int8_t* yd) {
  const int32_t* w = (const int32_t*)(const void*)op->packed;
  int32_t lo = -128, hi = 127;
  tether_q8_activation_range(op->activation, y->scale, y->zero_point, &lo, &hi);
  if (op->type == TETHER_OP_MAXIMUM || op->type == TETHER_OP_MINIMUM) {
    /* TFLite MaximumMinimumBroadcastSlow: the larger / smaller stored integer */
    const int max = op->type == TETHER_OP_MAXIMUM;
    for (size_t i = 0; i < count; i++) {
      const int32_t va = ad[a_index != NULL ? a_index[i] : i];
      const int32_t vb = bd[b_index != NULL ? b_index[i] : i];
      int32_t v = max ? (va > vb ? va : vb) : (va < vb ? va : vb);
      v = v < lo ? lo : v > hi ? hi : v;
      yd[i] = (int8_t)v;
    }
    return;
  }
  if (op->type == TETHER_OP_MUL) {  /* y = clamp(z_y + MBQM((a - z_a) * (b - z_b), M, shift)) */
    for (size_t i = 0; i < count; i++) {
      const int32_t va = (int32_t)ad[a_index != NULL ? a_index[i] : i] - a->zero_point;
      const int32_t vb = (int32_t)bd[b_index != NULL ? b_index[i] : i] - b->zero_point;
      int32_t v = tether_multiply_by_quantized_multiplier(va * vb, w[0], w[1]) + y->zero_point;
      v = v < lo ? lo : v > hi ? hi : v;
      yd[i] = (int8_t)v;
    }
    return;
  }
  if (op->type == TETHER_OP_PRELU) {  /* TFLite BroadcastPrelu4DSlow: b is the slope */
    for (size_t i = 0; i < count; i++) {
      const int32_t va = (int32_t)ad[a_index != NULL ? a_index[i] : i] - a->zero_point;
      int32_t v;
      if (va >= 0) {
        v = tether_multiply_by_quantized_multiplier(va, w[0], w[1]);
      } else {
        const int32_t vb = (int32_t)bd[b_index != NULL ? b_index[i] : i] - b->zero_point;
        v = tether_multiply_by_quantized_multiplier(va * vb, w[2], w[3]);
      }
      v += y->zero_point;
      v = v < lo ? lo : v > hi ? hi : v;
      yd[i] = (int8_t)v;
    }
    return;
  }
  if (a_index == NULL && b_index == NULL) {  /* same shapes: the SIMD kernel of this CPU */
    const tether_qs8_add_params kp = {
        a->zero_point, b->zero_point, y->zero_point, lo, hi,
        w[0], w[1] > 0 ? w[1] : 0, w[1] > 0 ? 0 : -w[1],
        w[2], w[3] > 0 ? w[3] : 0, w[3] > 0 ? 0 : -w[3],
        w[4], w[5] > 0 ? w[5] : 0, w[5] > 0 ? 0 : -w[5]};
    kernels->qs8_vadd(count, ad, bd, yd, &kp);
    return;
  }
  for (size_t i = 0; i < count; i++) {
    const int32_t va = ((int32_t)ad[a_index != NULL ? a_index[i] : i] - a->zero_point) * (1 << 20);
    const int32_t vb = ((int32_t)bd[b_index != NULL ? b_index[i] : i] - b->zero_point) * (1 << 20);
    const int32_t sum = tether_multiply_by_quantized_multiplier(va, w[0], w[1]) +
                        tether_multiply_by_quantized_multiplier(vb, w[2], w[3]);
    int32_t v = tether_multiply_by_quantized_multiplier(sum, w[4], w[5]) + y->zero_point;
    v = v < lo ? lo : v > hi ? hi : v;
    yd[i] = (int8_t)v;
  }
}

static tether_status binary_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  const tether_tensor* a = tether_input(model, op, 0);
  const tether_tensor* b = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  tether_status status = TETHER_STATUS_SUCCESS;
  if (a->dtype == TETHER_DTYPE_INT8) {
    status = q8_add_prepare(model, op_index, op);
    if (status != TETHER_STATUS_SUCCESS) return status;
    return check_broadcast(model, op_index, a, b, y);
  }
  status = tether_check_f32(model, op_index, a, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, b, "input 1");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, y, "output 0");
  if (status != TETHER_STATUS_SUCCESS) return status;
  return check_broadcast(model, op_index, a, b, y);
}

static tether_status check_broadcast(const struct tether_model* model, uint32_t op_index,
                                     const tether_tensor* a, const tether_tensor* b,
                                     const tether_tensor* y) {
  size_t da[TETHER_MAX_DIMS], db[TETHER_MAX_DIMS];
  padded_shape(a, da);
  padded_shape(b, db);
  const uint32_t rank = a->ndim > b->ndim ? a->ndim : b->ndim;
  int32_t expected[TETHER_MAX_DIMS];
  for (uint32_t d = TETHER_MAX_DIMS - rank; d < TETHER_MAX_DIMS; d++) {
    if (da[d] != db[d] && da[d] != 1 && db[d] != 1) {
      char as[96], bs[96];
      return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                             "inputs %s and %s do not broadcast",
                             tether_shape_string(a, as, sizeof(as)),
                             tether_shape_string(b, bs, sizeof(bs)));
    }
    expected[d - (TETHER_MAX_DIMS - rank)] = (int32_t)(da[d] > db[d] ? da[d] : db[d]);
  }
  return tether_check_shape(model, op_index, y, "output 0", rank, expected);
}

/* Same-shape int8 inputs: slices of the elements, one per task (each element computed the
 * same way whatever the split). */
typedef struct q8_slices_job {
  const struct tether_model* model;
  const tether_node* op;
  const int8_t *a, *b;
  int8_t* y;
  size_t count, slice;
} q8_slices_job;

static void q8_slice_task(void* context, size_t task) {
  const q8_slices_job* j = (const q8_slices_job*)context;
  const size_t begin = task * j->slice;
  const size_t n = j->count - begin < j->slice ? j->count - begin : j->slice;
  q8_add_elements(j->model->kernels, j->op, tether_input(j->model, j->op, 0),
                  tether_input(j->model, j->op, 1), tether_output(j->model, j->op, 0),
                  j->a + begin, j->b + begin, n, NULL, NULL, j->y + begin);
}

static void binary_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)scratch;
  broadcast bc;
  size_t da[TETHER_MAX_DIMS], db[TETHER_MAX_DIMS];
  padded_shape(tether_input(model, op, 0), da);
  padded_shape(tether_input(model, op, 1), db);
  for (uint32_t d = 0; d < TETHER_MAX_DIMS; d++) bc.out[d] = da[d] > db[d] ? da[d] : db[d];
  broadcast_strides(da, bc.out, bc.a_stride);
  broadcast_strides(db, bc.out, bc.b_stride);
  if (op->quantized) {
    const tether_tensor* ta = tether_input(model, op, 0);
    const tether_tensor* tb = tether_input(model, op, 1);
    const tether_tensor* ty = tether_output(model, op, 0);
    const int8_t* a8 = (const int8_t*)data[op->inputs[0]];
    const int8_t* b8 = (const int8_t*)data[op->inputs[1]];
    int8_t* y8 = (int8_t*)data[op->outputs[0]];
    if (ta->elements == ty->elements && tb->elements == ty->elements) {
      const size_t tasks = 2 * tether_pool_threads(pool);
      q8_slices_job j = {model, op, a8, b8, y8, ty->elements,
                         (ty->elements + tasks - 1) / tasks};
      j.slice = (j.slice + 63) / 64 * 64;  /* whole vectors */
      tether_parallelize(pool, q8_slice_task, &j, (j.count + j.slice - 1) / j.slice);
      return;
    }
    /* Broadcasting: one innermost row at a time, indices from the strides. */
    size_t ia[64], ib[64];
    size_t done = 0;
    for (size_t i0 = 0; i0 < bc.out[0]; i0++)
      for (size_t i1 = 0; i1 < bc.out[1]; i1++)
        for (size_t i2 = 0; i2 < bc.out[2]; i2++)
          for (size_t i3 = 0; i3 < bc.out[3]; i3++)
            for (size_t i4 = 0; i4 < bc.out[4]; i4++) {
              const size_t oa = i0 * bc.a_stride[0] + i1 * bc.a_stride[1] +
                                i2 * bc.a_stride[2] + i3 * bc.a_stride[3] + i4 * bc.a_stride[4];
              const size_t ob = i0 * bc.b_stride[0] + i1 * bc.b_stride[1] +
                                i2 * bc.b_stride[2] + i3 * bc.b_stride[3] + i4 * bc.b_stride[4];
              for (size_t i5 = 0; i5 < bc.out[5]; i5 += 64) {
                const size_t n = bc.out[5] - i5 < 64 ? bc.out[5] - i5 : 64;
                for (size_t k = 0; k < n; k++) {
                  ia[k] = oa + (i5 + k) * bc.a_stride[5];
                  ib[k] = ob + (i5 + k) * bc.b_stride[5];
                }
                q8_add_elements(model->kernels, op, ta, tb, ty, a8, b8, n, ia, ib, y8 + done);
                done += n;
              }
            }
    return;
  }
  const float* a = (const float*)data[op->inputs[0]];
  const float* b = (const float*)data[op->inputs[1]];
  float* y = (float*)data[op->outputs[0]];
  switch (op->type) {
    case TETHER_OP_ADD: binary_f32_vadd(&bc, a, b, y); break;
    case TETHER_OP_SUB: binary_f32_vsub(&bc, a, b, y); break;
    case TETHER_OP_DIV: binary_f32_vdiv(&bc, a, b, y); break;
    case TETHER_OP_MAXIMUM: binary_f32_vmax(&bc, a, b, y); break;
    case TETHER_OP_MINIMUM: binary_f32_vmin(&bc, a, b, y); break;
    case TETHER_OP_PRELU: binary_f32_vprelu(&bc, a, b, y); break;
    default: binary_f32_vmul(&bc, a, b, y); break;
  }
}

/* The int8 words. MUL (TFLite Mul int8): M = s_a * s_b / s_y, one multiplier and shift.
 * PRELU (TFLite PreluPrepare, ratios in float32): s_a / s_y, then s_a * s_b / s_y.
 * ADD / SUB (TFLite PrepareGeneralSubOp / Add int8, left shift 20): input 1's, input 2's and
 * the output's multiplier and shift; SUB negates input 2's multiplier. */
static void q8_binary_words(const struct tether_model* model, const tether_node* op,
                            int32_t* words) {
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* x2 = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  if (op->type == TETHER_OP_MUL) {
    tether_quantize_multiplier((double)x->scale * (double)x2->scale / (double)y->scale,
                               &words[0], &words[1]);
    return;
  }
  if (op->type == TETHER_OP_PRELU) {
    const float identity = x->scale / y->scale;
    const float scaled_slope = x->scale * x2->scale;
    const float with_slope = scaled_slope / y->scale;
    tether_quantize_multiplier((double)identity, &words[0], &words[1]);
    tether_quantize_multiplier((double)with_slope, &words[2], &words[3]);
    return;
  }
  const float larger = x->scale > x2->scale ? x->scale : x2->scale;
  const double twice_max = (double)(2.0f * larger);
  tether_quantize_multiplier((double)x->scale / twice_max, &words[0], &words[1]);
  tether_quantize_multiplier((double)x2->scale / twice_max, &words[2], &words[3]);
  tether_quantize_multiplier(twice_max / (double)((float)(1 << 20) * y->scale), &words[4],
                             &words[5]);
  if (op->type == TETHER_OP_SUB) words[2] = -words[2];
}

static tether_status binary_pack(const struct tether_model* model, const tether_node* op,
                                 void* packed) {
  int32_t scratch[6];
  int32_t* words = packed != NULL ? (int32_t*)packed : scratch;
  q8_binary_words(model, op, words);
  if (op->type == TETHER_OP_PRELU && (words[1] > 23 || words[3] > 15)) {
    /* |a - z_a| <= 255 shifted left by at most 23, |(a - z_a)(b - z_b)| <= 65025 by 15 */
    return tether_op_error(model, (uint32_t)(op - model->ops), TETHER_STATUS_FORMAT_ERROR,
                           "int8 PRELU: scales out of range for its fixed-point arithmetic "
                           "(needs s_x / s_y < 2^23 and s_x * s_slope / s_y < 2^15)");
  }
  return op->type == TETHER_OP_MUL     ? tether_q8_check_shifts(model, op, words + 1, 1, 1)
         : op->type == TETHER_OP_PRELU ? TETHER_STATUS_SUCCESS
                                       : tether_q8_check_shifts(model, op, words + 1, 3, 2);
}

TETHER_OP_DEF(ADD) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack, binary_eval};
TETHER_OP_DEF(MUL) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack, binary_eval};
TETHER_OP_DEF(SUB) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack, binary_eval};
TETHER_OP_DEF(DIV) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack, binary_eval};
TETHER_OP_DEF(MAXIMUM) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack,
                          binary_eval};
TETHER_OP_DEF(MINIMUM) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack,
                          binary_eval};
TETHER_OP_DEF(PRELU) = {2, 2, TETHER_NO_OPTIONAL, 0, 0, binary_prepare, binary_pack, binary_eval};
