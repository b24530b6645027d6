/*
 * fuzz_seeds.c — writes the fuzzer's seed corpus: small valid models covering every op
 * family the loader knows, built with the test-only builder.
 *
 *   fuzz_seeds DIR
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tether/tether.h"
#include "tmodel_builder.h"

static float g_w[4096];

static void save(tb_builder* b, const char* dir, const char* name) {
  size_t size = 0;
  uint8_t* file = tb_finish(b, &size);
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s.tmodel", dir, name);
  FILE* f = fopen(path, "wb");
  if (f == NULL || fwrite(file, 1, size, f) != size) {
    fprintf(stderr, "fuzz_seeds: cannot write %s\n", path);
    exit(1);
  }
  fclose(f);
  free(file);
  free(b);
}

static void window(tb_builder* b, int s, int p) {
  tb_attr_i(b, 1, 2, (const int32_t[]){s, s});
  tb_attr_i(b, 3, 4, (const int32_t[]){p, p, p, p});
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  const char* dir = argv[1];
  (void)tb_failures;
  for (int i = 0; i < 4096; i++) g_w[i] = tb_uniform(-1.0f, 1.0f);
  {  /* conv 3x3 s2 -> dw 3x3 -> conv 1x1 -> mean -> fc -> softmax */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 9, 9, 3}, NULL);
    uint32_t t1 = tb_tensor(b, "t1", 4, (const int32_t[]){1, 5, 5, 8}, NULL);
    uint32_t t2 = tb_tensor(b, "t2", 4, (const int32_t[]){1, 5, 5, 8}, NULL);
    uint32_t t3 = tb_tensor(b, "t3", 4, (const int32_t[]){1, 5, 5, 4}, NULL);
    uint32_t t4 = tb_tensor(b, "t4", 2, (const int32_t[]){1, 4}, NULL);
    uint32_t t5 = tb_tensor(b, "t5", 2, (const int32_t[]){1, 3}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){1, 3}, NULL);
    uint32_t w1 = tb_tensor(b, "w1", 4, (const int32_t[]){8, 3, 3, 3}, g_w);
    uint32_t b1 = tb_tensor(b, "b1", 1, (const int32_t[]){8}, g_w + 300);
    uint32_t w2 = tb_tensor(b, "w2", 4, (const int32_t[]){1, 3, 3, 8}, g_w + 400);
    uint32_t w3 = tb_tensor(b, "w3", 4, (const int32_t[]){4, 1, 1, 8}, g_w + 500);
    uint32_t w4 = tb_tensor(b, "w4", 2, (const int32_t[]){3, 4}, g_w + 600);
    tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU6, "conv", 3, (const uint32_t[]){x, w1, b1}, t1);
    window(b, 2, 1);
    tb_op(b, TETHER_OP_DEPTHWISE_CONV_2D, TETHER_ACT_RELU, "dw", 2, (const uint32_t[]){t1, w2}, t2);
    window(b, 1, 1);
    tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_NONE, "pw", 2, (const uint32_t[]){t2, w3}, t3);
    tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "mean", 1, (const uint32_t[]){t3}, t4);
    tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
    tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_TANH, "fc", 2, (const uint32_t[]){t4, w4}, t5);
    tb_op(b, TETHER_OP_SOFTMAX, TETHER_ACT_NONE, "softmax", 1, (const uint32_t[]){t5}, y);
    tb_graph_io(b, 1, &x, 1, &y);
    save(b, dir, "convnet");
  }
  {  /* pools, pad, concat, add/mul broadcast, reshape, activations */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 6, 6, 2}, NULL);
    uint32_t p1 = tb_tensor(b, "p1", 4, (const int32_t[]){1, 3, 3, 2}, NULL);
    uint32_t p2 = tb_tensor(b, "p2", 4, (const int32_t[]){1, 3, 3, 2}, NULL);
    uint32_t c = tb_tensor(b, "c", 4, (const int32_t[]){1, 3, 3, 4}, NULL);
    uint32_t pd = tb_tensor(b, "pd", 4, (const int32_t[]){1, 5, 5, 4}, NULL);
    uint32_t k = tb_tensor(b, "k", 1, (const int32_t[]){4}, g_w + 700);
    uint32_t a = tb_tensor(b, "a", 4, (const int32_t[]){1, 5, 5, 4}, NULL);
    uint32_t m = tb_tensor(b, "m", 4, (const int32_t[]){1, 5, 5, 4}, NULL);
    uint32_t h = tb_tensor(b, "h", 4, (const int32_t[]){1, 5, 5, 4}, NULL);
    uint32_t r = tb_tensor(b, "r", 2, (const int32_t[]){25, 4}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){25, 4}, NULL);
    tb_op(b, TETHER_OP_MAX_POOL_2D, TETHER_ACT_NONE, "max", 1, &x, p1);
    window(b, 2, 0);
    tb_attr_i(b, 6, 2, (const int32_t[]){2, 2});
    tb_op(b, TETHER_OP_AVERAGE_POOL_2D, TETHER_ACT_RELU, "avg", 1, &x, p2);
    window(b, 2, 1);
    tb_attr_i(b, 6, 2, (const int32_t[]){3, 3});
    tb_op(b, TETHER_OP_CONCATENATION, TETHER_ACT_NONE, "cat", 2, (const uint32_t[]){p1, p2}, c);
    tb_attr_i(b, 10, 1, (const int32_t[]){3});
    tb_op(b, TETHER_OP_PAD, TETHER_ACT_NONE, "pad", 1, &c, pd);
    tb_attr_i(b, 11, 8, (const int32_t[]){0, 0, 1, 1, 1, 1, 0, 0});
    tb_op(b, TETHER_OP_ADD, TETHER_ACT_RELU6, "add", 2, (const uint32_t[]){pd, k}, a);
    tb_op(b, TETHER_OP_MUL, TETHER_ACT_NONE, "mul", 2, (const uint32_t[]){a, pd}, m);
    tb_op(b, TETHER_OP_HARD_SWISH, TETHER_ACT_NONE, "hs", 1, &m, h);
    tb_op(b, TETHER_OP_RESHAPE, TETHER_ACT_NONE, "reshape", 1, &h, r);
    tb_op(b, TETHER_OP_LOGISTIC, TETHER_ACT_NONE, "sigmoid", 1, &r, y);
    tb_graph_io(b, 1, &x, 1, &y);
    save(b, dir, "misc");
  }
  {  /* a dense layer with two inputs as graph inputs (the reference paths) */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 2, (const int32_t[]){2, 5}, NULL);
    uint32_t w = tb_tensor(b, "w", 2, (const int32_t[]){3, 5}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){2, 3}, NULL);
    uint32_t r = tb_tensor(b, "r", 2, (const int32_t[]){2, 3}, NULL);
    tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "fc", 2, (const uint32_t[]){x, w}, y);
    tb_op(b, TETHER_OP_RELU, TETHER_ACT_NONE, "relu", 1, &y, r);
    tb_graph_io(b, 2, (const uint32_t[]){x, w}, 1, &r);
    save(b, dir, "dense_inputs");
  }
  {  /* int8: quantize -> conv -> dw -> add -> mean -> fc -> softmax -> dequantize */
    static int8_t w8[512];
    static int32_t b32[16];
    for (int i = 0; i < 512; i++) w8[i] = (int8_t)((i * 37) % 255 - 127);
    for (int i = 0; i < 16; i++) b32[i] = i * 100 - 700;
    const float s1 = 0.02f, sw[8] = {0.01f, 0.02f, 0.03f, 0.01f, 0.02f, 0.03f, 0.01f, 0.02f};
    const float s_soft = 1.0f / 256.0f;
    const int32_t z1 = 3, z_soft = -128;
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 4, (const int32_t[]){1, 6, 6, 2}, NULL);
    uint32_t q = tb_tensor_typed(b, "q", 1, 4, (const int32_t[]){1, 6, 6, 2}, NULL);
    uint32_t c = tb_tensor_typed(b, "c", 1, 4, (const int32_t[]){1, 3, 3, 8}, NULL);
    uint32_t d = tb_tensor_typed(b, "d", 1, 4, (const int32_t[]){1, 3, 3, 8}, NULL);
    uint32_t a = tb_tensor_typed(b, "a", 1, 4, (const int32_t[]){1, 3, 3, 8}, NULL);
    uint32_t m = tb_tensor_typed(b, "m", 1, 2, (const int32_t[]){1, 8}, NULL);
    uint32_t f = tb_tensor_typed(b, "f", 1, 2, (const int32_t[]){1, 5}, NULL);
    uint32_t sm = tb_tensor_typed(b, "sm", 1, 2, (const int32_t[]){1, 5}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){1, 5}, NULL);
    uint32_t w1 = tb_tensor_typed(b, "w1", 1, 4, (const int32_t[]){8, 3, 3, 2}, w8);
    uint32_t b1 = tb_tensor_typed(b, "b1", 3, 1, (const int32_t[]){8}, b32);
    uint32_t w2 = tb_tensor_typed(b, "w2", 1, 4, (const int32_t[]){1, 3, 3, 8}, w8 + 200);
    uint32_t w3 = tb_tensor_typed(b, "w3", 1, 2, (const int32_t[]){5, 8}, w8 + 300);
    for (uint32_t t = q; t <= sm; t++) tb_quantize(b, t, 0, 1, &s1, &z1);
    tb_quantize(b, sm, 0, 1, &s_soft, &z_soft);
    tb_quantize(b, w1, 0, 8, sw, NULL);
    tb_quantize(b, w2, 3, 8, sw, NULL);
    tb_quantize(b, w3, 0, 1, sw, NULL);
    tb_op(b, TETHER_OP_QUANTIZE, TETHER_ACT_NONE, "quantize", 1, &x, q);
    tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU6, "conv", 3, (const uint32_t[]){q, w1, b1}, c);
    window(b, 2, 1);
    tb_op(b, TETHER_OP_DEPTHWISE_CONV_2D, TETHER_ACT_RELU, "dw", 2, (const uint32_t[]){c, w2}, d);
    window(b, 1, 1);
    tb_op(b, TETHER_OP_ADD, TETHER_ACT_NONE, "add", 2, (const uint32_t[]){c, d}, a);
    tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "mean", 1, &a, m);
    tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
    tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "fc", 2, (const uint32_t[]){m, w3}, f);
    tb_op(b, TETHER_OP_SOFTMAX, TETHER_ACT_NONE, "softmax", 1, &f, sm);
    tb_op(b, TETHER_OP_DEQUANTIZE, TETHER_ACT_NONE, "dequantize", 1, &sm, y);
    tb_graph_io(b, 1, &x, 1, &y);
    save(b, dir, "int8");
  }
  {  /* the float ops 20-24 */
    tb_builder* b = tb_new();
    uint32_t x = tb_tensor(b, "x", 3, (const int32_t[]){2, 3, 4}, NULL);
    uint32_t k = tb_tensor(b, "k", 1, (const int32_t[]){4}, g_w + 800);
    uint32_t s1 = tb_tensor(b, "s1", 3, (const int32_t[]){2, 3, 4}, NULL);
    uint32_t s2 = tb_tensor(b, "s2", 3, (const int32_t[]){2, 3, 4}, NULL);
    uint32_t s3 = tb_tensor(b, "s3", 3, (const int32_t[]){4, 2, 3}, NULL);
    uint32_t s4 = tb_tensor(b, "s4", 3, (const int32_t[]){4, 2, 3}, NULL);
    uint32_t y = tb_tensor(b, "y", 3, (const int32_t[]){4, 2, 3}, NULL);
    tb_op(b, TETHER_OP_SUB, TETHER_ACT_NONE, "sub", 2, (const uint32_t[]){x, k}, s1);
    tb_op(b, TETHER_OP_DIV, TETHER_ACT_NONE, "div", 2, (const uint32_t[]){s1, x}, s2);
    tb_op(b, TETHER_OP_TRANSPOSE, TETHER_ACT_NONE, "transpose", 1, &s2, s3);
    tb_attr_i(b, 14, 3, (const int32_t[]){2, 0, 1});
    tb_op(b, TETHER_OP_CLAMP, TETHER_ACT_NONE, "clamp", 1, &s3, s4);
    tb_attr_f(b, 15, -2.0f);
    tb_attr_f(b, 16, 2.0f);
    tb_op(b, TETHER_OP_HARD_SIGMOID, TETHER_ACT_NONE, "hard_sigmoid", 1, &s4, y);
    tb_attr_f(b, 17, 0.2f);
    tb_attr_f(b, 18, 0.5f);
    tb_graph_io(b, 1, &x, 1, &y);
    save(b, dir, "float_ops");
  }
  printf("fuzz_seeds: wrote 5 models to %s\n", dir);
  return 0;
}
