/*
 * depthwise_conv2d.c — DEPTHWISE_CONV_2D: NHWC input, weights [1, KH, KW, C*M], optional
 * bias [C*M], any strides, dilations, explicit pads and depth multiplier M.
 * With M = 1 the model kernels' dwconv micro-kernel runs (weights used in place, bias and
 * RELU/RELU6/RELU_N1_TO_1 fused); M > 1 runs the reference kernel below.
 */
#include <stddef.h>

#include "../internal.h"
#include "../ukernels.h"

/* y[n,oh,ow,c*M+m] = bias[c*M+m] + sum_{kh,kw} x[n, oh*s+kh*d-pt, ow*s+kw*d-pl, c] * w[kh,kw,c*M+m] */
void tether_f32_dwconv2d_ukernel__scalar(const tether_conv_geometry* g, const float* x,
                                         const float* w, const float* bias, float* y) {
  const size_t m_count = g->depth_multiplier;
  TETHER_DCHECK(g->out_c == g->in_c * m_count);
  const ptrdiff_t in_h = (ptrdiff_t)g->in_h, in_w = (ptrdiff_t)g->in_w;
  for (size_t n = 0; n < g->batch; n++) {
    const float* x_n = x + n * g->in_h * g->in_w * g->in_c;
    for (size_t oh = 0; oh < g->out_h; oh++) {
      for (size_t ow = 0; ow < g->out_w; ow++) {
        float* y_pixel = y + ((n * g->out_h + oh) * g->out_w + ow) * g->out_c;
        for (size_t o = 0; o < g->out_c; o++) {
          const size_t c = o / m_count;
          float acc = 0.0f;
          for (size_t kh = 0; kh < g->kernel_h; kh++) {
            const ptrdiff_t ih = (ptrdiff_t)oh * g->stride_h + (ptrdiff_t)kh * g->dilation_h -
                                 g->pad_top;
            if (ih < 0 || ih >= in_h) continue;
            for (size_t kw = 0; kw < g->kernel_w; kw++) {
              const ptrdiff_t iw = (ptrdiff_t)ow * g->stride_w +
                                   (ptrdiff_t)kw * g->dilation_w - g->pad_left;
              if (iw < 0 || iw >= in_w) continue;
              acc += x_n[((size_t)ih * g->in_w + (size_t)iw) * g->in_c + c] *
                     w[(kh * g->kernel_w + kw) * g->out_c + o];
            }
          }
          y_pixel[o] = bias != NULL ? acc + bias[o] : acc;
        }
      }
    }
  }
}

typedef struct dw_job {
  const tether_conv_geometry* g;
  tether_f32_dwconv_ukernel_fn fn;
  tether_f32_minmax mm;
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  size_t rows;  /* output rows per task */
} dw_job;

static void dw_task(void* context, size_t task) {
  const dw_job* j = (const dw_job*)context;
  const size_t begin = task * j->rows;
  const size_t end = begin + j->rows < j->g->out_h ? begin + j->rows : j->g->out_h;
  j->fn(j->g, begin, end, j->x, j->w, j->bias, j->y, &j->mm);
}

tether_status tether_depthwise_conv2d_prepare(const struct tether_model* model,
                                              uint32_t op_index, tether_node* op) {
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
  const int32_t m = p->depth_multiplier;
  if (x->ndim != 4 || w->ndim != 4 || m < 1 || w->shape[0] != 1 ||
      (int64_t)w->shape[3] != (int64_t)x->shape[3] * m) {
    char xs[96], ws[96];
    return tether_op_error(model, op_index, TETHER_STATUS_FORMAT_ERROR,
                           "needs input 0 [N,H,W,C] and input 1 [1,KH,KW,C*M] with "
                           "depth_multiplier M=%d, got %s and %s",
                           m, tether_shape_string(x, xs, sizeof(xs)),
                           tether_shape_string(w, ws, sizeof(ws)));
  }
  if (b != NULL) {
    status = tether_check_f32(model, op_index, b, "input 2");
    if (status == TETHER_STATUS_SUCCESS) {
      status = tether_check_shape(model, op_index, b, "input 2 (bias)", 1, &w->shape[3]);
    }
    if (status != TETHER_STATUS_SUCCESS) return status;
  }
  status = tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                      p->dilation_h, p->dilation_w, w->shape[3]);
  if (status != TETHER_STATUS_SUCCESS) return status;
  if (m == 1) {
    tether_f32_minmax mm;
    op->fused_activation = (uint8_t)tether_f32_minmax_of(op->activation, &mm);
  }
  return TETHER_STATUS_SUCCESS;
}

void tether_depthwise_conv2d_eval(const struct tether_model* model, const tether_node* op,
                                  void* const* data, void* scratch, struct tether_pool* pool) {
  (void)pool;
  if (op->quantized) {
    tether_q8_conv_eval(model, op, data, scratch, pool);
    return;
  }
  (void)scratch;
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const tether_conv_geometry g = tether_window_geometry(model, op);
  if (g.depth_multiplier == 1) {
    dw_job j;
    j.g = &g;
    j.fn = model->kernels->dwconv;
    tether_f32_minmax_of(op->fused_activation ? op->activation : TETHER_ACT_NONE, &j.mm);
    j.x = (const float*)data[op->inputs[0]];
    j.w = (const float*)data[op->inputs[1]];
    j.bias = has_bias ? (const float*)data[op->inputs[2]] : NULL;
    j.y = (float*)data[op->outputs[0]];
    /* Output rows split into about 4 tasks per thread; rows are independent. */
    const size_t tasks_wanted = 4 * tether_pool_threads(pool);
    j.rows = (g.out_h + tasks_wanted - 1) / tasks_wanted;
    if (tether_pool_threads(pool) == 1) j.rows = g.out_h;
    tether_parallelize(pool, dw_task, &j, (g.out_h + j.rows - 1) / j.rows);
    return;
  }
  tether_f32_dwconv2d_ukernel__scalar(&g, (const float*)data[op->inputs[0]],
                                      (const float*)data[op->inputs[1]],
                                      has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                      (float*)data[op->outputs[0]]);
}
