/*
 * tether-probe — times a list of models on this device and prints a latency table.
 *
 *   tether-probe MANIFEST [--threads N] [--warmup W] [--runs R] [--output TABLE.tsv]
 *   tether-probe --version        prints "tether-probe VERSION isa=ISA"
 *
 * MANIFEST is a text file of lines "KEY PATH" (PATH relative to the manifest's folder;
 * blank lines and lines starting with '#' are skipped). The cloud writes one small .tmodel
 * per kernel configuration its search space can produce, as the converter fuses it, and this
 * manifest beside them; a board with no Python runs this tool on the folder. Each model runs
 * W untimed and R timed invokes on a fixed input pattern (threads fixed); the table has a
 * header line "# tether-probe VERSION isa=ISA threads=N warmup=W runs=R" and then, per model,
 * "KEY<TAB>median_ms<TAB>min_ms<TAB>p90_ms". --output writes the table whole (a temporary
 * file, then a rename) or not at all. Exits non-zero naming the line and model at fault.
 * Uses the public API only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tether/tether.h"
#include "timing.h"

#define MAX_LINE 4096

static int usage(void) {
  fprintf(stderr,
          "usage: tether-probe MANIFEST [--threads N] [--warmup W] [--runs R] "
          "[--output TABLE.tsv]\n");
  return 2;
}

static int parse_count(const char* text, long lo, long hi, long* out) {
  char* end = NULL;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < lo || v > hi) return 1;
  *out = v;
  return 0;
}

/* Fills every input with a fixed pattern in [0, 1) (floats) or small integers. */
static tether_status fill_inputs(tether_model_t model, tether_session_t session) {
  uint32_t state = 12345u;
  size_t n = tether_model_io_count(model, TETHER_IO_INPUT);
  for (size_t i = 0; i < n; i++) {
    size_t ndim = 0;
    int32_t dims[TETHER_MAX_DIMS];
    tether_dtype dtype;
    tether_status s = tether_model_io_shape(model, TETHER_IO_INPUT, i, &ndim, dims, &dtype);
    if (s != TETHER_STATUS_SUCCESS) return s;
    size_t count = 1;
    for (size_t d = 0; d < ndim; d++) count *= (size_t)dims[d];
    void* data = NULL;
    s = tether_session_io_data(session, TETHER_IO_INPUT, i, &data);
    if (s != TETHER_STATUS_SUCCESS) return s;
    for (size_t k = 0; k < count; k++) {
      state = state * 1664525u + 1013904223u;
      float u = (float)(state >> 8) * (1.0f / 16777216.0f);
      switch (dtype) {
        case TETHER_DTYPE_FLOAT32: ((float*)data)[k] = u; break;
        case TETHER_DTYPE_INT32: ((int32_t*)data)[k] = (int32_t)(u * 8.0f); break;
        case TETHER_DTYPE_INT8: ((int8_t*)data)[k] = (int8_t)(u * 255.0f - 128.0f); break;
        case TETHER_DTYPE_UINT8: ((uint8_t*)data)[k] = (uint8_t)(u * 255.0f); break;
      }
    }
  }
  return TETHER_STATUS_SUCCESS;
}

/* Times one model; writes median/min/p90 in ms. 0 on success. */
static int time_model(const char* path, long threads, long warmup, long runs, double* times,
                      double out[3]) {
  tether_model_t model = NULL;
  tether_status s = tether_model_load_file(path, &model);
  if (s != TETHER_STATUS_SUCCESS) {
    fprintf(stderr, "tether-probe: %s: load: %s: %s\n", path, tether_status_string(s),
            tether_last_error());
    return 1;
  }
  tether_session_t session = NULL;
  s = tether_session_create(model, NULL, 0, (uint32_t)threads, &session);
  if (s == TETHER_STATUS_SUCCESS) s = fill_inputs(model, session);
  for (long r = 0; s == TETHER_STATUS_SUCCESS && r < warmup; r++) {
    s = tether_session_invoke(session);
  }
  for (long r = 0; s == TETHER_STATUS_SUCCESS && r < runs; r++) {
    double t0 = now_ms();
    s = tether_session_invoke(session);
    times[r] = now_ms() - t0;
  }
  if (s != TETHER_STATUS_SUCCESS) {
    fprintf(stderr, "tether-probe: %s: %s: %s\n", path, tether_status_string(s),
            tether_last_error());
  } else {
    qsort(times, (size_t)runs, sizeof(double), compare_double);
    out[0] = sorted_median(times, runs);
    out[1] = times[0];
    out[2] = times[(size_t)((double)(runs - 1) * 0.9)];
  }
  tether_session_destroy(session);
  tether_model_destroy(model);
  return s == TETHER_STATUS_SUCCESS ? 0 : 1;
}

int main(int argc, char** argv) {
  const char* manifest = NULL;
  const char* output = NULL;
  long threads = 1, warmup = 5, runs = 30;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    if (strcmp(a, "--version") == 0) {
      printf("tether-probe %d.%d isa=%s\n", TETHER_VERSION_MAJOR, TETHER_VERSION_MINOR,
             tether_isa());
      return 0;
    }
    if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], 1, TETHER_MAX_THREADS, &threads)) return usage();
    } else if (strcmp(a, "--warmup") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], 0, 1000000, &warmup)) return usage();
    } else if (strcmp(a, "--runs") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], 1, 1000000, &runs)) return usage();
    } else if (strcmp(a, "--output") == 0 && i + 1 < argc) {
      output = argv[++i];
    } else if (a[0] == '-' || manifest != NULL) {
      return usage();
    } else {
      manifest = a;
    }
  }
  if (manifest == NULL) return usage();
  FILE* in = fopen(manifest, "r");
  if (in == NULL) {
    fprintf(stderr, "tether-probe: %s: cannot open\n", manifest);
    return 1;
  }
  /* The folder of the manifest, to resolve relative model paths. */
  char dir[MAX_LINE];
  const char* slash = strrchr(manifest, '/');
  size_t dir_len = slash ? (size_t)(slash - manifest) + 1 : 0;
  if (dir_len >= sizeof(dir)) dir_len = 0;
  memcpy(dir, manifest, dir_len);
  dir[dir_len] = '\0';

  char tmp_path[MAX_LINE];
  FILE* out = stdout;
  if (output != NULL) {
    if ((size_t)snprintf(tmp_path, sizeof(tmp_path), "%s.partial", output) >= sizeof(tmp_path)) {
      fclose(in);
      return usage();
    }
    out = fopen(tmp_path, "w");
    if (out == NULL) {
      fprintf(stderr, "tether-probe: %s: cannot open for writing\n", tmp_path);
      fclose(in);
      return 1;
    }
  }
  double* times = (double*)malloc((size_t)runs * sizeof(double));
  int rc = times == NULL;
  fprintf(out, "# tether-probe %d.%d isa=%s threads=%ld warmup=%ld runs=%ld\n",
          TETHER_VERSION_MAJOR, TETHER_VERSION_MINOR, tether_isa(), threads, warmup, runs);
  char line[MAX_LINE];
  long lineno = 0, models = 0;
  while (rc == 0 && fgets(line, sizeof(line), in) != NULL) {
    lineno++;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) {
      line[--len] = '\0';
    }
    char* p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '\0' || *p == '#') continue;
    char* key = p;
    while (*p != '\0' && *p != ' ' && *p != '\t') p++;
    if (*p == '\0') {
      fprintf(stderr, "tether-probe: %s:%ld: expected \"KEY PATH\"\n", manifest, lineno);
      rc = 1;
      break;
    }
    *p++ = '\0';
    while (*p == ' ' || *p == '\t') p++;
    char path[2 * MAX_LINE];
    if (*p == '/') {
      snprintf(path, sizeof(path), "%s", p);
    } else {
      snprintf(path, sizeof(path), "%s%s", dir, p);
    }
    double stats[3];
    if (time_model(path, threads, warmup, runs, times, stats)) {
      fprintf(stderr, "tether-probe: %s:%ld: model '%s' failed\n", manifest, lineno, key);
      rc = 1;
      break;
    }
    fprintf(out, "%s\t%.6f\t%.6f\t%.6f\n", key, stats[0], stats[1], stats[2]);
    models++;
  }
  if (rc == 0 && ferror(in)) {
    fprintf(stderr, "tether-probe: %s: read error\n", manifest);
    rc = 1;
  }
  if (rc == 0 && models == 0) {
    fprintf(stderr, "tether-probe: %s: no models listed\n", manifest);
    rc = 1;
  }
  fclose(in);
  free(times);
  if (output != NULL) {
    int closed = fclose(out) == 0;
    if (rc == 0 && closed && rename(tmp_path, output) == 0) return 0;
    remove(tmp_path);
    if (rc == 0) fprintf(stderr, "tether-probe: %s: write failed\n", output);
    return 1;
  }
  return rc;
}
