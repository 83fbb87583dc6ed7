/* Optimizers: AdamW against a hand-written float64 trace of torch.optim.AdamW (decay before the
 * update, bias correction, eps outside the square root, clipping, per-parameter options), the
 * schedule, accumulation, anomaly responses, and the QINS-AdamW invariants of QINS.md section 6. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/train/optim.h"
#include "tests/test_util.h"

/* ---------------------------------------------------------------- AdamW trace */

typedef struct {
  double lr, b1, b2, eps, wd, clip;
} ref_cfg;

/* The float64 reference of one torch.optim.AdamW step on one parameter (g already clipped). */
static void ref_adamw(const ref_cfg *c, double lr, int decay, int64_t t, double *p, double *m, double *v,
                      const double *g, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (decay) p[i] *= 1.0 - lr * c->wd;
    m[i] = c->b1 * m[i] + (1.0 - c->b1) * g[i];
    v[i] = c->b2 * v[i] + (1.0 - c->b2) * g[i] * g[i];
    double mh = m[i] / (1.0 - pow(c->b1, (double)t)), vh = v[i] / (1.0 - pow(c->b2, (double)t));
    p[i] -= lr * mh / (sqrt(vh) + c->eps);
  }
}

static void test_adamw_trace(void **st) {
  enum { NP = 3, STEPS = 6 };
  int64_t sizes[NP] = {7, 1, 13};
  ref_cfg rc = {0.05, 0.9, 0.95, 1e-8, 0.5, 2.0};
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = (float)rc.lr;
  cfg.adamw.beta1 = (float)rc.b1;
  cfg.adamw.beta2 = (float)rc.b2;
  cfg.adamw.eps = (float)rc.eps;
  cfg.adamw.weight_decay = (float)rc.wd;
  cfg.clip_norm = (float)rc.clip;
  cfg.schedule.warmup_steps = 2;
  cfg.schedule.total_steps = 5;
  cfg.schedule.min_lr_ratio = 0.1f;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float *w[NP], *g[NP];
  double *pw[NP], *pm[NP], *pv[NP];
  qins_param_opts opts[NP];
  for (int k = 0; k < NP; k++) {
    w[k] = malloc((size_t)sizes[k] * sizeof(float));
    g[k] = malloc((size_t)sizes[k] * sizeof(float));
    pw[k] = calloc((size_t)sizes[k], sizeof(double));
    pm[k] = calloc((size_t)sizes[k], sizeof(double));
    pv[k] = calloc((size_t)sizes[k], sizeof(double));
    test_fill_normal(w[k], sizes[k], 1.0f);
    for (int64_t i = 0; i < sizes[k]; i++) pw[k][i] = w[k][i];
    opts[k] = qins_param_opts_default();
  }
  opts[1].no_decay = 1;      /* a "bias": excluded from decay */
  opts[2].lr_scale = 0.25f;  /* a group with its own lr */
  char name[32];
  for (int k = 0; k < NP; k++) {
    snprintf(name, sizeof name, "p%d", k);
    assert_int_equal(qins_optim_add(o, name, w[k], g[k], sizes[k], &opts[k]), k);
  }
  for (int s = 0; s < STEPS; s++) {
    /* gradient scale varies so that some steps are clipped and some are not */
    float scale = (s % 2) ? 3.0f : 0.05f;
    double sq = 0;
    for (int k = 0; k < NP; k++) {
      test_fill_normal(g[k], sizes[k], scale);
      for (int64_t i = 0; i < sizes[k]; i++) sq += (double)g[k][i] * g[k][i];
    }
    double norm = sqrt(sq), coef = rc.clip / (norm + 1e-6);
    if (coef > 1) coef = 1;
    double lr_s = qins_lr_schedule_at(&cfg.schedule, cfg.adamw.lr, s);
    for (int k = 0; k < NP; k++) {
      double *gd = malloc((size_t)sizes[k] * sizeof(double));
      for (int64_t i = 0; i < sizes[k]; i++) gd[i] = (double)g[k][i] * coef;
      ref_adamw(&rc, lr_s * opts[k].lr_scale, !opts[k].no_decay, s + 1, pw[k], pm[k], pv[k], gd, sizes[k]);
      free(gd);
    }
    qins_step_report rep;
    assert_int_equal(qins_optim_step(o, 1.0, &rep), 0);
    assert_int_equal(rep.applied, 1);
    assert_int_equal(rep.anomaly, QINS_ANOMALY_NONE);
    assert_true(fabs(rep.grad_norm - norm) <= 1e-9 * norm);
    assert_true(fabs(rep.clip_scale - coef) <= 1e-6);
    for (int k = 0; k < NP; k++) {
      float *want = malloc((size_t)sizes[k] * sizeof(float));
      for (int64_t i = 0; i < sizes[k]; i++) want[i] = (float)pw[k][i];
      snprintf(name, sizeof name, "AdamW step %d param %d", s + 1, k);
      test_assert_close(name, w[k], want, sizes[k], 2e-6);
      free(want);
    }
  }
  /* the same trace with decay applied AFTER the update differs measurably: the order is tested */
  for (int k = 0; k < NP; k++) {
    free(w[k]); free(g[k]); free(pw[k]); free(pm[k]); free(pv[k]);
  }
  qins_optim_destroy(o);
}

/* Decoupled decay order: with g = 0 after a first step, torch gives p1 = p0 (1 - lr wd) - u where
 * u depends only on the moments; decay after the update would give (p0 - u)(1 - lr wd). */
static void test_adamw_decay_order(void **st) {
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = 0.1f;
  cfg.adamw.weight_decay = 0.5f;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float w = 1.0f, g = 1.0f;
  assert_int_equal(qins_optim_add(o, "w", &w, &g, 1, NULL), 0);
  assert_int_equal(qins_optim_step(o, 0, NULL), 0);
  /* step 1: m_hat / sqrt(v_hat) = 1 (up to eps): p = 1 * (1 - 0.05) - 0.1 = 0.85 */
  assert_true(fabsf(w - 0.85f) < 1e-6f);
  qins_optim_destroy(o);
}

static void test_schedule(void **st) {
  qins_lr_schedule s = {10, 110, 0.1f};
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 0) - 0.1f) < 1e-7f);
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 9) - 1.0f) < 1e-7f);
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 10) - 1.0f) < 1e-7f);
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 60) - 0.55f) < 1e-6f); /* half way: (1 + 0.1) / 2 */
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 110) - 0.1f) < 1e-7f);
  assert_true(fabsf(qins_lr_schedule_at(&s, 1.0f, 500) - 0.1f) < 1e-7f);
  qins_lr_schedule c = {0, 0, 0};
  assert_true(qins_lr_schedule_at(&c, 0.3f, 1000) == 0.3f);
}

/* Three micro-batches accumulated into g equal one step on their mean. */
static void test_accumulation(void **st) {
  enum { N = 9 };
  qins_optim_config cfg = qins_optim_config_default();
  cfg.accum_steps = 3;
  qins_optim *a, *b;
  assert_int_equal(qins_optim_create(&cfg, &a), 0);
  cfg.accum_steps = 1;
  assert_int_equal(qins_optim_create(&cfg, &b), 0);
  float wa[N], wb[N], ga[N], gb[N], micro[3][N];
  test_fill_normal(wa, N, 1.0f);
  memcpy(wb, wa, sizeof wa);
  assert_int_equal(qins_optim_add(a, "w", wa, ga, N, NULL), 0);
  assert_int_equal(qins_optim_add(b, "w", wb, gb, N, NULL), 0);
  for (int step = 0; step < 2; step++) {
    qins_optim_zero_grad(a);
    for (int k = 0; k < 3; k++) {
      test_fill_normal(micro[k], N, 1.0f);
      for (int i = 0; i < N; i++) ga[i] += micro[k][i];
      assert_int_equal(qins_optim_micro_done(a), k == 2);
    }
    for (int i = 0; i < N; i++) gb[i] = (micro[0][i] + micro[1][i] + micro[2][i]) / 3.0f;
    assert_true(fabs(qins_optim_grad_norm(a) - qins_optim_grad_norm(b)) < 1e-5 * qins_optim_grad_norm(b));
    assert_int_equal(qins_optim_step(a, 0, NULL), 0);
    assert_int_equal(qins_optim_step(b, 0, NULL), 0);
    test_assert_close("accumulated vs averaged", wa, wb, N, 1e-6);
  }
  qins_optim_destroy(a);
  qins_optim_destroy(b);
}

/* ---------------------------------------------------------------- anomalies */

static void test_anomaly_nonfinite(void **st) {
  qins_optim_config cfg = qins_optim_config_default();
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float w1[4] = {1, 2, 3, 4}, g1[4] = {1, 1, 1, 1}, w2[3] = {1, 1, 1}, g2[3] = {1, 1, 1};
  assert_int_equal(qins_optim_add(o, "layer.norm", w1, g1, 4, NULL), 0);
  assert_int_equal(qins_optim_add(o, "layer.mlp.up", w2, g2, 3, NULL), 1);
  assert_int_equal(qins_optim_step(o, 1.0, NULL), 0);
  float keep1[4], keep2[3];
  memcpy(keep1, w1, sizeof w1);
  memcpy(keep2, w2, sizeof w2);
  g2[2] = NAN;
  qins_step_report r;
  assert_int_equal(qins_optim_step(o, 1.0, &r), 0);
  assert_int_equal(r.anomaly, QINS_ANOMALY_GRAD_NONFINITE);
  assert_int_equal(r.applied, 0);
  assert_int_equal(r.step, 2);
  assert_string_equal(r.tensor, "layer.mlp.up");
  assert_non_null(strstr(r.message, "step 2"));
  assert_non_null(strstr(r.message, "element 2"));
  assert_memory_equal(w1, keep1, sizeof w1);
  assert_memory_equal(w2, keep2, sizeof w2);
  g2[2] = 1;
  assert_int_equal(qins_optim_step(o, INFINITY, &r), 0);
  assert_int_equal(r.anomaly, QINS_ANOMALY_LOSS_NONFINITE);
  assert_int_equal(r.applied, 0);
  assert_int_equal(qins_optim_step(o, 1.0, &r), 0);
  assert_int_equal(r.applied, 1);
  qins_optim_destroy(o);
}

static void spike_run(qins_anomaly_action action, int qins_param) {
  qins_optim_config cfg = qins_optim_config_default();
  cfg.anomaly.spike_factor = 5.0f;
  cfg.anomaly.spike_warmup = 3;
  cfg.anomaly.action = action;
  cfg.anomaly.lr_factor = 0.5f;
  cfg.adamw.weight_decay = 0;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float wa[8], ga[8], wb[8], gb[8];
  test_fill_normal(wa, 8, 0.1f);
  test_fill_normal(wb, 8, 0.1f);
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = qins_param;
  assert_int_equal(qins_optim_add(o, "a", wa, ga, 8, NULL), 0);
  assert_int_equal(qins_optim_add(o, "b", wb, gb, 8, &qo), 1);
  qins_step_report r;
  for (int s = 0; s < 4; s++) {
    test_fill_normal(ga, 8, 0.01f);
    test_fill_normal(gb, 8, 0.01f);
    assert_int_equal(qins_optim_step(o, 1.0, &r), 0);
    assert_int_equal(r.anomaly, QINS_ANOMALY_NONE);
  }
  float before[8];
  memcpy(before, wb, sizeof wb);
  test_fill_normal(gb, 8, 10.0f); /* 1000x the usual norm, all in "b" */
  assert_int_equal(qins_optim_step(o, 1.0, &r), 0);
  assert_int_equal(r.anomaly, QINS_ANOMALY_NORM_SPIKE);
  assert_string_equal(r.tensor, "b");
  assert_non_null(strstr(r.message, "step 5"));
  if (action == QINS_ANOMALY_SCALE_LR) {
    assert_int_equal(r.applied, 1);
    assert_true(qins_optim_lr_factor(o) == 0.5f);
    assert_true(fabsf(r.lr - 0.5f * cfg.adamw.lr) < 1e-9f);
  } else {
    assert_int_equal(r.applied, 0);
    if (action == QINS_ANOMALY_FALLBACK) {
      assert_int_equal(qins_optim_flagged(o, 1), 1);
      assert_int_equal(qins_optim_flagged(o, 0), 0);
      assert_null(qins_optim_latent(o, 1)); /* now plain AdamW on w */
    } else {
      assert_memory_equal(wb, before, sizeof wb);
    }
  }
  qins_optim_destroy(o);
}

static void test_anomaly_spike(void **st) {
  spike_run(QINS_ANOMALY_SKIP, 0);
  spike_run(QINS_ANOMALY_SCALE_LR, 0);
  spike_run(QINS_ANOMALY_FALLBACK, 1);
}

/* ---------------------------------------------------------------- QINS-AdamW */

/* One tiny step: QINS-AdamW moves z by about -lr sign(g_z), so w moves by D'(z) dz: an AdamW step
 * on w (-lr sign(g_w)) scaled by |D'(z)| = 1 / (alpha z^2). */
static void test_qins_chain_rule(void **st) {
  enum { R = 3, C = 11, N = R * C };
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = 1e-4f;
  cfg.adamw.weight_decay = 0;
  qins_optim *oq, *oa;
  assert_int_equal(qins_optim_create(&cfg, &oq), 0);
  float w0[N], wq[N], wa[N], g[N], alpha[R] = {0.5f, 2.0f, 7.0f};
  test_fill_normal(w0, N, 0.3f);
  test_fill_normal(g, N, 1.0f);
  memcpy(wq, w0, sizeof w0);
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = 1;
  qo.rows = R;
  qo.alpha = alpha;
  assert_int_equal(qins_optim_add(oq, "wq", wq, g, N, &qo), 0);
  /* qins-f32 storage: the forward weight is w itself up to float rounding */
  test_assert_close("qins-f32 initial weights", wq, w0, N, 1e-6);
  float wstart[N], z[N];
  memcpy(wstart, wq, sizeof wq);
  memcpy(z, qins_optim_latent(oq, 0), sizeof z);
  cfg.adamw.lr = cfg.adamw.lr; /* same lr for the AdamW reference */
  assert_int_equal(qins_optim_create(&cfg, &oa), 0);
  memcpy(wa, wstart, sizeof wa);
  assert_int_equal(qins_optim_add(oa, "wa", wa, g, N, NULL), 0);
  assert_int_equal(qins_optim_step(oq, 0, NULL), 0);
  assert_int_equal(qins_optim_step(oa, 0, NULL), 0);
  float dq[N], want[N];
  for (int i = 0; i < N; i++) {
    /* differences taken in double from the exact latent, not the rounded f32 weights */
    double a = alpha[i / C];
    dq[i] = (float)(qins_optim_decode(qins_optim_latent(oq, 0)[i], a) - qins_optim_decode(z[i], a));
    want[i] = (float)((double)(wa[i] - wstart[i]) / (a * (double)z[i] * z[i]));
  }
  test_assert_close("QINS-AdamW step vs chain-rule-scaled AdamW step", dq, want, N, 1e-2);
  qins_optim_destroy(oq);
  qins_optim_destroy(oa);
}

/* w slightly positive, gradient pushing it down through 0: z crosses 1, is re-canonicalised to
 * the negative side, and w moves continuously. */
static void test_qins_sign_flip(void **st) {
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = 0.01f;
  cfg.adamw.weight_decay = 0;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float w[2] = {2e-3f, -2e-3f}, g[2] = {1.0f, -1.0f}, alpha = 1.0f;
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = 1;
  qo.alpha = &alpha;
  assert_int_equal(qins_optim_add(o, "w", w, g, 2, &qo), 0);
  double z0[2] = {qins_optim_latent(o, 0)[0], qins_optim_latent(o, 0)[1]};
  qins_step_report r;
  assert_int_equal(qins_optim_step(o, 0, &r), 0);
  assert_int_equal(r.recanonicalised, 2);
  const float *z = qins_optim_latent(o, 0);
  assert_true(z[0] < 0 && z[0] > -1); /* canonical negative */
  assert_true(z[1] > 0 && z[1] <= 1);
  for (int i = 0; i < 2; i++) {
    /* the un-canonicalised z0 + dz (dz = +-lr: first Adam step) decodes to the same w */
    double zs = z0[i] + (i == 0 ? 1 : -1) * 0.01;
    double want = (zs < 0 ? -1.0 : 1.0) * (1.0 - fabs(zs)) / fabs(zs);
    assert_true(fabs((double)w[i] - want) < 1e-6);
    assert_true(i == 0 ? w[i] < 0 : w[i] > 0); /* the sign flipped */
    assert_true(fabs(w[i]) < 0.02);            /* and w moved by about one step, not a jump */
  }
  qins_optim_destroy(o);
}

static void test_qins_alpha_reencode(void **st) {
  enum { R = 4, C = 9, N = R * C };
  qins_optim_config cfg = qins_optim_config_default();
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float w[N], g[N];
  test_fill_normal(w, N, 0.05f);
  test_fill_normal(g, N, 1.0f);
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = 1;
  qo.rows = R;
  assert_int_equal(qins_optim_add(o, "w", w, g, N, &qo), 0);
  const float *a0 = qins_optim_alpha(o, 0);
  for (int r = 0; r < R; r++) assert_true(a0[r] > 5.0f && a0[r] < 40.0f); /* ~0.7 / 0.05 */
  assert_int_equal(qins_optim_step(o, 0, NULL), 0);
  float before[N], z_before[N], alpha[R] = {1.0f, 3.0f, 30.0f, 100.0f};
  memcpy(before, w, sizeof w);
  memcpy(z_before, qins_optim_latent(o, 0), sizeof z_before);
  assert_int_equal(qins_optim_set_alpha(o, 0, alpha), 0);
  test_assert_close("w after an alpha re-encode", w, before, N, 1e-6);
  assert_true(memcmp(z_before, qins_optim_latent(o, 0), sizeof z_before) != 0);
  assert_true(qins_optim_alpha(o, 0)[2] == 30.0f);
  /* stepping on keeps working (moments carried over) */
  assert_int_equal(qins_optim_step(o, 0, NULL), 0);
  for (int i = 0; i < N; i++) assert_true(isfinite(w[i]));
  float bad = -1.0f;
  alpha[0] = bad;
  assert_int_equal(qins_optim_set_alpha(o, 0, alpha), QINS_EINVAL);
  qins_optim_destroy(o);
}

/* Weight decay acts in w-space: with zero gradient one step scales the latent weight by (1 - lr wd). */
static void test_qins_decay_in_w(void **st) {
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.lr = 0.1f;
  cfg.adamw.weight_decay = 0.2f;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  enum { N = 17 };
  float w[N], g[N] = {0};
  test_fill_normal(w, N, 1.0f);
  float w0[N];
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = 1;
  assert_int_equal(qins_optim_add(o, "w", w, g, N, &qo), 0);
  memcpy(w0, w, sizeof w);
  assert_int_equal(qins_optim_step(o, 0, NULL), 0);
  float want[N];
  for (int i = 0; i < N; i++) want[i] = w0[i] * 0.98f;
  test_assert_close("QINS decay in w-space", w, want, N, 1e-6);
  qins_optim_destroy(o);
}

/* qins8/qins6 storage: the forward weights sit on the code grid (QINS.md section 2). */
static void test_qins_stored_formats(void **st) {
  assert_true(qins_optim_stored_weight(QINS_DT_QINS8, 1.0f, 2.0f) == 0.0f);              /* q = 255 */
  assert_true(fabsf(qins_optim_stored_weight(QINS_DT_QINS8, 1e-4f, 2.0f) - 127.0f) < 1e-5f); /* q=128: 254/a */
  float z254 = 254.0f / 127.5f - 1.0f;
  assert_true(fabsf(qins_optim_stored_weight(QINS_DT_QINS8, z254, 1.0f) - 2.0f / 253.0f) < 1e-7f);
  assert_true(qins_optim_stored_weight(QINS_DT_QINS6, 1.0f, 1.0f) == 0.0f);
  assert_true(fabsf(qins_optim_stored_weight(QINS_DT_QINS6, 1e-3f, 1.0f) - 62.0f) < 1e-5f);
  qins_dtype fmts[2] = {QINS_DT_QINS8, QINS_DT_QINS6};
  double want_nmse[2] = {1e-3, 2e-2};
  for (int f = 0; f < 2; f++) {
    qins_optim_config cfg = qins_optim_config_default();
    qins_optim *o;
    assert_int_equal(qins_optim_create(&cfg, &o), 0);
    enum { N = 512 };
    float w[N], g[N] = {0}, w0[N];
    test_fill_normal(w, N, 0.02f);
    memcpy(w0, w, sizeof w);
    qins_param_opts qo = qins_param_opts_default();
    qo.qins = 1;
    qo.storage = fmts[f];
    assert_int_equal(qins_optim_add(o, "w", w, g, N, &qo), 0);
    double num = 0, den = 0;
    for (int i = 0; i < N; i++) {
      num += (double)(w[i] - w0[i]) * (w[i] - w0[i]);
      den += (double)w0[i] * w0[i];
      float z = qins_optim_latent(o, 0)[i];
      assert_true(w[i] == qins_optim_stored_weight(fmts[f], z, qins_optim_alpha(o, 0)[0]));
    }
    assert_true(num / den < want_nmse[f]);
    qins_optim_destroy(o);
  }
}

static void test_bad_config(void **st) {
  qins_optim_config cfg = qins_optim_config_default();
  cfg.adamw.beta2 = 1.0f;
  qins_optim *o;
  assert_int_equal(qins_optim_create(&cfg, &o), QINS_EINVAL);
  cfg = qins_optim_config_default();
  assert_int_equal(qins_optim_create(&cfg, &o), 0);
  float w[6], g[6];
  qins_param_opts qo = qins_param_opts_default();
  qo.qins = 1;
  qo.rows = 4;
  assert_int_equal(qins_optim_add(o, "w6", w, g, 6, &qo), QINS_EINVAL);
  assert_non_null(strstr(qins_error_msg(), "w6"));
  qo.rows = 1;
  qo.storage = QINS_DT_INT8_ROW;
  assert_int_equal(qins_optim_add(o, "w6", w, g, 6, &qo), QINS_EINVAL);
  qins_optim_destroy(o);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_adamw_trace),       cmocka_unit_test(test_adamw_decay_order),
      cmocka_unit_test(test_schedule),          cmocka_unit_test(test_accumulation),
      cmocka_unit_test(test_anomaly_nonfinite), cmocka_unit_test(test_anomaly_spike),
      cmocka_unit_test(test_qins_chain_rule),   cmocka_unit_test(test_qins_sign_flip),
      cmocka_unit_test(test_qins_alpha_reencode), cmocka_unit_test(test_qins_decay_in_w),
      cmocka_unit_test(test_qins_stored_formats), cmocka_unit_test(test_bad_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
