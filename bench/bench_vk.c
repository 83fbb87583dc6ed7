/* Vulkan op timings from GPU timestamps: GEMV/GEMM at model sizes (f32/f16/bf16 and the quantized
 * formats, fused, plus the unfused dequantize-then-f32 path), attention at several context lengths
 * (f32 and qins8 V cache), norms and the codec. Prints a table (device ns per call, GB/s or
 * GFLOP/s); never asserts. Usage: qins-bench-vk [backend] [scale] [all|quant [format]|gemm]
 * (backend default vk:0; scale 1 = 7B-like sizes, pass 0.25 on lavapipe; `quant`: only the
 * quantized part, optionally one format such as qins8, without attention; `gemm`: the prefill
 * GEMM M=512 K=4096 N=11008 (times scale) in every weight format, TFLOP/s beside f32, and the
 * unfused path; `vk:0 0.125 gemm` is the short run, well under a minute on lavapipe). GB/s for a
 * GEMV counts the bytes the weight occupies in its format (codes and scales). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"

static qins_backend *be;

static void make(qins_tensor *t, const char *name, qins_dtype dt, int nd, const int64_t *shape) {
  if (qins_tensor_init(t, name, dt, nd, shape) || qins_tensor_alloc(be, t)) {
    fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg());
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
  if (fn(user)) { fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg()); exit(1); }
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

/* A quantized weight [n,k] with plausible codes and scales (alpha/step 1; qins-f32 z = 0.5). */
static void make_q(qins_tensor *w, qins_tensor *s, qins_dtype fmt, int64_t n, int64_t k) {
  int64_t ws[2] = {n, k}, ns = qins_format_scale_count(fmt, n, k);
  if (qins_tensor_init(w, "wq", fmt, 2, ws) || qins_tensor_init(s, "wq.scale", QINS_DT_F32, 1, &ns)) exit(1);
  w->scale = s;
  if (qins_tensor_alloc(be, w)) {
    fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg());
    exit(1);
  }
  float *sc = malloc((size_t)ns * sizeof *sc);
  for (int64_t i = 0; i < ns; i++) sc[i] = 1.0f;
  qins_tensor_write(s, sc);
  free(sc);
  size_t nb = qins_tensor_nbytes(w);
  unsigned char *h = malloc(nb);
  if (fmt == QINS_DT_QINS_F32) {
    for (size_t i = 0; i < nb / 4; i++) ((float *)h)[i] = (i & 1) ? 0.5f : -0.5f;
  } else {
    for (size_t i = 0; i < nb; i++) h[i] = (unsigned char)(i * 2654435761u >> 24);
  }
  qins_tensor_write(w, h);
  free(h);
}

typedef struct { qins_tensor *x, *w, *wd, *y; } uq_args;
static int run_unfused(void *u) {
  uq_args *a = u;
  int rc = qins_op_dequantize(be, a->w, a->wd);
  return rc ? rc : qins_op_matmul(be, a->x, a->wd, NULL, a->y);
}

static void bench_quant(double scale, const char *only) {
  int64_t K = (int64_t)(4096 * scale), N = (int64_t)(11008 * scale);
  const qins_dtype fmts[5] = {QINS_DT_QINS_F32, QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW, QINS_DT_INT8_B32};
  for (int f = 0; f < 5; f++) {
    if (only && strcmp(only, qins_dtype_name(fmts[f])) != 0) continue;
    qins_tensor w, s, wd;
    make_q(&w, &s, fmts[f], N, K);
    double wbytes = (double)qins_tensor_nbytes(&w) + (double)qins_tensor_nbytes(&s);
    int64_t ms[3] = {1, 8, 512};
    for (int mi = 0; mi < 3; mi++) {
      int64_t m = (int64_t)(ms[mi] * (mi == 2 ? scale : 1.0));
      if (m < 1) m = 1;
      qins_tensor x, y;
      int64_t xs[2] = {m, K}, ys[2] = {m, N};
      make(&x, "x", QINS_DT_F32, 2, xs);
      make(&y, "y", QINS_DT_F32, 2, ys);
      mm_args a = {&x, &w, &y};
      double ns = timed(QINS_OP_MATMUL, run_mm, &a, m > 8 ? 3 : 10);
      char what[80];
      snprintf(what, sizeof what, "matmul %s M=%lld K=%lld N=%lld", qins_dtype_name(fmts[f]), (long long)m, (long long)K,
               (long long)N);
      if (m <= 8)
        printf("%-40s %12.1f %9.1f GB/s\n", what, ns / 1e3, wbytes / ns);
      else
        printf("%-40s %12.1f %6.1f GFLOP/s\n", what, ns / 1e3, 2.0 * (double)(m * K * N) / ns);
      if (m == 1) {
        /* the unfused path for comparison: dequantize to an f32 weight, then the f32 GEMV */
        int64_t ws[2] = {N, K};
        make(&wd, "w_deq", QINS_DT_F32, 2, ws);
        uq_args u = {&x, &w, &wd, &y};
        if (run_unfused(&u)) { fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg()); exit(1); }
        qins_backend_sync(be);
        uint64_t d0 = be->stats[QINS_OP_DEQUANTIZE].ns, m0 = be->stats[QINS_OP_MATMUL].ns;
        for (int i = 0; i < 5; i++) run_unfused(&u);
        qins_backend_sync(be);
        double uns = (double)(be->stats[QINS_OP_DEQUANTIZE].ns - d0 + be->stats[QINS_OP_MATMUL].ns - m0) / 5;
        snprintf(what, sizeof what, "  unfused (dequantize + f32) M=1");
        printf("%-40s %12.1f %9.1f GB/s\n", what, uns / 1e3, wbytes / uns);
        qins_tensor_free(&wd);
      }
      qins_tensor_free(&x); qins_tensor_free(&y);
    }
    qins_tensor_free(&w); /* and its scale */
  }
  int64_t ctxs[3] = {512, 2048, 8192};
  for (int ci = 0; ci < 3 && !only; ci++) {
    int64_t t = (int64_t)(ctxs[ci] * scale), hq = 32, hkv = 8, dh = 128, nal;
    if (t < 2) t = 2;
    nal = t * hkv;
    qins_tensor q, k, v, va, o;
    int64_t qs[3] = {1, hq, dh}, cs[3] = {t, hkv, dh};
    make(&q, "q", QINS_DT_F32, 3, qs);
    make(&k, "k", QINS_DT_F32, 3, cs);
    make(&o, "o", QINS_DT_F32, 3, qs);
    if (qins_tensor_init(&v, "v8", QINS_DT_QINS8, 3, cs) || qins_tensor_init(&va, "v8.alpha", QINS_DT_F32, 1, &nal)) exit(1);
    v.scale = &va;
    if (qins_tensor_alloc(be, &v)) { fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg()); exit(1); }
    float *al = malloc((size_t)nal * sizeof *al);
    for (int64_t i = 0; i < nal; i++) al[i] = 1.0f;
    qins_tensor_write(&va, al);
    free(al);
    at_args a = {&q, &k, &v, &o, t - 1};
    double ns = timed(QINS_OP_ATTENTION, run_at, &a, 5);
    char what[64];
    snprintf(what, sizeof what, "attention decode qins8-V T=%lld", (long long)t);
    printf("%-40s %12.1f %9.1f GB/s\n", what, ns / 1e3,
           ((double)qins_tensor_nbytes(&k) + (double)qins_tensor_nbytes(&v) + 4.0 * (double)nal) / ns);
    qins_tensor_free(&q); qins_tensor_free(&k); qins_tensor_free(&v); qins_tensor_free(&o);
  }
}

/* The prefill GEMM in every weight format: TFLOP/s and the ratio to f32, fused and unfused. */
static void bench_gemm(double scale) {
  int64_t K = (int64_t)(4096 * scale), N = (int64_t)(11008 * scale), M = (int64_t)(512 * scale);
  if (M < 9) M = 9; /* M <= 8 takes the GEMV */
  const qins_dtype fmts[8] = {QINS_DT_F32,  QINS_DT_F16,  QINS_DT_BF16,     QINS_DT_QINS_F32,
                              QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW, QINS_DT_INT8_B32};
  int reps = scale >= 0.5 ? 5 : 3;
  printf("GEMM M=%lld K=%lld N=%lld (%s tiles), best of %d calls after a warm-up\n", (long long)M, (long long)K,
         (long long)N, M >= 128 && N >= 128 ? "128x128" : "64x64", reps);
  printf("%-14s %-8s %12s %10s %8s\n", "weight", "path", "us/call", "TFLOP/s", "vs f32");
  qins_tensor x, y;
  int64_t xs[2] = {M, K}, ys[2] = {M, N};
  make(&x, "x", QINS_DT_F32, 2, xs);
  make(&y, "y", QINS_DT_F32, 2, ys);
  double flop = 2.0 * (double)M * (double)K * (double)N, f32_ns = 0;
  for (int f = 0; f < 8; f++) {
    qins_tensor w, s;
    int quant = qins_dtype_is_quantized(fmts[f]);
    if (quant) {
      make_q(&w, &s, fmts[f], N, K);
    } else {
      int64_t ws[2] = {N, K};
      make(&w, "w", fmts[f], 2, ws);
    }
    for (int path = 0; path < (quant ? 2 : 1); path++) {
      qins_backend_set_qmatmul_path(be, path ? QINS_QMATMUL_UNFUSED : QINS_QMATMUL_FUSED);
      mm_args a = {&x, &w, &y};
      if (run_mm(&a)) { fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg()); exit(1); }
      qins_backend_sync(be);
      double best = 0;
      for (int r = 0; r < reps; r++) {
        uint64_t n0 = be->stats[QINS_OP_MATMUL].ns + be->stats[QINS_OP_DEQUANTIZE].ns;
        run_mm(&a);
        qins_backend_sync(be);
        double ns = (double)(be->stats[QINS_OP_MATMUL].ns + be->stats[QINS_OP_DEQUANTIZE].ns - n0);
        if (r == 0 || ns < best) best = ns;
      }
      if (fmts[f] == QINS_DT_F32) f32_ns = best;
      printf("%-14s %-8s %12.1f %10.4f %7.2fx\n", qins_dtype_name(fmts[f]), !quant ? "-" : path ? "unfused" : "fused",
             best / 1e3, best > 0 ? flop / best / 1e3 : 0.0, best > 0 ? f32_ns / best : 0.0);
    }
    qins_backend_set_qmatmul_path(be, QINS_QMATMUL_FUSED);
    qins_tensor_free(&w); /* and its scale */
  }
  qins_tensor_free(&x);
  qins_tensor_free(&y);
}

int main(int argc, char **argv) {
  const char *spec = argc > 1 ? argv[1] : "vk:0";
  double scale = argc > 2 ? atof(argv[2]) : 1.0;
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (qins_backend_create(spec, &be)) {
    fprintf(stderr, "qins-bench-vk: %s\n", qins_error_msg());
    return 1;
  }
  printf("backend %s (%s), scale %g; times are device ns per call from timestamps\n", be->name, be->device_name, scale);
  printf("%-40s %12s %12s\n", "op", "us/call", "rate");
  if (argc > 3 && strcmp(argv[3], "gemm") == 0) {
    bench_gemm(scale);
    qins_backend_destroy(be);
    return 0;
  }
  if (argc > 3 && strcmp(argv[3], "quant") == 0) {
    bench_quant(scale, argc > 4 ? argv[4] : NULL);
    qins_backend_destroy(be);
    return 0;
  }
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
  bench_quant(scale, NULL);
  qins_backend_destroy(be);
  return 0;
}
