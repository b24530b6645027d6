/*
 * fuzz_replay.c — runs the fuzz target on files given on the command line (or every file of
 * the directories given), without libFuzzer: ctest replays the seed corpus and the saved
 * findings (tests/fuzz/regressions) under plain and ASan/UBSan builds.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

static int replay_file(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return 0;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* buf = (uint8_t*)malloc(n > 0 ? (size_t)n : 1);
  size_t got = fread(buf, 1, (size_t)(n > 0 ? n : 0), f);
  fclose(f);
  LLVMFuzzerTestOneInput(buf, got);
  free(buf);
  return 1;
}

int main(int argc, char** argv) {
  int files = 0;
  for (int i = 1; i < argc; i++) {
    DIR* d = opendir(argv[i]);
    if (d == NULL) {
      files += replay_file(argv[i]);
      continue;
    }
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      char path[4096];
      snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
      files += replay_file(path);
    }
    closedir(d);
  }
  printf("fuzz_replay: %d file(s) replayed without a crash\n", files);
  return files > 0 ? 0 : 1;
}
