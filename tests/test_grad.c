/* Backward ops and cross-entropy: every gradient against central finite differences of a
 * double-precision reference forward (written here), on fresh random odd-sized shapes, on every
 * backend. Activation gradients are NaN-poisoned first (the op must overwrite every element);
 * parameter gradients start from random values and must come out as start + gradient, and twice
 * the gradient after a second call (accumulate). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend_grad.h"
#include "core/error.h"
#include "tests/test_util.h"

/* Tolerances (relative L2). The op runs in f32; the finite differences are taken in float64 on
 * float64 forwards (step 1e-5 * (1 + |v|): truncation ~1e-10), so the error is the op's f32 rounding. */
#define TOL_GRAD 1e-4
#define TOL_FWD 1e-5

/* ---------------------------------------------------------------- bookkeeping */

static qins_tensor pool[64];
static int pool_n;
static void *mallocs[128];
static int mallocs_n;

static void *tmalloc(size_t n) {
  void *p = calloc(1, n ? n : 1);
  assert_non_null(p);
  assert_true(mallocs_n < 128);
  mallocs[mallocs_n++] = p;
  return p;
}

static void free_all(void) {
  for (int i = 0; i < pool_n; i++) qins_tensor_free(&pool[i]);
  for (int i = 0; i < mallocs_n; i++) free(mallocs[i]);
  pool_n = mallocs_n = 0;
}

static qins_tensor *mk(qins_backend *be, const char *name, qins_dtype dt, int ndim, int64_t s0, int64_t s1, int64_t s2,
                       const void *data) {
  assert_true(pool_n < 64);
  qins_tensor *t = &pool[pool_n++];
  int64_t shape[3] = {s0, s1, s2};
  test_tensor_make(be, t, name, dt, ndim, shape, data);
  return t;
}

static float *rd(const qins_tensor *t) {
  float *p = tmalloc(qins_tensor_nbytes(t));
  assert_int_equal(qins_tensor_read(t, p), 0);
  return p;
}

static float *rnd(int64_t n, float std) {
  float *p = tmalloc((size_t)n * sizeof(float));
  test_fill_normal(p, n, std);
  return p;
}

static double *to_d(const float *x, int64_t n) {
  double *p = tmalloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) p[i] = x[i];
  return p;
}

static float *to_f(const double *x, int64_t n) {
  float *p = tmalloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) p[i] = (float)x[i];
  return p;
}

static int64_t rnd_dim(int64_t lo, int64_t hi) { return lo + (int64_t)(test_rand_u64() % (uint64_t)(hi - lo + 1)); }

/* An op that a backend does not implement yet is skipped there with a message; cpu must implement all. */
static int unsupported_skip(qins_backend *be, int rc) {
  if (rc == QINS_EUNSUPPORTED && strcmp(be->name, "cpu") != 0) {
    print_message("  skip on %s: %s\n", be->name, qins_error_msg());
    return 1;
  }
  if (rc) fail_msg("%s: %s", be->name, qins_error_msg());
  return 0;
}

/* ---------------------------------------------------------------- finite differences */

typedef void (*fwd_fn)(const void *ctx, double *const *in, double *out);

typedef struct {
  fwd_fn fwd;
  const void *ctx;
  int n_in;
  double *in[6];
  int64_t in_n[6];
  int64_t out_n;
} problem;

static double loss_of(const problem *p, const double *dy, double *out) {
  p->fwd(p->ctx, p->in, out);
  double l = 0.0;
  for (int64_t i = 0; i < p->out_n; i++) l += dy[i] * out[i];
  return l;
}

/* d/d in[which] of L = sum dy * f(in), by central differences in float64. */
static double *fd_grad(const problem *p, const double *dy, int which) {
  double *out = tmalloc((size_t)p->out_n * sizeof(double));
  double *g = tmalloc((size_t)p->in_n[which] * sizeof(double));
  double *x = p->in[which];
  for (int64_t i = 0; i < p->in_n[which]; i++) {
    double v = x[i], h = 1e-5 * (1.0 + fabs(v));
    x[i] = v + h;
    double lp = loss_of(p, dy, out);
    x[i] = v - h;
    double lm = loss_of(p, dy, out);
    x[i] = v;
    g[i] = (lp - lm) / (2.0 * h);
  }
  return g;
}

static void check_grad(const char *be_name, const char *what, const float *got, const double *want, int64_t n) {
  char label[512];
  snprintf(label, sizeof label, "%.60s %.400s", be_name, what);
  test_assert_close(label, got, to_f(want, n), n, TOL_GRAD);
}

/* got - start should equal times * want (accumulated parameter gradient). */
static void check_accum(const char *be_name, const char *what, const float *got, const float *start,
                        const double *want, int64_t n, int times) {
  float *diff = tmalloc((size_t)n * sizeof(float));
  double *w2 = tmalloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) {
    diff[i] = got[i] - start[i];
    w2[i] = times * want[i];
  }
  char label[300];
  snprintf(label, sizeof label, "%.200s (accumulated x%d)", what, times);
  check_grad(be_name, label, diff, w2, n);
}

static void check_fwd(const char *be_name, const char *what, const float *got, const double *want, int64_t n) {
  char label[512];
  snprintf(label, sizeof label, "%.60s forward %.300s vs float64 reference", be_name, what);
  test_assert_close(label, got, to_f(want, n), n, TOL_FWD);
}

/* ---------------------------------------------------------------- matmul */

typedef struct { int64_t m, n, k; } mm_ctx;

static void mm_fwd(const void *c, double *const *in, double *y) {
  const mm_ctx *s = c;
  const double *x = in[0], *w = in[1], *b = in[2];
  for (int64_t r = 0; r < s->m; r++)
    for (int64_t o = 0; o < s->n; o++) {
      double acc = b[o];
      for (int64_t i = 0; i < s->k; i++) acc += x[r * s->k + i] * w[o * s->k + i];
      y[r * s->n + o] = acc;
    }
}

static void grad_matmul(qins_backend *be, qins_dtype wdt) {
  mm_ctx s = {rnd_dim(1, 7), rnd_dim(1, 9), rnd_dim(1, 11)};
  float *x = rnd(s.m * s.k, 1.0f), *w = rnd(s.n * s.k, 0.5f), *b = rnd(s.n, 0.5f), *dy = rnd(s.m * s.n, 1.0f);
  qins_tensor *tx = mk(be, "x", QINS_DT_F32, 2, s.m, s.k, 0, x);
  qins_tensor *tw32 = mk(be, "w32", QINS_DT_F32, 2, s.n, s.k, 0, w);
  qins_tensor *tw = tw32;
  if (wdt != QINS_DT_F32) {
    tw = mk(be, "w", wdt, 2, s.n, s.k, 0, NULL);
    if (unsupported_skip(be, qins_op_cast(be, tw32, tw))) return;
    assert_int_equal(qins_op_cast(be, tw, tw32), 0); /* the rounded weights are what the reference sees */
    w = rd(tw32);
  }
  qins_tensor *tb = mk(be, "bias", QINS_DT_F32, 1, s.n, 0, 0, b);
  qins_tensor *ty = mk(be, "y", QINS_DT_F32, 2, s.m, s.n, 0, NULL);
  qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, s.m, s.n, 0, dy);
  qins_tensor *tdx = mk(be, "dx", QINS_DT_F32, 2, s.m, s.k, 0, NULL);
  float *dw0 = rnd(s.n * s.k, 1.0f), *db0 = rnd(s.n, 1.0f);
  qins_tensor *tdw = mk(be, "dw", QINS_DT_F32, 2, s.n, s.k, 0, dw0);
  qins_tensor *tdb = mk(be, "dbias", QINS_DT_F32, 1, s.n, 0, 0, db0);

  problem p = {mm_fwd, &s, 3, {to_d(x, s.m * s.k), to_d(w, s.n * s.k), to_d(b, s.n)}, {s.m * s.k, s.n * s.k, s.n},
               s.m * s.n};
  double *yref = tmalloc((size_t)(s.m * s.n) * sizeof(double));
  mm_fwd(&s, p.in, yref);
  test_poison(ty);
  assert_int_equal(qins_op_matmul(be, tx, tw, tb, ty), 0);
  check_fwd(be->name, "matmul", rd(ty), yref, s.m * s.n);

  double *ddy = to_d(dy, s.m * s.n);
  test_poison(tdx);
  if (unsupported_skip(be, qins_op_matmul_backward(be, tdy, tx, tw, tdx, tdw, tdb))) return;
  double *gx = fd_grad(&p, ddy, 0), *gw = fd_grad(&p, ddy, 1), *gb = fd_grad(&p, ddy, 2);
  check_grad(be->name, "matmul dx", rd(tdx), gx, s.m * s.k);
  check_accum(be->name, "matmul dw", rd(tdw), dw0, gw, s.n * s.k, 1);
  check_accum(be->name, "matmul dbias", rd(tdb), db0, gb, s.n, 1);
  /* second call without dx: parameters accumulate to twice the gradient */
  assert_int_equal(qins_op_matmul_backward(be, tdy, tx, tw, NULL, tdw, tdb), 0);
  check_accum(be->name, "matmul dw", rd(tdw), dw0, gw, s.n * s.k, 2);
  check_accum(be->name, "matmul dbias", rd(tdb), db0, gb, s.n, 2);
}

/* Straight-through for quantized weights: dx is dy times the DEQUANTIZED weight. Needs the codec
 * ops; until the backend has them the case reports a skip. */
static void grad_matmul_quantized(qins_backend *be) {
  mm_ctx s = {rnd_dim(1, 5), rnd_dim(2, 7), rnd_dim(3, 9)};
  float *w = rnd(s.n * s.k, 0.3f), *x = rnd(s.m * s.k, 1.0f), *dy = rnd(s.m * s.n, 1.0f);
  qins_tensor *tw32 = mk(be, "w32", QINS_DT_F32, 2, s.n, s.k, 0, w);
  qins_tensor *tx = mk(be, "x", QINS_DT_F32, 2, s.m, s.k, 0, x);
  qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, s.m, s.n, 0, dy);
  qins_tensor *tdx = mk(be, "dx", QINS_DT_F32, 2, s.m, s.k, 0, NULL);
  qins_tensor *tdw = mk(be, "dw", QINS_DT_F32, 2, s.n, s.k, 0, NULL);
  qins_dtype fmts[2] = {QINS_DT_QINS8, QINS_DT_QINS_F32};
  for (int f = 0; f < 2; f++) {
    qins_tensor *alpha = mk(be, "alpha", QINS_DT_F32, 1, s.n, 0, 0, NULL);
    qins_tensor *tq = mk(be, "wq", fmts[f], 2, s.n, s.k, 0, NULL);
    qins_tensor *tdeq = mk(be, "w_deq", QINS_DT_F32, 2, s.n, s.k, 0, NULL);
    tq->scale = alpha; /* borrowed: detached again below so the pool frees alpha once */
    qins_alpha_spec spec = {QINS_ALPHA_STD, 0.7f};
    int rc = qins_op_calibrate(be, tw32, fmts[f], spec, alpha);
    if (!rc) rc = qins_op_quantize(be, tw32, tq);
    if (!rc) rc = qins_op_dequantize(be, tq, tdeq);
    float *zeros = tmalloc((size_t)(s.n * s.k) * sizeof(float));
    assert_int_equal(qins_tensor_write(tdw, zeros), 0);
    test_poison(tdx);
    if (!rc) rc = qins_op_matmul_backward(be, tdy, tx, tq, tdx, tdw, NULL);
    tq->scale = NULL;
    if (rc == QINS_EUNSUPPORTED) {
      print_message("  skip quantized straight-through on %s: %s\n", be->name, qins_error_msg());
      return;
    }
    if (rc) fail_msg("%s: %s", be->name, qins_error_msg());
    float *deq = rd(tdeq);
    double *b0 = tmalloc((size_t)s.n * sizeof(double));
    problem p = {mm_fwd, &s, 3, {to_d(x, s.m * s.k), to_d(deq, s.n * s.k), b0}, {s.m * s.k, s.n * s.k, s.n},
                 s.m * s.n};
    double *ddy = to_d(dy, s.m * s.n);
    check_grad(be->name, qins_dtype_name(fmts[f]), rd(tdx), fd_grad(&p, ddy, 0), s.m * s.k);
    check_grad(be->name, "quantized dw", rd(tdw), fd_grad(&p, ddy, 1), s.n * s.k);
  }
}

/* ---------------------------------------------------------------- add, mul */

typedef struct { int64_t n, nb; int mul; } bin_ctx;

static void bin_fwd(const void *c, double *const *in, double *y) {
  const bin_ctx *s = c;
  for (int64_t i = 0; i < s->n; i++) {
    double b = in[1][i % s->nb];
    y[i] = s->mul ? in[0][i] * b : in[0][i] + b;
  }
}

static void grad_add_mul(qins_backend *be) {
  int64_t rows = rnd_dim(1, 6), cols = rnd_dim(1, 13);
  for (int mul = 0; mul < 2; mul++) {
    for (int row_b = 0; row_b < 2; row_b++) {
      if (!mul && !row_b) continue; /* add with a same-shaped b: db = dy, no op */
      bin_ctx s = {rows * cols, row_b ? cols : rows * cols, mul};
      float *a = rnd(s.n, 1.0f), *b = rnd(s.nb, 1.0f), *dy = rnd(s.n, 1.0f), *db0 = rnd(s.nb, 1.0f);
      qins_tensor *ta = mk(be, "a", QINS_DT_F32, 2, rows, cols, 0, a);
      qins_tensor *tb = row_b ? mk(be, "b", QINS_DT_F32, 1, cols, 0, 0, b) : mk(be, "b", QINS_DT_F32, 2, rows, cols, 0, b);
      qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, rows, cols, 0, dy);
      qins_tensor *tda = mk(be, "da", QINS_DT_F32, 2, rows, cols, 0, NULL);
      qins_tensor *tdb = row_b ? mk(be, "db", QINS_DT_F32, 1, cols, 0, 0, db0)
                               : mk(be, "db", QINS_DT_F32, 2, rows, cols, 0, NULL);
      problem p = {bin_fwd, &s, 2, {to_d(a, s.n), to_d(b, s.nb)}, {s.n, s.nb}, s.n};
      double *ddy = to_d(dy, s.n);
      if (!row_b) test_poison(tdb);
      test_poison(tda);
      int rc = mul ? qins_op_mul_backward(be, tdy, ta, tb, tda, tdb) : qins_op_add_backward(be, tdy, tdb);
      if (unsupported_skip(be, rc)) return;
      const char *name = mul ? "mul" : "add";
      if (mul) check_grad(be->name, "mul da", rd(tda), fd_grad(&p, ddy, 0), s.n);
      double *gb = fd_grad(&p, ddy, 1);
      if (row_b) {
        check_accum(be->name, name, rd(tdb), db0, gb, s.nb, 1);
        rc = mul ? qins_op_mul_backward(be, tdy, ta, tb, NULL, tdb) : qins_op_add_backward(be, tdy, tdb);
        assert_int_equal(rc, 0);
        check_accum(be->name, name, rd(tdb), db0, gb, s.nb, 2);
      } else {
        check_grad(be->name, "mul db (same shape)", rd(tdb), gb, s.n);
      }
    }
  }
}

/* ---------------------------------------------------------------- norms */

typedef struct { int64_t rows, d; double eps; int layer; } norm_ctx;

static void norm_fwd(const void *c, double *const *in, double *y) {
  const norm_ctx *s = c;
  for (int64_t r = 0; r < s->rows; r++) {
    const double *x = in[0] + r * s->d;
    double mean = 0.0, ss = 0.0;
    if (s->layer) {
      for (int64_t i = 0; i < s->d; i++) mean += x[i];
      mean /= (double)s->d;
    }
    for (int64_t i = 0; i < s->d; i++) ss += (x[i] - mean) * (x[i] - mean);
    double inv = 1.0 / sqrt(ss / (double)s->d + s->eps);
    for (int64_t i = 0; i < s->d; i++)
      y[r * s->d + i] = (x[i] - mean) * inv * in[1][i] + (s->layer ? in[2][i] : 0.0);
  }
}

static void grad_norm(qins_backend *be, int layer) {
  norm_ctx s = {rnd_dim(1, 6), rnd_dim(2, 21), 1e-5, layer};
  int64_t n = s.rows * s.d;
  float *x = rnd(n, 1.5f), *w = rnd(s.d, 1.0f), *b = rnd(s.d, 1.0f), *dy = rnd(n, 1.0f);
  float *dw0 = rnd(s.d, 1.0f), *db0 = rnd(s.d, 1.0f);
  qins_tensor *tx = mk(be, "x", QINS_DT_F32, 2, s.rows, s.d, 0, x);
  qins_tensor *tw = mk(be, "w", QINS_DT_F32, 1, s.d, 0, 0, w);
  qins_tensor *tb = mk(be, "b", QINS_DT_F32, 1, s.d, 0, 0, b);
  qins_tensor *ty = mk(be, "y", QINS_DT_F32, 2, s.rows, s.d, 0, NULL);
  qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, s.rows, s.d, 0, dy);
  qins_tensor *tdx = mk(be, "dx", QINS_DT_F32, 2, s.rows, s.d, 0, NULL);
  qins_tensor *tdw = mk(be, "dw", QINS_DT_F32, 1, s.d, 0, 0, dw0);
  qins_tensor *tdb = mk(be, "db", QINS_DT_F32, 1, s.d, 0, 0, db0);
  problem p = {norm_fwd, &s, 3, {to_d(x, n), to_d(w, s.d), to_d(b, s.d)}, {n, s.d, s.d}, n};
  double *yref = tmalloc((size_t)n * sizeof(double));
  norm_fwd(&s, p.in, yref);
  int rc = layer ? qins_op_layernorm(be, tx, tw, tb, (float)s.eps, ty) : qins_op_rmsnorm(be, tx, tw, (float)s.eps, ty);
  assert_int_equal(rc, 0);
  const char *name = layer ? "layernorm" : "rmsnorm";
  check_fwd(be->name, name, rd(ty), yref, n);
  test_poison(tdx);
  rc = layer ? qins_op_layernorm_backward(be, tdy, tx, tw, (float)s.eps, tdx, tdw, tdb)
             : qins_op_rmsnorm_backward(be, tdy, tx, tw, (float)s.eps, tdx, tdw);
  if (unsupported_skip(be, rc)) return;
  double *ddy = to_d(dy, n);
  double *gw = fd_grad(&p, ddy, 1), *gb = fd_grad(&p, ddy, 2);
  check_grad(be->name, layer ? "layernorm dx" : "rmsnorm dx", rd(tdx), fd_grad(&p, ddy, 0), n);
  check_accum(be->name, layer ? "layernorm dw" : "rmsnorm dw", rd(tdw), dw0, gw, s.d, 1);
  if (layer) check_accum(be->name, "layernorm db", rd(tdb), db0, gb, s.d, 1);
  rc = layer ? qins_op_layernorm_backward(be, tdy, tx, tw, (float)s.eps, tdx, tdw, tdb)
             : qins_op_rmsnorm_backward(be, tdy, tx, tw, (float)s.eps, tdx, tdw);
  assert_int_equal(rc, 0);
  check_accum(be->name, layer ? "layernorm dw" : "rmsnorm dw", rd(tdw), dw0, gw, s.d, 2);
  if (layer) check_accum(be->name, "layernorm db", rd(tdb), db0, gb, s.d, 2);
  else assert_memory_equal(rd(tdb), db0, (size_t)s.d * sizeof(float)); /* untouched */
}

/* ---------------------------------------------------------------- rope */

typedef struct {
  int64_t m, h, d;
  int rot;
  double af;
  qins_rope_mode mode;
  const int32_t *pos;
  const float *freq;
} rope_ctx;

static void rope_fwd(const void *c, double *const *in, double *y) {
  const rope_ctx *s = c;
  int half = s->rot / 2;
  for (int64_t t = 0; t < s->m; t++)
    for (int64_t hh = 0; hh < s->h; hh++) {
      const double *x = in[0] + (t * s->h + hh) * s->d;
      double *o = y + (t * s->h + hh) * s->d;
      for (int64_t i = s->rot; i < s->d; i++) o[i] = x[i];
      for (int i = 0; i < half; i++) {
        double ang = (double)s->pos[t] * (double)s->freq[i];
        double cs = cos(ang) * s->af, sn = sin(ang) * s->af;
        int i0 = s->mode == QINS_ROPE_INTERLEAVED ? 2 * i : i, i1 = s->mode == QINS_ROPE_INTERLEAVED ? 2 * i + 1 : i + half;
        o[i0] = x[i0] * cs - x[i1] * sn;
        o[i1] = x[i0] * sn + x[i1] * cs;
      }
    }
}

static void grad_rope(qins_backend *be) {
  for (int mode = 0; mode < 2; mode++) {
    rope_ctx s = {rnd_dim(1, 5), rnd_dim(1, 3), 2 * rnd_dim(2, 6), 0, 1.3, (qins_rope_mode)mode, NULL, NULL};
    s.rot = (int)(test_rand_u64() % 2 ? s.d : s.d - 2); /* partial rotation too */
    int64_t n = s.m * s.h * s.d;
    int32_t *pos = tmalloc((size_t)s.m * sizeof(int32_t));
    for (int64_t t = 0; t < s.m; t++) pos[t] = (int32_t)(test_rand_u64() % 48);
    float *freq = tmalloc((size_t)(s.rot / 2) * sizeof(float));
    for (int i = 0; i < s.rot / 2; i++) freq[i] = powf(10000.0f, -2.0f * (float)i / (float)s.rot) * 1.1f;
    s.pos = pos;
    s.freq = freq;
    float *x = rnd(n, 1.0f), *dy = rnd(n, 1.0f);
    qins_tensor *tx = mk(be, "x", QINS_DT_F32, 3, s.m, s.h, s.d, x);
    qins_tensor *tp = mk(be, "pos", QINS_DT_I32, 1, s.m, 0, 0, pos);
    qins_tensor *tf = mk(be, "inv_freq", QINS_DT_F32, 1, s.rot / 2, 0, 0, freq);
    qins_tensor *ty = mk(be, "y", QINS_DT_F32, 3, s.m, s.h, s.d, NULL);
    qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 3, s.m, s.h, s.d, dy);
    qins_tensor *tdx = mk(be, "dx", QINS_DT_F32, 3, s.m, s.h, s.d, NULL);
    problem p = {rope_fwd, &s, 1, {to_d(x, n)}, {n}, n};
    double *yref = tmalloc((size_t)n * sizeof(double));
    rope_fwd(&s, p.in, yref);
    assert_int_equal(qins_op_rope(be, tx, tp, tf, s.rot, (float)s.af, s.mode, ty), 0);
    check_fwd(be->name, "rope", rd(ty), yref, n);
    test_poison(tdx);
    if (unsupported_skip(be, qins_op_rope_backward(be, tdy, tp, tf, s.rot, (float)s.af, s.mode, tdx))) return;
    float *got = rd(tdx);
    check_grad(be->name, mode ? "rope (half) dx" : "rope (interleaved) dx", got, fd_grad(&p, to_d(dy, n), 0), n);
    /* in place: dx aliasing dy gives the same values */
    assert_int_equal(qins_op_rope_backward(be, tdy, tp, tf, s.rot, (float)s.af, s.mode, tdy), 0);
    test_assert_close("rope backward in place", rd(tdy), got, n, 1e-6);
  }
}

/* ---------------------------------------------------------------- softmax, activations */

typedef struct { int64_t rows, n; int kind; } ew_ctx; /* kind: 0 softmax, 1 silu, 2 gelu_tanh, 3 silu_mul */

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

static void ew_fwd(const void *c, double *const *in, double *y) {
  const ew_ctx *s = c;
  int64_t total = s->rows * s->n;
  if (s->kind == 0) {
    for (int64_t r = 0; r < s->rows; r++) {
      const double *x = in[0] + r * s->n;
      double mx = x[0], sum = 0.0;
      for (int64_t i = 1; i < s->n; i++) mx = fmax(mx, x[i]);
      for (int64_t i = 0; i < s->n; i++) sum += exp(x[i] - mx);
      for (int64_t i = 0; i < s->n; i++) y[r * s->n + i] = exp(x[i] - mx) / sum;
    }
    return;
  }
  for (int64_t i = 0; i < total; i++) {
    double v = in[0][i];
    if (s->kind == 1) y[i] = silu_d(v);
    else if (s->kind == 2) y[i] = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    else y[i] = silu_d(v) * in[1][i];
  }
}

static void grad_elementwise(qins_backend *be, int kind) {
  static const char *names[4] = {"softmax", "silu", "gelu_tanh", "silu_mul"};
  ew_ctx s = {rnd_dim(1, 5), rnd_dim(1, 17), kind};
  int64_t n = s.rows * s.n;
  float *x = rnd(n, 2.0f), *u = rnd(n, 1.0f), *dy = rnd(n, 1.0f);
  qins_tensor *tx = mk(be, "x", QINS_DT_F32, 2, s.rows, s.n, 0, x);
  qins_tensor *tu = mk(be, "up", QINS_DT_F32, 2, s.rows, s.n, 0, u);
  qins_tensor *ty = mk(be, "y", QINS_DT_F32, 2, s.rows, s.n, 0, NULL);
  qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, s.rows, s.n, 0, dy);
  qins_tensor *tdx = mk(be, "dx", QINS_DT_F32, 2, s.rows, s.n, 0, NULL);
  qins_tensor *tdu = mk(be, "dup", QINS_DT_F32, 2, s.rows, s.n, 0, NULL);
  problem p = {ew_fwd, &s, 2, {to_d(x, n), to_d(u, n)}, {n, n}, n};
  double *yref = tmalloc((size_t)n * sizeof(double));
  ew_fwd(&s, p.in, yref);
  int rc = kind == 0 ? qins_op_softmax(be, tx, ty)
           : kind == 1 ? qins_op_silu(be, tx, ty)
           : kind == 2 ? qins_op_gelu_tanh(be, tx, ty)
                       : qins_op_silu_mul(be, tx, tu, ty);
  assert_int_equal(rc, 0);
  check_fwd(be->name, names[kind], rd(ty), yref, n);
  test_poison(tdx);
  test_poison(tdu);
  rc = kind == 0 ? qins_op_softmax_backward(be, ty, tdy, tdx)
       : kind == 1 ? qins_op_silu_backward(be, tx, tdy, tdx)
       : kind == 2 ? qins_op_gelu_tanh_backward(be, tx, tdy, tdx)
                   : qins_op_silu_mul_backward(be, tx, tu, tdy, tdx, tdu);
  if (unsupported_skip(be, rc)) return;
  double *ddy = to_d(dy, n);
  char label[64];
  snprintf(label, sizeof label, "%s dx", names[kind]);
  float *got = rd(tdx);
  check_grad(be->name, label, got, fd_grad(&p, ddy, 0), n);
  if (kind == 3) check_grad(be->name, "silu_mul dup", rd(tdu), fd_grad(&p, ddy, 1), n);
  if (kind == 0 || kind == 1) { /* in place */
    rc = kind == 0 ? qins_op_softmax_backward(be, ty, tdy, tdy) : qins_op_silu_backward(be, tx, tdy, tdy);
    assert_int_equal(rc, 0);
    test_assert_close("backward in place", rd(tdy), got, n, 1e-6);
  }
}

/* ---------------------------------------------------------------- embedding */

typedef struct { int64_t m, v, d; const int32_t *ids; } emb_ctx;

static void emb_fwd(const void *c, double *const *in, double *y) {
  const emb_ctx *s = c;
  for (int64_t t = 0; t < s->m; t++)
    for (int64_t i = 0; i < s->d; i++) y[t * s->d + i] = in[0][s->ids[t] * s->d + i];
}

static void grad_embed(qins_backend *be) {
  emb_ctx s = {rnd_dim(1, 9), rnd_dim(2, 7), rnd_dim(1, 19), NULL};
  int32_t *ids = tmalloc((size_t)s.m * sizeof(int32_t));
  for (int64_t t = 0; t < s.m; t++) ids[t] = (int32_t)(test_rand_u64() % (uint64_t)s.v); /* repeats likely */
  ids[s.m - 1] = ids[0];
  s.ids = ids;
  float *table = rnd(s.v * s.d, 1.0f), *dy = rnd(s.m * s.d, 1.0f), *dt0 = rnd(s.v * s.d, 1.0f);
  qins_tensor *tids = mk(be, "ids", QINS_DT_I32, 1, s.m, 0, 0, ids);
  qins_tensor *tdy = mk(be, "dy", QINS_DT_F32, 2, s.m, s.d, 0, dy);
  qins_tensor *tdt = mk(be, "dtable", QINS_DT_F32, 2, s.v, s.d, 0, dt0);
  problem p = {emb_fwd, &s, 1, {to_d(table, s.v * s.d)}, {s.v * s.d}, s.m * s.d};
  if (unsupported_skip(be, qins_op_embed_backward(be, tids, tdy, tdt))) return;
  double *g = fd_grad(&p, to_d(dy, s.m * s.d), 0);
  check_accum(be->name, "embed dtable", rd(tdt), dt0, g, s.v * s.d, 1);
  assert_int_equal(qins_op_embed_backward(be, tids, tdy, tdt), 0);
  check_accum(be->name, "embed dtable", rd(tdt), dt0, g, s.v * s.d, 2);
  /* a bad id is an input error, not a crash */
  ids[0] = (int32_t)s.v;
  assert_int_equal(qins_tensor_write(tids, ids), 0);
  assert_int_equal(qins_op_embed_backward(be, tids, tdy, tdt), QINS_EINPUT);
}

/* ---------------------------------------------------------------- attention */

typedef struct { int64_t m, t, hq, hkv, d, pos0; double scale; } attn_ctx;

static void attn_fwd(const void *c, double *const *in, double *out) {
  const attn_ctx *s = c;
  const double *q = in[0], *k = in[1], *v = in[2];
  int64_t group = s->hq / s->hkv;
  double *sc = malloc((size_t)s->t * sizeof(double));
  for (int64_t t = 0; t < s->m; t++)
    for (int64_t h = 0; h < s->hq; h++) {
      int64_t kvh = h / group, vis = s->pos0 + t + 1;
      const double *qr = q + (t * s->hq + h) * s->d;
      double mx = -INFINITY, sum = 0.0;
      for (int64_t p = 0; p < vis; p++) {
        double a = 0.0;
        for (int64_t i = 0; i < s->d; i++) a += qr[i] * k[(p * s->hkv + kvh) * s->d + i];
        sc[p] = a * s->scale;
        mx = fmax(mx, sc[p]);
      }
      for (int64_t p = 0; p < vis; p++) sum += (sc[p] = exp(sc[p] - mx));
      double *o = out + (t * s->hq + h) * s->d;
      for (int64_t i = 0; i < s->d; i++) {
        double a = 0.0;
        for (int64_t p = 0; p < vis; p++) a += sc[p] / sum * v[(p * s->hkv + kvh) * s->d + i];
        o[i] = a;
      }
    }
  free(sc);
}

static void grad_attention(qins_backend *be, int64_t pos0) {
  attn_ctx s;
  s.hkv = rnd_dim(1, 3);
  s.hq = s.hkv * rnd_dim(1, 3);
  s.d = rnd_dim(2, 9);
  s.m = rnd_dim(1, 6);
  s.pos0 = pos0;
  s.t = pos0 + s.m + (pos0 ? 1 : 0); /* with pos0 > 0 one unused cache row: its gradient must be 0 */
  s.scale = 1.0 / sqrt((double)s.d);
  int64_t nq = s.m * s.hq * s.d, nk = s.t * s.hkv * s.d;
  float *q = rnd(nq, 1.0f), *k = rnd(nk, 1.0f), *v = rnd(nk, 1.0f), *dout = rnd(nq, 1.0f);
  qins_tensor *tq = mk(be, "q", QINS_DT_F32, 3, s.m, s.hq, s.d, q);
  qins_tensor *tk = mk(be, "k", QINS_DT_F32, 3, s.t, s.hkv, s.d, k);
  qins_tensor *tv = mk(be, "v", QINS_DT_F32, 3, s.t, s.hkv, s.d, v);
  qins_tensor *to = mk(be, "out", QINS_DT_F32, 3, s.m, s.hq, s.d, NULL);
  qins_tensor *tdo = mk(be, "dout", QINS_DT_F32, 3, s.m, s.hq, s.d, dout);
  qins_tensor *tdq = mk(be, "dq", QINS_DT_F32, 3, s.m, s.hq, s.d, NULL);
  qins_tensor *tdk = mk(be, "dk", QINS_DT_F32, 3, s.t, s.hkv, s.d, NULL);
  qins_tensor *tdv = mk(be, "dv", QINS_DT_F32, 3, s.t, s.hkv, s.d, NULL);
  problem p = {attn_fwd, &s, 3, {to_d(q, nq), to_d(k, nk), to_d(v, nk)}, {nq, nk, nk}, nq};
  double *oref = tmalloc((size_t)nq * sizeof(double));
  attn_fwd(&s, p.in, oref);
  assert_int_equal(qins_op_attention(be, tq, tk, tv, s.pos0, (float)s.scale, to), 0);
  check_fwd(be->name, "attention", rd(to), oref, nq);
  test_poison(tdq);
  test_poison(tdk);
  test_poison(tdv);
  if (unsupported_skip(be, qins_op_attention_backward(be, tq, tk, tv, s.pos0, (float)s.scale, tdo, tdq, tdk, tdv)))
    return;
  double *ddo = to_d(dout, nq);
  check_grad(be->name, "attention dq", rd(tdq), fd_grad(&p, ddo, 0), nq);
  check_grad(be->name, "attention dk", rd(tdk), fd_grad(&p, ddo, 1), nk);
  check_grad(be->name, "attention dv", rd(tdv), fd_grad(&p, ddo, 2), nk);
  if (pos0) { /* the row no query sees is exactly zero */
    float *dk = rd(tdk);
    for (int64_t i = (s.t - 1) * s.hkv * s.d; i < nk; i++) assert_true(dk[i] == 0.0f);
  }
}

/* ---------------------------------------------------------------- cross-entropy */

typedef struct { int64_t m, v; const int32_t *tg; double scale; } ce_ctx;

static void ce_fwd(const void *c, double *const *in, double *loss) {
  const ce_ctx *s = c;
  for (int64_t r = 0; r < s->m; r++) {
    const double *l = in[0] + r * s->v;
    if (s->tg[r] < 0) {
      loss[r] = 0.0;
      continue;
    }
    double mx = l[0], sum = 0.0;
    for (int64_t i = 1; i < s->v; i++) mx = fmax(mx, l[i]);
    for (int64_t i = 0; i < s->v; i++) sum += exp(l[i] - mx);
    loss[r] = mx + log(sum) - l[s->tg[r]];
  }
}

static void grad_cross_entropy(qins_backend *be) {
  ce_ctx s = {rnd_dim(2, 7), rnd_dim(2, 37), NULL, 0};
  int32_t *tg = tmalloc((size_t)s.m * sizeof(int32_t));
  int valid = 0;
  for (int64_t r = 0; r < s.m; r++) {
    tg[r] = r == 1 ? -1 : (int32_t)(test_rand_u64() % (uint64_t)s.v); /* row 1 ignored */
    valid += tg[r] >= 0;
  }
  s.tg = tg;
  float *logits = rnd(s.m * s.v, 3.0f);
  qins_tensor *tl = mk(be, "logits", QINS_DT_F32, 2, s.m, s.v, 0, logits);
  qins_tensor *tt = mk(be, "targets", QINS_DT_I32, 1, s.m, 0, 0, tg);
  qins_tensor *tloss = mk(be, "loss", QINS_DT_F32, 1, s.m, 0, 0, NULL);
  qins_tensor *td = mk(be, "dlogits", QINS_DT_F32, 2, s.m, s.v, 0, NULL);
  problem p = {ce_fwd, &s, 1, {to_d(logits, s.m * s.v)}, {s.m * s.v}, s.m};
  double *lref = tmalloc((size_t)s.m * sizeof(double));
  ce_fwd(&s, p.in, lref);
  double *dl = tmalloc((size_t)s.m * sizeof(double)); /* d(mean loss)/d loss[m] */
  for (int64_t r = 0; r < s.m; r++) dl[r] = tg[r] >= 0 ? 1.0 / valid : 0.0;
  double *g = fd_grad(&p, dl, 0);
  float scales[2] = {0.0f, 2.5f};
  for (int si = 0; si < 2; si++) {
    test_poison(tloss);
    test_poison(td);
    if (unsupported_skip(be, qins_op_cross_entropy(be, tl, tt, tloss, td, scales[si]))) return;
    float *loss = rd(tloss);
    check_fwd(be->name, "cross_entropy loss", loss, lref, s.m);
    assert_true(loss[1] == 0.0f);
    double *want = tmalloc((size_t)(s.m * s.v) * sizeof(double));
    for (int64_t i = 0; i < s.m * s.v; i++) want[i] = si ? g[i] * valid * scales[si] : g[i];
    check_grad(be->name, si ? "cross_entropy dlogits (scale 2.5)" : "cross_entropy dlogits (mean)", rd(td), want,
               s.m * s.v);
  }
  /* loss only, then in place (dlogits aliasing logits) */
  assert_int_equal(qins_op_cross_entropy(be, tl, tt, tloss, NULL, 0.0f), 0);
  check_fwd(be->name, "cross_entropy loss (no grad)", rd(tloss), lref, s.m);
  assert_int_equal(qins_op_cross_entropy(be, tl, tt, tloss, tl, 0.0f), 0);
  check_grad(be->name, "cross_entropy in place", rd(tl), g, s.m * s.v);
  /* a target past the vocabulary is an input error naming the row */
  tg[0] = (int32_t)s.v;
  assert_int_equal(qins_tensor_write(tt, tg), 0);
  assert_int_equal(qins_op_cross_entropy(be, tl, tt, tloss, td, 0.0f), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "row 0"));
}

/* ---------------------------------------------------------------- validation */

static void grad_validation(qins_backend *be) {
  qins_tensor *x = mk(be, "x", QINS_DT_F32, 2, 3, 4, 0, NULL);
  qins_tensor *w = mk(be, "w", QINS_DT_F32, 2, 5, 4, 0, NULL);
  qins_tensor *dy_bad = mk(be, "dy_bad", QINS_DT_F32, 2, 3, 6, 0, NULL);
  qins_tensor *dx = mk(be, "dx", QINS_DT_F32, 2, 3, 4, 0, NULL);
  assert_int_equal(qins_op_matmul_backward(be, dy_bad, x, w, dx, NULL, NULL), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "dy_bad"));
  qins_tensor *ids = mk(be, "ids_f32", QINS_DT_F32, 1, 3, 0, 0, NULL);
  assert_int_equal(qins_op_embed_backward(be, ids, x, w), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "ids_f32"));
  qins_tensor *q = mk(be, "q", QINS_DT_F32, 3, 4, 3, 2, NULL);
  qins_tensor *kv = mk(be, "kv", QINS_DT_F32, 3, 4, 2, 2, NULL);
  assert_int_equal(qins_op_attention_backward(be, q, kv, kv, 0, 1.0f, q, q, kv, kv), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "query heads"));
}

/* ---------------------------------------------------------------- cpu fast paths at size */

/* The cpu training kernels (cpu_gemm_outer.c's 6 x 16 tiles, 96 x 64/256 tasks, 256-long reduction
 * slices; the vector exp in cross-entropy and GELU) only switch on above the tiny shapes the
 * finite-difference tests use. Here: shapes that cross every blocking boundary with ragged edges,
 * against float64 sums written here (relative L2 1e-5 for the GEMMs, 1e-5 for CE and GELU), and
 * bit-for-bit equality between 1, 2 and 3 threads. */
#define TOL_FAST 1e-5

typedef struct fast_out {
  float *dx, *dw, *db, *loss, *dl, *dg;
} fast_out;

static float *fast_read(const qins_tensor *t) {
  float *p = malloc(qins_tensor_nbytes(t));
  assert_non_null(p);
  assert_int_equal(qins_tensor_read(t, p), 0);
  return p;
}

static void fast_run(int threads, int64_t m, int64_t n, int64_t k, int64_t v, const float *x, const float *w,
                     const float *dy, const float *dw0, const float *logits, const int32_t *tg, fast_out *o) {
  qins_backend *be;
  assert_int_equal(qins_cpu_backend_create(threads, &be), 0);
  qins_tensor tx, tw, tdy, tdx, tdw, tdb, tl, tt, tloss, tdl, tg_x, tg_dy, tg_dx;
  test_tensor_make(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){m, k}, x);
  test_tensor_make(be, &tw, "w", QINS_DT_F32, 2, (int64_t[]){n, k}, w);
  test_tensor_make(be, &tdy, "dy", QINS_DT_F32, 2, (int64_t[]){m, n}, dy);
  test_tensor_make(be, &tdx, "dx", QINS_DT_F32, 2, (int64_t[]){m, k}, NULL);
  test_tensor_make(be, &tdw, "dw", QINS_DT_F32, 2, (int64_t[]){n, k}, dw0);
  test_tensor_make(be, &tdb, "db", QINS_DT_F32, 1, (int64_t[]){n}, NULL);
  assert_int_equal(qins_tensor_write(&tdb, dw0), 0);
  test_poison(&tdx);
  assert_int_equal(qins_op_matmul_backward(be, &tdy, &tx, &tw, &tdx, &tdw, &tdb), 0);
  o->dx = fast_read(&tdx);
  o->dw = fast_read(&tdw);
  o->db = fast_read(&tdb);
  test_tensor_make(be, &tl, "logits", QINS_DT_F32, 2, (int64_t[]){m, v}, logits);
  test_tensor_make(be, &tt, "targets", QINS_DT_I32, 1, (int64_t[]){m}, tg);
  test_tensor_make(be, &tloss, "loss", QINS_DT_F32, 1, (int64_t[]){m}, NULL);
  test_tensor_make(be, &tdl, "dlogits", QINS_DT_F32, 2, (int64_t[]){m, v}, NULL);
  test_poison(&tdl);
  assert_int_equal(qins_op_cross_entropy(be, &tl, &tt, &tloss, &tdl, 0.0f), 0);
  o->loss = fast_read(&tloss);
  o->dl = fast_read(&tdl);
  test_tensor_make(be, &tg_x, "gx", QINS_DT_F32, 2, (int64_t[]){m, k}, x);
  test_tensor_make(be, &tg_dy, "gdy", QINS_DT_F32, 2, (int64_t[]){m, k}, dy);
  test_tensor_make(be, &tg_dx, "gdx", QINS_DT_F32, 2, (int64_t[]){m, k}, NULL);
  test_poison(&tg_dx);
  assert_int_equal(qins_op_gelu_tanh_backward(be, &tg_x, &tg_dy, &tg_dx), 0);
  o->dg = fast_read(&tg_dx);
  qins_tensor *all[] = {&tx, &tw, &tdy, &tdx, &tdw, &tdb, &tl, &tt, &tloss, &tdl, &tg_x, &tg_dy, &tg_dx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) qins_tensor_free(all[i]);
  qins_backend_destroy(be);
}

static void fast_free(fast_out *o) {
  free(o->dx);
  free(o->dw);
  free(o->db);
  free(o->loss);
  free(o->dl);
  free(o->dg);
}

static void fast_same(const char *what, const float *a, const float *b, int64_t n) {
  if (memcmp(a, b, (size_t)n * sizeof(float)) != 0) fail_msg("%s differs between thread counts", what);
}

static void fast_close(const char *what, const float *got, const double *want, int64_t n) {
  float *f = malloc((size_t)(n ? n : 1) * sizeof(float));
  assert_non_null(f);
  for (int64_t i = 0; i < n; i++) f[i] = (float)want[i];
  test_assert_close(what, got, f, n, TOL_FAST);
  free(f);
}

static void fast_case(int64_t m, int64_t n, int64_t k, int64_t v) {
  print_message("  cpu fast paths: M %lld N %lld K %lld V %lld\n", (long long)m, (long long)n, (long long)k,
                (long long)v);
  float *x = malloc((size_t)(m * k) * 4), *w = malloc((size_t)(n * k) * 4), *dy = malloc((size_t)(m * (n > k ? n : k)) * 4);
  float *dw0 = malloc((size_t)(n * k) * 4), *logits = malloc((size_t)(m * v) * 4);
  int32_t *tg = malloc((size_t)m * 4);
  assert_true(x && w && dy && dw0 && logits && tg);
  test_fill_normal(x, m * k, 1.0f);
  test_fill_normal(w, n * k, 0.5f);
  test_fill_normal(dy, m * (n > k ? n : k), 1.0f);
  test_fill_normal(dw0, n * k, 1.0f);
  test_fill_normal(logits, m * v, 3.0f);
  for (int64_t r = 0; r < m; r++) tg[r] = r % 5 == 3 ? -1 : (int32_t)(test_rand_u64() % (uint64_t)v);
  fast_out o[3];
  for (int t = 0; t < 3; t++) fast_run(t + 1, m, n, k, v, x, w, dy, dw0, logits, tg, &o[t]);
  for (int t = 1; t < 3; t++) {
    fast_same("matmul dx", o[0].dx, o[t].dx, m * k);
    fast_same("matmul dw", o[0].dw, o[t].dw, n * k);
    fast_same("matmul dbias", o[0].db, o[t].db, n);
    fast_same("cross-entropy loss", o[0].loss, o[t].loss, m);
    fast_same("cross-entropy dlogits", o[0].dl, o[t].dl, m * v);
    fast_same("gelu_tanh dx", o[0].dg, o[t].dg, m * k);
  }
  double *rx = calloc((size_t)(m * k), 8), *rw = calloc((size_t)(n * k), 8), *rb = calloc((size_t)n, 8);
  double *rl = calloc((size_t)m, 8), *rdl = calloc((size_t)(m * v), 8), *rg = calloc((size_t)(m * k), 8);
  assert_true(rx && rw && rb && rl && rdl && rg);
  for (int64_t r = 0; r < m; r++)
    for (int64_t o2 = 0; o2 < n; o2++) {
      double g = dy[r * n + o2];
      for (int64_t i = 0; i < k; i++) {
        rx[r * k + i] += g * w[o2 * k + i];
        rw[o2 * k + i] += g * x[r * k + i];
      }
      rb[o2] += g;
    }
  /* the parameter gradients accumulate onto dw0 (dbias started from dw0's first n values) */
  for (int64_t i = 0; i < n * k; i++) rw[i] += dw0[i];
  for (int64_t i = 0; i < n; i++) rb[i] += dw0[i];
  int64_t valid = 0;
  for (int64_t r = 0; r < m; r++) valid += tg[r] >= 0;
  for (int64_t r = 0; r < m; r++) {
    if (tg[r] < 0) continue;
    double mx = -INFINITY, sum = 0.0;
    for (int64_t i = 0; i < v; i++) mx = fmax(mx, logits[r * v + i]);
    for (int64_t i = 0; i < v; i++) sum += exp(logits[r * v + i] - mx);
    rl[r] = mx + log(sum) - logits[r * v + tg[r]];
    for (int64_t i = 0; i < v; i++)
      rdl[r * v + i] = (exp(logits[r * v + i] - mx) / sum - (i == tg[r])) / (double)valid;
  }
  for (int64_t i = 0; i < m * k; i++) {
    double a = x[i], u = 0.7978845608028654 * (a + 0.044715 * a * a * a), t = tanh(u);
    rg[i] = dy[i] * (0.5 * (1 + t) + 0.5 * a * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * a * a));
  }
  fast_close("matmul dx", o[0].dx, rx, m * k);
  fast_close("matmul dw", o[0].dw, rw, n * k);
  fast_close("matmul dbias", o[0].db, rb, n);
  fast_close("cross-entropy loss", o[0].loss, rl, m);
  fast_close("cross-entropy dlogits", o[0].dl, rdl, m * v);
  fast_close("gelu_tanh dx", o[0].dg, rg, m * k);
  for (int t = 0; t < 3; t++) fast_free(&o[t]);
  free(rx), free(rw), free(rb), free(rl), free(rdl), free(rg);
  free(x), free(w), free(dy), free(dw0), free(logits), free(tg);
}

static void test_cpu_fast_paths(void **st) {
  (void)st;
  /* fixed shapes around the boundaries, then random ones */
  fast_case(64, 768, 256, 1027);   /* the training shape's tiles exactly: 6-row and 16-column edges */
  fast_case(97, 263, 517, 1003);   /* ragged everywhere; reduction over N crosses 256 */
  fast_case(7, 1, 9, 8);           /* under one tile */
  fast_case(200, 301, 13, 17);     /* column tail < 8 */
  for (int i = 0; i < 2; i++) fast_case(rnd_dim(1, 150), rnd_dim(1, 600), rnd_dim(1, 300), rnd_dim(1, 2000));
}

/* ---------------------------------------------------------------- driver */

static void for_each_backend(void (*fn)(qins_backend *, int), int arg) {
  char names[8][64];
  int n = test_backends(names, 8);
  pool_n = mallocs_n = 0; /* a failed earlier test may have left entries (leaked, not reused) */
  for (int i = 0; i < n; i++) {
    qins_backend *be;
    assert_int_equal(qins_backend_create(names[i], &be), 0);
    for (int rep = 0; rep < 3; rep++) { /* three fresh random shapes each */
      fn(be, arg);
      free_all();
    }
    qins_backend_destroy(be);
  }
}

static void run_matmul(qins_backend *be, int dt) { grad_matmul(be, (qins_dtype)dt); }
static void run_matmul_q(qins_backend *be, int arg) { grad_matmul_quantized(be); }
static void run_add_mul(qins_backend *be, int arg) { grad_add_mul(be); }
static void run_norm(qins_backend *be, int layer) { grad_norm(be, layer); }
static void run_rope(qins_backend *be, int arg) { grad_rope(be); }
static void run_ew(qins_backend *be, int kind) { grad_elementwise(be, kind); }
static void run_embed(qins_backend *be, int arg) { grad_embed(be); }
static void run_attention(qins_backend *be, int pos0) { grad_attention(be, pos0); }
static void run_ce(qins_backend *be, int arg) { grad_cross_entropy(be); }
static void run_validation(qins_backend *be, int arg) { grad_validation(be); }

static void test_matmul_backward(void **st) {
  for_each_backend(run_matmul, QINS_DT_F32);
  for_each_backend(run_matmul, QINS_DT_F16);
  for_each_backend(run_matmul, QINS_DT_BF16);
}
static void test_matmul_backward_quantized(void **st) { for_each_backend(run_matmul_q, 0); }
static void test_add_mul_backward(void **st) { for_each_backend(run_add_mul, 0); }
static void test_rmsnorm_backward(void **st) { for_each_backend(run_norm, 0); }
static void test_layernorm_backward(void **st) { for_each_backend(run_norm, 1); }
static void test_rope_backward(void **st) { for_each_backend(run_rope, 0); }
static void test_softmax_backward(void **st) { for_each_backend(run_ew, 0); }
static void test_silu_backward(void **st) { for_each_backend(run_ew, 1); }
static void test_gelu_tanh_backward(void **st) { for_each_backend(run_ew, 2); }
static void test_silu_mul_backward(void **st) { for_each_backend(run_ew, 3); }
static void test_embed_backward(void **st) { for_each_backend(run_embed, 0); }
static void test_attention_backward(void **st) {
  for_each_backend(run_attention, 0);
  for_each_backend(run_attention, 2);
}
static void test_cross_entropy(void **st) { for_each_backend(run_ce, 0); }
static void test_backward_validation(void **st) { for_each_backend(run_validation, 0); }

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matmul_backward),    cmocka_unit_test(test_matmul_backward_quantized),
      cmocka_unit_test(test_add_mul_backward),   cmocka_unit_test(test_rmsnorm_backward),
      cmocka_unit_test(test_layernorm_backward), cmocka_unit_test(test_rope_backward),
      cmocka_unit_test(test_softmax_backward),   cmocka_unit_test(test_silu_backward),
      cmocka_unit_test(test_gelu_tanh_backward), cmocka_unit_test(test_silu_mul_backward),
      cmocka_unit_test(test_embed_backward),     cmocka_unit_test(test_attention_backward),
      cmocka_unit_test(test_cross_entropy),      cmocka_unit_test(test_backward_validation),
      cmocka_unit_test(test_cpu_fast_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
