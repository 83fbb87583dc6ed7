/* AdamW (torch.optim.AdamW semantics) and QINS-AdamW on host f32 arrays, with schedule, clipping,
 * accumulation and anomaly handling (see optim.h). */
#include "core/train/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/backend.h"
#include "core/backend_grad.h"
#include "core/error.h"
#include "core/mem.h"

typedef struct param {
  char name[QINS_NAME_MAX];
  float *w, *g;
  int64_t n;
  qins_param_opts opts;
  float *m, *v;        /* Adam moments (on g_w, or on g_z for QINS parameters) */
  int64_t t;           /* Adam step count of this parameter (bias correction) */
  /* QINS */
  float *z;            /* latent, n */
  float *alpha;        /* rows */
  int64_t rows, cols;
  int flagged;         /* flagged for FP fallback by the anomaly policy */
  /* device parameters (qins_optim_add_device): plain AdamW runs as the adamw_step op on these */
  int on_device;
  qins_tensor dw, dg;  /* the caller's tensors (descriptors copied) */
  qins_tensor dm, dv;  /* moments in device buffers (owned) */
} param;

struct qins_optim {
  qins_optim_config cfg;
  param *p;
  int n, cap;
  int64_t steps;       /* qins_optim_step calls */
  int micro;           /* micro-batches accumulated since the last step */
  float lr_factor;     /* from QINS_ANOMALY_SCALE_LR */
  double norm_ema;
  int norm_count;
};

static qins_mem_owner *owner(void) { return qins_mem_owner_get("train.optim"); }

qins_optim_config qins_optim_config_default(void) {
  qins_optim_config c;
  memset(&c, 0, sizeof c);
  c.adamw.lr = 1e-3f;
  c.adamw.beta1 = 0.9f;
  c.adamw.beta2 = 0.999f;
  c.adamw.eps = 1e-8f;
  c.adamw.weight_decay = 0.01f;
  c.accum_steps = 1;
  c.anomaly.spike_warmup = 10;
  c.anomaly.ema_beta = 0.95f;
  c.anomaly.action = QINS_ANOMALY_SKIP;
  c.anomaly.lr_factor = 0.5f;
  return c;
}

qins_param_opts qins_param_opts_default(void) {
  qins_param_opts p;
  memset(&p, 0, sizeof p);
  p.lr_scale = 1.0f;
  p.storage = QINS_DT_QINS_F32;
  return p;
}

float qins_lr_schedule_at(const qins_lr_schedule *s, float base_lr, int64_t step) {
  if (!s) return base_lr;
  if (step < s->warmup_steps) return base_lr * (float)(step + 1) / (float)s->warmup_steps;
  if (s->total_steps <= s->warmup_steps) return base_lr;
  double prog = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
  if (prog > 1.0) prog = 1.0;
  double lo = (double)base_lr * s->min_lr_ratio;
  return (float)(lo + ((double)base_lr - lo) * 0.5 * (1.0 + cos(M_PI * prog)));
}

/* ---------------------------------------------------------------- the QINS map */

double qins_optim_encode(double x, double alpha) {
  double s = x < 0 ? -1.0 : 1.0; /* sign(0) = +1: x = 0 maps to z = +1 */
  return s / (1.0 + alpha * fabs(x));
}

double qins_optim_decode(double z, double alpha) {
  double a = fabs(z);
  if (a < 1e-12) a = 1e-12;
  return (z < 0 ? -1.0 : 1.0) * (1.0 - a) / (alpha * a);
}

/* Codes as QINS.md section 2: q = clamp(rint((z+1) * L/2), 0, L), d = 2q - L (odd, never 0),
 * x = sign(d) (L - |d|) / (alpha |d|), with L = 255 (qins8) or 63 (qins6). */
static float code_decode(float z, float alpha, int levels) {
  float q = rintf((z + 1.0f) * ((float)levels * 0.5f));
  if (q < 0) q = 0;
  if (q > (float)levels) q = (float)levels;
  int d = 2 * (int)q - levels;
  int ad = d < 0 ? -d : d;
  float x = (float)(levels - ad) / (alpha * (float)ad);
  return d < 0 ? -x : x;
}

float qins_optim_stored_weight(qins_dtype stored, float z, float alpha) {
  switch (stored) {
  case QINS_DT_QINS8: return code_decode(z, alpha, 255);
  case QINS_DT_QINS6: return code_decode(z, alpha, 63);
  default: return (float)qins_optim_decode(z, alpha);
  }
}

/* ---------------------------------------------------------------- parameters */

int qins_optim_create(const qins_optim_config *cfg, qins_optim **out) {
  *out = NULL;
  const qins_adamw_config *a = &cfg->adamw;
  if (!(a->lr >= 0) || !(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1) || !(a->eps >= 0) ||
      !(a->weight_decay >= 0))
    return qins_error_set(QINS_EINVAL, "optimizer: lr %g, betas (%g, %g), eps %g, weight decay %g out of range",
                          (double)a->lr, (double)a->beta1, (double)a->beta2, (double)a->eps, (double)a->weight_decay);
  if (cfg->accum_steps < 0) return qins_error_set(QINS_EINVAL, "optimizer: accum_steps %d < 0", cfg->accum_steps);
  if (cfg->anomaly.action == QINS_ANOMALY_SCALE_LR && !(cfg->anomaly.lr_factor > 0 && cfg->anomaly.lr_factor <= 1))
    return qins_error_set(QINS_EINVAL, "optimizer: anomaly lr_factor %g must be in (0, 1]",
                          (double)cfg->anomaly.lr_factor);
  qins_optim *o = qins_mem_calloc(owner(), 1, sizeof *o);
  if (!o) return QINS_ENOMEM;
  o->cfg = *cfg;
  if (o->cfg.accum_steps == 0) o->cfg.accum_steps = 1;
  o->lr_factor = 1.0f;
  *out = o;
  return 0;
}

static void param_free(param *p) {
  if (p->on_device) {
    qins_tensor_free(&p->dm);
    qins_tensor_free(&p->dv);
  }
  qins_mem_free(owner(), p->m);
  qins_mem_free(owner(), p->v);
  qins_mem_free(owner(), p->z);
  qins_mem_free(owner(), p->alpha);
}

void qins_optim_destroy(qins_optim *o) {
  if (!o) return;
  for (int i = 0; i < o->n; i++) param_free(&o->p[i]);
  qins_mem_free(owner(), o->p);
  qins_mem_free(owner(), o);
}

int qins_optim_add(qins_optim *o, const char *name, float *w, float *g, int64_t n, const qins_param_opts *opts) {
  qins_param_opts def = qins_param_opts_default();
  if (!opts) opts = &def;
  if (!w || !g || n <= 0) return qins_error_set(QINS_EINVAL, "optimizer: parameter %s needs w, g and n > 0", name);
  if (!(opts->lr_scale >= 0)) return qins_error_set(QINS_EINVAL, "optimizer: parameter %s: lr_scale < 0", name);
  int64_t rows = opts->rows > 0 ? opts->rows : 1;
  if (opts->qins) {
    if (opts->storage != QINS_DT_QINS_F32 && opts->storage != QINS_DT_QINS8 && opts->storage != QINS_DT_QINS6)
      return qins_error_set(QINS_EINVAL, "optimizer: parameter %s: storage %s is not a QINS format", name,
                            qins_dtype_name(opts->storage));
    if (n % rows) return qins_error_set(QINS_EINVAL, "optimizer: parameter %s: %lld elements not %lld rows", name,
                                        (long long)n, (long long)rows);
  }
  if (o->n == o->cap) {
    int cap = o->cap ? 2 * o->cap : 16;
    param *np = qins_mem_realloc(owner(), o->p, (size_t)cap * sizeof *np);
    if (!np) return QINS_ENOMEM;
    o->p = np;
    o->cap = cap;
  }
  param *p = &o->p[o->n];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->w = w;
  p->g = g;
  p->n = n;
  p->opts = *opts;
  p->opts.alpha = NULL;
  p->m = qins_mem_calloc(owner(), (size_t)n, sizeof(float));
  p->v = qins_mem_calloc(owner(), (size_t)n, sizeof(float));
  if (!p->m || !p->v) goto nomem;
  if (opts->qins) {
    p->rows = rows;
    p->cols = n / rows;
    p->z = qins_mem_alloc(owner(), (size_t)n * sizeof(float));
    p->alpha = qins_mem_alloc(owner(), (size_t)rows * sizeof(float));
    if (!p->z || !p->alpha) goto nomem;
    for (int64_t r = 0; r < rows; r++) {
      float a = 0;
      if (opts->alpha) {
        a = opts->alpha[r];
      } else { /* QINS.md section 3: ~0.7/std is the measured best for Gaussian rows */
        double s = 0, ss = 0;
        for (int64_t c = 0; c < p->cols; c++) s += w[r * p->cols + c];
        double mean = s / (double)p->cols;
        for (int64_t c = 0; c < p->cols; c++) ss += (w[r * p->cols + c] - mean) * (w[r * p->cols + c] - mean);
        double sd = sqrt(ss / (double)p->cols);
        a = sd > 0 ? (float)(0.7 / sd) : 1.0f;
      }
      if (!(a > 0) || !isfinite(a)) {
        param_free(p);
        return qins_error_set(QINS_EINVAL, "optimizer: parameter %s: alpha of row %lld is %g (must be > 0)", name,
                              (long long)r, (double)a);
      }
      p->alpha[r] = a;
    }
    for (int64_t i = 0; i < n; i++) {
      float a = p->alpha[i / p->cols];
      p->z[i] = (float)qins_optim_encode(w[i], a);
      w[i] = qins_optim_stored_weight(opts->storage, p->z[i], a);
    }
  }
  return o->n++;
nomem:
  param_free(p);
  return qins_error_set(QINS_ENOMEM, "optimizer: no memory for the state of %s (%lld elements)", name, (long long)n);
}

int qins_optim_add_tensor(qins_optim *o, qins_tensor *w, qins_tensor *g, const qins_param_opts *opts) {
  char a[192], b[192];
  if (w->dtype != QINS_DT_F32 || g->dtype != QINS_DT_F32 || !qins_tensor_same_shape(w, g))
    return qins_error_set(QINS_EINVAL, "optimizer: %s and gradient %s must be f32 of one shape",
                          qins_tensor_describe(w, a, sizeof a), qins_tensor_describe(g, b, sizeof b));
  float *pw = qins_tensor_host(w), *pg = qins_tensor_host(g);
  if (!pw || !pg)
    return qins_error_set(QINS_EUNSUPPORTED, "optimizer: %s is not host-visible (device optimizers: not yet)",
                          qins_tensor_describe(pw ? g : w, a, sizeof a));
  qins_param_opts def = qins_param_opts_default();
  if (!opts) opts = &def;
  qins_param_opts o2 = *opts;
  if (o2.qins && o2.rows <= 0) o2.rows = qins_tensor_rows(w);
  return qins_optim_add(o, w->name, pw, pg, qins_tensor_numel(w), &o2);
}

int qins_optim_add_device(qins_optim *o, const char *name, float *w, float *g, int64_t n, const qins_param_opts *opts,
                          const qins_tensor *w_t, const qins_tensor *g_t) {
  char a[192], b[192];
  if (!w_t || !g_t || !w_t->buf || !g_t->buf || w_t->dtype != QINS_DT_F32 || g_t->dtype != QINS_DT_F32 ||
      qins_tensor_numel(w_t) != n || qins_tensor_numel(g_t) != n || w_t->buf->be != g_t->buf->be)
    return qins_error_set(QINS_EINVAL, "optimizer: parameter %s: device tensors %s and %s must be f32 [%lld] on one backend",
                          name, w_t ? qins_tensor_describe(w_t, a, sizeof a) : "(none)",
                          g_t ? qins_tensor_describe(g_t, b, sizeof b) : "(none)", (long long)n);
  int i = qins_optim_add(o, name, w, g, n, opts);
  if (i < 0 || o->p[i].opts.qins) return i; /* QINS-AdamW stays on the host */
  param *p = &o->p[i];
  qins_backend *be = w_t->buf->be;
  p->dw = *w_t;
  p->dg = *g_t;
  int64_t shape[1] = {n};
  int rc = qins_tensor_init(&p->dm, "adam.m", QINS_DT_F32, 1, shape);
  if (!rc) rc = qins_tensor_init(&p->dv, "adam.v", QINS_DT_F32, 1, shape);
  if (!rc) rc = qins_tensor_alloc(be, &p->dm);
  if (!rc) rc = qins_tensor_alloc(be, &p->dv);
  p->on_device = 1; /* (also for the cleanup below) */
  if (!rc) rc = qins_tensor_write(&p->dm, p->m);
  if (!rc) rc = qins_tensor_write(&p->dv, p->v);
  if (rc) {
    param_free(p);
    o->n--;
    return qins_error_wrap(rc, "optimizer: device moments of %s: ", name);
  }
  return i;
}

int qins_optim_sync_state(qins_optim *o, int to_device) {
  int rc = 0;
  for (int i = 0; i < o->n && !rc; i++) {
    param *p = &o->p[i];
    if (!p->on_device) continue;
    if (to_device) {
      rc = qins_tensor_write(&p->dm, p->m);
      if (!rc) rc = qins_tensor_write(&p->dv, p->v);
    } else {
      rc = qins_tensor_read(&p->dm, p->m);
      if (!rc) rc = qins_tensor_read(&p->dv, p->v);
    }
  }
  return rc;
}

int qins_optim_on_device(const qins_optim *o, int i) { return i >= 0 && i < o->n ? o->p[i].on_device : 0; }

int qins_optim_count(const qins_optim *o) { return o->n; }
const char *qins_optim_name(const qins_optim *o, int i) { return i >= 0 && i < o->n ? o->p[i].name : NULL; }
int qins_optim_flagged(const qins_optim *o, int i) { return i >= 0 && i < o->n ? o->p[i].flagged : 0; }
float qins_optim_lr_factor(const qins_optim *o) { return o->lr_factor; }

const float *qins_optim_latent(const qins_optim *o, int i) {
  return i >= 0 && i < o->n && o->p[i].opts.qins ? o->p[i].z : NULL;
}
const float *qins_optim_alpha(const qins_optim *o, int i) {
  return i >= 0 && i < o->n && o->p[i].opts.qins ? o->p[i].alpha : NULL;
}

void qins_optim_get_state(const qins_optim *o, qins_optim_state *s) {
  s->steps = o->steps;
  s->lr_factor = o->lr_factor;
  s->norm_ema = o->norm_ema;
  s->norm_count = o->norm_count;
}

void qins_optim_set_state(qins_optim *o, const qins_optim_state *s) {
  o->steps = s->steps;
  o->lr_factor = s->lr_factor;
  o->norm_ema = s->norm_ema;
  o->norm_count = s->norm_count;
  o->micro = 0;
}

int qins_optim_param_state_get(qins_optim *o, int i, qins_optim_param_state *out) {
  if (i < 0 || i >= o->n) return qins_error_set(QINS_EINVAL, "optimizer: no parameter %d", i);
  param *p = &o->p[i];
  memset(out, 0, sizeof *out);
  out->n = p->n;
  out->m = p->m;
  out->v = p->v;
  out->t = &p->t;
  out->flagged = &p->flagged;
  out->qins = p->opts.qins;
  out->storage = p->opts.storage;
  if (p->opts.qins) {
    out->z = p->z;
    out->alpha = p->alpha;
    out->rows = p->rows;
  }
  return 0;
}

void qins_optim_refresh_weights(qins_optim *o, int i) {
  if (i < 0 || i >= o->n || !o->p[i].opts.qins) return;
  param *p = &o->p[i];
  for (int64_t k = 0; k < p->n; k++) p->w[k] = qins_optim_stored_weight(p->opts.storage, p->z[k], p->alpha[k / p->cols]);
}

void qins_optim_zero_grad(qins_optim *o) {
  for (int i = 0; i < o->n; i++) memset(o->p[i].g, 0, (size_t)o->p[i].n * sizeof(float));
  o->micro = 0;
}

int qins_optim_micro_done(qins_optim *o) {
  if (++o->micro >= o->cfg.accum_steps) {
    o->micro = 0;
    return 1;
  }
  return 0;
}

static double param_sq(const param *p) {
  double s = 0;
  for (int64_t i = 0; i < p->n; i++) s += (double)p->g[i] * p->g[i];
  return s;
}

double qins_optim_grad_norm(const qins_optim *o) {
  double s = 0;
  for (int i = 0; i < o->n; i++) s += param_sq(&o->p[i]);
  return sqrt(s) / (double)o->cfg.accum_steps;
}

/* A QINS parameter flagged for fallback becomes plain AdamW on its latent w (f32 storage); the
 * moments are carried over by the chain rule: g_w = g_z / D'(z) = -g_z alpha z^2. */
static void fallback_to_fp(param *p) {
  if (!p->opts.qins) return; /* (device parameters are never QINS: nothing to move) */
  for (int64_t i = 0; i < p->n; i++) {
    double a = p->alpha[i / p->cols], z = p->z[i];
    double f = -a * z * z;
    p->w[i] = (float)qins_optim_decode(z, a);
    p->m[i] = (float)(p->m[i] * f);
    p->v[i] = (float)(p->v[i] * f * f);
  }
  p->opts.qins = 0;
}

/* ---------------------------------------------------------------- the step */

static void update_adamw(const qins_optim *o, param *p, float lr, float gmul) {
  const qins_adamw_config *c = &o->cfg.adamw;
  p->t++;
  /* PyTorch: bias corrections and step size as Python floats (double), element math in f32. */
  double bc1 = 1.0 - pow((double)c->beta1, (double)p->t), bc2 = 1.0 - pow((double)c->beta2, (double)p->t);
  float step_size = (float)((double)lr / bc1), bc2_sqrt = (float)sqrt(bc2);
  float decay = (float)(1.0 - (double)lr * (double)c->weight_decay);
  float w1 = (float)(1.0 - (double)c->beta1), w2 = (float)(1.0 - (double)c->beta2), b2 = c->beta2;
  int do_decay = !p->opts.no_decay && c->weight_decay > 0;
  for (int64_t i = 0; i < p->n; i++) {
    float g = p->g[i] * gmul;
    float w = p->w[i];
    if (do_decay) w *= decay;                 /* decoupled decay first, as torch does */
    float m = p->m[i] + w1 * (g - p->m[i]);   /* exp_avg.lerp_(grad, 1 - beta1) */
    float v = p->v[i] * b2 + w2 * g * g;      /* exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2) */
    float denom = sqrtf(v) / bc2_sqrt + c->eps;
    p->m[i] = m;
    p->v[i] = v;
    p->w[i] = w - step_size * (m / denom);
  }
}

/* QINS-AdamW (QINS.md section 6) on the latent z of each element, w = D_alpha(z):
 * g_z = -g_w / (alpha z^2); decay in w-space (z <- E(D(z) (1 - lr wd))); Adam on g_z; a z that
 * leaves [-1, 1] (w crossed 0, its sign flipped) is re-canonicalised z <- E(D(z)); a z that would
 * cross 0 (|w| through infinity) stops at +-1e-6 on its side. */
static int update_qins(const qins_optim *o, param *p, float lr, float gmul) {
  const qins_adamw_config *c = &o->cfg.adamw;
  p->t++;
  double bc1 = 1.0 - pow((double)c->beta1, (double)p->t), bc2 = 1.0 - pow((double)c->beta2, (double)p->t);
  double step_size = (double)lr / bc1, bc2_sqrt = sqrt(bc2);
  double decay = 1.0 - (double)lr * (double)c->weight_decay;
  int do_decay = !p->opts.no_decay && c->weight_decay > 0;
  int recanon = 0;
  for (int64_t i = 0; i < p->n; i++) {
    double a = p->alpha[i / p->cols];
    double z = p->z[i];
    double az = fabs(z) < 1e-12 ? 1e-12 : fabs(z);
    double gz = -(double)(p->g[i] * gmul) / (a * az * az);
    if (do_decay) z = qins_optim_encode(qins_optim_decode(z, a) * decay, a);
    double m = (double)p->m[i] + (1.0 - c->beta1) * (gz - (double)p->m[i]);
    double v = (double)p->v[i] * c->beta2 + (1.0 - c->beta2) * gz * gz;
    double zn = z - step_size * m / (sqrt(v) / bc2_sqrt + c->eps);
    if (fabs(zn) > 1.0) {
      zn = qins_optim_encode(qins_optim_decode(zn, a), a);
      recanon++;
    } else if ((zn < 0) != (z < 0) || zn == 0.0) {
      zn = z < 0 ? -1e-6 : 1e-6;
    }
    p->m[i] = (float)m;
    p->v[i] = (float)v;
    p->z[i] = (float)zn;
    p->w[i] = qins_optim_stored_weight(p->opts.storage, p->z[i], (float)a);
  }
  return recanon;
}

int qins_optim_set_alpha(qins_optim *o, int i, const float *alpha) {
  if (i < 0 || i >= o->n || !o->p[i].opts.qins)
    return qins_error_set(QINS_EINVAL, "optimizer: parameter %d is not a QINS parameter", i);
  param *p = &o->p[i];
  for (int64_t r = 0; r < p->rows; r++)
    if (!(alpha[r] > 0) || !isfinite(alpha[r]))
      return qins_error_set(QINS_EINVAL, "optimizer: %s: new alpha of row %lld is %g", p->name, (long long)r,
                            (double)alpha[r]);
  for (int64_t k = 0; k < p->n; k++) {
    int64_t r = k / p->cols;
    double a = p->alpha[r], an = alpha[r], z = p->z[k];
    double zn = qins_optim_encode(qins_optim_decode(z, a), an);
    double f = (a * z * z) / (an * zn * zn); /* g_z' = g_z * f */
    p->z[k] = (float)zn;
    p->m[k] = (float)(p->m[k] * f);
    p->v[k] = (float)(p->v[k] * f * f);
    p->w[k] = qins_optim_stored_weight(p->opts.storage, p->z[k], alpha[r]);
  }
  memcpy(p->alpha, alpha, (size_t)p->rows * sizeof(float));
  return 0;
}

static const char *action_text(qins_anomaly_action a) {
  switch (a) {
  case QINS_ANOMALY_SCALE_LR: return "learning rate scaled down";
  case QINS_ANOMALY_FALLBACK: return "flagged for FP fallback";
  default: return "skipped";
  }
}

double qins_optim_param_sq(const qins_optim *o, int index) {
  return index >= 0 && index < o->n ? param_sq(&o->p[index]) : 0.0;
}

static int step_impl(qins_optim *o, double loss, const double *global_sq, int global_bad, const double *psq,
                     qins_step_report *report);

int qins_optim_step(qins_optim *o, double loss, qins_step_report *report) {
  return step_impl(o, loss, NULL, 0, NULL, report);
}

int qins_optim_step_global(qins_optim *o, double loss, double global_sq, int global_bad, qins_step_report *report) {
  return step_impl(o, loss, &global_sq, global_bad, NULL, report);
}

int qins_optim_step_sq(qins_optim *o, double loss, const double *param_sq, qins_step_report *report) {
  if (!param_sq) return qins_error_set(QINS_EINVAL, "optimizer: step_sq needs the per-parameter sums of squares");
  return step_impl(o, loss, NULL, 0, param_sq, report);
}

/* global_sq != NULL: a pipeline part's step; the norm (clipping, spikes) comes from the whole
 * model's sum of squares, and a non-finite gradient anywhere skips the step here too. */
static int step_impl(qins_optim *o, double loss, const double *global_sq, int global_bad, const double *psq,
                     qins_step_report *report) {
  qins_step_report local;
  qins_step_report *r = report ? report : &local;
  memset(r, 0, sizeof *r);
  const qins_anomaly_config *ac = &o->cfg.anomaly;
  int64_t s = o->steps++;
  r->step = s + 1;
  float gmul = 1.0f / (float)o->cfg.accum_steps;

  /* non-finite loss or gradients: never applied */
  int bad = -1;
  int64_t bad_elem = -1;
  double sq_total = 0, sq_max = -1;
  int largest = -1;
  for (int i = 0; i < o->n; i++) {
    /* psq: the sums came from where the gradients live; host g of a device parameter may be
     * stale, so its bad element is not searched for (host-updated ones were pulled) */
    double sq = psq ? psq[i] : param_sq(&o->p[i]);
    if (!isfinite(sq) && bad < 0) {
      bad = i;
      for (int64_t k = 0; !(psq && o->p[i].on_device) && k < o->p[i].n && bad_elem < 0; k++)
        if (!isfinite(o->p[i].g[k])) bad_elem = k;
    }
    sq_total += sq;
    if (sq > sq_max) {
      sq_max = sq;
      largest = i;
    }
  }
  if (global_sq) {
    if (bad < 0 && (global_bad || !isfinite(*global_sq))) {
      bad = -2; /* elsewhere in the model */
      snprintf(r->tensor, sizeof r->tensor, "(another pipeline part)");
    }
    sq_total = *global_sq;
  }
  r->grad_norm = sqrt(sq_total) * gmul;
  r->lr = qins_lr_schedule_at(&o->cfg.schedule, o->cfg.adamw.lr, s) * o->lr_factor;
  int apply = 1;
  if (!isfinite(loss) || bad != -1) {
    r->anomaly = !isfinite(loss) ? QINS_ANOMALY_LOSS_NONFINITE : QINS_ANOMALY_GRAD_NONFINITE;
    r->action = ac->action;
    apply = 0;
    if (r->anomaly == QINS_ANOMALY_GRAD_NONFINITE && bad >= 0) snprintf(r->tensor, sizeof r->tensor, "%s", o->p[bad].name);
    if (ac->action == QINS_ANOMALY_SCALE_LR) o->lr_factor *= ac->lr_factor;
    if (ac->action == QINS_ANOMALY_FALLBACK && bad >= 0) {
      o->p[bad].flagged = 1;
      fallback_to_fp(&o->p[bad]);
    }
    if (r->anomaly == QINS_ANOMALY_LOSS_NONFINITE)
      snprintf(r->message, sizeof r->message, "step %lld: loss is %g; step %s", (long long)r->step, loss,
               action_text(ac->action));
    else if (bad < 0)
      snprintf(r->message, sizeof r->message, "step %lld: a gradient in another pipeline part holds NaN/Inf; step %s",
               (long long)r->step, action_text(ac->action));
    else if (bad_elem < 0)
      snprintf(r->message, sizeof r->message, "step %lld: gradient of %s holds NaN/Inf (sum of squares %g); step %s",
               (long long)r->step, o->p[bad].name, psq ? psq[bad] : NAN, action_text(ac->action));
    else
      snprintf(r->message, sizeof r->message, "step %lld: gradient of %s holds %g (element %lld); step %s",
               (long long)r->step, o->p[bad].name, (double)o->p[bad].g[bad_elem], (long long)bad_elem,
               action_text(ac->action));
  } else if (ac->spike_factor > 0 && o->norm_count >= ac->spike_warmup &&
             r->grad_norm > (double)ac->spike_factor * o->norm_ema) {
    r->anomaly = QINS_ANOMALY_NORM_SPIKE;
    r->action = ac->action;
    snprintf(r->tensor, sizeof r->tensor, "%s", largest >= 0 ? o->p[largest].name : "");
    snprintf(r->message, sizeof r->message,
             "step %lld: gradient norm %.4g is %.1fx its running mean %.4g (largest: %s); step %s",
             (long long)r->step, r->grad_norm, r->grad_norm / o->norm_ema, o->norm_ema, r->tensor,
             action_text(ac->action));
    if (ac->action == QINS_ANOMALY_SCALE_LR) {
      o->lr_factor *= ac->lr_factor;
      r->lr *= ac->lr_factor;
    } else {
      apply = 0;
      if (ac->action == QINS_ANOMALY_FALLBACK && largest >= 0) {
        o->p[largest].flagged = 1;
        fallback_to_fp(&o->p[largest]);
      }
    }
  } else {
    /* only healthy norms feed the running mean */
    o->norm_ema = o->norm_count ? ac->ema_beta * o->norm_ema + (1.0 - ac->ema_beta) * r->grad_norm : r->grad_norm;
    o->norm_count++;
  }
  r->clip_scale = 1.0f;
  if (apply && o->cfg.clip_norm > 0) {
    double coef = (double)o->cfg.clip_norm / (r->grad_norm + 1e-6); /* torch clip_grad_norm_ */
    if (coef < 1.0) r->clip_scale = (float)coef;
  }
  if (!apply) return 0;
  for (int i = 0; i < o->n; i++) {
    param *p = &o->p[i];
    float lr = r->lr * p->opts.lr_scale;
    if (p->opts.qins) {
      r->recanonicalised += update_qins(o, p, lr, gmul * r->clip_scale);
    } else if (p->on_device) { /* where the parameter lives; same scalars as update_adamw */
      const qins_adamw_config *c = &o->cfg.adamw;
      p->t++;
      qins_adamw_step_args a = qins_adamw_step_args_make(lr, c->beta1, c->beta2, c->eps,
                                                         p->opts.no_decay ? 0.0f : c->weight_decay, p->t,
                                                         gmul * r->clip_scale);
      int rc = qins_op_adamw_step(p->dw.buf->be, &p->dw, &p->dg, &p->dm, &p->dv, &a);
      if (rc) return qins_error_wrap(rc, "optimizer: %s: ", p->name);
    } else {
      update_adamw(o, p, lr, gmul * r->clip_scale);
    }
  }
  r->applied = 1;
  return 0;
}
