/*
 * test_gather.c — GATHER on float32, int8 (quantization kept) and int32 tables: random
 * shapes, axes and index ranks (0..2), indices from a graph input or a constant (negatives
 * included), against a naive oracle, bit for bit. The op runs alone on guarded buffers
 * (tether_op_eval) and through a session with sentinels past the arena. An index outside
 * [-n, n) in a graph input fails the invoke (invalid_argument) without reading; a constant one,
 * float indices or a wrong output shape fail the load.
 */
#include "kernels_testlib.h"

/* A buffer of `bytes` with GUARD bytes of GUARD_BYTE on both sides. */
typedef struct bytes_buf {
  uint8_t* raw;
  uint8_t* p;
  size_t bytes;
} bytes_buf;

static bytes_buf bytes_new(size_t bytes, const void* init, uint8_t fill) {
  bytes_buf b;
  b.bytes = bytes;
  b.raw = (uint8_t*)malloc(bytes + 2 * GUARD);
  memset(b.raw, GUARD_BYTE, bytes + 2 * GUARD);
  b.p = b.raw + GUARD;
  if (init != NULL) memcpy(b.p, init, bytes);
  else memset(b.p, fill, bytes);
  return b;
}

static int bytes_intact(const bytes_buf* b) {
  for (size_t i = 0; i < GUARD; i++) {
    if (b->raw[i] != GUARD_BYTE || b->raw[GUARD + b->bytes + i] != GUARD_BYTE) return 0;
  }
  return 1;
}

static size_t dtype_bytes(uint32_t dtype) { return dtype == TETHER_DTYPE_INT8 ? 1 : 4; }

static uint8_t* load_or_null(const char* name, tb_builder* b, uint32_t n_in, const uint32_t* ins,
                             uint32_t out, tether_model_t* model, size_t* file_size) {
  tb_graph_io(b, n_in, ins, 1, &out);
  uint8_t* file = tb_finish(b, file_size);
  tether_status s = tether_model_load(file, *file_size, NULL, model);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: load: %s", name, tether_last_error());
  return file;
}

/*
 * Runs op 0 of the model both ways (direct eval on guarded buffers, then a session) with the
 * graph inputs `ins` holding `in_data`; stores the output bytes in y. Returns the invoke's
 * status (both ways must agree), or -1 when the model fails to load.
 */
static int run_gather(const char* name, tb_builder* b, uint32_t n_in, const uint32_t* ins,
                      const void* const* in_data, uint32_t out, void* y) {
  size_t size = 0;
  tether_model_t model = NULL;
  uint8_t* file = load_or_null(name, b, n_in, ins, out, &model, &size);
  if (model == NULL) {
    free(file);
    return -1;
  }
  const size_t y_bytes = elements_of(b, out) * dtype_bytes(b->tensors[out].dtype);
  void** data = (void**)calloc(b->tensor_count, sizeof(void*));
  bytes_buf bufs[4];
  for (uint32_t i = 0; i < n_in; i++) {
    bufs[i] = bytes_new(elements_of(b, ins[i]) * dtype_bytes(b->tensors[ins[i]].dtype),
                        in_data[i], 0);
    data[ins[i]] = bufs[i].p;
  }
  for (uint32_t t = 0; t < model->tensor_count; t++) {
    if (model->tensors[t].flags & TETHER_TENSOR_CONSTANT) {
      data[t] = (void*)(uintptr_t)model->tensors[t].data;
    }
  }
  bytes_buf yb = bytes_new(y_bytes, NULL, 0xAB);
  data[out] = yb.p;
  const tether_status direct = tether_op_eval(model, 0, data, NULL);
  for (uint32_t i = 0; i < n_in; i++) {
    TB_CHECK(bytes_intact(&bufs[i]), "%s: guard of input %u damaged", name, i);
  }
  TB_CHECK(bytes_intact(&yb), "%s: output overrun", name);
  memcpy(y, yb.p, y_bytes);

  size_t arena_size = 0;
  tether_session_arena_size(model, &arena_size);
  const size_t padded = (arena_size + 128 + 63) / 64 * 64;
  uint8_t* arena = (uint8_t*)aligned_alloc(64, padded);
  memset(arena, GUARD_BYTE, padded);
  tether_session_t session = NULL;
  tether_status s = tether_session_create(model, arena, arena_size, 1, &session);
  TB_CHECK(s == TETHER_STATUS_SUCCESS, "%s: create: %s", name, tether_last_error());
  if (s == TETHER_STATUS_SUCCESS) {
    for (uint32_t i = 0; i < n_in; i++) {
      TB_CHECK(tether_session_set_input(session, i, in_data[i], bufs[i].bytes) ==
                   TETHER_STATUS_SUCCESS, "%s: set_input %u", name, i);
    }
    s = tether_session_invoke(session);
    TB_CHECK(s == direct, "%s: invoke gave %s, direct eval %s", name, tether_status_string(s),
             tether_status_string(direct));
    if (s == TETHER_STATUS_SUCCESS) {
      uint8_t* y2 = (uint8_t*)malloc(y_bytes);
      TB_CHECK(tether_session_get_output(session, 0, y2, y_bytes) == TETHER_STATUS_SUCCESS,
               "%s: get_output", name);
      TB_CHECK(memcmp(y, y2, y_bytes) == 0, "%s: session result differs from direct eval",
               name);
      free(y2);
    }
    for (size_t i = arena_size; i < padded; i++) {
      if (arena[i] != GUARD_BYTE) {
        TB_CHECK(0, "%s: wrote past the arena", name);
        break;
      }
    }
    tether_session_destroy(session);
  }
  free(arena);
  for (uint32_t i = 0; i < n_in; i++) free(bufs[i].raw);
  free(yb.raw);
  free(data);
  tether_model_destroy(model);
  free(file);
  return (int)direct;
}

static void test_gather_random(void) {
  static const uint32_t kDtypes[3] = {TETHER_DTYPE_FLOAT32, TETHER_DTYPE_INT8,
                                      TETHER_DTYPE_INT32};
  for (int t = 0; t < 90; t++) {
    const uint32_t dtype = kDtypes[t % 3];
    const int constant_idx = (t / 3) % 2;
    const int rank = tb_range(1, 4);
    const int axis = tb_range(0, rank - 1);
    const int idx_rank = tb_range(0, rank == 4 ? 2 : 2);
    int32_t xs[6], is[6] = {1}, ys[6];
    for (int d = 0; d < rank; d++) xs[d] = tb_range(1, 5);
    for (int d = 0; d < idx_rank; d++) is[d] = tb_range(1, 4);
    int yr = 0;
    for (int d = 0; d < axis; d++) ys[yr++] = xs[d];
    for (int d = 0; d < idx_rank; d++) ys[yr++] = is[d];
    for (int d = axis + 1; d < rank; d++) ys[yr++] = xs[d];
    const int32_t n = xs[axis];
    size_t nx = 1, ni = 1;
    for (int d = 0; d < rank; d++) nx *= (size_t)xs[d];
    for (int d = 0; d < idx_rank; d++) ni *= (size_t)is[d];
    const size_t es = dtype_bytes(dtype);
    uint8_t* xd = (uint8_t*)malloc(nx * es);
    for (size_t i = 0; i < nx * es; i++) xd[i] = (uint8_t)tb_rand();
    int32_t* id = (int32_t*)malloc(ni * 4);
    for (size_t j = 0; j < ni; j++) id[j] = tb_range(-n, n - 1);

    tb_builder* b = tb_new();
    uint32_t x = tb_tensor_typed(b, "table", dtype, (uint32_t)rank, xs, NULL);
    uint32_t i = tb_tensor_typed(b, "ids", TETHER_DTYPE_INT32, (uint32_t)idx_rank, is,
                                 constant_idx ? id : NULL);
    uint32_t y = tb_tensor_typed(b, "y", dtype, (uint32_t)yr, ys, NULL);
    if (dtype == TETHER_DTYPE_INT8) {
      const float scale = 0.05f;
      const int32_t zp = -3;
      tb_quantize(b, x, 0, 1, &scale, &zp);
      tb_quantize(b, y, 0, 1, &scale, &zp);
    }
    tb_op(b, TETHER_OP_GATHER, 0, "gather", 2, (const uint32_t[]){x, i}, y);
    tb_attr_i(b, 10, 1, (const int32_t[]){axis});

    size_t outer = 1, row = es, ny = 0;
    for (int d = 0; d < axis; d++) outer *= (size_t)xs[d];
    for (int d = axis + 1; d < rank; d++) row *= (size_t)xs[d];
    ny = outer * ni * row;
    uint8_t* got = (uint8_t*)malloc(ny);
    uint8_t* want = (uint8_t*)malloc(ny);
    for (size_t o = 0; o < outer; o++) {  /* the oracle: unravelled, one element at a time */
      for (size_t j = 0; j < ni; j++) {
        const size_t src = (size_t)(id[j] < 0 ? id[j] + n : id[j]);
        for (size_t k = 0; k < row; k++) {
          want[(o * ni + j) * row + k] = xd[(o * (size_t)n + src) * row + k];
        }
      }
    }
    char name[96];
    snprintf(name, sizeof(name), "gather %s rank%d axis%d idx_rank%d %s case%d",
             tether_dtype_name(dtype), rank, axis, idx_rank, constant_idx ? "const" : "input", t);
    const void* ins_data[2] = {xd, id};
    const uint32_t ins[2] = {x, i};
    const int status = run_gather(name, b, constant_idx ? 1 : 2, ins, ins_data, y, got);
    if (status >= 0) {
      TB_CHECK(status == TETHER_STATUS_SUCCESS, "%s: %s", name, tether_last_error());
      TB_CHECK(memcmp(got, want, ny) == 0, "%s: output differs from the oracle", name);
    }
    free(got);
    free(want);
    free(xd);
    free(id);
    free(b);
  }
}

/* An id outside [-n, n) from a graph input: invoke refuses it, naming the value. */
static void test_gather_index_out_of_range(void) {
  const int32_t bad[3] = {5, -6, INT32_MIN};
  for (int k = 0; k < 3; k++) {
    tb_builder* b = tb_new();
    float table[5 * 3];
    for (int e = 0; e < 15; e++) table[e] = (float)e;
    uint32_t x = tb_tensor(b, "emb", 2, (const int32_t[]){5, 3}, table);
    uint32_t i = tb_tensor_typed(b, "ids", TETHER_DTYPE_INT32, 1, (const int32_t[]){4}, NULL);
    uint32_t y = tb_tensor(b, "y", 2, (const int32_t[]){4, 3}, NULL);
    tb_op(b, TETHER_OP_GATHER, 0, "lookup", 2, (const uint32_t[]){x, i}, y);
    tb_attr_i(b, 10, 1, (const int32_t[]){0});
    const int32_t ids[4] = {0, 4, bad[k], -5};
    const void* ins_data[1] = {ids};
    float got[12];
    char name[64];
    snprintf(name, sizeof(name), "gather out of range %d", bad[k]);
    const int status = run_gather(name, b, 1, &i, ins_data, y, got);
    char want[64];
    snprintf(want, sizeof(want), "index %d at position 2", bad[k]);
    TB_CHECK(status == TETHER_STATUS_INVALID_ARGUMENT && strstr(tether_last_error(), want) &&
                 strstr(tether_last_error(), "'lookup' (GATHER)"),
             "%s: got status %d: %s", name, status, tether_last_error());
    free(b);
  }
}

/* Files the loader must refuse: a constant index out of range, float indices, a wrong shape,
 * an axis outside the table. */
static void test_gather_bad_files(void) {
  for (int k = 0; k < 4; k++) {
    tb_builder* b = tb_new();
    static const int32_t kIds[2] = {1, 3};
    uint32_t x = tb_tensor(b, "emb", 2, (const int32_t[]){3, 2}, NULL);
    uint32_t i = k == 1 ? tb_tensor(b, "ids", 1, (const int32_t[]){2}, NULL)
                        : tb_tensor_typed(b, "ids", TETHER_DTYPE_INT32, 1,
                                          (const int32_t[]){2}, k == 0 ? kIds : NULL);
    uint32_t y = tb_tensor(b, "y", 2, k == 2 ? (const int32_t[]){2, 3} : (const int32_t[]){2, 2},
                           NULL);
    tb_op(b, TETHER_OP_GATHER, 0, "g", 2, (const uint32_t[]){x, i}, y);
    tb_attr_i(b, 10, 1, (const int32_t[]){k == 3 ? 2 : 0});
    static const char* const kWant[4] = {"constant index 3 at position 1", "int32 indices",
                                         "output 0", "axis 2 outside"};
    const uint32_t ins[2] = {x, i};
    tb_graph_io(b, k == 0 ? 1 : 2, ins, 1, &y);
    size_t size = 0;
    uint8_t* file = tb_finish(b, &size);
    tether_model_t model = NULL;
    tether_status s = tether_model_load(file, size, NULL, &model);
    TB_CHECK(s == TETHER_STATUS_FORMAT_ERROR && strstr(tether_last_error(), kWant[k]) != NULL,
             "gather bad file %d: got %s: %s", k, tether_status_string(s), tether_last_error());
    tether_model_destroy(model);
    free(file);
    free(b);
  }
}

int main(void) {
  printf("test_gather: isa %s\n", tether_isa());
  test_gather_random();
  test_gather_index_out_of_range();
  test_gather_bad_files();
  return kernels_report("test_gather");
}
