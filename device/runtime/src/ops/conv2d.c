/*
 * conv2d.c — CONV_2D: NHWC input, OHWI weights [OC, KH, KW, C/G], optional bias [OC],
 * any strides, dilations, explicit pads (top, left, bottom, right) and groups.
 */
#include <stddef.h>

#include "../internal.h"

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

tether_status tether_conv2d_prepare(const struct tether_model* model, uint32_t op_index,
                                    tether_node* op) {
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
  return tether_check_window_output(model, op_index, x, y, w->shape[1], w->shape[2],
                                    p->dilation_h, p->dilation_w, w->shape[0]);
}

void tether_conv2d_eval(const struct tether_model* model, const tether_node* op,
                        void* const* data, void* scratch) {
  (void)scratch;
  const tether_tensor* x = tether_input(model, op, 0);
  const tether_tensor* w = tether_input(model, op, 1);
  const tether_tensor* y = tether_output(model, op, 0);
  const int has_bias = op->input_count > 2 && op->inputs[2] != TETHER_NO_TENSOR;
  const tether_op_params* p = &op->params;
  const tether_conv_geometry g = {
      .batch = (size_t)x->shape[0], .in_h = (size_t)x->shape[1], .in_w = (size_t)x->shape[2],
      .in_c = (size_t)x->shape[3], .out_h = (size_t)y->shape[1], .out_w = (size_t)y->shape[2],
      .out_c = (size_t)y->shape[3], .kernel_h = (size_t)w->shape[1],
      .kernel_w = (size_t)w->shape[2], .groups = (size_t)p->groups, .depth_multiplier = 1,
      .stride_h = p->stride_h, .stride_w = p->stride_w, .dilation_h = p->dilation_h,
      .dilation_w = p->dilation_w, .pad_top = p->pad_top, .pad_left = p->pad_left,
  };
  tether_f32_conv2d_ukernel__scalar(&g, (const float*)data[op->inputs[0]],
                                    (const float*)data[op->inputs[1]],
                                    has_bias ? (const float*)data[op->inputs[2]] : NULL,
                                    (float*)data[op->outputs[0]]);
}
