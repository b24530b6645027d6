/*
 * tether-run — loads a .tmodel, runs it on .npy inputs and writes output 0 as .npy.
 *
 *   tether-run MODEL.tmodel [--input IN.npy]... [--output OUT.npy] [--repeat N] [--threads N]
 *              [--profile]
 *
 * Inputs are given in the model's input order; a missing --input runs on zeros. Only
 * little-endian C-order arrays of the input's dtype ('<f4' for float32) are read. Exits
 * non-zero with the engine's message on any failure. Uses the public API only. --profile
 * times every op over the --repeat runs (at least 10) and prints milliseconds per op type,
 * largest first, then per op. The kernels' ISA is printed with the arena size.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether/tether.h"
#include "timing.h"

#define MAX_INPUTS 64

static int fail(const char* context, tether_status status) {
  fprintf(stderr, "tether-run: %s: %s: %s\n", context, tether_status_string(status),
          tether_last_error());
  return 1;
}

static const char* dtype_name(tether_dtype dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return "float32";
    case TETHER_DTYPE_INT8: return "int8";
    case TETHER_DTYPE_UINT8: return "uint8";
    case TETHER_DTYPE_INT32: return "int32";
  }
  return "?";
}

static const char* npy_descr(tether_dtype dtype) {
  switch (dtype) {
    case TETHER_DTYPE_FLOAT32: return "<f4";
    case TETHER_DTYPE_INT8: return "|i1";
    case TETHER_DTYPE_UINT8: return "|u1";
    case TETHER_DTYPE_INT32: return "<i4";
  }
  return "?";
}

static size_t dtype_size(tether_dtype dtype) {
  return dtype == TETHER_DTYPE_INT8 || dtype == TETHER_DTYPE_UINT8 ? 1 : 4;
}

typedef struct io_info {
  const char* name;
  size_t ndim;
  int32_t dims[TETHER_MAX_DIMS];
  tether_dtype dtype;
  size_t bytes;
} io_info;

static void format_shape(const int32_t* dims, size_t ndim, char* out, size_t cap) {
  size_t n = (size_t)snprintf(out, cap, "(");
  for (size_t i = 0; i < ndim && n < cap; i++) {
    n += (size_t)snprintf(out + n, cap - n, "%s%d", i ? ", " : "", (int)dims[i]);
  }
  if (n < cap) snprintf(out + n, cap - n, ndim == 1 ? ",)" : ")");
}

/* ---- .npy ------------------------------------------------------------------------------ */

/* Finds `'key':` in the header dict and returns the text after it (spaces skipped). */
static const char* npy_field(const char* header, const char* key) {
  char pattern[32];
  snprintf(pattern, sizeof(pattern), "'%s':", key);
  const char* p = strstr(header, pattern);
  if (p == NULL) return NULL;
  p += strlen(pattern);
  while (*p == ' ') p++;
  return p;
}

/* Reads IN.npy into `data` (info->bytes), checking dtype, order and shape. 0 on success. */
static int npy_read(const char* path, const io_info* info, size_t index, void* data) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "tether-run: %s: cannot open\n", path);
    return 1;
  }
  unsigned char pre[12];
  int ok = fread(pre, 1, 10, f) == 10 && memcmp(pre, "\x93NUMPY", 6) == 0;
  uint32_t header_len = 0;
  if (ok && pre[6] == 1) {
    header_len = (uint32_t)pre[8] | ((uint32_t)pre[9] << 8);
  } else if (ok && (pre[6] == 2 || pre[6] == 3) && fread(pre + 10, 1, 2, f) == 2) {
    header_len = (uint32_t)pre[8] | ((uint32_t)pre[9] << 8) | ((uint32_t)pre[10] << 16) |
                 ((uint32_t)pre[11] << 24);
  } else {
    ok = 0;
  }
  if (!ok || header_len == 0 || header_len > (1u << 20)) {
    fprintf(stderr, "tether-run: %s: not a .npy file (version 1.0, 2.0 or 3.0)\n", path);
    fclose(f);
    return 1;
  }
  char* header = (char*)malloc(header_len + 1);
  if (header == NULL || fread(header, 1, header_len, f) != header_len) {
    fprintf(stderr, "tether-run: %s: truncated .npy header\n", path);
    free(header);
    fclose(f);
    return 1;
  }
  header[header_len] = '\0';
  const char* descr = npy_field(header, "descr");
  const char* order = npy_field(header, "fortran_order");
  const char* shape = npy_field(header, "shape");
  const char* want = npy_descr(info->dtype);
  /* descr is e.g. '<f4': accept '<', '=' or '|' byte order with the right kind and size. */
  int descr_ok = descr != NULL && descr[0] == '\'' && descr[1] != '\0' &&
                 strchr("<=|", descr[1]) != NULL && strncmp(descr + 2, want + 1, 2) == 0 &&
                 descr[4] == '\'';
  if (!descr_ok) {
    fprintf(stderr, "tether-run: %s: dtype must be '%s' (little-endian %s) for input %zu '%s'\n",
            path, want, dtype_name(info->dtype), index, info->name);
    free(header);
    fclose(f);
    return 1;
  }
  if (order == NULL || strncmp(order, "False", 5) != 0) {
    fprintf(stderr, "tether-run: %s: only C-order arrays are supported (fortran_order is set)\n",
            path);
    free(header);
    fclose(f);
    return 1;
  }
  int32_t dims[16];
  size_t ndim = 0;
  int shape_ok = shape != NULL && *shape == '(';
  if (shape_ok) {
    const char* p = shape + 1;
    for (;;) {
      while (*p == ' ' || *p == ',') p++;
      if (*p == ')') break;
      char* end = NULL;
      long v = strtol(p, &end, 10);
      if (end == p || v < 0 || v > INT32_MAX || ndim == 16) {
        shape_ok = 0;
        break;
      }
      dims[ndim++] = (int32_t)v;
      p = end;
      while (*p == 'L') p++;
    }
  }
  char have[160], expect[160];
  if (shape_ok) format_shape(dims, ndim, have, sizeof(have));
  format_shape(info->dims, info->ndim, expect, sizeof(expect));
  int same = shape_ok && ndim == info->ndim;
  for (size_t i = 0; same && i < ndim; i++) same = dims[i] == info->dims[i];
  free(header);
  if (!same) {
    fprintf(stderr, "tether-run: %s: input %zu '%s' expects shape %s, the file has %s\n", path,
            index, info->name, expect, shape_ok ? have : "an unreadable shape");
    fclose(f);
    return 1;
  }
  size_t got = fread(data, 1, info->bytes, f);
  fclose(f);
  if (got != info->bytes) {
    fprintf(stderr, "tether-run: %s: truncated data (%zu of %zu bytes)\n", path, got,
            info->bytes);
    return 1;
  }
  return 0;
}

static int npy_write(const char* path, const io_info* info, const void* data) {
  char shape[160];
  format_shape(info->dims, info->ndim, shape, sizeof(shape));
  char dict[256];
  int n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                   npy_descr(info->dtype), shape);
  if (n < 0 || (size_t)n >= sizeof(dict) - 70) return 1;
  size_t total = 10 + (size_t)n + 1;
  size_t padded = (total + 63) / 64 * 64;
  char header[320];
  memcpy(header, "\x93NUMPY\x01\x00", 8);
  size_t header_len = padded - 10;
  header[8] = (char)(header_len & 0xFF);
  header[9] = (char)(header_len >> 8);
  memcpy(header + 10, dict, (size_t)n);
  memset(header + 10 + n, ' ', padded - total);
  header[padded - 1] = '\n';
  FILE* f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "tether-run: %s: cannot open for writing\n", path);
    return 1;
  }
  int ok = fwrite(header, 1, padded, f) == padded && fwrite(data, 1, info->bytes, f) == info->bytes;
  ok = (fclose(f) == 0) && ok;
  if (!ok) fprintf(stderr, "tether-run: %s: write failed\n", path);
  return ok ? 0 : 1;
}

/* ---- main ------------------------------------------------------------------------------ */

static int query(tether_model_t model, tether_io kind, size_t index, io_info* info) {
  info->name = tether_model_io_name(model, kind, index);
  tether_status s = tether_model_io_shape(model, kind, index, &info->ndim, info->dims, &info->dtype);
  if (s != TETHER_STATUS_SUCCESS) return fail("query", s);
  info->bytes = dtype_size(info->dtype);
  for (size_t i = 0; i < info->ndim; i++) info->bytes *= (size_t)info->dims[i];
  return 0;
}

static int usage(void) {
  fprintf(stderr,
          "usage: tether-run MODEL.tmodel [--input IN.npy]... [--output OUT.npy] [--repeat N] "
          "[--threads N] [--profile]\n");
  return 2;
}

static const char* op_name(tether_op op) {
#define TETHER_RUN_NAME_(id, name) [id] = #name,
  static const char* const kNames[TETHER_OP_COUNT] = {TETHER_OP_LIST(TETHER_RUN_NAME_)};
#undef TETHER_RUN_NAME_
  return (size_t)op >= 1 && (size_t)op < TETHER_OP_COUNT ? kNames[op] : "?";
}

/* Times each op over `runs` invokes; prints ms per op type (largest first), then per op. */
static int profile(tether_session_t session, size_t ops, long runs) {
  tether_status s = tether_session_set_profiling(session, true);
  if (s != TETHER_STATUS_SUCCESS) return fail("profiling", s);
  for (long r = 0; r < runs; r++) {
    s = tether_session_invoke(session);
    if (s != TETHER_STATUS_SUCCESS) return fail("invoke", s);
  }
  double by_type[TETHER_OP_COUNT] = {0};
  int count[TETHER_OP_COUNT] = {0};
  double total = 0;
  for (size_t i = 0; i < ops; i++) {
    tether_op type;
    double ms = 0;
    tether_session_op_profile(session, i, &type, &ms);
    if ((size_t)type < TETHER_OP_COUNT) {
      by_type[type] += ms;
      count[type]++;
    }
    total += ms;
  }
  printf("profile: %.3f ms per invoke over %ld runs (ops timed one by one)\n", total, runs);
  for (;;) {
    int best = -1;
    for (int t = 0; t < TETHER_OP_COUNT; t++) {
      if (count[t] > 0 && (best < 0 || by_type[t] > by_type[best])) best = t;
    }
    if (best < 0) break;
    printf("  %-18s %3d ops %9.3f ms %5.1f%%\n", op_name((tether_op)best), count[best],
           by_type[best], total > 0 ? 100.0 * by_type[best] / total : 0.0);
    count[best] = 0;
  }
  for (size_t i = 0; i < ops; i++) {
    tether_op type;
    double ms = 0;
    tether_session_op_profile(session, i, &type, &ms);
    printf("  op %3zu %-18s %9.4f ms\n", i, op_name(type), ms);
  }
  tether_session_set_profiling(session, false);
  return 0;
}

static int parse_count(const char* text, long* out) {
  char* end = NULL;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < 0 || v > 100000000) return 1;
  *out = v;
  return 0;
}

int main(int argc, char** argv) {
  const char* model_path = NULL;
  const char* output_path = NULL;
  int want_profile = 0;
  const char* inputs[MAX_INPUTS];
  size_t input_files = 0;
  long repeat = 0, threads = 1;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (strcmp(a, "--input") == 0 && i + 1 < argc) {
      if (input_files == MAX_INPUTS) return usage();
      inputs[input_files++] = argv[++i];
    } else if (strcmp(a, "--output") == 0 && i + 1 < argc) {
      output_path = argv[++i];
    } else if (strcmp(a, "--repeat") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], &repeat)) return usage();
    } else if (strcmp(a, "--profile") == 0) {
      want_profile = 1;
    } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], &threads) || threads > 1024) return usage();
    } else if (a[0] == '-' || model_path != NULL) {
      return usage();
    } else {
      model_path = a;
    }
  }
  if (model_path == NULL) return usage();

  tether_model_t model = NULL;
  tether_status s = tether_model_load_file(model_path, &model);
  if (s != TETHER_STATUS_SUCCESS) return fail("load", s);
  int rc = 1;
  tether_session_t session = NULL;
  void* buffer = NULL;
  double* times = NULL;
  size_t n_in = tether_model_io_count(model, TETHER_IO_INPUT);
  size_t n_out = tether_model_io_count(model, TETHER_IO_OUTPUT);
  if (input_files > n_in) {
    fprintf(stderr, "tether-run: %zu --input files given, the model has %zu inputs\n",
            input_files, n_in);
    goto done;
  }
  printf("model: %s (%zu ops)\n", model_path, tether_model_op_count(model));
  for (int side = 0; side < 2; side++) {
    tether_io kind = side == 0 ? TETHER_IO_INPUT : TETHER_IO_OUTPUT;
    for (size_t i = 0; i < (side == 0 ? n_in : n_out); i++) {
      io_info info;
      if (query(model, kind, i, &info)) goto done;
      char shape[160];
      format_shape(info.dims, info.ndim, shape, sizeof(shape));
      printf("%s %zu: '%s' %s %s\n", side == 0 ? "input" : "output", i, info.name, shape,
             dtype_name(info.dtype));
    }
  }
  size_t arena_size = 0;
  s = tether_session_arena_size(model, &arena_size);
  if (s != TETHER_STATUS_SUCCESS) {
    fail("arena size", s);
    goto done;
  }
  printf("arena: %zu bytes, isa %s\n", arena_size, tether_isa());
  s = tether_session_create(model, NULL, 0, (uint32_t)threads, &session);
  if (s != TETHER_STATUS_SUCCESS) {
    fail("create session", s);
    goto done;
  }
  for (size_t i = 0; i < input_files; i++) {
    io_info info;
    void* data = NULL;
    if (query(model, TETHER_IO_INPUT, i, &info)) goto done;
    s = tether_session_io_data(session, TETHER_IO_INPUT, i, &data);
    if (s != TETHER_STATUS_SUCCESS) {
      fail("input", s);
      goto done;
    }
    if (npy_read(inputs[i], &info, i, data)) goto done;
  }
  s = tether_session_invoke(session);
  if (s != TETHER_STATUS_SUCCESS) {
    fail("invoke", s);
    goto done;
  }
  if (repeat > 0) {
    times = (double*)malloc((size_t)repeat * sizeof(double));
    if (times == NULL) goto done;
    for (long r = 0; r < repeat; r++) {
      double t0 = now_ms();
      s = tether_session_invoke(session);
      times[r] = now_ms() - t0;
      if (s != TETHER_STATUS_SUCCESS) {
        fail("invoke", s);
        goto done;
      }
    }
    qsort(times, (size_t)repeat, sizeof(double), compare_double);
    double median = sorted_median(times, repeat);
    printf("latency: median %.4f ms, min %.4f ms over %ld runs\n", median, times[0], repeat);
  }
  if (want_profile && profile(session, tether_model_op_count(model), repeat < 10 ? 10 : repeat)) {
    goto done;
  }
  if (output_path != NULL) {
    if (n_out == 0) {
      fprintf(stderr, "tether-run: the model has no outputs to write\n");
      goto done;
    }
    io_info info;
    if (query(model, TETHER_IO_OUTPUT, 0, &info)) goto done;
    buffer = malloc(info.bytes);
    if (buffer == NULL) goto done;
    s = tether_session_get_output(session, 0, buffer, info.bytes);
    if (s != TETHER_STATUS_SUCCESS) {
      fail("output", s);
      goto done;
    }
    if (npy_write(output_path, &info, buffer)) goto done;
    printf("wrote output 0 to %s\n", output_path);
  }
  rc = 0;
done:
  free(times);
  free(buffer);
  tether_session_destroy(session);
  tether_model_destroy(model);
  return rc;
}
