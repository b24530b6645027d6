/*
 * conv2d.c — CONV_2D: NHWC input, OHWI weights [OC, KH, KW, C/G], optional bias [OC],
 * any strides, dilations, explicit pads (top, left, bottom, right) and groups.
 *
 * Paths, chosen by prepare:
 *   - GEMM (groups 1, constant weights and bias): the weights are packed once at load into
 *     the model's packed block (ukernels.h layout, the model kernels' NR). A 1x1 stride-1
 *     unpadded conv is a GEMM straight on the NHWC input (M = N*H*W, K = C); any other
 *     kernel copies blocks of im2col rows (K = KH*KW*C, padding taps as zeros) into the
 *     arena scratch, at most ~64 KiB or 16 tiles of rows at a time, then runs the GEMM on
 *     them. Bias and RELU/RELU6/RELU_N1_TO_1 are applied in the micro-kernel's epilogue.
 *   - reference (groups > 1, or weights computed at run time): the scalar kernel below.
 */
#include <stddef.h>
#include <string.h>

#include "../internal.h"
#include "../ukernels.h"

/*
 * y[n,oh,ow,o] = bias[o] + sum_{kh,kw,i} x[n, oh*s+kh*d-pt, ow*s+kw*d-pl, g*IC/G+i] * w[o,kh,kw,i]
 * with o in group g; taps that fall into the padding contribute nothing.
 */
void tether_f32_conv2d_ukernel__scalar(const tether_conv_geometry* g, const float* x,
                                       const float* w, const float* bias, float* y) {
  TETHER_DCHECK(g->groups >= 1 && g->in_c % g->groups == 0 && g->out_c % g->groups == 0);
  const size_t group_in = g->in_c / g->groups;
  const size_t group_out = g->out_c / g->groups;
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        float* y_pixel = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t channel0 = (o / group_out) * group_in;
          float acc = 0.0f;
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              const float* xp = x_n + ((size_t)ih * g->in_w + (size_t)iw) * g->in_c + channel0;
              const float* wp = w + ((o * g->kernel_h + kh) * g->kernel_w + kw) * group_in;
              for (size_t i = 0; i < group_in; i++) acc += xp[i] * wp[i];
            }
          }
          y_pixel[o] = bias != NULL ? acc + bias[o] : acc;
        }
      }
    }
  }
}

static tether_status check_bias(const struct tether_model* model, uint32_t op_index,
                                const tether_tensor* b, int32_t channels) {
  if (b == NULL) return TETHER_STATUS_SUCCESS;
  tether_status status = tether_check_f32(model, op_index, b, "input 2");
  if (status != TETHER_STATUS_SUCCESS) return status;
  return tether_check_shape(model, op_index, b, "input 2 (bias)", 1, &channels);
}

/* 1x1, stride 1, no padding: the NHWC input is the GEMM's A as it stands. */
static int is_pointwise(const tether_tensor* x, const tether_tensor* w, const tether_op_params* p) {
  (void)x;
  return w->shape[1] == 1 && w->shape[2] == 1 && p->stride_h == 1 && p->stride_w == 1 &&
         p->pad_top == 0 && p->pad_left == 0 && p->pad_bottom == 0 && p->pad_right == 0;
}

/* im2col rows per block: 16 tiles, fewer when K is long (about 64 KiB), at least one tile. */
static size_t im2col_rows(const tether_kernels* kt, size_t k) {
  size_t rows = (64 * 1024) / (k * sizeof(float));
  rows = rows / kt->gemm_mr * kt->gemm_mr;
  if (rows > 16 * kt->gemm_mr) rows = 16 * kt->gemm_mr;
  return rows < kt->gemm_mr ? kt->gemm_mr : rows;
}

tether_status tether_conv2d_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
  if (tether_input(model, op, 0)->dtype == TETHER_DTYPE_INT8) {
    return tether_q8_conv_prepare(model, op_index, op);
  }
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const tether_tensor* y = tether_output(model, op, 0);
  const tether_op_params* p = &op->params;
  tether_status status = tether_check_f32(model, op_index, x, "input 0");
  if (status == TETHER_STATUS_SUCCESS) status = tether_check_f32(model, op_index, w, "input 1");
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (x->ndim != 4 || w->ndim != 4) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [N,H,W,C] and input 1 [OC,KH,KW,C/G], got ranks %u "
                           "and %u",
                           (unsigned)x->ndim, (unsigned)w->ndim);
  }
  const int32_t groups = p->groups;
  if (groups < 1 || x->shape[3] % groups != 0 || w->shape[0] % groups != 0 ||
      w->shape[3] != x->shape[3] / groups) {
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "weights [%d, %d, %d, %d] do not fit %d input channels with "
                           "groups=%d",
                           w->shape[0], w->shape[1], w->shape[2], w->shape[3], x->shape[3],
                           groups);
  }
  status = check_bias(model, op_index, b, w->shape[0]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  status = tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                      p->dilation_h, p->dilation_w, w->shape[0]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  const int constant = (w->flags & TETHER_TENSOR_CONSTANT) &&
                       (b == NULL || (b->flags & TETHER_TENSOR_CONSTANT));
  if (groups == 1 && constant) {
    const tether_kernels* kt = model->kernels;
    const size_t k = (size_t)w->shape[1] * (size_t)w->shape[2] * (size_t)w->shape[3];
    op->packed_floats = tether_f32_gemm_packed_floats(kt->gemm_nr, (size_t)w->shape[0], k);
    if (!is_pointwise(x, w, p)) op->scratch_bytes = im2col_rows(kt, k) * k * sizeof(float);
    tether_f32_minmax mm;
    op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  }
  return TETHER_STATUS_SUCCESS;
}

void conv2d_pack(const struct tether_model* model, const tether_node* op, float* packed) {
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* b = op->input_count > 2 ? tether_input(model, op, 2) : NULL;
  const size_t k = (size_t)w->shape[1] * (size_t)w->shape[2] * (size_t)w->shape[3];
  tether_f32_gemm_pack(model->kernels->gemm_nr, (size_t)w->shape[0], k, (const float*)w->data,
                       b != NULL ? (const float*)b->data : NULL, packed);
}

/* Copies im2col rows [m0, m0 + rows) of the output positions (n, oh, ow) into a. */
static void im2col(const tether_conv_geometry* g, const float* x, size_t m0, size_t rows,
                   float* a) {
  const size_t ic = g->in_c;
  for (size_t r = 0; r < rows; r++) {
    const size_t m = m0 + r;
    const size_t ow = m % g->out_w, oh = (m / g->out_w) % g->out_h, n = m / (g->out_w * g->out_h);
    const float* x_n = x + n * g->in_h * g->in_w * ic;
    for (size_t kh = 0; kh < g->kernel_h; kh++) {
      const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h - g->pad_top;
      for (size_t kw = 0; kw < g->kernel_w; kw++) {
        const ptrdiff_t iw =
            (ptrdiff_t)ow * g->stride_w + (ptrdiff_t)kw * g->dilation_w - g->pad_left;
        if (ih < 0 || ih >= (ptrdiff_t)g->in_h || iw < 0 || iw >= (ptrdiff_t)g->in_w) {
          memset(a, 0, ic * sizeof(float));
        } else {
          memcpy(a, x_n + ((size_t)ih * g->in_w + (size_t)iw) * ic, ic * sizeof(float));
        }
        a += ic;
      }
    }
  }
}

void tether_conv2d_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  if (op->quantized) {
    tether_q8_conv_eval(model, op, data, scratch, pool);
    return;
  }
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (op->packed != NULL) {
    const tether_kernels* kt = model->kernels;
    tether_f32_minmax mm;
    tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &mm);
    const float* xd = (const float*)data[op->inputs[0]];
    float* yd = (float*)data[op->outputs[0]];
    const size_t m = g.batch * g.out_h * g.out_w;
    const size_t k = g.kernel_h * g.kernel_w * g.in_c;
    if (op->scratch_bytes == 0) {
      tether_f32_gemm_parallel(pool, kt, m, g.out_c, k, xd, k * sizeof(float), op->packed, yd,
                               g.out_c * sizeof(float), &mm);
      return;
    }
    const size_t block = op->scratch_bytes / (k * sizeof(float));
    float* a = (float*)scratch;
    for (size_t m0 = 0; m0 < m; m0 += block) {
      const size_t rows = m - m0 < block ? m - m0 : block;
      im2col(&g, xd, m0, rows, a);
      tether_f32_gemm_parallel(pool, kt, rows, g.out_c, k, a, k * sizeof(float), op->packed,
                               yd + m0 * g.out_c, g.out_c * sizeof(float), &mm);
    }
    return;
  }
  tether_f32_conv2d_ukernel__scalar(&g, (const float*)data[op->inputs[0]],
                                    (const float*)data[op->inputs[1]],
                                    has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                    (float*)data[op->outputs[0]]);
}
