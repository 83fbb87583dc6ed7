/* qins-bench-ops: memcpy bandwidth as the yardstick, then matmul GEMV (M=1) and GEMM (M=64)
 * throughput for each backend and weight dtype; prints a table and optionally writes JSON.
 * Never asserts on time: it measures and reports. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/error.h"
#include "bench/bench_util.h"


static double cpu_time_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins-bench-ops [--quick] [--json FILE] [--backends cpu,vk:0,...] [--min-time S]\n"
          "  Measures memcpy bandwidth, then matmul y[M,N] = x[M,K] . w[N,K]^T for M=1 (GEMV) and M=64\n"
          "  (GEMM) with f32, f16 and bf16 weights on every backend (default: all available).\n"
          "  --quick      tiny shapes, one timed run each (a smoke test, not a measurement)\n"
          "  --json FILE  also write the results as JSON\n"
          "  --min-time S time each case for at least S seconds (default 0.3)\n");
}



typedef struct shape { int64_t n, k; } shape;

static int make(qins_backend *be, qins_tensor *t, const char *name, qins_dtype dt, int64_t r, int64_t c,
                const void *data) {
  int rc = qins_tensor_init(t, name, dt, 2, (int64_t[]){r, c});
  if (!rc) rc = qins_tensor_alloc(be, t);
  if (!rc && data) rc = qins_tensor_write(t, data);
  return rc;
}

/* Times one matmul case: median of the timed runs after one warm-up. Returns 0 or an error. */
/* *busy_out: process cpu seconds per wall second over the timed runs (cores kept busy). Well
 * below the thread count on a cpu backend means other processes took the cores: the wall times
 * are then pessimistic. */
static int bench_case(qins_backend *be, qins_dtype dt, int64_t m, int64_t n, int64_t k, double min_time, int quick,
                      double *ms_out, double *busy_out) {
  size_t es = qins_dtype_size(dt);
  unsigned char *wdata = malloc((size_t)(n * k) * es);
  float *xdata = malloc((size_t)(m * k) * 4);
  if (!wdata || !xdata) {
    free(wdata);
    free(xdata);
    return QINS_ENOMEM;
  }
  uint32_t s = 12345;
  for (int64_t i = 0; i < m * k; i++) xdata[i] = (float)((s = s * 1664525u + 1013904223u) >> 9) * 0x1p-23f - 0.5f;
  for (int64_t i = 0; i < n * k; i++) {
    float v = (float)((s = s * 1664525u + 1013904223u) >> 9) * 0x1p-28f - 0.015f;
    if (dt == QINS_DT_F32) memcpy(wdata + i * 4, &v, 4);
    else {
      uint16_t h = dt == QINS_DT_F16 ? qins_f32_to_f16(v) : qins_f32_to_bf16(v);
      memcpy(wdata + i * 2, &h, 2);
    }
  }
  qins_tensor x = {0}, w = {0}, y = {0};
  int rc = make(be, &x, "x", QINS_DT_F32, m, k, xdata);
  if (!rc) rc = make(be, &w, "w", dt, n, k, wdata);
  if (!rc) rc = make(be, &y, "y", QINS_DT_F32, m, n, NULL);
  if (!rc) rc = qins_op_matmul(be, &x, &w, NULL, &y); /* warm-up: caches, pipelines, pages */
  if (!rc) rc = qins_backend_sync(be);
  double times[64];
  int runs = 0;
  double start = bench_now_s(), cpu0 = cpu_time_s();
  while (!rc && runs < 64) {
    double t0 = bench_now_s();
    rc = qins_op_matmul(be, &x, &w, NULL, &y);
    if (!rc) rc = qins_backend_sync(be);
    times[runs++] = bench_now_s() - t0;
    if (quick || (runs >= 3 && bench_now_s() - start >= min_time)) break;
  }
  double wall = bench_now_s() - start, cpu_used = cpu_time_s() - cpu0;
  *busy_out = wall > 0 ? cpu_used / wall : 0;
  if (!rc) {
    /* median */
    for (int i = 1; i < runs; i++)
      for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
        double t = times[j];
        times[j] = times[j - 1];
        times[j - 1] = t;
      }
    *ms_out = times[runs / 2] * 1e3;
  }
  if (y.buf) qins_tensor_free(&y);
  if (w.buf) qins_tensor_free(&w);
  if (x.buf) qins_tensor_free(&x);
  free(wdata);
  free(xdata);
  return rc;
}

int main(int argc, char **argv) {
  const char *json_path = NULL, *backends_arg = NULL;
  int quick = 0;
  double min_time = 0.3;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) quick = 1;
    else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_path = argv[++i];
    else if (strcmp(argv[i], "--backends") == 0 && i + 1 < argc) backends_arg = argv[++i];
    else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc) min_time = atof(argv[++i]);
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "qins-bench-ops: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  char names[16][64];
  int nb = 0;
  if (backends_arg) {
    char *copy = strdup(backends_arg), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && nb < 16; tok = strtok_r(NULL, ",", &save))
      snprintf(names[nb++], 64, "%s", tok);
    free(copy);
  } else {
    nb = qins_backend_list(names, 16);
  }

  static const shape full_shapes[] = {{768, 768}, {2048, 768}, {768, 2048}, {32000, 768}};
  static const shape quick_shapes[] = {{64, 64}, {96, 33}};
  const shape *shapes = quick ? quick_shapes : full_shapes;
  int nshapes = quick ? 2 : 4;
  const int64_t ms[2] = {1, quick ? 4 : 64};
  const qins_dtype dts[3] = {QINS_DT_F32, QINS_DT_F16, QINS_DT_BF16};

  char cpu[256], host[128] = "?";
  bench_cpu_model(cpu, sizeof cpu);
  gethostname(host, sizeof host);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  double bw = bench_memcpy_gbps(quick ? (8u << 20) : (256u << 20), quick ? 2 : 8);
  printf("machine: %s, %ld cores (host %s)\n", cpu, cores, host);
  printf("memcpy: %.1f GB/s (bytes read + written per second, %s buffers)\n", bw, quick ? "8 MiB" : "256 MiB");
  printf("GB/s counts the bytes a perfect kernel moves (weights + x + y once); busy = cores this process\n"
         "kept busy while timing (below the thread count: other processes shared the cores)\n\n");

  json_t *root = json_object(), *jres = json_array(), *jbe = json_array();
  json_object_set_new(root, "machine",
                      json_pack("{s:s, s:I, s:s}", "cpu", cpu, "cores", (json_int_t)cores, "host", host));
  json_object_set_new(root, "memcpy_gbps", json_real(bw));
  json_object_set_new(root, "quick", json_boolean(quick));

  int failures = 0;
  for (int b = 0; b < nb; b++) {
    qins_backend *be = NULL;
    if (qins_backend_create(names[b], &be)) {
      printf("backend %s: unavailable: %s\n\n", names[b], qins_error_msg());
      json_array_append_new(jbe, json_pack("{s:s, s:s}", "name", names[b], "error", qins_error_msg()));
      failures++;
      continue;
    }
    printf("backend %s: %s\n", be->name, be->device_name);
    json_array_append_new(jbe, json_pack("{s:s, s:s}", "name", names[b], "device", be->device_name));
    printf("  %-5s %5s %6s %6s %10s %9s %8s %9s %6s\n", "dtype", "M", "N", "K", "ms", "GFLOP/s", "GB/s", "%memcpy",
           "busy");
    for (int si = 0; si < nshapes; si++)
      for (int mi = 0; mi < 2; mi++)
        for (int di = 0; di < 3; di++) {
          int64_t m = ms[mi], n = shapes[si].n, k = shapes[si].k;
          double msec = 0, busy = 0;
          int rc = bench_case(be, dts[di], m, n, k, min_time, quick, &msec, &busy);
          if (rc) {
            printf("  %-5s %5lld %6lld %6lld  failed: %s\n", qins_dtype_name(dts[di]), (long long)m, (long long)n,
                   (long long)k, qins_error_msg());
            json_array_append_new(jres, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "backend", names[b], "dtype",
                                                  qins_dtype_name(dts[di]), "m", (json_int_t)m, "n", (json_int_t)n,
                                                  "k", (json_int_t)k, "error", qins_error_msg()));
            failures++;
            continue;
          }
          double flops = 2.0 * (double)m * (double)n * (double)k;
          /* bytes a perfect kernel must move: the weights once, x once, y once */
          double bytes = (double)(n * k) * (double)qins_dtype_size(dts[di]) + 4.0 * (double)(m * k + m * n);
          double gflops = flops / (msec * 1e-3) / 1e9, gbps = bytes / (msec * 1e-3) / 1e9;
          printf("  %-5s %5lld %6lld %6lld %10.3f %9.1f %8.1f %8.0f%% %6.2f\n", qins_dtype_name(dts[di]), (long long)m,
                 (long long)n, (long long)k, msec, gflops, gbps, 100.0 * gbps / bw, busy);
          json_array_append_new(jres,
                                json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "backend", names[b],
                                          "device", be->device_name, "dtype", qins_dtype_name(dts[di]), "m",
                                          (json_int_t)m, "n", (json_int_t)n, "k", (json_int_t)k, "ms", msec,
                                          "gflops", gflops, "gbps", gbps, "busy_cores", busy));
          fflush(stdout);
        }
    printf("\n");
    qins_backend_destroy(be);
  }
  json_object_set_new(root, "backends", jbe);
  json_object_set_new(root, "matmul", jres);
  if (json_path && json_dump_file(root, json_path, JSON_INDENT(2)) != 0) {
    fprintf(stderr, "qins-bench-ops: cannot write %s\n", json_path);
    json_decref(root);
    return 1;
  }
  json_decref(root);
  return failures ? 1 : 0;
}
