/* Every non-codec op on every backend against the double-precision reference in tests/ref_ops.c.
 *
 * One table (op_cases) drives it: each row names an op variant, the shapes it runs at, the
 * tolerance and the runner. Each backend is its own cmocka group ("ops[cpu]", "ops[vk:0]", and
 * "ops[cpu-ref]" for the cpu reference loops), so a failure names the backend, op and shape.
 * Inputs are fresh random values (seed printed by tests/test_util.c); outputs are NaN-poisoned
 * before each run so an element a backend forgets to write fails the comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "tests/ref_ops.h"
#include "tests/test_util.h"

/* ---- tolerances: relative L2 error ||got - ref|| / ||ref|| against the double reference ----
 * Each leaves 10-100x headroom over what the cpu backend shows at these shapes (QINS_TEST_REPORT=1
 * prints every measured error), room for another summation order or f32 transcendental, and stays
 * far below what any indexing or formula mistake gives (one wrong element in 66k shows as ~4e-3). */
#define TOL_EXACT 0.0       /* lookups and conversions: embed, copy, cast, argmax, topk */
#define TOL_ELEMENTWISE 1e-6 /* add, mul: one f32 rounding per element */
#define TOL_ACTIVATION 1e-5 /* silu, gelu_tanh, silu_mul: f32 exp/tanh are a few ulp */
#define TOL_MATMUL 2e-5     /* f32 dot products over K up to 1000; f16/bf16 weights decode exactly */
#define TOL_NORM 1e-5       /* rmsnorm, layernorm: a reduction, a rsqrt and a product */
#define TOL_ROPE 1e-5       /* f32 cos/sin of angles up to ~4096 rad */
#define TOL_SOFTMAX 1e-5    /* f32 exp and a sum over the row */
#define TOL_ATTENTION 2e-5  /* two reductions (q.k over D, weights.v over T) and a softmax */

#define MAX_SHAPES 8

enum { F_BIAS = 1, F_BCAST = 2, F_INPLACE = 4, F_HALF = 8, F_TIES = 16 };
enum { K_SOFTMAX, K_SILU, K_GELU, K_SILU_MUL, K_RMSNORM, K_LAYERNORM, K_ADD, K_MUL };

typedef struct op_case op_case;
typedef void (*op_runner)(qins_backend *be, const op_case *c, const int64_t *s, const char *what);

struct op_case {
  const char *name;
  op_runner run;
  double tol;
  int kind;               /* which op, for runners shared by several */
  int flags;              /* F_* */
  qins_dtype dt, dt2;     /* weight/table dtype; cast source and destination */
  float param;            /* rope attn_factor */
  int64_t shapes[MAX_SHAPES][5]; /* meaning per runner; a row starting with 0 ends the list */
};

/* ------------------------------------------------------------------ helpers */

static void make_in(qins_backend *be, qins_tensor *t, const char *name, qins_dtype dt, int ndim, const int64_t *shape,
                    const void *data) {
  test_tensor_make(be, t, name, dt, ndim, shape, data);
}

static void make_out(qins_backend *be, qins_tensor *t, const char *name, qins_dtype dt, int ndim,
                     const int64_t *shape) {
  test_tensor_make(be, t, name, dt, ndim, shape, NULL);
  test_poison(t);
}

static void *read_back(const qins_tensor *t) {
  void *p = malloc(qins_tensor_nbytes(t));
  assert_non_null(p);
  assert_int_equal(qins_tensor_read(t, p), 0);
  return p;
}

static float *randn(int64_t n, float std) {
  float *p = malloc((size_t)n * sizeof *p);
  assert_non_null(p);
  test_fill_normal(p, n, std);
  return p;
}

/* f32 values stored as dt (f32: a copy; f16/bf16: rounded). */
static void *to_dtype(const float *x, int64_t n, qins_dtype dt) {
  if (dt == QINS_DT_F32) {
    float *p = malloc((size_t)n * 4);
    memcpy(p, x, (size_t)n * 4);
    return p;
  }
  uint16_t *p = malloc((size_t)n * 2);
  for (int64_t i = 0; i < n; i++) p[i] = dt == QINS_DT_F16 ? qins_f32_to_f16(x[i]) : qins_f32_to_bf16(x[i]);
  return p;
}

#define CHECK_OK(call, what)                                                       \
  do {                                                                             \
    int rc_ = (call);                                                              \
    if (rc_) fail_msg("%s: op failed (%d): %s", (what), rc_, qins_error_msg());    \
  } while (0)

/* test_assert_close, and with QINS_TEST_REPORT=1 the error itself printed (for choosing tolerances). */
static void check_close(const char *what, const float *got, const float *want, int64_t n, double tol) {
  static int report = -1;
  if (report < 0) report = getenv("QINS_TEST_REPORT") != NULL;
  if (report) fprintf(stderr, "  rel-l2 %.3g (tol %.3g) %s\n", test_rel_l2(got, want, n), tol, what);
  test_assert_close(what, got, want, n, tol);
}

static void assert_same_i32(const char *what, const int32_t *got, const int32_t *want, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (got[i] != want[i]) fail_msg("%s: index %lld: got %d want %d", what, (long long)i, got[i], want[i]);
}

/* ------------------------------------------------------------------ runners */

/* s = {M, N, K} */
static void run_matmul(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t m = s[0], n = s[1], k = s[2];
  float *x = randn(m * k, 1.0f), *wf = randn(n * k, 1.0f), *b = randn(n, 1.0f);
  void *w = to_dtype(wf, n * k, c->dt);
  float *want = malloc((size_t)(m * n) * 4);
  qins_tensor tx, tw, tb, ty;
  make_in(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){m, k}, x);
  make_in(be, &tw, "w", c->dt, 2, (int64_t[]){n, k}, w);
  make_in(be, &tb, "bias", QINS_DT_F32, 1, (int64_t[]){n}, b);
  make_out(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){m, n});
  CHECK_OK(qins_op_matmul(be, &tx, &tw, (c->flags & F_BIAS) ? &tb : NULL, &ty), what);
  float *got = read_back(&ty);
  ref_matmul(x, w, c->dt, (c->flags & F_BIAS) ? b : NULL, want, m, n, k);
  check_close(what, got, want, m * n, c->tol);
  qins_tensor_free(&tx); qins_tensor_free(&tw); qins_tensor_free(&tb); qins_tensor_free(&ty);
  free(x); free(wf); free(b); free(w); free(want); free(got);
}

/* s = {rows, cols}: add/mul, b full or one row (F_BCAST), y aliasing a (F_INPLACE) */
static void run_binary(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t rows = s[0], cols = s[1], n = rows * cols, nb = (c->flags & F_BCAST) ? cols : n;
  float *a = randn(n, 1.0f), *b = randn(nb, 1.0f), *want = malloc((size_t)n * 4);
  qins_tensor ta, tb, ty;
  make_in(be, &ta, "a", QINS_DT_F32, 2, (int64_t[]){rows, cols}, a);
  if (c->flags & F_BCAST) make_in(be, &tb, "b", QINS_DT_F32, 1, (int64_t[]){cols}, b);
  else make_in(be, &tb, "b", QINS_DT_F32, 2, (int64_t[]){rows, cols}, b);
  qins_tensor *y = &ta;
  if (!(c->flags & F_INPLACE)) {
    make_out(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){rows, cols});
    y = &ty;
  }
  CHECK_OK(c->kind == K_ADD ? qins_op_add(be, &ta, &tb, y) : qins_op_mul(be, &ta, &tb, y), what);
  float *got = read_back(y);
  if (c->kind == K_ADD) ref_add(a, b, want, n, nb);
  else ref_mul(a, b, want, n, nb);
  check_close(what, got, want, n, c->tol);
  if (y != &ta) qins_tensor_free(&ty);
  qins_tensor_free(&ta); qins_tensor_free(&tb);
  free(a); free(b); free(want); free(got);
}

/* s = {rows, D}: rmsnorm, layernorm with or without bias */
static void run_norm(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t rows = s[0], d = s[1], n = rows * d;
  float *x = randn(n, 2.0f), *w = randn(d, 1.0f), *b = randn(d, 1.0f), *want = malloc((size_t)n * 4);
  for (int64_t i = 0; i < n; i++) x[i] += 0.75f; /* a non-zero mean, so layernorm must subtract it */
  const float eps = 1e-5f;
  qins_tensor tx, tw, tb, ty;
  make_in(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){rows, d}, x);
  make_in(be, &tw, "w", QINS_DT_F32, 1, (int64_t[]){d}, w);
  make_in(be, &tb, "b", QINS_DT_F32, 1, (int64_t[]){d}, b);
  make_out(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){rows, d});
  const float *bias = (c->flags & F_BIAS) ? b : NULL;
  if (c->kind == K_RMSNORM) CHECK_OK(qins_op_rmsnorm(be, &tx, &tw, eps, &ty), what);
  else CHECK_OK(qins_op_layernorm(be, &tx, &tw, bias ? &tb : NULL, eps, &ty), what);
  float *got = read_back(&ty);
  if (c->kind == K_RMSNORM) ref_rmsnorm(x, w, eps, want, rows, d);
  else ref_layernorm(x, w, bias, eps, want, rows, d);
  check_close(what, got, want, n, c->tol);
  qins_tensor_free(&tx); qins_tensor_free(&tw); qins_tensor_free(&tb); qins_tensor_free(&ty);
  free(x); free(w); free(b); free(want); free(got);
}

/* s = {M, H, D, rot_dim}; mode from F_HALF; attn_factor = param; in place with F_INPLACE */
static void run_rope(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t m = s[0], h = s[1], d = s[2], n = m * h * d;
  int rot = (int)s[3], mode = (c->flags & F_HALF) ? QINS_ROPE_HALF : QINS_ROPE_INTERLEAVED;
  float *x = randn(n, 1.0f), *want = malloc((size_t)n * 4), *freq = malloc((size_t)rot / 2 * 4);
  int32_t *pos = malloc((size_t)m * 4);
  for (int64_t t = 0; t < m; t++) pos[t] = (int32_t)(test_rand_u64() % 4096);
  /* theta 10000 with per-dimension factors, as longrope/llama3 scaling puts into the table */
  for (int i = 0; i < rot / 2; i++)
    freq[i] = (float)pow(10000.0, -2.0 * i / rot) * test_rand_uniform(0.25f, 4.0f);
  qins_tensor tx, tp, tf, ty;
  make_in(be, &tx, "x", QINS_DT_F32, 3, (int64_t[]){m, h, d}, x);
  make_in(be, &tp, "pos", QINS_DT_I32, 1, (int64_t[]){m}, pos);
  make_in(be, &tf, "inv_freq", QINS_DT_F32, 1, (int64_t[]){rot / 2}, freq);
  qins_tensor *y = &tx;
  if (!(c->flags & F_INPLACE)) {
    make_out(be, &ty, "y", QINS_DT_F32, 3, (int64_t[]){m, h, d});
    y = &ty;
  }
  CHECK_OK(qins_op_rope(be, &tx, &tp, &tf, rot, c->param, (qins_rope_mode)mode, y), what);
  float *got = read_back(y);
  ref_rope(x, pos, freq, rot, c->param, mode, want, m, h, d);
  check_close(what, got, want, n, c->tol);
  if (y != &tx) qins_tensor_free(&ty);
  qins_tensor_free(&tx); qins_tensor_free(&tp); qins_tensor_free(&tf);
  free(x); free(want); free(freq); free(pos); free(got);
}

/* s = {rows, cols}: softmax, silu, gelu_tanh, silu_mul; softmax in place with F_INPLACE */
static void run_rowwise(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t rows = s[0], cols = s[1], n = rows * cols;
  float *x = randn(n, 3.0f), *u = randn(n, 1.0f), *want = malloc((size_t)n * 4);
  qins_tensor tx, tu, ty;
  make_in(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){rows, cols}, x);
  make_in(be, &tu, "up", QINS_DT_F32, 2, (int64_t[]){rows, cols}, u);
  qins_tensor *y = &tx;
  if (!(c->flags & F_INPLACE)) {
    make_out(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){rows, cols});
    y = &ty;
  }
  switch (c->kind) {
  case K_SOFTMAX: CHECK_OK(qins_op_softmax(be, &tx, y), what); ref_softmax(x, want, rows, cols); break;
  case K_SILU: CHECK_OK(qins_op_silu(be, &tx, y), what); ref_silu(x, want, n); break;
  case K_GELU: CHECK_OK(qins_op_gelu_tanh(be, &tx, y), what); ref_gelu_tanh(x, want, n); break;
  default: CHECK_OK(qins_op_silu_mul(be, &tx, &tu, y), what); ref_silu_mul(x, u, want, n); break;
  }
  float *got = read_back(y);
  check_close(what, got, want, n, c->tol);
  if (y != &tx) qins_tensor_free(&ty);
  qins_tensor_free(&tx); qins_tensor_free(&tu);
  free(x); free(u); free(want); free(got);
}

/* s = {V, D, M} */
static void run_embed(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t v = s[0], d = s[1], m = s[2];
  float *tf = randn(v * d, 1.0f), *want = malloc((size_t)(m * d) * 4);
  void *table = to_dtype(tf, v * d, c->dt);
  int32_t *ids = malloc((size_t)m * 4);
  for (int64_t t = 0; t < m; t++) ids[t] = (int32_t)(test_rand_u64() % (uint64_t)v);
  ids[m - 1] = (int32_t)(v - 1); /* the last row of the table is reachable */
  qins_tensor tt, ti, ty;
  make_in(be, &tt, "table", c->dt, 2, (int64_t[]){v, d}, table);
  make_in(be, &ti, "ids", QINS_DT_I32, 1, (int64_t[]){m}, ids);
  make_out(be, &ty, "y", QINS_DT_F32, 2, (int64_t[]){m, d});
  CHECK_OK(qins_op_embed(be, &tt, &ti, &ty), what);
  float *got = read_back(&ty);
  ref_embed(table, c->dt, ids, want, m, d);
  check_close(what, got, want, m * d, c->tol);
  qins_tensor_free(&tt); qins_tensor_free(&ti); qins_tensor_free(&ty);
  free(tf); free(want); free(table); free(ids); free(got);
}

/* s = {M, Hq, Hkv, D, pos0}; the cache holds 3 positions past the last query, which must stay unseen */
static void run_attention(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t m = s[0], hq = s[1], hkv = s[2], d = s[3], pos0 = s[4], t = pos0 + m + 3;
  float *q = randn(m * hq * d, 1.0f), *k = randn(t * hkv * d, 1.0f), *v = randn(t * hkv * d, 1.0f);
  float *want = malloc((size_t)(m * hq * d) * 4);
  float scale = 1.0f / sqrtf((float)d);
  qins_tensor tq, tk, tv, to;
  make_in(be, &tq, "q", QINS_DT_F32, 3, (int64_t[]){m, hq, d}, q);
  make_in(be, &tk, "k_cache", QINS_DT_F32, 3, (int64_t[]){t, hkv, d}, k);
  make_in(be, &tv, "v_cache", QINS_DT_F32, 3, (int64_t[]){t, hkv, d}, v);
  make_out(be, &to, "out", QINS_DT_F32, 3, (int64_t[]){m, hq, d});
  CHECK_OK(qins_op_attention(be, &tq, &tk, &tv, pos0, scale, &to), what);
  float *got = read_back(&to);
  ref_attention(q, k, v, pos0, scale, want, m, hq, hkv, d);
  check_close(what, got, want, m * hq * d, c->tol);
  qins_tensor_free(&tq); qins_tensor_free(&tk); qins_tensor_free(&tv); qins_tensor_free(&to);
  free(q); free(k); free(v); free(want); free(got);
}

/* Values on a grid of 1/4 (offset so none is 0): many exact ties, to check the tie order. */
static float *tied_values(int64_t n) {
  float *x = randn(n, 2.0f);
  for (int64_t i = 0; i < n; i++) x[i] = roundf(x[i] * 4.0f) / 4.0f + 0.125f;
  return x;
}

/* s = {rows, cols} */
static void run_argmax(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t rows = s[0], cols = s[1];
  float *x = (c->flags & F_TIES) ? tied_values(rows * cols) : randn(rows * cols, 1.0f);
  int32_t *want = malloc((size_t)rows * 4);
  qins_tensor tx, ti;
  make_in(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){rows, cols}, x);
  make_out(be, &ti, "idx", QINS_DT_I32, 1, (int64_t[]){rows});
  CHECK_OK(qins_op_argmax(be, &tx, &ti), what);
  int32_t *got = read_back(&ti);
  ref_argmax(x, want, rows, cols);
  assert_same_i32(what, got, want, rows);
  qins_tensor_free(&tx); qins_tensor_free(&ti);
  free(x); free(want); free(got);
}

/* s = {rows, cols, k} */
static void run_topk(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t rows = s[0], cols = s[1];
  int k = (int)s[2];
  float *x = (c->flags & F_TIES) ? tied_values(rows * cols) : randn(rows * cols, 1.0f);
  float *wantv = malloc((size_t)(rows * k) * 4);
  int32_t *wanti = malloc((size_t)(rows * k) * 4);
  qins_tensor tx, tv, ti;
  make_in(be, &tx, "x", QINS_DT_F32, 2, (int64_t[]){rows, cols}, x);
  make_out(be, &tv, "values", QINS_DT_F32, 2, (int64_t[]){rows, k});
  make_out(be, &ti, "idx", QINS_DT_I32, 2, (int64_t[]){rows, k});
  CHECK_OK(qins_op_topk(be, &tx, k, &tv, &ti), what);
  float *gotv = read_back(&tv);
  int32_t *goti = read_back(&ti);
  ref_topk(x, k, wantv, wanti, rows, cols);
  check_close(what, gotv, wantv, rows * k, c->tol);
  assert_same_i32(what, goti, wanti, rows * k);
  qins_tensor_free(&tx); qins_tensor_free(&tv); qins_tensor_free(&ti);
  free(x); free(wantv); free(wanti); free(gotv); free(goti);
}

/* s = {elements, src offset (elements), dst offset (elements)}: views into larger buffers, with a
 * reshape ([n] -> [1, n]); bytes of the destination buffer outside the view must stay untouched. */
static void run_copy(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t n = s[0], so = s[1], dof = s[2];
  size_t es = qins_dtype_size(c->dt), sbytes = (size_t)(n + so + 5) * es, dbytes = (size_t)(n + dof + 5) * es;
  unsigned char *src = malloc(sbytes), *want = malloc(dbytes);
  for (size_t i = 0; i < sbytes; i++) src[i] = (unsigned char)(1 + test_rand_u64() % 250);
  memset(want, 0xff, dbytes);
  memcpy(want + dof * es, src + so * es, (size_t)n * es);
  qins_buf *bs, *bd;
  assert_int_equal(qins_buf_alloc(be, sbytes, &bs), 0);
  assert_int_equal(qins_buf_alloc(be, dbytes, &bd), 0);
  assert_int_equal(qins_buf_write(bs, 0, src, sbytes), 0);
  unsigned char *poison = malloc(dbytes);
  memset(poison, 0xff, dbytes);
  assert_int_equal(qins_buf_write(bd, 0, poison, dbytes), 0);
  qins_tensor ts, td;
  assert_int_equal(qins_tensor_init(&ts, "src_view", c->dt, 1, (int64_t[]){n}), 0);
  assert_int_equal(qins_tensor_init(&td, "dst_view", c->dt, 2, (int64_t[]){1, n}), 0);
  ts.buf = bs; ts.offset = (size_t)so * es;
  td.buf = bd; td.offset = (size_t)dof * es;
  CHECK_OK(qins_op_copy(be, &ts, &td), what);
  unsigned char *got = malloc(dbytes);
  assert_int_equal(qins_buf_read(bd, 0, got, dbytes), 0);
  for (size_t i = 0; i < dbytes; i++)
    if (got[i] != want[i])
      fail_msg("%s: destination byte %zu (view starts at %zu): got 0x%02x want 0x%02x", what, i, (size_t)dof * es,
               got[i], want[i]);
  qins_buf_free(bs); qins_buf_free(bd);
  free(src); free(want); free(poison); free(got);
}

/* s = {elements}: dt -> dt2; the first values probe rounding ties, f16 subnormals and overflow. */
static void run_cast(qins_backend *be, const op_case *c, const int64_t *s, const char *what) {
  int64_t n = s[0];
  float *xf = randn(n, 8.0f);
  const float probes[] = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 3e-6f, -7e-7f,
                          70000.0f, -65519.0f, 1e-30f, 0.1f};
  for (int64_t i = 0; i < n && i < (int64_t)(sizeof probes / sizeof probes[0]); i++) xf[i] = probes[i];
  void *src = to_dtype(xf, n, c->dt);
  qins_tensor ts, td;
  make_in(be, &ts, "src", c->dt, 1, (int64_t[]){n}, src);
  make_out(be, &td, "dst", c->dt2, 1, (int64_t[]){n});
  CHECK_OK(qins_op_cast(be, &ts, &td), what);
  void *got = read_back(&td);
  for (int64_t i = 0; i < n; i++) {
    double v = ref_load(src, c->dt, i);
    double want = c->dt2 == QINS_DT_F16 ? ref_round_f16(v) : c->dt2 == QINS_DT_BF16 ? ref_round_bf16(v) : (float)v;
    double g = ref_load(got, c->dt2, i);
    if (!(g == want)) fail_msg("%s: element %lld (%.9g): got %.9g want %.9g", what, (long long)i, v, g, want);
  }
  qins_tensor_free(&ts); qins_tensor_free(&td);
  free(xf); free(src); free(got);
}

/* ------------------------------------------------------------------ the table */

#define SHAPES(...) .shapes = {__VA_ARGS__}
#define MM_SHAPES SHAPES({1, 1, 1}, {1, 33, 7}, {1, 300, 1000}, {3, 100, 257}, {7, 257, 33}, {33, 64, 100}, \
                         {70, 129, 300}, {64, 96, 256})
#define EW_SHAPES SHAPES({1, 1}, {3, 7}, {7, 33}, {33, 100}, {4, 257}, {100, 2000})

static const op_case op_cases[] = {
    {"matmul_f32", run_matmul, TOL_MATMUL, 0, 0, QINS_DT_F32, 0, 0, MM_SHAPES},
    {"matmul_f32_bias", run_matmul, TOL_MATMUL, 0, F_BIAS, QINS_DT_F32, 0, 0, MM_SHAPES},
    {"matmul_f16", run_matmul, TOL_MATMUL, 0, 0, QINS_DT_F16, 0, 0, MM_SHAPES},
    {"matmul_f16_bias", run_matmul, TOL_MATMUL, 0, F_BIAS, QINS_DT_F16, 0, 0, MM_SHAPES},
    {"matmul_bf16", run_matmul, TOL_MATMUL, 0, 0, QINS_DT_BF16, 0, 0, MM_SHAPES},
    {"matmul_bf16_bias", run_matmul, TOL_MATMUL, 0, F_BIAS, QINS_DT_BF16, 0, 0, MM_SHAPES},
    {"add", run_binary, TOL_ELEMENTWISE, K_ADD, 0, 0, 0, 0, EW_SHAPES},
    {"add_row_broadcast", run_binary, TOL_ELEMENTWISE, K_ADD, F_BCAST, 0, 0, 0, EW_SHAPES},
    {"add_inplace", run_binary, TOL_ELEMENTWISE, K_ADD, F_INPLACE, 0, 0, 0, EW_SHAPES},
    {"add_inplace_broadcast", run_binary, TOL_ELEMENTWISE, K_ADD, F_INPLACE | F_BCAST, 0, 0, 0, EW_SHAPES},
    {"mul", run_binary, TOL_ELEMENTWISE, K_MUL, 0, 0, 0, 0, EW_SHAPES},
    {"mul_row_broadcast", run_binary, TOL_ELEMENTWISE, K_MUL, F_BCAST, 0, 0, 0, EW_SHAPES},
    {"mul_inplace", run_binary, TOL_ELEMENTWISE, K_MUL, F_INPLACE, 0, 0, 0, EW_SHAPES},
    {"rmsnorm", run_norm, TOL_NORM, K_RMSNORM, 0, 0, 0, 0, EW_SHAPES},
    {"layernorm", run_norm, TOL_NORM, K_LAYERNORM, 0, 0, 0, 0, EW_SHAPES},
    {"layernorm_bias", run_norm, TOL_NORM, K_LAYERNORM, F_BIAS, 0, 0, 0, EW_SHAPES},
#define ROPE_SHAPES SHAPES({1, 1, 2, 2}, {3, 4, 8, 8}, {7, 3, 33, 16}, {5, 2, 64, 64}, {2, 32, 100, 50}, \
                           {33, 4, 128, 96})
    {"rope_interleaved", run_rope, TOL_ROPE, 0, 0, 0, 0, 1.0f, ROPE_SHAPES},
    {"rope_half", run_rope, TOL_ROPE, 0, F_HALF, 0, 0, 1.0f, ROPE_SHAPES},
    {"rope_half_attn_factor", run_rope, TOL_ROPE, 0, F_HALF, 0, 0, 1.1902f, ROPE_SHAPES},
    {"rope_interleaved_inplace", run_rope, TOL_ROPE, 0, F_INPLACE, 0, 0, 0.75f, ROPE_SHAPES},
    {"rope_half_inplace", run_rope, TOL_ROPE, 0, F_HALF | F_INPLACE, 0, 0, 1.0f, ROPE_SHAPES},
    {"softmax", run_rowwise, TOL_SOFTMAX, K_SOFTMAX, 0, 0, 0, 0, EW_SHAPES},
    {"softmax_inplace", run_rowwise, TOL_SOFTMAX, K_SOFTMAX, F_INPLACE, 0, 0, 0, EW_SHAPES},
    {"silu", run_rowwise, TOL_ACTIVATION, K_SILU, 0, 0, 0, 0, EW_SHAPES},
    {"gelu_tanh", run_rowwise, TOL_ACTIVATION, K_GELU, 0, 0, 0, 0, EW_SHAPES},
    {"silu_mul", run_rowwise, TOL_ACTIVATION, K_SILU_MUL, 0, 0, 0, 0, EW_SHAPES},
#define EMBED_SHAPES SHAPES({1, 1, 1}, {10, 7, 3}, {100, 33, 7}, {1000, 257, 5}, {50, 768, 33})
    {"embed_f32", run_embed, TOL_EXACT, 0, 0, QINS_DT_F32, 0, 0, EMBED_SHAPES},
    {"embed_f16", run_embed, TOL_EXACT, 0, 0, QINS_DT_F16, 0, 0, EMBED_SHAPES},
    {"embed_bf16", run_embed, TOL_EXACT, 0, 0, QINS_DT_BF16, 0, 0, EMBED_SHAPES},
    /* {M, Hq, Hkv, D, pos0}: decode (M=1), prefill (pos0=0) and chunked prefill (M>1, pos0>0); MHA and GQA */
    {"attention", run_attention, TOL_ATTENTION, 0, 0, 0, 0, 0,
     SHAPES({1, 1, 1, 1, 0}, {1, 4, 4, 8, 0}, {1, 8, 2, 64, 100}, {3, 6, 2, 7, 5}, {7, 8, 2, 33, 20},
            {16, 4, 1, 64, 0}, {33, 6, 3, 48, 257})},
#define ARG_SHAPES SHAPES({1, 1}, {1, 7}, {3, 33}, {2, 32000}, {7, 257})
    {"argmax", run_argmax, TOL_EXACT, 0, 0, 0, 0, 0, ARG_SHAPES},
    {"argmax_ties", run_argmax, TOL_EXACT, 0, F_TIES, 0, 0, 0, ARG_SHAPES},
#define TOPK_SHAPES SHAPES({1, 1, 1}, {1, 7, 3}, {3, 100, 10}, {2, 32000, 40}, {5, 257, 257})
    {"topk", run_topk, TOL_EXACT, 0, 0, 0, 0, 0, TOPK_SHAPES},
    {"topk_ties", run_topk, TOL_EXACT, 0, F_TIES, 0, 0, 0, TOPK_SHAPES},
#define COPY_SHAPES SHAPES({1, 0, 0}, {7, 3, 0}, {33, 0, 5}, {1000, 7, 33}, {257, 100, 1})
    {"copy_f32_views", run_copy, TOL_EXACT, 0, 0, QINS_DT_F32, 0, 0, COPY_SHAPES},
    {"copy_f16_views", run_copy, TOL_EXACT, 0, 0, QINS_DT_F16, 0, 0, COPY_SHAPES},
    {"copy_i8_views", run_copy, TOL_EXACT, 0, 0, QINS_DT_I8, 0, 0, COPY_SHAPES},
#define CAST_SHAPES SHAPES({1}, {10}, {33}, {1000}, {4099})
    {"cast_f32_f16", run_cast, TOL_EXACT, 0, 0, QINS_DT_F32, QINS_DT_F16, 0, CAST_SHAPES},
    {"cast_f32_bf16", run_cast, TOL_EXACT, 0, 0, QINS_DT_F32, QINS_DT_BF16, 0, CAST_SHAPES},
    {"cast_f16_f32", run_cast, TOL_EXACT, 0, 0, QINS_DT_F16, QINS_DT_F32, 0, CAST_SHAPES},
    {"cast_bf16_f32", run_cast, TOL_EXACT, 0, 0, QINS_DT_BF16, QINS_DT_F32, 0, CAST_SHAPES},
    {"cast_f16_bf16", run_cast, TOL_EXACT, 0, 0, QINS_DT_F16, QINS_DT_BF16, 0, CAST_SHAPES},
    {"cast_bf16_f16", run_cast, TOL_EXACT, 0, 0, QINS_DT_BF16, QINS_DT_F16, 0, CAST_SHAPES},
    {"cast_f32_f32", run_cast, TOL_EXACT, 0, 0, QINS_DT_F32, QINS_DT_F32, 0, CAST_SHAPES},
};
#define N_CASES ((int)(sizeof op_cases / sizeof op_cases[0]))

/* ------------------------------------------------------------------ cmocka plumbing */

static qins_backend *g_be;     /* the backend of the group being run */
static const char *g_be_spec;  /* its spec; "cpu-ref" selects the cpu reference loops */

static int group_setup(void **state) {
  (void)state;
  int rc;
  if (strcmp(g_be_spec, "cpu-ref") == 0) {
    setenv("QINS_CPU_REFERENCE", "1", 1);
    rc = qins_backend_create("cpu", &g_be);
    unsetenv("QINS_CPU_REFERENCE");
  } else {
    rc = qins_backend_create(g_be_spec, &g_be);
  }
  if (rc) fprintf(stderr, "backend %s: %s\n", g_be_spec, qins_error_msg());
  else fprintf(stderr, "backend %s: %s\n", g_be_spec, g_be->device_name);
  return rc ? -1 : 0;
}

static int group_teardown(void **state) {
  (void)state;
  qins_backend_destroy(g_be);
  g_be = NULL;
  return 0;
}

static void run_case(void **state) {
  const op_case *c = *state;
  for (int i = 0; i < MAX_SHAPES && c->shapes[i][0]; i++) {
    const int64_t *s = c->shapes[i];
    char what[192];
    snprintf(what, sizeof what, "%s/%s shape {%lld,%lld,%lld,%lld,%lld}", g_be_spec, c->name, (long long)s[0],
             (long long)s[1], (long long)s[2], (long long)s[3], (long long)s[4]);
    c->run(g_be, c, s, what);
  }
}

/* ------------------------------------------------------------------ validation (wrappers, cpu) */

/* The wrapper must fail with QINS_EINVAL and a message holding every string in `needles`. */
#define EXPECT_REJECT(call, ...)                                                                  \
  do {                                                                                            \
    int rc_ = (call);                                                                             \
    const char *needles_[] = {__VA_ARGS__};                                                       \
    if (rc_ != QINS_EINVAL) fail_msg("%s: expected QINS_EINVAL, got %d", #call, rc_);           \
    for (size_t i_ = 0; i_ < sizeof needles_ / sizeof needles_[0]; i_++)                         \
      if (!strstr(qins_error_msg(), needles_[i_]))                                                \
        fail_msg("%s: message '%s' lacks '%s'", #call, qins_error_msg(), needles_[i_]);           \
  } while (0)

static void test_validation(void **state) {
  (void)state;
  qins_backend *be, *other;
  assert_int_equal(qins_backend_create("cpu:1", &be), 0);
  assert_int_equal(qins_backend_create("cpu:1", &other), 0);
  qins_tensor x, w, w8, bias_bad, y, y_bad, xi, pos, pos_f, freq, q, kc, vc, kc_bad, out, ids_f, table, idx, vals,
      xh, yi, elsewhere, unplaced;
  make_in(be, &x, "act_x", QINS_DT_F32, 2, (int64_t[]){3, 8}, NULL);
  make_in(be, &w, "wt_w", QINS_DT_F32, 2, (int64_t[]){5, 8}, NULL);
  make_in(be, &w8, "wt_i8", QINS_DT_I8, 2, (int64_t[]){5, 8}, NULL);
  make_in(be, &bias_bad, "bias_b", QINS_DT_F32, 1, (int64_t[]){4}, NULL);
  make_in(be, &y, "out_y", QINS_DT_F32, 2, (int64_t[]){3, 5}, NULL);
  make_in(be, &y_bad, "out_bad", QINS_DT_F32, 2, (int64_t[]){3, 4}, NULL);
  make_in(be, &xi, "act_i32", QINS_DT_I32, 2, (int64_t[]){3, 8}, NULL);
  make_in(be, &pos, "pos_ids", QINS_DT_I32, 1, (int64_t[]){2}, NULL);
  make_in(be, &pos_f, "pos_float", QINS_DT_F32, 1, (int64_t[]){2}, NULL);
  make_in(be, &freq, "inv_freq", QINS_DT_F32, 1, (int64_t[]){4}, NULL);
  make_in(be, &q, "q_heads", QINS_DT_F32, 3, (int64_t[]){2, 6, 8}, NULL);
  make_in(be, &kc, "k_cache", QINS_DT_F32, 3, (int64_t[]){4, 2, 8}, NULL);
  make_in(be, &vc, "v_cache", QINS_DT_F32, 3, (int64_t[]){4, 2, 8}, NULL);
  make_in(be, &kc_bad, "k_cache4", QINS_DT_F32, 3, (int64_t[]){4, 4, 8}, NULL);
  make_in(be, &out, "attn_out", QINS_DT_F32, 3, (int64_t[]){2, 6, 8}, NULL);
  make_in(be, &ids_f, "ids_float", QINS_DT_F32, 1, (int64_t[]){3}, NULL);
  make_in(be, &table, "emb_table", QINS_DT_F32, 2, (int64_t[]){10, 8}, NULL);
  make_in(be, &idx, "top_idx", QINS_DT_I32, 2, (int64_t[]){3, 2}, NULL);
  make_in(be, &vals, "top_vals", QINS_DT_F32, 2, (int64_t[]){3, 2}, NULL);
  make_in(be, &xh, "half_x", QINS_DT_F16, 2, (int64_t[]){3, 8}, NULL);
  make_in(be, &yi, "cast_i32", QINS_DT_I32, 2, (int64_t[]){3, 8}, NULL);
  make_in(other, &elsewhere, "other_w", QINS_DT_F32, 2, (int64_t[]){5, 8}, NULL);
  assert_int_equal(qins_tensor_init(&unplaced, "nobuf_w", QINS_DT_F32, 2, (int64_t[]){5, 8}), 0);

  /* matmul: dtypes, K mismatch, output shape, bias length, placement */
  EXPECT_REJECT(qins_op_matmul(be, &xi, &w, NULL, &y), "matmul", "act_i32", "must be f32");
  EXPECT_REJECT(qins_op_matmul(be, &x, &w8, NULL, &y), "wt_i8", "f32, f16 or bf16");
  EXPECT_REJECT(qins_op_matmul(be, &x, &y, NULL, &y), "act_x", "out_y", "K=");
  EXPECT_REJECT(qins_op_matmul(be, &x, &w, NULL, &y_bad), "out_bad", "[3,5]");
  EXPECT_REJECT(qins_op_matmul(be, &x, &w, &bias_bad, &y), "bias_b", "5 elements");
  EXPECT_REJECT(qins_op_matmul(be, &x, &unplaced, NULL, &y), "nobuf_w", "no buffer");
  EXPECT_REJECT(qins_op_matmul(be, &x, &elsewhere, NULL, &y), "other_w", "lives on backend");
  /* elementwise and norms */
  EXPECT_REJECT(qins_op_add(be, &x, &bias_bad, &x), "add", "bias_b", "act_x");
  EXPECT_REJECT(qins_op_mul(be, &x, &x, &y), "mul", "out_y", "element count");
  EXPECT_REJECT(qins_op_silu(be, &xh, &x), "silu", "half_x", "must be f32");
  EXPECT_REJECT(qins_op_rmsnorm(be, &x, &bias_bad, 1e-5f, &x), "rmsnorm", "bias_b", "8 elements");
  EXPECT_REJECT(qins_op_layernorm(be, &x, &freq, &bias_bad, 1e-5f, &x), "layernorm", "inv_freq");
  EXPECT_REJECT(qins_op_silu_mul(be, &x, &xi, &x), "silu_mul", "act_i32");
  /* rope */
  EXPECT_REJECT(qins_op_rope(be, &q, &pos_f, &freq, 8, 1.0f, QINS_ROPE_HALF, &q), "rope", "pos_float", "i32");
  EXPECT_REJECT(qins_op_rope(be, &q, &pos, &freq, 7, 1.0f, QINS_ROPE_HALF, &q), "rot_dim 7", "q_heads");
  EXPECT_REJECT(qins_op_rope(be, &q, &pos, &freq, 6, 1.0f, QINS_ROPE_HALF, &q), "inv_freq", "3 elements");
  EXPECT_REJECT(qins_op_rope(be, &x, &pos, &freq, 8, 1.0f, QINS_ROPE_HALF, &x), "act_x", "[M,H,D]");
  /* attention: head grouping, positions, cache shapes */
  EXPECT_REJECT(qins_op_attention(be, &q, &kc_bad, &kc_bad, 0, 1.0f, &out), "attention", "not a multiple");
  EXPECT_REJECT(qins_op_attention(be, &q, &kc, &vc, 3, 1.0f, &out), "positions 3..4", "cache of 4");
  EXPECT_REJECT(qins_op_attention(be, &q, &kc, &kc_bad, 0, 1.0f, &out), "k_cache", "k_cache4");
  EXPECT_REJECT(qins_op_attention(be, &q, &kc, &vc, 0, 1.0f, &kc_bad), "k_cache4", "shape of", "q_heads");
  EXPECT_REJECT(qins_op_attention(be, &q, &kc, &xi, 0, 1.0f, &out), "act_i32", "V cache");
  /* embed, argmax, topk, copy, cast */
  EXPECT_REJECT(qins_op_embed(be, &table, &ids_f, &y), "embed", "ids_float", "i32");
  EXPECT_REJECT(qins_op_embed(be, &table, &pos, &y), "out_y", "[2,8]");
  EXPECT_REJECT(qins_op_argmax(be, &x, &vals), "argmax", "top_vals", "i32");
  EXPECT_REJECT(qins_op_topk(be, &x, 0, &vals, &idx), "topk", "k=0");
  EXPECT_REJECT(qins_op_topk(be, &x, 2, &idx, &idx), "top_idx", "f32");
  EXPECT_REJECT(qins_op_copy(be, &x, &xh), "copy", "act_x", "half_x", "dtype");
  EXPECT_REJECT(qins_op_copy(be, &x, &y), "act_x", "out_y", "size");
  EXPECT_REJECT(qins_op_cast(be, &x, &yi), "cast", "cast_i32", "f32, f16 or bf16");

  /* ids are a precondition the wrapper does not scan; the cpu backend still refuses a bad one */
  int32_t bad_ids[2] = {1, 10};
  assert_int_equal(qins_tensor_write(&pos, bad_ids), 0);
  qins_tensor emb_out;
  make_in(be, &emb_out, "emb_out", QINS_DT_F32, 2, (int64_t[]){2, 8}, NULL);
  assert_int_equal(qins_op_embed(be, &table, &pos, &emb_out), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "id 10 at position 1 outside vocabulary of 10"));
  qins_tensor_free(&emb_out);

  qins_tensor *all[] = {&x, &w, &w8, &bias_bad, &y, &y_bad, &xi, &pos, &pos_f, &freq, &q, &kc, &vc,
                        &kc_bad, &out, &ids_f, &table, &idx, &vals, &xh, &yi, &elsewhere};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qins_tensor_free(all[i]);
  qins_backend_destroy(other);
  qins_backend_destroy(be);
}

int main(void) {
  test_seed();
  char names[16][64];
  int nb = test_backends(names, 15);
  /* the cpu reference loops are checked too: they are what other backends' users debug against */
  const char *specs[17];
  int ns = 0;
  for (int i = 0; i < nb; i++) {
    specs[ns++] = names[i];
    if (strcmp(names[i], "cpu") == 0) specs[ns++] = "cpu-ref";
  }
  int failed = 0;
  struct CMUnitTest *tests = calloc(N_CASES, sizeof *tests);
  char(*test_names)[96] = calloc(N_CASES, sizeof *test_names);
  for (int b = 0; b < ns; b++) {
    for (int i = 0; i < N_CASES; i++) {
      snprintf(test_names[i], sizeof test_names[i], "%s/%s", specs[b], op_cases[i].name);
      tests[i] = (struct CMUnitTest){test_names[i], run_case, NULL, NULL, (void *)&op_cases[i]};
    }
    char group[80];
    snprintf(group, sizeof group, "ops[%s]", specs[b]);
    g_be_spec = specs[b];
    failed += _cmocka_run_group_tests(group, tests, N_CASES, group_setup, group_teardown);
  }
  free(tests);
  free(test_names);
  const struct CMUnitTest validation[] = {cmocka_unit_test(test_validation)};
  failed += cmocka_run_group_tests_name("ops[validation]", validation, NULL, NULL);
  return failed ? 1 : 0;
}
