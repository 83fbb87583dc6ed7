/* Vulkan op timings from GPU timestamps: GEMV/GEMM at model sizes, attention at several context
 * lengths, norms and the codec. Prints a table (device ns per call, GB/s or GFLOP/s); never
 * asserts. Usage: bench_vk [backend] [scale]   (backend default vk:0; scale 1 = 7B-like sizes,
 * pass 0.25 on lavapipe). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"

static qins_backend *be;

static void make(qins_tensor *t, const char *name, qins_dtype dt, int nd, const int64_t *shape) {
  if (qins_tensor_init(t, name, dt, nd, shape) || qins_tensor_alloc(be, t)) {
    fprintf(stderr, "bench_vk: %s\n", qins_error_msg());
    exit(1);
  }
  size_t n = qins_tensor_nbytes(t);
  unsigned char *h = malloc(n);
  for (size_t i = 0; i < n; i++) h[i] = (unsigned char)(i * 2654435761u >> 24) & 0x3f; /* small finite values */
  qins_tensor_write(t, h);
  free(h);
}

/* Runs fn reps times after a warm-up; returns device ns per call of `kind`. */
typedef int (*run_fn)(void *);
static double timed(qins_op_kind kind, run_fn fn, void *user, int reps) {
  if (fn(user)) { fprintf(stderr, "bench_vk: %s\n", qins_error_msg()); exit(1); }
  qins_backend_sync(be);
  uint64_t ns0 = be->stats[kind].ns, c0 = be->stats[kind].calls;
  for (int i = 0; i < reps; i++) fn(user);
  qins_backend_sync(be);
  uint64_t calls = be->stats[kind].calls - c0;
  return calls ? (double)(be->stats[kind].ns - ns0) / (double)calls : 0;
}

typedef struct { qins_tensor *x, *w, *y; } mm_args;
static int run_mm(void *u) { mm_args *a = u; return qins_op_matmul(be, a->x, a->w, NULL, a->y); }
typedef struct { qins_tensor *q, *k, *v, *o; int64_t pos0; } at_args;
static int run_at(void *u) { at_args *a = u; return qins_op_attention(be, a->q, a->k, a->v, a->pos0, 0.088f, a->o); }
typedef struct { qins_tensor *x, *w, *y; } nm_args;
static int run_rms(void *u) { nm_args *a = u; return qins_op_rmsnorm(be, a->x, a->w, 1e-5f, a->y); }
typedef struct { qins_tensor *x, *a, *q; } cd_args;
static int run_cal(void *u) { cd_args *c = u; qins_alpha_spec s = {QINS_ALPHA_MSE, 0}; return qins_op_calibrate(be, c->x, QINS_DT_QINS8, s, c->a); }
static int run_quant(void *u) { cd_args *c = u; return qins_op_quantize(be, c->x, c->q); }

int main(int argc, char **argv) {
  const char *spec = argc > 1 ? argv[1] : "vk:0";
  double scale = argc > 2 ? atof(argv[2]) : 1.0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (qins_backend_create(spec, &be)) {
    fprintf(stderr, "bench_vk: %s\n", qins_error_msg());
    return 1;
  }
  printf("backend %s (%s), scale %g; times are device ns per call from timestamps\n", be->name, be->device_name, scale);
  printf("%-40s %12s %12s\n", "op", "us/call", "rate");
  int64_t K = (int64_t)(4096 * scale), N = (int64_t)(11008 * scale);
  const qins_dtype dts[3] = {QINS_DT_F32, QINS_DT_F16, QINS_DT_BF16};
  for (int d = 0; d < 3; d++) {
    int64_t ms[3] = {1, 8, 512};
    for (int mi = 0; mi < 3; mi++) {
      int64_t m = (int64_t)(ms[mi] * (mi == 2 ? scale : 1.0));
      if (m < 1) m = 1;
      qins_tensor x, w, y;
      int64_t xs[2] = {m, K}, ws[2] = {N, K}, ys[2] = {m, N};
      make(&x, "x", QINS_DT_F32, 2, xs);
      make(&w, "w", dts[d], 2, ws);
      make(&y, "y", QINS_DT_F32, 2, ys);
      mm_args a = {&x, &w, &y};
      double ns = timed(QINS_OP_MATMUL, run_mm, &a, m > 8 ? 3 : 10);
      char what[64];
      snprintf(what, sizeof what, "matmul %s M=%lld K=%lld N=%lld", qins_dtype_name(dts[d]), (long long)m, (long long)K,
               (long long)N);
      if (m <= 8)
        printf("%-40s %12.1f %9.1f GB/s\n", what, ns / 1e3, (double)qins_tensor_nbytes(&w) / ns);
      else
        printf("%-40s %12.1f %6.1f GFLOP/s\n", what, ns / 1e3, 2.0 * (double)(m * K * N) / ns);
      qins_tensor_free(&x); qins_tensor_free(&w); qins_tensor_free(&y);
    }
  }
  int64_t ctxs[3] = {512, 2048, 8192};
  for (int ci = 0; ci < 3; ci++) {
    int64_t t = (int64_t)(ctxs[ci] * scale), hq = 32, hkv = 8, dh = 128;
    if (t < 2) t = 2;
    qins_tensor q, k, v, o;
    int64_t qs[3] = {1, hq, dh}, cs[3] = {t, hkv, dh};
    make(&q, "q", QINS_DT_F32, 3, qs);
    make(&k, "k", QINS_DT_F32, 3, cs);
    make(&v, "v", QINS_DT_F32, 3, cs);
    make(&o, "o", QINS_DT_F32, 3, qs);
    at_args a = {&q, &k, &v, &o, t - 1};
    double ns = timed(QINS_OP_ATTENTION, run_at, &a, 5);
    char what[64];
    snprintf(what, sizeof what, "attention decode T=%lld Hq=32 Hkv=8 D=128", (long long)t);
    printf("%-40s %12.1f %9.1f GB/s\n", what, ns / 1e3, 2.0 * (double)qins_tensor_nbytes(&k) / ns);
    qins_tensor_free(&q); qins_tensor_free(&k); qins_tensor_free(&v); qins_tensor_free(&o);
  }
  {
    int64_t rows = (int64_t)(512 * scale) + 1, xs[2] = {rows, 4096};
    qins_tensor x, w, y, a, q, s;
    make(&x, "x", QINS_DT_F32, 2, xs);
    make(&w, "w", QINS_DT_F32, 1, &xs[1]);
    make(&y, "y", QINS_DT_F32, 2, xs);
    nm_args n = {&x, &w, &y};
    double ns = timed(QINS_OP_RMSNORM, run_rms, &n, 5);
    printf("%-40s %12.1f %9.1f GB/s\n", "rmsnorm [rows,4096]", ns / 1e3, 2.0 * (double)qins_tensor_nbytes(&x) / ns);
    make(&a, "alpha", QINS_DT_F32, 1, xs);
    qins_tensor_init(&q, "q", QINS_DT_QINS8, 2, xs);
    qins_tensor_init(&s, "q.alpha", QINS_DT_F32, 1, xs);
    q.scale = &s;
    qins_tensor_alloc(be, &q);
    cd_args c = {&x, &s, &q};
    ns = timed(QINS_OP_CALIBRATE, run_cal, &c, 2);
    printf("%-40s %12.1f %9.1f GB/s\n", "calibrate mse qins8 [rows,4096]", ns / 1e3, (double)qins_tensor_nbytes(&x) / ns);
    ns = timed(QINS_OP_QUANTIZE, run_quant, &c, 5);
    printf("%-40s %12.1f %9.1f GB/s\n", "quantize qins8 [rows,4096]", ns / 1e3, (double)qins_tensor_nbytes(&x) / ns);
    qins_tensor_free(&x); qins_tensor_free(&w); qins_tensor_free(&y); qins_tensor_free(&a); qins_tensor_free(&q);
  }
  qins_backend_destroy(be);
  return 0;
}
