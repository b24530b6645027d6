/*
 * tether-probe — times a list of models on this device and prints a latency table.
 *
 *   tether-probe MANIFEST [--threads N] [--warmup W] [--runs R] [--min-ms T] [--rounds K]
 *                [--output TABLE.tsv]
 *   tether-probe --version        prints "tether-probe VERSION isa=ISA"
 *
 * MANIFEST is a text file of lines "KEY PATH" (PATH relative to the manifest's folder;
 * blank lines and lines starting with '#' are skipped). The cloud writes one small .tmodel
 * per kernel configuration its search space can produce, as the converter fuses it, and this
 * manifest beside them; a board with no Python runs this tool on the folder.
 *
 * Each model runs at least W untimed and R timed invokes on a fixed input pattern (threads
 * fixed). Models of the cloud's small spaces take tens of microseconds, where a count of runs
 * is over before a core has left a low clock, so the counts are also durations: warm-up lasts
 * at least T/5 ms (the first model at least 250 ms, the CPU's climb to its working clock) and
 * the timed invokes go on until they add up to T ms (default 50; 0 keeps the counts alone).
 *
 * A shared or throttling machine runs whole stretches of seconds slower (a phone heating up,
 * a neighbour on a virtual machine's host). With K > 1 rounds every model is loaded at once
 * (up to 256 at a time) and timed in K interleaved slices (R/K invokes and T/K ms each), and a
 * model's median is that of its fastest slice: a slow stretch then slows every model's slice
 * alike, and each model keeps a slice from the machine's normal speed. (K = 1, the default,
 * loads one model at a time: the memory of one model.)
 *
 * The table has a header line
 * "# tether-probe VERSION isa=ISA threads=N warmup=W runs=R min_ms=T rounds=K" and then, per
 * model, "KEY<TAB>median_ms<TAB>min_ms<TAB>p90_ms" (min over all invokes; median and p90 of
 * the fastest slice). --output writes the table whole (a temporary file, then a rename) or
 * not at all. Exits non-zero naming the line and model at fault. Uses the public API only.
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
          "usage: tether-probe MANIFEST [--threads N] [--warmup W] [--runs R] [--min-ms T] "
          "[--rounds K] [--output TABLE.tsv]\n");
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

/* Timed invokes kept for one slice at most (the median of more adds nothing). */
#define MAX_RUNS 1000000L
/* Models loaded at once when rounds interleave them. */
#define MAX_GROUP 256

/* One manifest line: its model, loaded and warm while it is timed. */
typedef struct {
  char* key;
  char* path;
  long lineno;
  tether_model_t model;
  tether_session_t session;
  double stats[3]; /* median, min, p90 (ms) */
} item;

/* Growable buffer of one slice's invoke times. */
typedef struct {
  double* v;
  long cap;
} samples;

static char* copy_text(const char* text) {
  size_t n = strlen(text) + 1;
  char* out = (char*)malloc(n);
  if (out != NULL) memcpy(out, text, n);
  return out;
}

static void report(const char* manifest, const item* it, const char* what, tether_status s) {
  fprintf(stderr, "tether-probe: %s:%ld: model '%s' (%s): %s: %s: %s\n", manifest, it->lineno,
          it->key, it->path, what, tether_status_string(s), tether_last_error());
}

static void close_item(item* it) {
  tether_session_destroy(it->session);
  tether_model_destroy(it->model);
  it->session = NULL;
  it->model = NULL;
}

/* Loads, fills and warms one model: W invokes and `warm_ms`. 0 on success. */
static int open_item(const char* manifest, item* it, long threads, long warmup, double warm_ms) {
  tether_status s = tether_model_load_file(it->path, &it->model);
  if (s != TETHER_STATUS_SUCCESS) {
    report(manifest, it, "load", s);
    return 1;
  }
  s = tether_session_create(it->model, NULL, 0, (uint32_t)threads, &it->session);
  if (s == TETHER_STATUS_SUCCESS) s = fill_inputs(it->model, it->session);
  double start = now_ms();
  for (long r = 0; s == TETHER_STATUS_SUCCESS && (r < warmup || now_ms() - start < warm_ms);
       r++) {
    s = tether_session_invoke(it->session);
  }
  if (s != TETHER_STATUS_SUCCESS) {
    report(manifest, it, "invoke", s);
    close_item(it);
    return 1;
  }
  it->stats[0] = it->stats[1] = it->stats[2] = -1.0;
  return 0;
}

/* One timed slice: at least `runs` invokes lasting `min_ms` in all; keeps the slice's median
 * and p90 when its median is the item's best so far, and the smallest invoke. 0 on success. */
static int time_slice(const char* manifest, item* it, long runs, double min_ms, samples* buf) {
  long n = 0;
  double total = 0.0;
  tether_status s = TETHER_STATUS_SUCCESS;
  while ((n < runs || total < min_ms) && n < MAX_RUNS) {
    if (n == buf->cap) {
      long want = buf->cap * 2 > MAX_RUNS ? MAX_RUNS : buf->cap * 2;
      double* more = (double*)realloc(buf->v, (size_t)want * sizeof(double));
      if (more == NULL) {
        fprintf(stderr, "tether-probe: %s:%ld: model '%s': out of memory for timings\n",
                manifest, it->lineno, it->key);
        return 1;
      }
      buf->v = more;
      buf->cap = want;
    }
    double t0 = now_ms();
    s = tether_session_invoke(it->session);
    double dt = now_ms() - t0;
    if (s != TETHER_STATUS_SUCCESS) {
      report(manifest, it, "invoke", s);
      return 1;
    }
    buf->v[n++] = dt;
    total += dt;
  }
  qsort(buf->v, (size_t)n, sizeof(double), compare_double);
  double median = sorted_median(buf->v, n);
  if (it->stats[0] < 0.0 || median < it->stats[0]) {
    it->stats[0] = median;
    it->stats[2] = buf->v[(size_t)((double)(n - 1) * 0.9)];
  }
  if (it->stats[1] < 0.0 || buf->v[0] < it->stats[1]) it->stats[1] = buf->v[0];
  return 0;
}

/* Reads the manifest's lines into `*items` (paths resolved against its folder). 0 on
 * success; the count in `*count`. */
static int read_manifest(const char* manifest, item** items, size_t* count) {
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
  char line[MAX_LINE];
  long lineno = 0;
  size_t n = 0, cap = 0;
  int rc = 0;
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
    snprintf(path, sizeof(path), "%s%s", *p == '/' ? "" : dir, p);
    if (n == cap) {
      size_t want = cap ? 2 * cap : 64;
      item* more = (item*)realloc(*items, want * sizeof(item));
      if (more == NULL) {
        rc = 1;
        break;
      }
      *items = more;
      cap = want;
    }
    item* it = &(*items)[n];
    memset(it, 0, sizeof(*it));
    it->key = copy_text(key);
    it->path = copy_text(path);
    it->lineno = lineno;
    n++;
    if (it->key == NULL || it->path == NULL) rc = 1;
  }
  if (rc == 0 && ferror(in)) {
    fprintf(stderr, "tether-probe: %s: read error\n", manifest);
    rc = 1;
  }
  if (rc == 0 && n == 0) {
    fprintf(stderr, "tether-probe: %s: no models listed\n", manifest);
    rc = 1;
  }
  fclose(in);
  *count = n;
  return rc;
}

int main(int argc, char** argv) {
  const char* manifest = NULL;
  const char* output = NULL;
  long threads = 1, warmup = 5, runs = 30, min_ms = 50, rounds = 1;
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
    } else if (strcmp(a, "--min-ms") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], 0, 600000, &min_ms)) return usage();
    } else if (strcmp(a, "--rounds") == 0 && i + 1 < argc) {
      if (parse_count(argv[++i], 1, 1000, &rounds)) return usage();
    } else if (strcmp(a, "--output") == 0 && i + 1 < argc) {
      output = argv[++i];
    } else if (a[0] == '-' || manifest != NULL) {
      return usage();
    } else {
      manifest = a;
    }
  }
  if (manifest == NULL) return usage();
  item* items = NULL;
  size_t n = 0;
  int rc = read_manifest(manifest, &items, &n);

  char tmp_path[MAX_LINE];
  FILE* out = stdout;
  if (rc == 0 && output != NULL) {
    if ((size_t)snprintf(tmp_path, sizeof(tmp_path), "%s.partial", output) >= sizeof(tmp_path)) {
      fprintf(stderr, "tether-probe: %s: path too long\n", output);
      rc = 1;
    } else if ((out = fopen(tmp_path, "w")) == NULL) {
      fprintf(stderr, "tether-probe: %s: cannot open for writing\n", tmp_path);
      rc = 1;
    }
  }
  samples buf = {(double*)malloc(1024 * sizeof(double)), 1024};
  if (buf.v == NULL) rc = 1;
  if (rc == 0) {
    fprintf(out, "# tether-probe %d.%d isa=%s threads=%ld warmup=%ld runs=%ld min_ms=%ld "
            "rounds=%ld\n", TETHER_VERSION_MAJOR, TETHER_VERSION_MINOR, tether_isa(), threads,
            warmup, runs, min_ms, rounds);
  }
  /* One model at a time with one round; all of them at once, interleaved, with more. */
  size_t group = rounds > 1 ? MAX_GROUP : 1;
  long slice_runs = (runs + rounds - 1) / rounds;
  double slice_ms = (double)min_ms / (double)rounds;
  for (size_t g = 0; rc == 0 && g < n; g += group) {
    size_t end = g + group < n ? g + group : n, opened = g;
    for (; rc == 0 && opened < end; opened++) {
      double warm_ms = opened == 0 && min_ms > 0 ? 250.0 : (double)min_ms / 5.0;
      if (open_item(manifest, &items[opened], threads, warmup, warm_ms)) rc = 1;
    }
    if (rc != 0) opened--; /* the failed one closed itself */
    for (long r = 0; rc == 0 && r < rounds; r++) {
      for (size_t i = g; rc == 0 && i < end; i++) {
        rc = time_slice(manifest, &items[i], slice_runs, slice_ms, &buf);
      }
    }
    for (size_t i = g; i < opened; i++) {
      if (rc == 0) {
        fprintf(out, "%s\t%.6f\t%.6f\t%.6f\n", items[i].key, items[i].stats[0],
                items[i].stats[1], items[i].stats[2]);
      }
      close_item(&items[i]);
    }
  }
  for (size_t i = 0; i < n; i++) {
    free(items[i].key);
    free(items[i].path);
  }
  free(items);
  free(buf.v);
  if (output != NULL && out != NULL && out != stdout) {
    int closed = fclose(out) == 0;
    if (rc == 0 && closed && rename(tmp_path, output) == 0) return 0;
    remove(tmp_path);
    if (rc == 0) fprintf(stderr, "tether-probe: %s: write failed\n", output);
    return 1;
  }
  return rc;
}
