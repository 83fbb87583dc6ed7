/* qins-bench-codec: throughput of the codec ops (calibrate, encode, decode) per format and backend,
 * and of qins6 pack/unpack, beside a memcpy yardstick. Prints a table; --json FILE writes it too.
 * Never asserted on: numbers depend on the machine and its load. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/qins_codec.h"
#include "bench/bench_util.h"


typedef struct {
  double min_time; /* keep repeating until this much time has been spent */
  int max_reps;
} bench_cfg;

typedef int (*bench_fn)(void *user);

/* Best time of several runs (after one warm-up): the least disturbed by other load. */
static double time_best(const bench_cfg *cfg, bench_fn fn, void *user, int *reps_out) {
  *reps_out = 0;
  if (fn(user)) return NAN;
  double best = INFINITY, spent = 0;
  int reps = 0;
  while (reps < cfg->max_reps && (reps < 2 || spent < cfg->min_time)) {
    double t0 = bench_now_s();
    if (fn(user)) return NAN;
    double dt = bench_now_s() - t0;
    spent += dt;
    if (dt < best) best = dt;
    reps++;
  }
  *reps_out = reps;
  return best;
}

typedef struct {
  qins_backend *be;
  qins_tensor *x, *coded, *y, *alpha;
  qins_dtype fmt;
  qins_alpha_spec spec;
  const uint8_t *codes;
  uint8_t *packed, *unpacked;
  int64_t n;
  void *src, *dst;
  size_t bytes;
} op_ctx;

static int run_calibrate(void *u) {
  op_ctx *c = u;
  int rc = qins_op_calibrate(c->be, c->x, c->fmt, c->spec, c->alpha);
  return rc ? rc : qins_backend_sync(c->be);
}
static int run_quantize(void *u) {
  op_ctx *c = u;
  int rc = qins_op_quantize(c->be, c->x, c->coded);
  return rc ? rc : qins_backend_sync(c->be);
}
static int run_dequantize(void *u) {
  op_ctx *c = u;
  int rc = qins_op_dequantize(c->be, c->coded, c->y);
  return rc ? rc : qins_backend_sync(c->be);
}
static int run_pack(void *u) {
  op_ctx *c = u;
  qins_codec_pack6(c->codes, c->n, c->packed);
  return 0;
}
static int run_unpack(void *u) {
  op_ctx *c = u;
  qins_codec_unpack6(c->packed, c->n, c->unpacked);
  return 0;
}
static int run_memcpy(void *u) {
  op_ctx *c = u;
  memcpy(c->dst, c->src, c->bytes);
  /* keep the copy observable */
  ((volatile char *)c->dst)[c->bytes / 2];
  return 0;
}

typedef struct {
  json_t *rows;
} results;

/* One result line: GB/s counts the f32 side (4 bytes per element) unless stated. */
static void report(results *res, const char *backend, const char *op, const char *format, int64_t elements,
                   double bytes, double seconds, int reps) {
  double gbs = bytes / seconds / 1e9, gel = (double)elements / seconds / 1e9;
  printf("%-8s %-16s %-13s %12lld %10.3f %10.3f %10.3f %5d\n", backend, op, format, (long long)elements, seconds * 1e3,
         gbs, gel, reps);
  json_t *o = json_object();
  json_object_set_new(o, "backend", json_string(backend));
  json_object_set_new(o, "op", json_string(op));
  json_object_set_new(o, "format", json_string(format));
  json_object_set_new(o, "elements", json_integer(elements));
  json_object_set_new(o, "bytes", json_real(bytes));
  json_object_set_new(o, "best_ms", isfinite(seconds) ? json_real(seconds * 1e3) : json_null());
  json_object_set_new(o, "gb_per_s", isfinite(gbs) ? json_real(gbs) : json_null());
  json_object_set_new(o, "gelem_per_s", isfinite(gel) ? json_real(gel) : json_null());
  json_object_set_new(o, "reps", json_integer(reps));
  json_array_append_new(res->rows, o);
}

static int bench_backend(const char *name, int64_t rows, int64_t cols, int64_t mse_rows, const bench_cfg *cfg,
                         results *res) {
  qins_backend *be;
  int rc = qins_backend_create(name, &be);
  if (rc) {
    fprintf(stderr, "qins-bench-codec: backend %s: %s (skipped)\n", name, qins_error_msg());
    return 0;
  }
  printf("# backend %s: %s\n", name, be->device_name);
  int64_t n = rows * cols, shape[2] = {rows, cols};
  float *host = malloc((size_t)n * sizeof(float));
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n; i++) { /* deterministic uniform values of std 0.02 (weight-like scale) */
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    double u = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
    host[i] = (float)(0.02 * (u - 0.5) * 3.4641016);
  }
  qins_tensor x, y;
  qins_tensor_init(&x, "x", QINS_DT_F32, 2, shape);
  qins_tensor_init(&y, "y", QINS_DT_F32, 2, shape);
  if ((rc = qins_tensor_alloc(be, &x)) || (rc = qins_tensor_alloc(be, &y)) || (rc = qins_tensor_write(&x, host))) goto out;

  const qins_dtype fmts[] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW,
                             QINS_DT_INT8_B32, QINS_DT_F16,   QINS_DT_BF16};
  for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
    qins_dtype fmt = fmts[f];
    const char *fname = qins_dtype_name(fmt);
    qins_tensor coded, sc;
    memset(&sc, 0, sizeof sc);
    int64_t nsc = qins_format_scale_count(fmt, rows, cols);
    qins_tensor_init(&coded, "coded", fmt, 2, shape);
    if (nsc) {
      int64_t ssh[1] = {nsc};
      qins_tensor_init(&sc, "scales", QINS_DT_F32, 1, ssh);
      coded.scale = &sc;
    }
    if ((rc = qins_tensor_alloc(be, &coded))) goto out;
    op_ctx c = {.be = be, .x = &x, .coded = &coded, .y = &y, .alpha = &sc, .fmt = fmt};
    int reps;
    double t;
    if (qins_dtype_is_qins(fmt)) {
      c.spec.mode = QINS_ALPHA_ABSMAX;
      t = time_best(cfg, run_calibrate, &c, &reps);
      report(res, name, "calibrate-absmax", fname, n, 4.0 * (double)n, t, reps);
      /* mse evaluates the format ~60 times per row: measured on the first mse_rows rows */
      qins_tensor xs = x, as = sc;
      xs.shape[0] = mse_rows;
      as.shape[0] = mse_rows;
      op_ctx cm = c;
      cm.x = &xs;
      cm.alpha = &as;
      cm.spec.mode = QINS_ALPHA_MSE;
      bench_cfg one = {0, 1};
      t = time_best(&one, run_calibrate, &cm, &reps);
      report(res, name, "calibrate-mse", fname, mse_rows * cols, 4.0 * (double)(mse_rows * cols), t, reps);
      run_calibrate(&c); /* absmax alpha for the encode */
    }
    t = time_best(cfg, run_quantize, &c, &reps);
    report(res, name, "encode", fname, n, 4.0 * (double)n, t, reps);
    t = time_best(cfg, run_dequantize, &c, &reps);
    report(res, name, "decode", fname, n, 4.0 * (double)n, t, reps);
    qins_tensor_free(&coded);
  }
out:
  qins_tensor_free(&x);
  qins_tensor_free(&y);
  free(host);
  if (rc) fprintf(stderr, "qins-bench-codec: backend %s: %s\n", name, qins_error_msg());
  qins_backend_destroy(be);
  return rc;
}

int main(int argc, char **argv) {
  int quick = 0;
  const char *json_path = NULL, *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!strcmp(argv[i], "--backend") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: qins-bench-codec [--quick] [--json FILE] [--backend NAME]\n\n"
             "Times calibrate (absmax, mse), encode and decode for every storage format on every backend\n"
             "(or only NAME), qins6 pack/unpack on the host, and memcpy as a yardstick. GB/s counts the f32\n"
             "side (4 bytes per element; memcpy: bytes copied; pack/unpack: 1 byte per code).\n"
             "Default tensor 4096 x 4096 (--quick: 1024 x 1024); best of several runs.\n");
      return 0;
    } else {
      fprintf(stderr, "qins-bench-codec: unexpected argument '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  int64_t rows = quick ? 1024 : 4096, cols = quick ? 1024 : 4096, mse_rows = quick ? 32 : 128;
  bench_cfg cfg = {quick ? 0.05 : 0.3, quick ? 5 : 20};
  results res = {json_array()};
  printf("%-8s %-16s %-13s %12s %10s %10s %10s %5s\n", "backend", "op", "format", "elements", "best_ms", "GB/s", "Gelem/s",
         "reps");

  /* host yardsticks */
  int64_t n = rows * cols;
  op_ctx h = {.n = n, .bytes = (size_t)n * 4};
  h.src = malloc(h.bytes);
  h.dst = malloc(h.bytes);
  memset(h.src, 1, h.bytes);
  memset(h.dst, 0, h.bytes);
  int reps;
  double t = time_best(&cfg, run_memcpy, &h, &reps);
  report(&res, "host", "memcpy", "f32", n, (double)h.bytes, t, reps);
  uint8_t *codes = malloc((size_t)n);
  for (int64_t i = 0; i < n; i++) codes[i] = (uint8_t)((i * 37) & 63);
  h.codes = codes;
  h.packed = malloc((size_t)((n + 3) / 4 * 3));
  h.unpacked = malloc((size_t)n);
  t = time_best(&cfg, run_pack, &h, &reps);
  report(&res, "host", "pack6", "qins6", n, (double)n, t, reps);
  t = time_best(&cfg, run_unpack, &h, &reps);
  report(&res, "host", "unpack6", "qins6", n, (double)n, t, reps);
  free(h.src); free(h.dst); free(codes); free(h.packed); free(h.unpacked);

  char names[8][64];
  int nb = qins_backend_list(names, 8);
  for (int b = 0; b < nb; b++)
    if (!only || !strcmp(only, names[b])) bench_backend(names[b], rows, cols, mse_rows, &cfg, &res);

  if (json_path) {
    json_t *root = json_object();
    json_object_set_new(root, "bench", json_string("codec"));
    json_object_set_new(root, "rows", json_integer(rows));
    json_object_set_new(root, "cols", json_integer(cols));
    json_object_set_new(root, "quick", json_boolean(quick));
    json_object_set_new(root, "results", res.rows);
    if (json_dump_file(root, json_path, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) {
      fprintf(stderr, "qins-bench-codec: cannot write %s\n", json_path);
      json_decref(root);
      return 1;
    }
    json_decref(root);
  } else {
    json_decref(res.rows);
  }
  return 0;
}
