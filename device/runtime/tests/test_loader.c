/*
 * test_loader.c — loads and runs a small hand-checkable model (conv 3x3 + relu, mean,
 * fully connected), then damages it in every way FORMAT.md lists and checks that each
 * damage gives the right status and a non-empty message, never a crash; tether_model_memory
 * gives the same verdict on every one of those files, and on valid ones the very bytes the
 * load asks for (memory_check.h).
 *
 *   test_loader                      the tests
 *   test_loader --tool TETHER_RUN DIR  tether-run end to end (writes files into DIR)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "format/format.h"
#include "tether/tether.h"
#include "tmodel_builder.h"
#include "memory_check.h"

/* ---- the demo model ----------------------------------------------------------------- */

/*
 * x [1,4,4,1] -> CONV_2D (W [2,3,3,1], b [2], pads 1, fused RELU) -> [1,4,4,2]
 *   -> MEAN axes (1,2) -> [1,2] -> FULLY_CONNECTED (W [3,2], b [3]) -> y [1,3]
 *
 * With x = ones: channel 0 = (taps inside the image) + 0.5, i.e. 4.5 / 6.5 / 9.5 at the
 * corners / edges / interior; its mean is (4*4 + 8*6 + 4*9)/16 + 0.5 = 6.75. Channel 1 =
 * 0.5 * taps - 2.5 = -0.5 / 0.5 / 2, relu -> 0 / 0.5 / 2, mean (8*0.5 + 4*2)/16 = 0.75.
 * y = [6.75, 0.75 + 1, 2*6.75 - 0.75 - 1] = [6.75, 1.75, 11.75].
 */
static float g_conv_w[18], g_conv_b[2] = {0.5f, -2.5f};
static float g_fc_w[6] = {1, 0, 0, 1, 2, -1}, g_fc_b[3] = {0, 1, -1};

static uint8_t* demo_model(size_t* size) {
  for (int i = 0; i < 9; i++) {
    g_conv_w[i] = 1.0f;
    g_conv_w[9 + i] = 0.5f;
  }
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "image", 4, (const int32_t[]){1, 4, 4, 1}, NULL);
  uint32_t cw = tb_tensor(b, "conv/w", 4, (const int32_t[]){2, 3, 3, 1}, g_conv_w);
  uint32_t cb = tb_tensor(b, "conv/b", 1, (const int32_t[]){2}, g_conv_b);
  uint32_t h1 = tb_tensor(b, "conv/out", 4, (const int32_t[]){1, 4, 4, 2}, NULL);
  uint32_t h2 = tb_tensor(b, "mean/out", 2, (const int32_t[]){1, 2}, NULL);
  uint32_t fw = tb_tensor(b, "fc/w", 2, (const int32_t[]){3, 2}, g_fc_w);
  uint32_t fb = tb_tensor(b, "fc/b", 1, (const int32_t[]){3}, g_fc_b);
  uint32_t y = tb_tensor(b, "logits", 2, (const int32_t[]){1, 3}, NULL);
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU, "conv2d_1", 3, (const uint32_t[]){x, cw, cb}, h1);
  tb_attr_i(b, 3, 4, (const int32_t[]){1, 1, 1, 1});
  tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "gap", 1, (const uint32_t[]){h1}, h2);
  tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "dense", 3, (const uint32_t[]){h2, fw, fb},
        y);
  tb_graph_io(b, 1, &x, 1, &y);
  uint8_t* file = tb_finish(b, size);
  free(b);
  return file;
}

/* ---- sparse constants (FORMAT.md, "Sparse constants") ---------------------------------- */

/* Bitmask encoding of n floats: 16-byte header, mask padded to 8, then the nonzero values. */
static uint8_t* sparse_blob(const float* v, size_t n, size_t* size_out) {
  size_t mask = (n + 7) / 8, padded = (mask + 7) / 8 * 8, count = 0;
  for (size_t i = 0; i < n; i++) count += v[i] != 0.0f;
  size_t size = 16 + padded + 4 * count;
  uint8_t* p = (uint8_t*)calloc(1, size);
  tb_w32(p, 1);
  tb_w64(p + 8, count);
  float* out = (float*)(void*)(p + 16 + padded);
  for (size_t i = 0; i < n; i++) {
    if (v[i] != 0.0f) {
      p[16 + i / 8] |= (uint8_t)(1u << (i % 8));
      *out++ = v[i];
    }
  }
  *size_out = size;
  return p;
}

/* Marks constant tensor t of `b` sparse, its contents replaced by `blob` (borrowed). */
static void tb_make_sparse(tb_builder* b, uint32_t t, const uint8_t* blob, size_t size) {
  b->tensors[t].flags = 3;
  b->tensors[t].data = blob;
  b->tensors[t].data_size = size;
}

/* The demo model with conv/w (no zeros: valid, if not smaller) and fc/w (two zeros) sparse. */
static uint8_t* g_sparse_conv_w;
static uint8_t* g_sparse_fc_w;

static uint8_t* sparse_demo_model(size_t* size) {
  for (int i = 0; i < 9; i++) {
    g_conv_w[i] = 1.0f;
    g_conv_w[9 + i] = 0.5f;
  }
  size_t conv_size = 0, fc_size = 0;
  free(g_sparse_conv_w);
  free(g_sparse_fc_w);
  g_sparse_conv_w = sparse_blob(g_conv_w, 18, &conv_size);
  g_sparse_fc_w = sparse_blob(g_fc_w, 6, &fc_size);
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, "image", 4, (const int32_t[]){1, 4, 4, 1}, NULL);
  uint32_t cw = tb_tensor(b, "conv/w", 4, (const int32_t[]){2, 3, 3, 1}, g_conv_w);
  uint32_t cb = tb_tensor(b, "conv/b", 1, (const int32_t[]){2}, g_conv_b);
  uint32_t h1 = tb_tensor(b, "conv/out", 4, (const int32_t[]){1, 4, 4, 2}, NULL);
  uint32_t h2 = tb_tensor(b, "mean/out", 2, (const int32_t[]){1, 2}, NULL);
  uint32_t fw = tb_tensor(b, "fc/w", 2, (const int32_t[]){3, 2}, g_fc_w);
  uint32_t fb = tb_tensor(b, "fc/b", 1, (const int32_t[]){3}, g_fc_b);
  uint32_t y = tb_tensor(b, "logits", 2, (const int32_t[]){1, 3}, NULL);
  tb_make_sparse(b, cw, g_sparse_conv_w, conv_size);
  tb_make_sparse(b, fw, g_sparse_fc_w, fc_size);
  tb_op(b, TETHER_OP_CONV_2D, TETHER_ACT_RELU, "conv2d_1", 3, (const uint32_t[]){x, cw, cb}, h1);
  tb_attr_i(b, 3, 4, (const int32_t[]){1, 1, 1, 1});
  tb_op(b, TETHER_OP_MEAN, TETHER_ACT_NONE, "gap", 1, (const uint32_t[]){h1}, h2);
  tb_attr_i(b, 8, 2, (const int32_t[]){1, 2});
  tb_op(b, TETHER_OP_FULLY_CONNECTED, TETHER_ACT_NONE, "dense", 3, (const uint32_t[]){h2, fw, fb},
        y);
  tb_graph_io(b, 1, &x, 1, &y);
  uint8_t* file = tb_finish(b, size);
  free(b);
  return file;
}

static uint8_t* copy_of(const uint8_t* file, size_t size) {
  uint8_t* c = (uint8_t*)aligned_alloc(64, (size + 63) / 64 * 64);
  memcpy(c, file, size);
  return c;
}

/* Loads `file`, expects `want`, a non-empty message containing `needle` (may be NULL). */
static void expect_load(const uint8_t* file, size_t size, tether_status want, const char* needle,
                        const char* what) {
  tether_model_t model = NULL;
  tether_status got = tether_model_load(file, size, NULL, &model);
  const char* message = tether_last_error();
  TB_CHECK(got == want, "%s: got %s, want %s (%s)", what, tether_status_string(got),
           tether_status_string(want), message);
  if (want != TETHER_STATUS_SUCCESS) {
    TB_CHECK(model == NULL, "%s: model_out touched on failure", what);
    TB_CHECK(message[0] != '\0', "%s: empty message", what);
    if (needle != NULL) {
      TB_CHECK(strstr(message, needle) != NULL, "%s: message '%s' lacks '%s'", what, message,
               needle);
    }
  }
  tether_model_destroy(model);
  char why[768];
  TB_CHECK(tm_compare(file, size, why, sizeof(why)) == 0, "%s: tether_model_memory: %s", what,
           why);
}

static void run_demo(tether_model_t model, float fill, const float* expected) {
  size_t arena_size = 0;
  TB_CHECK(tether_session_arena_size(model, &arena_size) == TETHER_STATUS_SUCCESS, "arena size");
  /* Caller arena with sentinel bytes after it: kernels must stay inside the plan. */
  size_t padded = (arena_size + 256 + 63) / 64 * 64;
  uint8_t* arena = (uint8_t*)aligned_alloc(64, padded);
  memset(arena, 0xA5, padded);
  tether_session_t session = NULL;
  TB_CHECK(tether_session_create(model, arena, arena_size, 1, &session) == TETHER_STATUS_SUCCESS,
           "create: %s", tether_last_error());
  float x[16], y[3] = {0};
  for (int i = 0; i < 16; i++) x[i] = fill;
  TB_CHECK(tether_session_set_input(session, 0, x, sizeof(x)) == TETHER_STATUS_SUCCESS, "set");
  TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "invoke");
  TB_CHECK(tether_session_get_output(session, 0, y, sizeof(y)) == TETHER_STATUS_SUCCESS, "get");
  for (int i = 0; i < 3; i++) {
    TB_CHECK(y[i] == expected[i], "fill %g: y[%d] = %.9g, want %.9g", fill, i, y[i], expected[i]);
  }
  for (size_t i = arena_size; i < padded; i++) {
    if (arena[i] != 0xA5) {
      TB_CHECK(0, "byte %zu past the arena was written", i - arena_size);
      break;
    }
  }
  /* Argument errors. */
  TB_CHECK(tether_session_get_output(session, 0, y, 8) == TETHER_STATUS_INVALID_ARGUMENT,
           "short output");
  TB_CHECK(tether_session_set_input(session, 1, x, sizeof(x)) == TETHER_STATUS_INVALID_ARGUMENT,
           "input 1");
  TB_CHECK(strstr(tether_last_error(), "out of range") != NULL, "%s", tether_last_error());
  void* p = NULL;
  TB_CHECK(tether_session_io_data(session, TETHER_IO_OUTPUT, 0, &p) == TETHER_STATUS_SUCCESS &&
               ((float*)p)[0] == expected[0],
           "io_data");
  tether_session_destroy(session);
  TB_CHECK(tether_session_create(model, arena + 16, arena_size, 1, &session) ==
               TETHER_STATUS_INVALID_ARGUMENT,
           "misaligned arena accepted");
  TB_CHECK(tether_session_create(model, arena, arena_size - 1, 1, &session) ==
               TETHER_STATUS_INVALID_ARGUMENT,
           "short arena accepted");
  free(arena);
}

static void test_valid_model(const uint8_t* file, size_t size) {
  tether_model_t model = NULL;
  tether_status s = tether_model_load(file, size, NULL, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "load: %s", tether_last_error());
  if (s != TETHER_STATUS_SUCCESS) return;
  TB_CHECK(tether_model_io_count(model, TETHER_IO_INPUT) == 1, "inputs");
  TB_CHECK(tether_model_io_count(model, TETHER_IO_OUTPUT) == 1, "outputs");
  TB_CHECK(tether_model_op_count(model) == 3, "ops");
  TB_CHECK(strcmp(tether_model_io_name(model, TETHER_IO_INPUT, 0), "image") == 0, "input name");
  TB_CHECK(strcmp(tether_model_io_name(model, TETHER_IO_OUTPUT, 0), "logits") == 0, "out name");
  TB_CHECK(tether_model_io_name(model, TETHER_IO_OUTPUT, 1) == NULL, "name out of range");
  size_t index = 9;
  TB_CHECK(tether_model_io_find(model, TETHER_IO_OUTPUT, "logits", &index) ==
                   TETHER_STATUS_SUCCESS && index == 0,
           "find");
  TB_CHECK(tether_model_io_find(model, TETHER_IO_INPUT, "nope", &index) ==
                   TETHER_STATUS_INVALID_ARGUMENT &&
               strstr(tether_last_error(), "nope") != NULL,
           "find missing: %s", tether_last_error());
  size_t ndim = 0;
  int32_t dims[TETHER_MAX_DIMS];
  tether_dtype dtype = TETHER_DTYPE_INT8;
  TB_CHECK(tether_model_io_shape(model, TETHER_IO_INPUT, 0, &ndim, dims, &dtype) ==
                   TETHER_STATUS_SUCCESS &&
               ndim == 4 && dims[0] == 1 && dims[1] == 4 && dims[2] == 4 && dims[3] == 1 &&
               dtype == TETHER_DTYPE_FLOAT32,
           "input shape");
  float scale = -1;
  int32_t zp = -1;
  TB_CHECK(tether_model_io_quantization(model, TETHER_IO_OUTPUT, 0, &scale, &zp) ==
                   TETHER_STATUS_SUCCESS && scale == 0.0f && zp == 0,
           "quantization");
  TB_CHECK(tether_model_io_shape(model, TETHER_IO_INPUT, 3, &ndim, dims, &dtype) ==
               TETHER_STATUS_INVALID_ARGUMENT,
           "shape out of range");
  /* Zero-copy: the conv weights are read in place from the caller's buffer. */
  const uint8_t* w = (const uint8_t*)model->tensors[1].data;
  TB_CHECK(w >= file && w + sizeof(g_conv_w) <= file + size && (uintptr_t)w % 64 == 0 &&
               memcmp(w, g_conv_w, sizeof(g_conv_w)) == 0,
           "conv weights are not used in place");
  run_demo(model, 1.0f, (const float[]){6.75f, 1.75f, 11.75f});
  /* x = 2: channel 0 = 2*taps + 0.5 -> mean 13; channel 1 = taps - 2.5 -> 1.5/3.5/6.5 ->
   * mean (4*1.5 + 8*3.5 + 4*6.5)/16 = 3.75; y = [13, 4.75, 26 - 3.75 - 1]. */
  run_demo(model, 2.0f, (const float[]){13.0f, 4.75f, 21.25f});
  tether_model_destroy(model);
}

/* ---- damage ------------------------------------------------------------------------- */

static uint64_t section_of(const uint8_t* file, uint32_t kind) { return tb_section(file, kind, NULL); }

static void test_truncation(const uint8_t* file, size_t size) {
  for (int eighth = 0; eighth < 8; eighth++) {
    size_t cut = size * (size_t)eighth / 8;
    uint8_t* c = copy_of(file, size);
    char what[64];
    snprintf(what, sizeof(what), "truncated to %d/8 (%zu bytes)", eighth, cut);
    expect_load(c, cut, TETHER_STATUS_FORMAT_ERROR, "truncated", what);
    free(c);
  }
  /* A buffer longer than file_size is rejected too. */
  uint8_t* c = (uint8_t*)aligned_alloc(64, (size + 64 + 63) / 64 * 64);
  memcpy(c, file, size);
  memset(c + size, 0, 64);
  expect_load(c, size + 64, TETHER_STATUS_FORMAT_ERROR, "file_size", "longer buffer");
  free(c);
}

static void test_header_bytes(const uint8_t* file, size_t size) {
  for (size_t offset = 0; offset < 64; offset++) {
    uint8_t* c = copy_of(file, size);
    c[offset] ^= 0x5A;
    tether_status want = (offset == 8 || offset == 9) ? TETHER_STATUS_VERSION_MISMATCH
                                                       : TETHER_STATUS_FORMAT_ERROR;
    const char* needle = offset < 8                      ? "magic"
                         : offset == 8 || offset == 9    ? "version"
                         : offset >= 12 && offset < 16   ? "header_size"
                         : offset >= 16 && offset < 24   ? NULL  /* truncated or file_size */
                                                         : "checksum";
    char what[64];
    snprintf(what, sizeof(what), "header byte %zu flipped", offset);
    expect_load(c, size, want, needle, what);
    free(c);
  }
}

/* Edits the copy with `edit`, reseals the checksum, expects `want` with `needle`. */
static void expect_resealed(const uint8_t* file, size_t size, void (*edit)(uint8_t*),
                            tether_status want, const char* needle, const char* what) {
  uint8_t* c = copy_of(file, size);
  edit(c);
  tb_reseal(c, size);
  expect_load(c, size, want, needle, what);
  free(c);
}

static void edit_operand_range(uint8_t* f) { tb_w32(f + section_of(f, 4), 0x7FFFFFF0u); }
static void edit_version_2(uint8_t* f) { tb_w16(f + 8, 2); }
static void edit_minor_7(uint8_t* f) { tb_w16(f + 10, 7); }
static void edit_unknown_op(uint8_t* f) { tb_w16(f + section_of(f, 3) + 32, 99); }
static void edit_unknown_activation(uint8_t* f) { f[section_of(f, 3) + 2] = 42; }
static void edit_output_shape(uint8_t* f) { tb_w32(f + section_of(f, 2) + 3 * 64 + 12, 5); }
static void edit_dtype(uint8_t* f) { f[section_of(f, 2) + 4] = 9; }
static void edit_tensor_name(uint8_t* f) { tb_w32(f + section_of(f, 2) + 64, 1u << 30); }
static void edit_attr_range(uint8_t* f) { tb_w32(f + section_of(f, 3) + 24, 1000); }
static void edit_attr_id(uint8_t* f) { tb_w16(f + section_of(f, 5), 6); }  /* kernel on conv */
static void edit_section_count(uint8_t* f) { tb_w32(f + 28, 0xFFFFFFFFu); }
static void edit_section_offset(uint8_t* f) { tb_w64(f + 64 + 8, 1ull << 40); }
static void edit_graph_output(uint8_t* f) {
  tb_w32(f + section_of(f, 6) + 12, 77);  /* output 0 -> tensor 77 */
}
static void edit_data_offset(uint8_t* f) {
  uint8_t* t = f + section_of(f, 2) + 64;  /* tensor 1 (conv/w) */
  tb_w64(t + 48, tb_r64(t + 48) + 4);      /* no longer 64-aligned */
}
static void edit_data_size(uint8_t* f) {
  uint8_t* t = f + section_of(f, 2) + 64;
  tb_w64(t + 56, 1ull << 62);
}
static void edit_input_undefined(uint8_t* f) {
  /* fc input 0 -> tensor 7 (the fc's own output, not yet written) */
  tb_w32(f + section_of(f, 4) + 4 * 6, 7);
}
static void edit_fc_weight_shape(uint8_t* f) {
  uint8_t* t = f + section_of(f, 2) + 5 * 64;  /* fc/w [3,2] -> [2,3], same size */
  tb_w32(t + 8, 2);
  tb_w32(t + 12, 3);
}
static void edit_stride_zero(uint8_t* f) {
  uint8_t* a = f + section_of(f, 5);  /* conv's pads attribute -> strides (0, 0) */
  tb_w16(a, 1);
  a[3] = 2;
  tb_w32(a + 8, 0);
  tb_w32(a + 12, 0);
}

static void test_resealed_damage(const uint8_t* file, size_t size) {
  expect_resealed(file, size, edit_operand_range, TETHER_STATUS_FORMAT_ERROR,
                  "op 0 'conv2d_1' (CONV_2D): input 0 is tensor 2147483632, out of range [0, 8)",
                  "operand out of range");
  expect_resealed(file, size, edit_version_2, TETHER_STATUS_VERSION_MISMATCH, "version_major is 2",
                  "version 2");
  expect_resealed(file, size, edit_unknown_op, TETHER_STATUS_UNSUPPORTED_OP, "op 1 'gap': unknown op id 99",
                  "unknown op");
  expect_resealed(file, size, edit_unknown_activation, TETHER_STATUS_UNSUPPORTED_OP,
                  "fused activation", "unknown activation");
  expect_resealed(file, size, edit_output_shape, TETHER_STATUS_FORMAT_ERROR,
                  "op 0 'conv2d_1' (CONV_2D): output 0", "wrong conv output shape");
  expect_resealed(file, size, edit_dtype, TETHER_STATUS_FORMAT_ERROR, "dtype", "bad dtype");
  expect_resealed(file, size, edit_tensor_name, TETHER_STATUS_FORMAT_ERROR, "tensor 1: name",
                  "tensor name out of range");
  expect_resealed(file, size, edit_attr_range, TETHER_STATUS_FORMAT_ERROR,
                  "op 0 'conv2d_1' (CONV_2D): attributes", "attribute range");
  expect_resealed(file, size, edit_attr_id, TETHER_STATUS_FORMAT_ERROR, "does not take",
                  "attribute for another op");
  expect_resealed(file, size, edit_section_count, TETHER_STATUS_FORMAT_ERROR, "section directory",
                  "section count");
  expect_resealed(file, size, edit_section_offset, TETHER_STATUS_FORMAT_ERROR, "STRINGS",
                  "section offset");
  expect_resealed(file, size, edit_graph_output, TETHER_STATUS_FORMAT_ERROR,
                  "graph output 0 is tensor 77", "graph output");
  expect_resealed(file, size, edit_data_offset, TETHER_STATUS_FORMAT_ERROR, "64-aligned",
                  "unaligned blob");
  expect_resealed(file, size, edit_data_size, TETHER_STATUS_FORMAT_ERROR, "data_size",
                  "blob size");
  expect_resealed(file, size, edit_input_undefined, TETHER_STATUS_FORMAT_ERROR,
                  "op 2 'dense' (FULLY_CONNECTED): input 0 is tensor 7", "undefined input");
  expect_resealed(file, size, edit_fc_weight_shape, TETHER_STATUS_FORMAT_ERROR,
                  "op 2 'dense' (FULLY_CONNECTED)", "fc weight shape");
  expect_resealed(file, size, edit_stride_zero, TETHER_STATUS_FORMAT_ERROR, "strides [0, 0]",
                  "zero stride");
  /* Readers accept any minor version. */
  expect_resealed(file, size, edit_minor_7, TETHER_STATUS_SUCCESS, NULL, "minor version 7");
}

static void test_data_byte(const uint8_t* file, size_t size) {
  uint64_t data_size = 0;
  uint64_t data = tb_section(file, 8, &data_size);
  TB_CHECK(data_size > 8, "DATA section is empty");
  uint8_t* c = copy_of(file, size);
  c[data + data_size / 2] ^= 0x01;
  expect_load(c, size, TETHER_STATUS_FORMAT_ERROR, "checksum", "flipped weight bit");
  free(c);
}

static void test_arguments(const uint8_t* file, size_t size) {
  tether_model_t model = NULL;
  TB_CHECK(tether_model_load(NULL, size, NULL, &model) == TETHER_STATUS_INVALID_ARGUMENT, "NULL");
  TB_CHECK(tether_model_load(file, size, NULL, NULL) == TETHER_STATUS_INVALID_ARGUMENT, "NULL out");
  uint8_t* shifted = (uint8_t*)aligned_alloc(64, (size + 64 + 63) / 64 * 64);
  memcpy(shifted + 2, file, size);
  TB_CHECK(tether_model_load(shifted + 2, size, NULL, &model) == TETHER_STATUS_INVALID_ARGUMENT,
           "misaligned buffer accepted");
  free(shifted);
  TB_CHECK(strcmp(tether_status_string(TETHER_STATUS_UNSUPPORTED_OP), "unsupported_op") == 0,
           "status string");
  TB_CHECK(tether_model_io_count(NULL, TETHER_IO_INPUT) == 0, "NULL model count");
  tether_model_destroy(NULL);
  tether_session_destroy(NULL);
  TB_CHECK(tether_session_invoke(NULL) == TETHER_STATUS_INVALID_ARGUMENT, "NULL invoke");
}

/* The table-driven CRC agrees with the bitwise one and with zlib's check value. */
static void test_crc(const uint8_t* file, size_t size) {
  TB_CHECK(tether_crc32(0, "123456789", 9) == 0xCBF43926u, "crc check value");
  TB_CHECK(tether_crc32(0, file, size) == tb_crc32(file, size), "crc vs bitwise");
}

/* Random single-byte damage anywhere, resealed: any status is fine, a crash is not. */
static void test_random_damage(const uint8_t* file, size_t size) {
  int loaded = 0;
  for (int round = 0; round < 3000; round++) {
    uint8_t* c = copy_of(file, size);
    int flips = 1 + (int)(tb_rand() % 3);
    for (int k = 0; k < flips; k++) {
      size_t at = 28 + tb_rand() % (uint32_t)(size - 28);
      c[at] = (round % 2) ? (uint8_t)tb_rand() : (uint8_t)(c[at] ^ (1u << (tb_rand() % 8)));
    }
    tb_reseal(c, size);
    char why[768];
    TB_CHECK(tm_compare(c, size, why, sizeof(why)) == 0, "round %d: tether_model_memory: %s",
             round, why);
    tether_model_t model = NULL;
    tether_status s = tether_model_load(c, size, NULL, &model);
    if (s == TETHER_STATUS_SUCCESS) {
      loaded++;
      size_t arena = 0;
      tether_session_arena_size(model, &arena);
      tether_session_t session = NULL;
      if (arena < (64u << 20) &&
          tether_session_create(model, NULL, 0, 1, &session) == TETHER_STATUS_SUCCESS) {
        TB_CHECK(tether_session_invoke(session) == TETHER_STATUS_SUCCESS, "invoke");
        tether_session_destroy(session);
      }
      tether_model_destroy(model);
    } else {
      TB_CHECK(tether_last_error()[0] != '\0', "round %d: status %s without a message", round,
               tether_status_string(s));
    }
    free(c);
  }
  printf("random damage: %d of 3000 damaged files still loaded (weights/padding edits)\n", loaded);
}

static void test_load_file(const uint8_t* file, size_t size) {
  tether_model_t model = NULL;
  TB_CHECK(tether_model_load_file("definitely/absent.tmodel", &model) == TETHER_STATUS_IO_ERROR &&
               strstr(tether_last_error(), "no such file") != NULL &&
               strstr(tether_last_error(), "definitely/absent.tmodel") != NULL,
           "missing file: %s", tether_last_error());
  const char* path = "test_loader_model.tmodel";
  FILE* f = fopen(path, "wb");
  TB_CHECK(f != NULL, "cannot write %s", path);
  if (f == NULL) return;
  fwrite(file, 1, size, f);
  fclose(f);
  TB_CHECK(tether_model_load_file(path, &model) == TETHER_STATUS_SUCCESS, "load_file: %s",
           tether_last_error());
  if (model != NULL) run_demo(model, 1.0f, (const float[]){6.75f, 1.75f, 11.75f});
  tether_model_destroy(model);
  model = NULL;
  f = fopen(path, "wb");
  fputs("definitely not a model definitely not a model definitely not a model!", f);
  fclose(f);
  TB_CHECK(tether_model_load_file(path, &model) == TETHER_STATUS_FORMAT_ERROR &&
               strstr(tether_last_error(), path) != NULL &&
               strstr(tether_last_error(), "magic") != NULL,
           "junk file: %s", tether_last_error());
  remove(path);
}

/* ---- tether-run end to end ---------------------------------------------------------- */

static int run_tool(const char* tool, const char* dir) {
  size_t size = 0;
  uint8_t* file = demo_model(&size);
  char model_path[1024], in_path[1024], out_path[1024], cmd[4096];
  snprintf(model_path, sizeof(model_path), "%s/tool_demo.tmodel", dir);
  snprintf(in_path, sizeof(in_path), "%s/tool_in.npy", dir);
  snprintf(out_path, sizeof(out_path), "%s/tool_out.npy", dir);
  FILE* f = fopen(model_path, "wb");
  fwrite(file, 1, size, f);
  fclose(f);
  /* A float32 .npy v1.0 of shape (1, 4, 4, 1) filled with 2. */
  const char* dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 4, 1), }";
  char header[128];
  size_t len = strlen(dict), total = (10 + len + 1 + 63) / 64 * 64;
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  header[8] = (char)(total - 10);
  header[9] = 0;
  memcpy(header + 10, dict, len);
  memset(header + 10 + len, ' ', total - 10 - len - 1);
  header[total - 1] = '\n';
  float x[16];
  for (int i = 0; i < 16; i++) x[i] = 2.0f;
  f = fopen(in_path, "wb");
  fwrite(header, 1, total, f);
  fwrite(x, 1, sizeof(x), f);
  fclose(f);
  snprintf(cmd, sizeof(cmd), "\"%s\" \"%s\" --input \"%s\" --output \"%s\" --repeat 5", tool,
           model_path, in_path, out_path);
  TB_CHECK(system(cmd) == 0, "%s failed", cmd);
  f = fopen(out_path, "rb");
  TB_CHECK(f != NULL, "no output file");
  if (f != NULL) {
    uint8_t buf[256];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    uint32_t hlen = (uint32_t)buf[8] | ((uint32_t)buf[9] << 8);
    TB_CHECK(n == 10 + hlen + 12 && memcmp(buf, "\x93NUMPY\x01\x00", 8) == 0 &&
                 (10 + hlen) % 64 == 0,
             "output .npy layout (%zu bytes)", n);
    buf[10 + hlen - 1] = 0;
    TB_CHECK(strstr((char*)buf + 10, "'shape': (1, 3)") != NULL, "output header %s",
             (char*)buf + 10);
    float y[3];
    memcpy(y, buf + 10 + hlen, sizeof(y));
    TB_CHECK(y[0] == 13.0f && y[1] == 4.75f && y[2] == 21.25f, "tool output %g %g %g", y[0],
             y[1], y[2]);
  }
  /* Failures exit non-zero: a damaged model and an input of the wrong shape. */
  file[size / 2] ^= 0xFF;
  f = fopen(model_path, "wb");
  fwrite(file, 1, size, f);
  fclose(f);
  snprintf(cmd, sizeof(cmd), "\"%s\" \"%s\" > /dev/null 2>&1", tool, model_path);
  TB_CHECK(system(cmd) != 0, "damaged model accepted by the tool");
  free(file);
  remove(model_path);
  remove(in_path);
  remove(out_path);
  return tb_failures == 0 ? 0 : 1;
}

/* Counts what the loader takes from and gives back to a caller allocator. */
typedef struct counting {
  size_t live, allocations, bytes;
  size_t fail_at;  /* 1-based allocation that returns NULL; 0 = none */
} counting;

static void* counting_allocate(void* context, size_t size, size_t alignment) {
  counting* c = (counting*)context;
  if (c->fail_at != 0 && c->allocations + 1 == c->fail_at) return NULL;
  void* p = aligned_alloc(alignment < 16 ? 16 : alignment, (size + 63) / 64 * 64);
  if (p != NULL) {
    c->live++;
    c->allocations++;
    c->bytes += size;
  }
  return p;
}

static void counting_deallocate(void* context, void* p) {
  if (p == NULL) return;
  ((counting*)context)->live--;
  free(p);
}

static uint64_t sparse_offset_of(const uint8_t* f, uint32_t tensor) {
  return tb_r64(f + section_of(f, 2) + 64 * (uint64_t)tensor + 48);
}

/* fc/w is tensor 5: 6 elements, mask 1 byte (0b111001 = 0x39), 4 values. */
static void edit_sparse_encoding(uint8_t* f) { tb_w32(f + sparse_offset_of(f, 5), 2); }
static void edit_sparse_reserved(uint8_t* f) { tb_w32(f + sparse_offset_of(f, 5) + 4, 1); }
static void edit_sparse_count_huge(uint8_t* f) { tb_w64(f + sparse_offset_of(f, 5) + 8, 1ull << 62); }
static void edit_sparse_count(uint8_t* f) { tb_w64(f + sparse_offset_of(f, 5) + 8, 3); }
static void edit_sparse_popcount(uint8_t* f) { f[sparse_offset_of(f, 5) + 16] ^= 0x01; }
static void edit_sparse_tail_bit(uint8_t* f) { f[sparse_offset_of(f, 5) + 16] |= 0x80; }
static void edit_sparse_short(uint8_t* f) { tb_w64(f + section_of(f, 2) + 5 * 64 + 56, 8); }
static void edit_sparse_size(uint8_t* f) { tb_w64(f + section_of(f, 2) + 5 * 64 + 56, 36); }
static void edit_sparse_offset(uint8_t* f) { tb_w64(f + section_of(f, 2) + 5 * 64 + 48, 1ull << 40); }
static void edit_sparse_not_constant(uint8_t* f) { f[section_of(f, 2) + 5 * 64 + 7] = 2; }
static void edit_flags_unknown(uint8_t* f) { f[section_of(f, 2) + 2 * 64 + 7] = 5; }

static void test_sparse(void) {
  size_t size = 0;
  uint8_t* file = sparse_demo_model(&size);
  /* Loads, decodes into model memory (not in place), and computes what the dense model
   * does, bit for bit. */
  counting c = {0, 0, 0, 0};
  tether_allocator a = {&c, counting_allocate, counting_deallocate};
  tether_model_t model = NULL;
  tether_status s = tether_model_load(file, size, &a, &model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "sparse load: %s", tether_last_error());
  const counting loaded = c;
  if (s == TETHER_STATUS_SUCCESS) {
    const uint8_t* w = (const uint8_t*)model->tensors[1].data;
    TB_CHECK(!(w >= file && w < file + size) && (uintptr_t)w % 64 == 0 &&
                 memcmp(w, g_conv_w, sizeof(g_conv_w)) == 0,
             "sparse conv/w not decoded into the model's 64-aligned memory");
    TB_CHECK(memcmp(model->tensors[5].data, g_fc_w, sizeof(g_fc_w)) == 0, "fc/w decoded");
    TB_CHECK(model->unpacked_bytes == 192, "decoded block is %zu bytes, want 128 + 64",
             model->unpacked_bytes);
    run_demo(model, 1.0f, (const float[]){6.75f, 1.75f, 11.75f});
    run_demo(model, 2.0f, (const float[]){13.0f, 4.75f, 21.25f});
    tether_model_destroy(model);
  }
  TB_CHECK(c.live == 0, "%zu allocator blocks leaked", c.live);
  /* The decoded block comes from the caller's allocator at load: one more block than the
   * dense model takes, 192 bytes larger (72 and 24 bytes, each rounded up to 64). */
  size_t dense_size = 0;
  uint8_t* dense = demo_model(&dense_size);
  counting d = {0, 0, 0, 0};
  tether_allocator da = {&d, counting_allocate, counting_deallocate};
  model = NULL;
  TB_CHECK(tether_model_load(dense, dense_size, &da, &model) == TETHER_STATUS_SUCCESS, "dense");
  tether_model_destroy(model);
  TB_CHECK(loaded.allocations == d.allocations + 1 && loaded.bytes == d.bytes + 192,
           "sparse load took %zu blocks / %zu bytes, dense %zu / %zu", loaded.allocations,
           loaded.bytes,
           d.allocations, d.bytes);
  free(dense);
  /* An allocator that fails at any of the load's allocations (the decode block among them):
   * out_of_memory, nothing leaked. */
  for (size_t fail_at = 1; fail_at <= loaded.allocations; fail_at++) {
    counting f = {0, 0, 0, fail_at};
    tether_allocator fa = {&f, counting_allocate, counting_deallocate};
    model = NULL;
    s = tether_model_load(file, size, &fa, &model);
    TB_CHECK(s == TETHER_STATUS_OUT_OF_MEMORY && model == NULL && f.live == 0,
             "allocation %zu failing: %s, %zu blocks leaked", fail_at, tether_status_string(s),
             f.live);
  }

  expect_resealed(file, size, edit_sparse_encoding, TETHER_STATUS_FORMAT_ERROR,
                  "'fc/w': sparse encoding 2", "sparse encoding id");
  expect_resealed(file, size, edit_sparse_reserved, TETHER_STATUS_FORMAT_ERROR,
                  "reserved 1", "sparse reserved");
  expect_resealed(file, size, edit_sparse_count_huge, TETHER_STATUS_FORMAT_ERROR,
                  "nonzero_count", "sparse count > elements");
  expect_resealed(file, size, edit_sparse_count, TETHER_STATUS_FORMAT_ERROR,
                  "sparse data_size", "sparse count vs data_size");
  expect_resealed(file, size, edit_sparse_popcount, TETHER_STATUS_FORMAT_ERROR,
                  "bits set but nonzero_count", "sparse popcount");
  expect_resealed(file, size, edit_sparse_tail_bit, TETHER_STATUS_FORMAT_ERROR,
                  "past its 6 elements", "sparse bit past the end");
  expect_resealed(file, size, edit_sparse_short, TETHER_STATUS_FORMAT_ERROR,
                  "shorter than the 16-byte", "sparse blob shorter than its header");
  expect_resealed(file, size, edit_sparse_size, TETHER_STATUS_FORMAT_ERROR,
                  "expected 40", "sparse data_size");
  expect_resealed(file, size, edit_sparse_offset, TETHER_STATUS_FORMAT_ERROR,
                  "sparse data at offset", "sparse data outside DATA");
  expect_resealed(file, size, edit_sparse_not_constant, TETHER_STATUS_FORMAT_ERROR,
                  "'fc/w': flags 0x2", "sparse without constant");
  expect_resealed(file, size, edit_flags_unknown, TETHER_STATUS_FORMAT_ERROR,
                  "'conv/b': flags 0x5", "unknown flag bit");
  /* Every single-byte change inside the encoded blobs, resealed, is either rejected with a
   * message or (a value byte) loads and runs: never a crash or an out-of-bounds read. */
  for (uint32_t tensor = 1; tensor <= 5; tensor += 4) {
    uint64_t off = sparse_offset_of(file, tensor);
    uint64_t len = tb_r64(file + section_of(file, 2) + 64 * (uint64_t)tensor + 56);
    for (uint64_t i = 0; i < len; i++) {
      uint8_t* x = copy_of(file, size);
      x[off + i] ^= 0xFF;
      tb_reseal(x, size);
      char why[768];
      TB_CHECK(tm_compare(x, size, why, sizeof(why)) == 0,
               "byte %llu of tensor %u's blob: tether_model_memory: %s", (unsigned long long)i,
               tensor, why);
      model = NULL;
      s = tether_model_load(x, size, NULL, &model);
      TB_CHECK(s == TETHER_STATUS_SUCCESS || tether_last_error()[0] != '\0',
               "byte %llu of tensor %u's blob: empty message", (unsigned long long)i, tensor);
      tether_model_destroy(model);
      free(x);
    }
  }
  free(file);
  free(g_sparse_conv_w);
  free(g_sparse_fc_w);
  g_sparse_conv_w = g_sparse_fc_w = NULL;
}

/* ---- tether_model_memory ---------------------------------------------------------------- */

static void test_model_memory(const uint8_t* file, size_t size) {
  /* Dense and sparse demo models under every ISA: a counting allocator sees exactly the
   * reported figures, a bump pool of exactly the total loads, one byte less does not. */
  tm_check_memory_every_isa(file, size, "dense demo model");
  size_t sparse_size = 0;
  uint8_t* sparse = sparse_demo_model(&sparse_size);
  tm_check_memory_every_isa(sparse, sparse_size, "sparse demo model");
  /* The decoded sparse constants are one more resident block of 192 bytes (72 and 24,
   * each rounded up to 64). */
  size_t dt = 0, dp = 0, dr = 0, dl = 0, st = 0, sp = 0, sr = 0, sl = 0;
  TB_CHECK(tether_model_memory(file, size, NULL, &dt, &dp, &dr, &dl) == TETHER_STATUS_SUCCESS &&
               tether_model_memory(sparse, sparse_size, NULL, &st, &sp, &sr, &sl) ==
                   TETHER_STATUS_SUCCESS,
           "query: %s", tether_last_error());
  TB_CHECK(st == dt + 192 && sr == dr + 192 && sp == dp + 192,
           "sparse total/resident/peak %zu/%zu/%zu, dense %zu/%zu/%zu", st, sr, sp, dt, dr, dp);
  /* The query leaves no model behind and needs none of the decoded or packed blocks: an
   * allocator failing at any of its own requests gives out_of_memory and leaks nothing. */
  tm_counter q = {0, 0, 0, 0, 0, 0, 0, 0};
  tether_allocator qa = {&q, tm_count_allocate, tm_count_deallocate};
  TB_CHECK(tether_model_memory(sparse, sparse_size, &qa, &st, &sp, &sr, &sl) ==
               TETHER_STATUS_SUCCESS && q.blocks == 0 && q.peak < sr,
           "query held %zu bytes at most (resident after a load: %zu), %zu blocks left", q.peak,
           sr, q.blocks);
  for (size_t fail_at = 1; fail_at <= q.calls; fail_at++) {
    tm_counter f = {0, 0, 0, 0, 0, 0, 0, fail_at};
    tether_allocator fa = {&f, tm_count_allocate, tm_count_deallocate};
    size_t total = 7;
    tether_status s = tether_model_memory(sparse, sparse_size, &fa, &total, &sp, &sr, &sl);
    TB_CHECK(s == TETHER_STATUS_OUT_OF_MEMORY && f.blocks == 0 && total == 7,
             "query allocation %zu failing: %s, %zu blocks leaked", fail_at,
             tether_status_string(s), f.blocks);
  }
  /* Arguments: as tether_model_load, plus the four outputs. */
  size_t t = 0, p = 0, r = 0, l = 0;
  TB_CHECK(tether_model_memory(file, size, NULL, NULL, &p, &r, &l) ==
                   TETHER_STATUS_INVALID_ARGUMENT &&
               tether_model_memory(file, size, NULL, &t, &p, &r, NULL) ==
                   TETHER_STATUS_INVALID_ARGUMENT,
           "NULL outputs accepted");
  TB_CHECK(tether_model_memory(NULL, size, NULL, &t, &p, &r, &l) ==
                   TETHER_STATUS_INVALID_ARGUMENT &&
               strstr(tether_last_error(), "data is NULL") != NULL,
           "NULL data: %s", tether_last_error());
  uint8_t* shifted = (uint8_t*)aligned_alloc(64, (size + 64 + 63) / 64 * 64);
  memcpy(shifted + 2, file, size);
  TB_CHECK(tether_model_memory(shifted + 2, size, NULL, &t, &p, &r, &l) ==
                   TETHER_STATUS_INVALID_ARGUMENT &&
               strstr(tether_last_error(), "4-byte aligned") != NULL,
           "misaligned data: %s", tether_last_error());
  free(shifted);
  const tether_allocator half = {NULL, tm_count_allocate, NULL};
  TB_CHECK(tether_model_memory(file, size, &half, &t, &p, &r, &l) ==
               TETHER_STATUS_INVALID_ARGUMENT,
           "allocator without deallocate accepted");
  free(sparse);
  free(g_sparse_conv_w);
  free(g_sparse_fc_w);
  g_sparse_conv_w = g_sparse_fc_w = NULL;
}

/* Names must be well-formed UTF-8, as the converter's reader requires: a one-op model with
 * the name under test on its input tensor, or on the op. */
static uint8_t* named_model(const char* tensor_name, const char* op_name, size_t* size) {
  tb_builder* b = tb_new();
  uint32_t x = tb_tensor(b, tensor_name, 2, (const int32_t[]){1, 4}, NULL);
  uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){1, 4}, NULL);
  tb_op(b, TETHER_OP_RELU, TETHER_ACT_NONE, op_name, 1, &x, y);
  tb_graph_io(b, 1, &x, 1, &y);
  uint8_t* file = tb_finish(b, size);
  free(b);
  return file;
}

static void test_utf8_names(void) {
  static const char* const kBad[] = {
      "\xff", "caf\xc3", "\xc0\xaf" /* overlong '/' */, "\xed\xa0\x80" /* surrogate */,
      "\xf4\x90\x80\x80" /* above U+10FFFF */, "\x80x",
  };
  static const char* const kGood[] = {"x", "caf\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x99\x82"};
  for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
    size_t size = 0;
    uint8_t* file = named_model(kBad[i], "relu", &size);
    expect_load(file, size, TETHER_STATUS_FORMAT_ERROR, "tensor 0: name is not valid UTF-8",
                "non-UTF-8 tensor name");
    free(file);
    file = named_model("x", kBad[i], &size);
    expect_load(file, size, TETHER_STATUS_FORMAT_ERROR, "op 0: name is not valid UTF-8",
                "non-UTF-8 op name");
    free(file);
  }
  for (size_t i = 0; i < sizeof(kGood) / sizeof(kGood[0]); i++) {
    size_t size = 0;
    uint8_t* file = named_model(kGood[i], kGood[i], &size);
    expect_load(file, size, TETHER_STATUS_SUCCESS, NULL, "UTF-8 names");
    free(file);
  }
}

int main(int argc, char** argv) {
  if (argc == 4 && strcmp(argv[1], "--tool") == 0) return run_tool(argv[2], argv[3]);
  size_t size = 0;
  uint8_t* file = demo_model(&size);
  test_crc(file, size);
  test_valid_model(file, size);
  test_truncation(file, size);
  test_header_bytes(file, size);
  test_resealed_damage(file, size);
  test_data_byte(file, size);
  test_arguments(file, size);
  test_load_file(file, size);
  test_random_damage(file, size);
  test_sparse();
  test_utf8_names();
  test_model_memory(file, size);
  free(file);
  if (tb_failures != 0) {
    fprintf(stderr, "%d check(s) failed\n", tb_failures);
    return 1;
  }
  printf("test_loader: all checks passed\n");
  return 0;
}
