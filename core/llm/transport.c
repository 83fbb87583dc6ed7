/* Transport on real activations: input capture through the runtime's tap, linearised-transport
 * calibration (operating points, alphas, W'', c, Jacobian statistics) and its measurement. */
#include "core/llm/transport.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/qins_codec.h"

static const qins_llm_mat path_mat[QINS_TRANSPORT_PATHS] = {QINS_LLM_WV, QINS_LLM_WO, QINS_LLM_WUP, QINS_LLM_WGATE,
                                                            QINS_LLM_WDOWN};

qins_llm_mat qins_transport_matrix(qins_path p) {
  return p >= 0 && p < QINS_TRANSPORT_PATHS ? path_mat[p] : QINS_LLM_MAT_COUNT;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- capture */

typedef struct cap_slot {
  float *x;
  int n, cap, K;
} cap_slot;

struct qins_transport_capture {
  int n_layers;
  cap_slot *s; /* [n_layers * QINS_TRANSPORT_PATHS] */
};

static int path_of(qins_llm_mat m) {
  for (int p = 0; p < QINS_TRANSPORT_PATHS; p++)
    if (path_mat[p] == m) return p;
  return -1;
}

static int tap(void *user, int layer, qins_llm_mat which, const qins_tensor *x, int pos0) {
  (void)pos0;
  qins_transport_capture *c = user;
  int p = path_of(which);
  if (p < 0 || layer < 0 || layer >= c->n_layers) return 0;
  cap_slot *s = &c->s[layer * QINS_TRANSPORT_PATHS + p];
  int n = (int)x->shape[0], K = (int)x->shape[1];
  if (s->K && s->K != K) return qins_error_set(QINS_EINTERNAL, "transport capture: layer %d width %d then %d", layer, s->K, K);
  s->K = K;
  if (s->n + n > s->cap) {
    int cap = (s->n + n) * 2;
    float *nx = realloc(s->x, (size_t)cap * (size_t)K * sizeof(float));
    if (!nx) return qins_error_set(QINS_ENOMEM, "transport capture: out of memory");
    s->x = nx;
    s->cap = cap;
  }
  int rc = qins_buf_read(x->buf, x->offset, s->x + (size_t)s->n * K, (size_t)n * (size_t)K * sizeof(float));
  if (rc) return rc;
  s->n += n;
  return 0;
}

int qins_transport_capture_run(qins_llm *llm, const int32_t *const *prompts, const int *lens, int n_prompts,
                               qins_transport_capture **out) {
  *out = NULL;
  const qins_model_config *cfg = qins_llm_config(llm);
  qins_transport_capture *c = calloc(1, sizeof *c);
  if (!c) return qins_error_set(QINS_ENOMEM, "transport capture: out of memory");
  c->n_layers = cfg->n_layers;
  c->s = calloc((size_t)cfg->n_layers * QINS_TRANSPORT_PATHS, sizeof *c->s);
  if (!c->s) {
    free(c);
    return qins_error_set(QINS_ENOMEM, "transport capture: out of memory");
  }
  int rc = 0;
  qins_llm_set_tap(llm, tap, c);
  for (int i = 0; i < n_prompts && !rc; i++) {
    qins_llm_reset(llm);
    /* no logits: the tap sees every layer's rows, the head is not needed */
    if (lens[i] > 0) rc = qins_llm_forward(llm, prompts[i], lens[i], 0, NULL, NULL);
  }
  qins_llm_set_tap(llm, NULL, NULL);
  qins_llm_reset(llm);
  if (rc) {
    qins_transport_capture_free(c);
    return qins_error_wrap(rc, "transport capture: ");
  }
  *out = c;
  return 0;
}

const float *qins_transport_capture_rows(const qins_transport_capture *c, int layer, qins_path p, int *n_rows,
                                         int *K) {
  *n_rows = 0;
  if (K) *K = 0;
  if (!c || layer < 0 || layer >= c->n_layers || p < 0 || p >= QINS_TRANSPORT_PATHS) return NULL;
  const cap_slot *s = &c->s[layer * QINS_TRANSPORT_PATHS + p];
  if (!s->n) return NULL;
  *n_rows = s->n;
  if (K) *K = s->K;
  return s->x;
}

void qins_transport_capture_free(qins_transport_capture *c) {
  if (!c) return;
  for (int i = 0; i < c->n_layers * QINS_TRANSPORT_PATHS; i++) free(c->s[i].x);
  free(c->s);
  free(c);
}

/* ---------------------------------------------------------------- calibration */

static double Ep(double x, double a) { /* E'(x) for x != 0 (QINS.md 1); at 0 the one-sided limit */
  double d = 1 + a * fabs(x);
  return -a / (d * d);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

void qins_transport_lin_free(qins_transport_lin *lin) {
  if (!lin) return;
  free(lin->x0), free(lin->ai), free(lin->y0), free(lin->ao), free(lin->w2), free(lin->c);
  memset(lin, 0, sizeof *lin);
}

int qins_transport_calibrate(const float *x, int nc, const float *W, const float *b, int N, int K,
                             qins_transport_lin *lin) {
  memset(lin, 0, sizeof *lin);
  if (nc < 2 || N < 1 || K < 1)
    return qins_error_set(QINS_EINVAL, "transport calibrate: %d rows of [%d -> %d] (need 2 rows or more)", nc, K, N);
  lin->N = N;
  lin->K = K;
  lin->x0 = calloc((size_t)K, 8), lin->ai = calloc((size_t)K, 8);
  lin->y0 = calloc((size_t)N, 8), lin->ao = calloc((size_t)N, 8);
  lin->w2 = malloc((size_t)N * K * 8), lin->c = calloc((size_t)N, 8);
  float *col = malloc((size_t)nc * sizeof(float));
  double *jac = malloc((size_t)N * K * 8);
  int rc = QINS_ENOMEM;
  if (!lin->x0 || !lin->ai || !lin->y0 || !lin->ao || !lin->w2 || !lin->c || !col || !jac) goto done;
  qins_alpha_spec mse = {QINS_ALPHA_MSE, 0};
  double spread = 0;
  for (int i = 0; i < K; i++) {
    double m = 0, v = 0;
    for (int t = 0; t < nc; t++) col[t] = x[(size_t)t * K + i], m += col[t];
    m /= nc;
    for (int t = 0; t < nc; t++) v += (col[t] - m) * (col[t] - m);
    lin->x0[i] = m;
    spread += sqrt(v / nc) / (fabs(m) > 1e-12 ? fabs(m) : 1e-12);
    lin->ai[i] = qins_codec_calibrate_row(col, nc, QINS_DT_QINS8, mse);
  }
  lin->spread = spread / K;
  for (int o = 0; o < N; o++) {
    const float *w = W + (size_t)o * K;
    double acc = b ? b[o] : 0;
    for (int i = 0; i < K; i++) acc += (double)w[i] * lin->x0[i];
    lin->y0[o] = acc;
    for (int t = 0; t < nc; t++) { /* the FP outputs of the calibration rows */
      double y = b ? b[o] : 0;
      for (int i = 0; i < K; i++) y += (double)w[i] * x[(size_t)t * K + i];
      col[t] = (float)y;
    }
    lin->ao[o] = qins_codec_calibrate_row(col, nc, QINS_DT_QINS8, mse);
    double c = qins_codec_E((float)lin->y0[o], (float)lin->ao[o]);
    for (int i = 0; i < K; i++) {
      double ratio = Ep(lin->y0[o], lin->ao[o]) / Ep(lin->x0[i], lin->ai[i]);
      lin->w2[(size_t)o * K + i] = ratio * w[i];
      jac[(size_t)o * K + i] = fabs(ratio);
      c -= lin->w2[(size_t)o * K + i] * qins_codec_E((float)lin->x0[i], (float)lin->ai[i]);
    }
    lin->c[o] = c;
  }
  size_t nj = (size_t)N * K;
  qsort(jac, nj, 8, cmp_d);
  lin->jac_med = jac[nj / 2];
  lin->jac_p90 = jac[(size_t)(0.9 * (double)(nj - 1))];
  lin->jac_max = jac[nj - 1];
  rc = 0;
done:
  free(col);
  free(jac);
  if (rc) {
    qins_transport_lin_free(lin);
    return qins_error_set(rc, "transport calibrate: out of memory");
  }
  return 0;
}

/* ---------------------------------------------------------------- measurement */

/* y[t, o] = b_o + sum_i W_oi x[t, i], accumulated in double (the same loop for every variant). */
static void gemm_ref(const float *x, int T, const float *W, const float *b, int N, int K, float *y) {
  for (int t = 0; t < T; t++)
    for (int o = 0; o < N; o++) {
      double acc = b ? b[o] : 0;
      for (int i = 0; i < K; i++) acc += (double)W[(size_t)o * K + i] * x[(size_t)t * K + i];
      y[(size_t)t * N + o] = (float)acc;
    }
}

int qins_transport_measure(const qins_transport_lin *lin, const float *x, int ne, const float *W, const float *b,
                           int reps, qins_transport_stats *r) {
  memset(r, 0, sizeof *r);
  int N = lin->N, K = lin->K;
  if (ne < 1) return qins_error_set(QINS_EINVAL, "transport measure: no evaluation rows");
  if (reps < 1) reps = 1;
  size_t nx = (size_t)ne * K, ny = (size_t)ne * N;
  float *yfp = malloc(ny * 4), *ye = malloc(ny * 4), *yf = malloc(ny * 4), *yl = malloc(ny * 4);
  float *xq = malloc(nx * 4), *z = malloc(nx * 4);
  if (!yfp || !ye || !yf || !yl || !xq || !z) {
    free(yfp), free(ye), free(yf), free(yl), free(xq), free(z);
    return qins_error_set(QINS_ENOMEM, "transport measure: out of memory");
  }
  /* every timed block: best of reps (a shared machine's load comes and goes) */
  r->t_fp = r->t_exact = r->t_lin = 1e30;
  for (int rep = 0; rep < reps; rep++) {
    double t0 = now_s();
    gemm_ref(x, ne, W, b, N, K, yfp);
    double dt = now_s() - t0;
    if (dt < r->t_fp) r->t_fp = dt;
  }
  /* exact transport, qins8: activations as codes (alpha per channel), decoded by the table */
  const float *lut = qins_codec_lut8();
  for (int rep = 0; rep < reps; rep++) {
    double t0 = now_s();
    for (int t = 0; t < ne; t++)
      for (int i = 0; i < K; i++) {
        int q = qins_codec_x_to_code8(x[(size_t)t * K + i], (float)lin->ai[i]);
        xq[(size_t)t * K + i] = lut[q] * (1.0f / (float)lin->ai[i]);
      }
    gemm_ref(xq, ne, W, b, N, K, ye);
    double dt = now_s() - t0;
    if (dt < r->t_exact) r->t_exact = dt;
  }
  /* exact transport, qins-f32: z = E(x) kept in float, D(z) into the same matmul */
  for (size_t e = 0; e < nx; e++) {
    float a = (float)lin->ai[e % (size_t)K];
    xq[e] = qins_codec_D(qins_codec_E(x[e], a), a);
  }
  gemm_ref(xq, ne, W, b, N, K, yf);
  /* linearised: y ~ D(W'' E(x) + c) */
  for (int rep = 0; rep < reps; rep++) {
    double t0 = now_s();
    for (int t = 0; t < ne; t++)
      for (int i = 0; i < K; i++) z[(size_t)t * K + i] = qins_codec_E(x[(size_t)t * K + i], (float)lin->ai[i]);
    for (int t = 0; t < ne; t++)
      for (int o = 0; o < N; o++) {
        double acc = lin->c[o];
        for (int i = 0; i < K; i++) acc += lin->w2[(size_t)o * K + i] * z[(size_t)t * K + i];
        yl[(size_t)t * N + o] = qins_codec_D((float)acc, (float)lin->ao[o]);
      }
    double dt = now_s() - t0;
    if (dt < r->t_lin) r->t_lin = dt;
  }
  double n_fp = 0, n_e = 0, n_f = 0, n_l = 0, n_le = 0, n_ex = 0;
  long cin = 0, cout = 0;
  for (int t = 0; t < ne; t++) {
    for (int o = 0; o < N; o++) {
      size_t k = (size_t)t * N + o;
      double f = yfp[k], e = ye[k], l = yl[k], g = yf[k];
      n_fp += f * f, n_e += (e - f) * (e - f), n_f += (g - f) * (g - f), n_l += (l - f) * (l - f);
      n_le += (l - e) * (l - e), n_ex += e * e;
      cout += (f >= 0) != (lin->y0[o] >= 0);
    }
    for (int i = 0; i < K; i++) cin += (x[(size_t)t * K + i] >= 0) != (lin->x0[i] >= 0);
  }
  double tiny = 1e-300;
  r->rel_exact = sqrt(n_e / (n_fp + tiny));
  r->rel_exact_f32 = sqrt(n_f / (n_fp + tiny));
  r->rel_lin = sqrt(n_l / (n_fp + tiny));
  r->rel_lin_vs_exact = sqrt(n_le / (n_ex + tiny));
  r->cross_in = (double)cin / ((double)ne * K);
  r->cross_out = (double)cout / ((double)ne * N);
  free(yfp), free(ye), free(yf), free(yl), free(xq), free(z);
  return 0;
}

/* ---------------------------------------------------------------- one layer and path */

static int read_f32(const qins_tensor *t, float *out, const char *what) {
  size_t n = (size_t)qins_tensor_numel(t), es = qins_dtype_size(t->dtype);
  if (t->dtype != QINS_DT_F32 && t->dtype != QINS_DT_F16 && t->dtype != QINS_DT_BF16)
    return qins_error_set(QINS_EUNSUPPORTED, "transport: %s %s is %s (needs the FP weights)", what, t->name,
                          qins_dtype_name(t->dtype));
  void *raw = malloc(n * es);
  if (!raw) return qins_error_set(QINS_ENOMEM, "transport: out of memory");
  int rc = qins_buf_read(t->buf, t->offset, raw, n * es);
  for (size_t e = 0; !rc && e < n; e++)
    out[e] = t->dtype == QINS_DT_F32   ? ((float *)raw)[e]
             : t->dtype == QINS_DT_F16 ? qins_f16_to_f32(((uint16_t *)raw)[e])
                                       : qins_bf16_to_f32(((uint16_t *)raw)[e]);
  free(raw);
  return rc;
}

int qins_transport_weights(qins_llm *llm, int layer, qins_path p, float **W, float **b, int *N, int *K) {
  *W = *b = NULL;
  qins_llm_mat m = qins_transport_matrix(p);
  qins_tensor *t = m == QINS_LLM_MAT_COUNT ? NULL : qins_llm_matrix(llm, layer, m);
  if (!t)
    return qins_error_set(QINS_EUNSUPPORTED, "transport: layer %d has no %s matrix", layer, qins_path_name(p));
  *N = (int)t->shape[0];
  *K = (int)t->shape[1];
  *W = malloc((size_t)*N * (size_t)*K * sizeof(float));
  if (!*W) return qins_error_set(QINS_ENOMEM, "transport: out of memory");
  int rc = read_f32(t, *W, "matrix");
  const qins_tensor *bt = qins_llm_bias(llm, layer, m);
  if (!rc && bt) {
    *b = malloc((size_t)*N * sizeof(float));
    rc = *b ? read_f32(bt, *b, "bias") : qins_error_set(QINS_ENOMEM, "transport: out of memory");
  }
  if (rc) {
    free(*W), free(*b);
    *W = *b = NULL;
  }
  return rc;
}

int qins_transport_layer(qins_llm *llm, const qins_transport_capture *cap, int layer, qins_path p, int calib_rows,
                         int reps, qins_transport_lin *lin_out, qins_transport_stats *st) {
  int n, K, N, Kw;
  const float *x = qins_transport_capture_rows(cap, layer, p, &n, &K);
  if (!x) return qins_error_set(QINS_EUNSUPPORTED, "transport: no %s rows for layer %d", qins_path_name(p), layer);
  if (calib_rows < 2 || calib_rows >= n)
    return qins_error_set(QINS_EINVAL, "transport: layer %d %s: %d calibration rows of %d (need 2..%d)", layer,
                          qins_path_name(p), calib_rows, n, n - 1);
  float *W, *b;
  int rc = qins_transport_weights(llm, layer, p, &W, &b, &N, &Kw);
  if (rc) return rc;
  if (Kw != K) {
    free(W), free(b);
    return qins_error_set(QINS_EINTERNAL, "transport: layer %d %s: matrix takes %d inputs, rows have %d", layer,
                          qins_path_name(p), Kw, K);
  }
  qins_transport_lin lin;
  rc = qins_transport_calibrate(x, calib_rows, W, b, N, K, &lin);
  if (!rc) rc = qins_transport_measure(&lin, x + (size_t)calib_rows * K, n - calib_rows, W, b, reps, st);
  if (!rc && lin_out) *lin_out = lin;
  else qins_transport_lin_free(&lin);
  free(W), free(b);
  return rc;
}
