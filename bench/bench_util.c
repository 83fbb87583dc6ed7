/* Helpers every benchmark shares: a monotonic clock, the cpu's name, and the memcpy yardstick. */
#include "bench/bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bench_cpu_model(char *buf, size_t n) {
  snprintf(buf, n, "unknown cpu");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "model name", 10) == 0) {
      char *p = strchr(line, ':');
      if (p) {
        p += 1 + strspn(p + 1, " \t");
        p[strcspn(p, "\n")] = 0;
        snprintf(buf, n, "%s", p);
      }
      break;
    }
  }
  fclose(f);
}

double bench_memcpy_gbps(size_t bytes, int reps) {
  char *a = malloc(bytes), *b = malloc(bytes);
  if (!a || !b) {
    free(a);
    free(b);
    return 0.0;
  }
  memset(a, 1, bytes);
  memset(b, 2, bytes); /* touch every page before timing */
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = bench_now_s();
    memcpy(r % 2 ? a : b, r % 2 ? b : a, bytes);
    double t = bench_now_s() - t0;
    if (t < best) best = t;
  }
  volatile char sink = a[bytes / 2] + b[bytes / 3]; /* keep the copies observable */
  (void)sink;
  free(a);
  free(b);
  return 2.0 * (double)bytes / best / 1e9;
}
