/* qins-bench-qmatmul: quantized matmul on the cpu backend, fused vs unfused, against f32/f16/bf16,
 * on the matrix shapes of a 110M Llama; then one decode step (M=1) through all the weights of such
 * a model in each format, the number behind "qins8 decode vs f32 decode". Prints tables and
 * optionally writes JSON. Never asserts on time: it measures and reports. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/cpu/cpu_qkern.h"
#include "core/error.h"
#include "core/qins_kv.h"
#include "bench/bench_util.h"


static void usage(FILE *f) {
  fprintf(f,
          "usage: qins-bench-qmatmul [--quick] [--json FILE] [--threads T] [--min-time S] [--no-model|--model-only]\n"
          "  Times y[M,N] = x[M,K] . W^T on the cpu backend for M=1 (GEMV, decode) and M=64 (GEMM, prefill)\n"
          "  on the 110M Llama shapes (N x K: 768x768, 2048x768, 768x2048, 32000x768) with W in f32, f16,\n"
          "  bf16, qins8, qins6, qins-f32, int8-row, int8-block32; quantized formats fused (each decode\n"
          "  variant for qins8/qins6 GEMV) and unfused (dequantize, then f32 matmul). Then one decode step\n"
          "  through a whole 110M Llama (12 layers + lm_head) per format.\n"
          "  --quick      tiny shapes, one timed run each (a smoke test, not a measurement)\n"
          "  --json FILE  also write the results as JSON\n"
          "  --threads T  cpu threads (default: QINS_THREADS or all cores)\n"
          "  --min-time S time each case for at least S seconds (default 0.15)\n"
          "  --no-model   skip the whole-model decode step\n"
          "  --model-only only the whole-model decode step\n"
          "  --model NAME only model configurations whose name contains NAME (and f32, the baseline)\n");
}


static uint32_t g_rng = 12345;
static float rnd(void) { return (float)((g_rng = g_rng * 1664525u + 1013904223u) >> 9) * 0x1p-23f - 0.5f; }

/* A weight of dtype dt from f32 values src [n,k]: a cast for f16/bf16; calibrate + quantize for the
 * quantized formats. Alpha uses `absmax` here: the kernel's speed does not depend on alpha, and mse
 * calibration of a 32000x768 matrix would dominate the run. */
static int make_weight(qins_backend *be, qins_dtype dt, const float *src, int64_t n, int64_t k, qins_tensor *w) {
  int64_t shape[2] = {n, k};
  qins_tensor f = {0};
  int rc = qins_tensor_init(&f, "w_src", QINS_DT_F32, 2, shape);
  if (!rc) rc = qins_tensor_alloc(be, &f);
  if (!rc) rc = qins_tensor_write(&f, src);
  if (!rc) rc = qins_tensor_init(w, "w", dt, 2, shape);
  if (rc) goto done;
  if (qins_dtype_is_quantized(dt)) {
    int64_t nsc = qins_format_scale_count(dt, n, k);
    w->scale = calloc(1, sizeof *w->scale);
    rc = w->scale ? qins_tensor_init(w->scale, "w_scale", QINS_DT_F32, 1, &nsc) : QINS_ENOMEM;
  }
  if (!rc) rc = qins_tensor_alloc(be, w);
  if (rc) goto done;
  if (dt == QINS_DT_F32) rc = qins_op_copy(be, &f, w);
  else if (!qins_dtype_is_quantized(dt)) rc = qins_op_cast(be, &f, w);
  else {
    if (qins_dtype_is_qins(dt)) rc = qins_op_calibrate(be, &f, dt, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0}, w->scale);
    if (!rc) rc = qins_op_quantize(be, &f, w);
  }
done:
  if (f.buf) qins_tensor_free(&f);
  return rc;
}

static void free_weight(qins_tensor *w) {
  qins_tensor *s = w->scale;
  if (w->buf) qins_tensor_free(w); /* frees the scale's buffer too */
  free(s);
  memset(w, 0, sizeof *w);
}

/* A copy of w in fresh memory (the model step needs every layer at its own address). */
static int clone_weight(qins_backend *be, const qins_tensor *src, qins_tensor *dst) {
  *dst = *src;
  dst->buf = NULL;
  dst->scale = NULL;
  if (src->scale) {
    dst->scale = calloc(1, sizeof *dst->scale);
    if (!dst->scale) return QINS_ENOMEM;
    *dst->scale = *src->scale;
    dst->scale->buf = NULL;
  }
  int rc = qins_tensor_alloc(be, dst);
  if (!rc) rc = qins_op_copy(be, src, dst);
  if (!rc && src->scale) rc = qins_op_copy(be, src->scale, dst->scale);
  return rc;
}

typedef enum { PATH_NATIVE, PATH_FUSED, PATH_UNFUSED } path_kind;
static const char *path_name(path_kind p) { return p == PATH_NATIVE ? "-" : p == PATH_FUSED ? "fused" : "unfused"; }

/* Times repeated matmuls: one warm-up, then runs until min_time (at least 3). best and median ms. */
static int time_matmul(qins_backend *be, const qins_tensor *x, const qins_tensor *w, qins_tensor *y, double min_time,
                       int quick, double *best, double *median) {
  int rc = qins_op_matmul(be, x, w, NULL, y);
  double times[200];
  int runs = 0;
  double start = bench_now_s();
  while (!rc && runs < 200) {
    double t0 = bench_now_s();
    rc = qins_op_matmul(be, x, w, NULL, y);
    times[runs++] = bench_now_s() - t0;
    if (quick || (runs >= 3 && bench_now_s() - start >= min_time)) break;
  }
  if (rc) return rc;
  for (int i = 1; i < runs; i++)
    for (int j = i; j > 0 && times[j] < times[j - 1]; j--) {
      double t = times[j];
      times[j] = times[j - 1];
      times[j - 1] = t;
    }
  *best = times[0] * 1e3;
  *median = times[runs / 2] * 1e3;
  return 0;
}

typedef struct variant {
  qins_dtype dt;
  path_kind path;
  cpu_qdecode decode; /* fused only */
  int gemv_only;      /* decode-variant comparisons: GEMV is where they matter */
} variant;

static const variant k_variants[] = {
    {QINS_DT_F32, PATH_NATIVE, 0, 0},
    {QINS_DT_F16, PATH_NATIVE, 0, 0},
    {QINS_DT_BF16, PATH_NATIVE, 0, 0},
    {QINS_DT_QINS8, PATH_FUSED, CPU_QDECODE_AUTO, 0},
    {QINS_DT_QINS8, PATH_FUSED, CPU_QDECODE_PERM512, 1},
    {QINS_DT_QINS8, PATH_FUSED, CPU_QDECODE_GATHER, 1},
    {QINS_DT_QINS8, PATH_FUSED, CPU_QDECODE_SCALAR, 1},
    {QINS_DT_QINS8, PATH_UNFUSED, 0, 0},
    {QINS_DT_QINS6, PATH_FUSED, CPU_QDECODE_AUTO, 0},
    {QINS_DT_QINS6, PATH_FUSED, CPU_QDECODE_PERM512, 1},
    {QINS_DT_QINS6, PATH_FUSED, CPU_QDECODE_GATHER, 1},
    {QINS_DT_QINS6, PATH_UNFUSED, 0, 0},
    {QINS_DT_QINS_F32, PATH_FUSED, CPU_QDECODE_AUTO, 0},
    {QINS_DT_QINS_F32, PATH_UNFUSED, 0, 0},
    {QINS_DT_INT8_ROW, PATH_FUSED, CPU_QDECODE_AUTO, 0},
    {QINS_DT_INT8_ROW, PATH_UNFUSED, 0, 0},
    {QINS_DT_INT8_B32, PATH_FUSED, CPU_QDECODE_AUTO, 0},
    {QINS_DT_INT8_B32, PATH_UNFUSED, 0, 0},
};
#define N_VARIANTS (int)(sizeof k_variants / sizeof k_variants[0])

static double weight_bytes(const qins_tensor *w) {
  return (double)qins_tensor_nbytes(w) + (w->scale ? 4.0 * (double)qins_tensor_numel(w->scale) : 0.0);
}

/* ---------------------------------------------------------------- whole-model decode step */

typedef struct model_cfg {
  const char *name;
  qins_dtype eligible; /* v, o, gate, up, down */
  qins_dtype floaty;   /* q, k (QINS.md section 5: always float) */
  qins_dtype head;     /* lm_head */
} model_cfg;

/* One token through every matmul of a Llama: per layer wq, wk, wv, wo [D,D], w1, w3 [H,D], w2 [D,H];
 * then the lm_head [V,D]. Each layer has its own copy of the weights, so (unlike the per-shape table)
 * the ~100-440 MB of weights stream from memory as they do in real decoding. */
enum { WQ, WK, WV, WO, W1, W3, W2, NW };
typedef struct model_inst {
  int layers;
  qins_tensor *ws; /* [layers * NW] */
  qins_tensor head, xd, xh, yd, yh, yv;
  double mb, best_ms;
} model_inst;

static void model_free(model_inst *mi) {
  qins_tensor *acts[] = {&mi->xd, &mi->xh, &mi->yd, &mi->yh, &mi->yv};
  for (int i = 0; i < 5; i++)
    if (acts[i]->buf) qins_tensor_free(acts[i]);
  for (int i = 0; mi->ws && i < mi->layers * NW; i++) free_weight(&mi->ws[i]);
  free_weight(&mi->head);
  free(mi->ws);
  memset(mi, 0, sizeof *mi);
}

static int model_build(qins_backend *be, const model_cfg *cfg, int layers, int64_t dim, int64_t hid, int64_t vocab,
                       model_inst *mi) {
  const int64_t shp[NW][2] = {{dim, dim}, {dim, dim}, {dim, dim}, {dim, dim}, {hid, dim}, {hid, dim}, {dim, hid}};
  qins_tensor proto[NW];
  memset(proto, 0, sizeof proto);
  memset(mi, 0, sizeof *mi);
  mi->layers = layers;
  mi->best_ms = 1e30;
  mi->ws = calloc((size_t)layers * NW, sizeof *mi->ws);
  float *src = malloc((size_t)(vocab > hid ? vocab : hid) * (size_t)dim * sizeof(float));
  int rc = mi->ws && src ? 0 : QINS_ENOMEM;
  double bytes = 0;
  for (int i = 0; !rc && i < NW; i++) {
    for (int64_t e = 0; e < shp[i][0] * shp[i][1]; e++) src[e] = rnd() * 0.04f;
    rc = make_weight(be, i == WQ || i == WK ? cfg->floaty : cfg->eligible, src, shp[i][0], shp[i][1], &proto[i]);
  }
  for (int l = 0; !rc && l < layers; l++)
    for (int i = 0; !rc && i < NW; i++) {
      rc = clone_weight(be, &proto[i], &mi->ws[l * NW + i]);
      bytes += weight_bytes(&mi->ws[l * NW + i]);
    }
  if (!rc) {
    for (int64_t e = 0; e < vocab * dim; e++) src[e] = rnd() * 0.04f;
    rc = make_weight(be, cfg->head, src, vocab, dim, &mi->head);
    bytes += weight_bytes(&mi->head);
  }
  if (!rc) rc = qins_tensor_init(&mi->xd, "x", QINS_DT_F32, 2, (int64_t[]){1, dim});
  if (!rc) rc = qins_tensor_init(&mi->xh, "h", QINS_DT_F32, 2, (int64_t[]){1, hid});
  if (!rc) rc = qins_tensor_init(&mi->yd, "yd", QINS_DT_F32, 2, (int64_t[]){1, dim});
  if (!rc) rc = qins_tensor_init(&mi->yh, "yh", QINS_DT_F32, 2, (int64_t[]){1, hid});
  if (!rc) rc = qins_tensor_init(&mi->yv, "logits", QINS_DT_F32, 2, (int64_t[]){1, vocab});
  qins_tensor *acts[] = {&mi->xd, &mi->xh, &mi->yd, &mi->yh, &mi->yv};
  for (int i = 0; !rc && i < 5; i++) rc = qins_tensor_alloc(be, acts[i]);
  if (!rc) {
    for (int64_t e = 0; e < hid; e++) src[e] = rnd();
    rc = qins_tensor_write(&mi->xd, src);
    if (!rc) rc = qins_tensor_write(&mi->xh, src);
  }
  for (int i = 0; i < NW; i++) free_weight(&proto[i]);
  free(src);
  mi->mb = bytes / 1e6;
  if (rc) model_free(mi);
  return rc;
}

/* steps timed decode steps (after one warm-up); keeps the best in mi->best_ms. */
static int model_run(qins_backend *be, model_inst *mi, int steps) {
  int rc = 0;
  for (int s = 0; !rc && s <= steps; s++) {
    double t0 = bench_now_s();
    for (int l = 0; !rc && l < mi->layers; l++)
      for (int i = 0; !rc && i < NW; i++)
        rc = qins_op_matmul(be, i == W2 ? &mi->xh : &mi->xd, &mi->ws[l * NW + i], NULL,
                            i == W1 || i == W3 ? &mi->yh : &mi->yd);
    if (!rc) rc = qins_op_matmul(be, &mi->xd, &mi->head, NULL, &mi->yv);
    double t = (bench_now_s() - t0) * 1e3;
    if (s > 0 && t < mi->best_ms) mi->best_ms = t; /* step 0 is the warm-up */
  }
  return rc;
}

/* ---------------------------------------------------------------- qins8 V cache (plan step B5) */

/* One decode-step attention (M=1 query at position t-1) over a context of t tokens, heads h, head
 * dim d: V as f32, V as qins8 read by the fused kernel, and "decode then attend" (dequantize the
 * whole V cache to f32, then the f32 kernel), plus the cost of appending one token's V rows. */
static int bench_vcache(qins_backend *be, int64_t t, int64_t h, int64_t d, int quick, json_t *jv) {
  int64_t shape[3] = {t, h, d}, nal = t * h, qs[3] = {1, h, d}, one[3] = {1, h, d};
  qins_tensor k = {0}, v = {0}, v8 = {0}, al = {0}, vd = {0}, q = {0}, o = {0}, vnew = {0};
  int rc = 0;
  qins_tensor *plain[] = {&k, &v, &vd};
  for (int i = 0; !rc && i < 3; i++) {
    rc = qins_tensor_init(plain[i], i == 0 ? "k" : "v", QINS_DT_F32, 3, shape);
    if (!rc) rc = qins_tensor_alloc(be, plain[i]);
  }
  if (!rc) rc = qins_tensor_init(&q, "q", QINS_DT_F32, 3, qs);
  if (!rc) rc = qins_tensor_alloc(be, &q);
  if (!rc) rc = qins_tensor_init(&o, "out", QINS_DT_F32, 3, qs);
  if (!rc) rc = qins_tensor_alloc(be, &o);
  if (!rc) rc = qins_tensor_init(&vnew, "v_new", QINS_DT_F32, 3, one);
  if (!rc) rc = qins_tensor_alloc(be, &vnew);
  if (!rc) rc = qins_tensor_init(&al, "v_alpha", QINS_DT_F32, 1, &nal);
  if (!rc) rc = qins_tensor_init(&v8, "v_q8", QINS_DT_QINS8, 3, shape);
  v8.scale = &al;
  if (!rc) rc = qins_tensor_alloc(be, &v8);
  float *buf = malloc((size_t)(t * h * d) * sizeof(float));
  if (!buf) rc = QINS_ENOMEM;
  for (int i = 0; !rc && i < 2; i++) {
    for (int64_t e = 0; e < t * h * d; e++) buf[e] = rnd() * 2.0f;
    rc = qins_tensor_write(i ? &v : &k, buf);
  }
  if (!rc) rc = qins_tensor_write(&q, buf);
  if (!rc) rc = qins_tensor_write(&vnew, buf);
  if (!rc) rc = qins_kv_append_v(be, &v, &v8, 0, (qins_alpha_spec){QINS_ALPHA_ABSMAX, 0});
  free(buf);
  const char *what[5] = {"attend f32 V", "attend qins8 V (fused)", "dequantize V + attend f32", "append 1 token (mse)",
                         "append 1 token (absmax)"};
  double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
  int reps = quick ? 2 : 20;
  for (int r = 0; !rc && r < reps; r++)
    for (int c = 0; !rc && c < 5; c++) {
      double t0 = bench_now_s();
      if (c == 0) rc = qins_op_attention(be, &q, &k, &v, t - 1, 0.125f, &o);
      else if (c == 1) rc = qins_op_attention(be, &q, &k, &v8, t - 1, 0.125f, &o);
      else if (c == 2) {
        rc = qins_op_dequantize(be, &v8, &vd);
        if (!rc) rc = qins_op_attention(be, &q, &k, &vd, t - 1, 0.125f, &o);
      } else {
        qins_alpha_spec sp = {c == 3 ? QINS_ALPHA_MSE : QINS_ALPHA_ABSMAX, 0};
        rc = qins_kv_append_v(be, &vnew, &v8, t - 1, sp);
      }
      double dt = (bench_now_s() - t0) * 1e3;
      if (r > 0 && dt < best[c]) best[c] = dt; /* round 0 warms up */
      if (reps == 1 || (quick && r == 0)) best[c] = dt;
    }
  if (!rc)
    for (int c = 0; c < 5; c++) {
      printf("  T=%-5lld H=%-3lld D=%-4lld %-28s %9.4f ms\n", (long long)t, (long long)h, (long long)d, what[c],
             best[c]);
      json_array_append_new(jv, json_pack("{s:I, s:I, s:I, s:s, s:f}", "context", (json_int_t)t, "heads",
                                          (json_int_t)h, "head_dim", (json_int_t)d, "case", what[c], "ms_best",
                                          best[c]));
    }
  qins_tensor *all[] = {&k, &v, &vd, &q, &o, &vnew, &v8};
  for (int i = 0; i < 7; i++)
    if (all[i]->buf) qins_tensor_free(all[i]);
  return rc;
}

int main(int argc, char **argv) {
  const char *json_path = NULL, *model_filter = NULL;
  int quick = 0, threads = 0, with_model = 1, with_shapes = 1;
  double min_time = 0.15;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) quick = 1;
    else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) json_path = argv[++i];
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc) min_time = atof(argv[++i]);
    else if (strcmp(argv[i], "--no-model") == 0) with_model = 0;
    else if (strcmp(argv[i], "--model-only") == 0) with_shapes = 0;
    else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) model_filter = argv[++i];
    else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "qins-bench-qmatmul: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  qins_backend *be = NULL;
  char spec[32];
  snprintf(spec, sizeof spec, threads > 0 ? "cpu:%d" : "cpu", threads);
  if (qins_backend_create(spec, &be)) {
    fprintf(stderr, "qins-bench-qmatmul: %s\n", qins_error_msg());
    return 1;
  }
  char cpu[256], host[128] = "?";
  bench_cpu_model(cpu, sizeof cpu);
  gethostname(host, sizeof host);
  cpu_qdecode best_decode = cpu_qmatmul_set_decode(CPU_QDECODE_AUTO);
  printf("machine: %s, %ld cores (host %s); backend %s; fused decode (auto): %s\n", cpu,
         sysconf(_SC_NPROCESSORS_ONLN), host, be->device_name, cpu_qdecode_name(best_decode));
  printf("times: best and median of repeated runs (a shared machine: best is the kernel, median the contention)\n\n");

  json_t *root = json_object(), *jres = json_array(), *jmodel = json_array();
  json_object_set_new(root, "machine", json_pack("{s:s, s:I, s:s, s:s}", "cpu", cpu, "cores",
                                                 (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "host", host, "backend",
                                                 be->device_name));
  json_object_set_new(root, "quick", json_boolean(quick));
  json_object_set_new(root, "auto_decode", json_string(cpu_qdecode_name(best_decode)));

  typedef struct { int64_t n, k; } shape;
  static const shape full_shapes[] = {{768, 768}, {2048, 768}, {768, 2048}, {32000, 768}};
  static const shape quick_shapes[] = {{64, 64}, {33, 70}};
  const shape *shapes = quick ? quick_shapes : full_shapes;
  int nshapes = !with_shapes ? 0 : quick ? 2 : 4;
  const int64_t ms[2] = {1, quick ? 5 : 64};
  int failures = 0;
  double gemv_f32_ms[4] = {0}, gemv_q8_ms[4] = {0};

  printf("%-12s %-8s %-8s %3s %6s %5s %9s %9s %8s %8s %9s\n", "dtype", "path", "decode", "M", "N", "K", "best ms",
         "median ms", "W MB", "W GB/s", "GFLOP/s");
  for (int si = 0; si < nshapes; si++) {
    int64_t n = shapes[si].n, k = shapes[si].k;
    float *src = malloc((size_t)(n * k) * sizeof(float));
    for (int64_t e = 0; e < n * k; e++) src[e] = rnd() * 0.04f;
    for (int mi = 0; mi < 2; mi++) {
      int64_t m = ms[mi];
      qins_tensor x = {0}, y = {0};
      int rc = qins_tensor_init(&x, "x", QINS_DT_F32, 2, (int64_t[]){m, k});
      if (!rc) rc = qins_tensor_alloc(be, &x);
      if (!rc) rc = qins_tensor_init(&y, "y", QINS_DT_F32, 2, (int64_t[]){m, n});
      if (!rc) rc = qins_tensor_alloc(be, &y);
      if (!rc) {
        float *xs = malloc((size_t)(m * k) * sizeof(float));
        for (int64_t e = 0; e < m * k; e++) xs[e] = rnd();
        rc = qins_tensor_write(&x, xs);
        free(xs);
      }
      qins_tensor w = {0};
      qins_dtype have = QINS_DT_COUNT;
      for (int vi = 0; !rc && vi < N_VARIANTS; vi++) {
        const variant *v = &k_variants[vi];
        if (v->gemv_only && m != 1) continue;
        if (have != v->dt) {
          free_weight(&w);
          rc = make_weight(be, v->dt, src, n, k, &w);
          have = v->dt;
          if (rc) break;
        }
        cpu_qdecode used = cpu_qmatmul_set_decode(v->decode);
        qins_backend_set_qmatmul_path(be, v->path == PATH_UNFUSED ? QINS_QMATMUL_UNFUSED : QINS_QMATMUL_FUSED);
        double best = 0, med = 0;
        rc = time_matmul(be, &x, &w, &y, min_time, quick, &best, &med);
        qins_backend_set_qmatmul_path(be, QINS_QMATMUL_FUSED);
        cpu_qmatmul_set_decode(CPU_QDECODE_AUTO);
        if (rc) break;
        double wb = weight_bytes(&w), gbps = wb / (best * 1e-3) / 1e9;
        double gflops = 2.0 * (double)m * (double)n * (double)k / (best * 1e-3) / 1e9;
        /* only qins8/qins6 have a table; the other formats' fused path is AVX2 unless forced scalar */
        int table = v->dt == QINS_DT_QINS8 || v->dt == QINS_DT_QINS6;
        /* the GEMM tile decode of vbmi mode is perm512 (the byte-plane order suits only the GEMV) */
        cpu_qdecode shown = m > 1 && used == CPU_QDECODE_VBMI ? CPU_QDECODE_PERM512 : used;
        const char *dec = v->path != PATH_FUSED ? "-"
                          : table || used == CPU_QDECODE_SCALAR ? cpu_qdecode_name(shown)
                                                                : "avx2";
        printf("%-12s %-8s %-8s %3lld %6lld %5lld %9.4f %9.4f %8.2f %8.1f %9.1f\n", qins_dtype_name(v->dt),
               path_name(v->path), dec, (long long)m, (long long)n, (long long)k, best, med, wb / 1e6, gbps, gflops);
        fflush(stdout);
        if (m == 1 && v->dt == QINS_DT_F32) gemv_f32_ms[si] = best;
        if (m == 1 && v->dt == QINS_DT_QINS8 && v->path == PATH_FUSED && v->decode == CPU_QDECODE_AUTO)
          gemv_q8_ms[si] = best;
        json_array_append_new(jres, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f}", "dtype",
                                              qins_dtype_name(v->dt), "path", path_name(v->path), "decode", dec, "m",
                                              (json_int_t)m, "n", (json_int_t)n, "k", (json_int_t)k, "ms_best", best,
                                              "ms_median", med, "weight_mb", wb / 1e6, "weight_gbps", gbps,
                                              "gflops", gflops));
      }
      if (rc) {
        printf("shape %lldx%lld M=%lld failed: %s\n", (long long)n, (long long)k, (long long)m, qins_error_msg());
        failures++;
      }
      free_weight(&w);
      if (x.buf) qins_tensor_free(&x);
      if (y.buf) qins_tensor_free(&y);
    }
    free(src);
    printf("\n");
  }
  json_t *jratio = json_array();
  printf("GEMV speed-up qins8 fused / f32 (best times):");
  for (int si = 0; si < nshapes; si++) {
    double r = gemv_q8_ms[si] > 0 ? gemv_f32_ms[si] / gemv_q8_ms[si] : 0;
    printf("  %lldx%lld %.2fx", (long long)shapes[si].n, (long long)shapes[si].k, r);
    json_array_append_new(jratio, json_pack("{s:I, s:I, s:f}", "n", (json_int_t)shapes[si].n, "k",
                                            (json_int_t)shapes[si].k, "speedup", r));
  }
  printf("\n\n");
  json_object_set_new(root, "gemv_speedup_qins8_over_f32", jratio);

  if (with_model) {
    static const model_cfg cfgs[] = {
        {"f32", QINS_DT_F32, QINS_DT_F32, QINS_DT_F32},
        {"bf16", QINS_DT_BF16, QINS_DT_BF16, QINS_DT_BF16},
        {"int8-row (all)", QINS_DT_INT8_ROW, QINS_DT_INT8_ROW, QINS_DT_INT8_ROW},
        {"qins8 (all)", QINS_DT_QINS8, QINS_DT_QINS8, QINS_DT_QINS8},
        {"qins6 (all)", QINS_DT_QINS6, QINS_DT_QINS6, QINS_DT_QINS6},
        {"qins8 (QINS.md 5: q,k,head f32)", QINS_DT_QINS8, QINS_DT_F32, QINS_DT_F32},
        {"qins8 (QINS.md 5: q,k,head bf16)", QINS_DT_QINS8, QINS_DT_BF16, QINS_DT_BF16},
    };
    int layers = quick ? 2 : 12;
    int64_t dim = quick ? 64 : 768, hid = quick ? 160 : 2048, vocab = quick ? 512 : 32000;
    printf("decode step (M=1) through all weights of a Llama: %d layers, dim %lld, hidden %lld, vocab %lld\n", layers,
           (long long)dim, (long long)hid, (long long)vocab);
    printf("%-34s %9s %9s %9s %10s\n", "weights", "MB", "best ms", "tok/s", "vs f32");
    /* every configuration is built first and the rounds interleave them, so a burst of load from
     * other processes on a shared machine hits them all alike; best step over all rounds */
    enum { NCFG = sizeof cfgs / sizeof cfgs[0] };
    model_inst insts[NCFG];
    int built[NCFG] = {0};
    for (int c = 0; c < NCFG; c++) {
      if (c > 0 && model_filter && !strstr(cfgs[c].name, model_filter)) continue;
      if (model_build(be, &cfgs[c], layers, dim, hid, vocab, &insts[c])) {
        printf("%-34s failed: %s\n", cfgs[c].name, qins_error_msg());
        failures++;
        continue;
      }
      built[c] = 1;
    }
    int rounds = quick ? 1 : 4;
    for (int r = 0; r < rounds; r++)
      for (int c = 0; c < NCFG; c++)
        if (built[c] && model_run(be, &insts[c], quick ? 1 : 4)) {
          printf("%-34s failed: %s\n", cfgs[c].name, qins_error_msg());
          failures++;
          model_free(&insts[c]);
          built[c] = 0;
        }
    double f32_ms = built[0] ? insts[0].best_ms : 0;
    for (int c = 0; c < NCFG; c++) {
      if (!built[c]) continue;
      double msb = insts[c].best_ms, mb = insts[c].mb;
      printf("%-34s %9.1f %9.2f %9.1f %9.2fx\n", cfgs[c].name, mb, msb, 1e3 / msb, f32_ms / msb);
      json_array_append_new(jmodel, json_pack("{s:s, s:f, s:f, s:f, s:f}", "weights", cfgs[c].name, "mb", mb,
                                              "ms_best", msb, "tokens_per_s", 1e3 / msb, "speedup_vs_f32",
                                              f32_ms / msb));
      model_free(&insts[c]);
    }
    printf("\n");
  }
  json_t *jv = json_array();
  if (with_shapes) {
    printf("qins8 V cache, one decode step (M=1) of attention over T tokens (K stays f32):\n");
    int64_t ctx[2] = {quick ? 16 : 512, quick ? 40 : 2048};
    for (int c = 0; c < 2; c++)
      if (bench_vcache(be, ctx[c], quick ? 2 : 12, quick ? 8 : 64, quick, jv)) {
        printf("  T=%lld failed: %s\n", (long long)ctx[c], qins_error_msg());
        failures++;
      }
    printf("\n");
  }
  json_object_set_new(root, "matmul", jres);
  json_object_set_new(root, "model_decode_step", jmodel);
  json_object_set_new(root, "vcache_attention", jv);
  qins_backend_destroy(be);
  if (json_path && json_dump_file(root, json_path, JSON_INDENT(2)) != 0) {
    fprintf(stderr, "qins-bench-qmatmul: cannot write %s\n", json_path);
    json_decref(root);
    return 1;
  }
  json_decref(root);
  return failures ? 1 : 0;
}
