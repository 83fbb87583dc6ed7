/* Gate runners A1..C1: parameters from the gate YAML, FP vs QINS branches, reports with thresholds. */
#include "core/eval/gates.h"
#include "core/eval/gate_board.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "core/codec_report.h"
#include "core/config.h"
#include "core/error.h"
#include "core/eval/eval.h"
#include "core/eval/report.h"
#include "core/llm/generate.h"
#include "core/llm/llm.h"
#include "core/llm/policy.h"
#include "core/llm/transport.h"
#include "core/llm/sampler.h"
#include "core/model/model.h"
#include "core/qins_codec.h"
#include "core/tokenizer/tokenizer.h"

const char *const qins_gate_names[] = {"A1", "A2", "A3", "A4", "A5", "B1", "B2", "B3", "B4", "B5", "C1", NULL};

#define MAX_PROMPTS 64

typedef struct gctx {
  const qins_gate_opts *o;
  const char *name;
  qins_cfg *cfg;
  qins_report rep;
  qins_model *m;
  qins_backend *be;
  qins_tokenizer *tok;
  int n_prompts;
  int32_t *prompts[MAX_PROMPTS];
  int plen[MAX_PROMPTS];
  qins_policy pol;      /* the subject (QINS) policy */
  char pol_desc[512];
  int vocab, max_seq;
} gctx;

typedef struct branch {
  qins_llm *llm;
  qins_policy_state *st;
  char name[640];
} branch;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- parameters */

/* "a.b" inside the gate YAML; under --quick, quick.a.b wins when present. */
static qins_cfg *param(const gctx *g, const char *path) {
  for (int pass = g->o->quick ? 0 : 1; pass < 2; pass++) {
    qins_cfg *c = pass == 0 ? qins_cfg_get(g->cfg, "quick") : g->cfg;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *tok = strtok(buf, "."); tok && c; tok = strtok(NULL, ".")) c = qins_cfg_get(c, tok);
    if (c) return c;
  }
  return NULL;
}

static double p_num(const gctx *g, const char *path, double def) {
  qins_cfg *c = param(g, path);
  double v;
  if (!c || qins_cfg_as_double(c, path, &v)) return def;
  return v;
}

/* "max" means the longest the model allows (returned as -1). */
static int p_int(const gctx *g, const char *path, int def) {
  qins_cfg *c = param(g, path);
  if (c && c->type == QINS_CFG_SCALAR && !strcmp(c->value, "max")) return -1;
  long long v;
  if (!c || qins_cfg_as_int(c, path, &v)) return def;
  return (int)v;
}

static const char *p_str(const gctx *g, const char *path, const char *def) {
  qins_cfg *c = param(g, path);
  return c && c->type == QINS_CFG_SCALAR ? c->value : def;
}

/* a list of format names (baselines) */
static int p_formats(const gctx *g, const char *path, qins_dtype *out, int max) {
  qins_cfg *c = param(g, path);
  int n = 0;
  if (!c || c->type != QINS_CFG_SEQ) return 0;
  for (int i = 0; i < c->n && n < max; i++)
    if (c->items[i]->type == QINS_CFG_SCALAR && !qins_dtype_parse(c->items[i]->value, &out[n])) n++;
  return n;
}

static const char *fmt_name(qins_dtype d) { return qins_dtype_name(d); }

/* ---------------------------------------------------------------- setup */

static int find_tokenizer(const char *model, char *out, size_t n) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", model);
  if (access(dir, F_OK)) return 0;
  snprintf(out, n, "%s/tokenizer.json", dir);
  if (!access(out, R_OK)) return 1;
  snprintf(out, n, "%s/tokenizer.bin", dir); /* qins convert output of a llama2.c model */
  if (!access(out, R_OK)) return 1;
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  snprintf(out, n, "%s/tok512.bin", dir);
  if (!access(out, R_OK)) return 1;
  snprintf(out, n, "%s/tokenizer.bin", dir);
  return !access(out, R_OK);
}

/* Prompts: YAML `prompts` through the tokenizer; without one, the fixture's cases.json greedy
 * prompts; else seeded random ids (said so in the report). */
static int load_prompts(gctx *g) {
  int want = p_int(g, "n_prompts", 4);
  if (want < 1) want = 1;
  if (want > MAX_PROMPTS) want = MAX_PROMPTS;
  qins_cfg *pr = param(g, "prompts");
  json_t *plist = json_array();
  if (g->tok && pr && pr->type == QINS_CFG_SEQ) {
    for (int i = 0; i < pr->n && g->n_prompts < want; i++) {
      if (pr->items[i]->type != QINS_CFG_SCALAR) continue;
      int32_t *ids;
      size_t n;
      int rc = qins_tokenizer_encode(g->tok, pr->items[i]->value, QINS_TOK_ADD_SPECIAL, &ids, &n);
      if (rc) return rc;
      if (strcmp(g->m->format, "llama2c") == 0 && (n == 0 || ids[0] != g->m->cfg.bos_id) && g->m->cfg.bos_id >= 0) {
        int32_t *b = malloc((n + 1) * sizeof(int32_t));
        if (!b) return QINS_ENOMEM;
        b[0] = g->m->cfg.bos_id;
        memcpy(b + 1, ids, n * sizeof(int32_t));
        free(ids);
        ids = b;
        n++;
      }
      g->prompts[g->n_prompts] = ids;
      g->plen[g->n_prompts++] = (int)n;
      json_array_append_new(plist, json_string(pr->items[i]->value));
    }
    qins_report_run_str(&g->rep, "prompt_source", "YAML prompts, tokenized");
  } else {
    char path[1200];
    snprintf(path, sizeof path, "%s/cases.json", g->o->model_path);
    json_t *cases = json_load_file(path, 0, NULL);
    json_t *arr = cases ? json_object_get(cases, "cases") : NULL;
    size_t i;
    json_t *c;
    if (arr)
      json_array_foreach(arr, i, c) {
        json_t *gp = json_object_get(c, "greedy_prompt");
        if (!json_is_array(gp) || g->n_prompts >= want) continue;
        int n = (int)json_array_size(gp);
        int32_t *ids = malloc((size_t)n * sizeof(int32_t));
        if (!ids) return QINS_ENOMEM;
        for (int k = 0; k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(gp, (size_t)k));
        g->prompts[g->n_prompts] = ids;
        g->plen[g->n_prompts++] = n;
        json_array_append_new(plist, json_string("cases.json greedy_prompt"));
      }
    json_decref(cases);
    uint64_t st = qins_rng_seed(1234);
    while (g->n_prompts < want) {
      int n = 8;
      int32_t *ids = malloc((size_t)n * sizeof(int32_t));
      if (!ids) return QINS_ENOMEM;
      for (int k = 0; k < n; k++) ids[k] = (int32_t)(qins_rng_next(&st) % (uint64_t)g->vocab);
      g->prompts[g->n_prompts] = ids;
      g->plen[g->n_prompts++] = n;
      json_array_append_new(plist, json_string("8 seeded random ids (no tokenizer)"));
    }
    qins_report_run_str(&g->rep, "prompt_source", arr ? "fixture cases.json (+ seeded random ids)" : "seeded random ids");
  }
  if (g->n_prompts == 0) return qins_error_set(QINS_EINPUT, "gate %s: no prompts", g->name);
  qins_report_run_json(&g->rep, "prompts", plist);
  return 0;
}

static int make_branch(gctx *g, const char *name, const qins_policy *pol, branch *b) {
  memset(b, 0, sizeof *b);
  snprintf(b->name, sizeof b->name, "%s", name);
  qins_llm_options lo = {0, 0};
  int rc = qins_llm_create(g->m, g->be, &lo, &b->llm);
  if (rc) return rc;
  if (pol && (rc = qins_policy_apply(b->llm, g->be, pol, 0, &b->st))) {
    qins_llm_destroy(b->llm);
    b->llm = NULL;
    return rc;
  }
  return 0;
}

static void free_branch(branch *b) {
  if (b->llm) qins_llm_destroy(b->llm);
  qins_policy_state_free(b->st);
  memset(b, 0, sizeof *b);
}

/* The subject policy with every non-f32 weight format replaced by `fmt` (baselines); the V cache
 * stays f32 (the runtime has no int8/f16 V cache). */
static void baseline_policy(const qins_policy *src, qins_dtype fmt, qins_policy *dst) {
  *dst = *src;
  for (int l = 0; l < dst->n_layers; l++) {
    for (int p = QINS_PATH_V; p <= QINS_PATH_DOWN; p++)
      if (dst->p[l][p].format != QINS_DT_F32) dst->p[l][p].format = fmt;
    dst->p[l][QINS_PATH_VCACHE].format = QINS_DT_F32;
  }
}

/* ---------------------------------------------------------------- measurements */

static int steps_for(const gctx *g, int plen, int steps) {
  int room = g->max_seq - plen;
  return steps < 0 || steps > room ? room : steps;
}

/* Greedy continuation (no stop ids: the full length); decode tokens/s into *tps when non-NULL. */
static int greedy(branch *b, const int32_t *p, int n, int steps, int32_t *out, double *tps) {
  qins_gen_stats st;
  int rc = qins_llm_generate(b->llm, NULL, p, n, steps, NULL, 0, NULL, NULL, out, &st);
  if (!rc && tps) *tps = st.decode_s > 0 ? (st.n_generated - 1) / st.decode_s : NAN;
  return rc;
}

/* Decode tok/s of branches b[0..n) on prompt 0, measured in alternation (best of `reps` each), so
 * that load changes on a shared machine hit every branch alike. */
static int speed_alternating(gctx *g, branch **b, int n, int steps, int reps, double *tps) {
  int32_t *out = malloc((size_t)(steps > 0 ? steps : 1) * 4);
  if (!out) return QINS_ENOMEM;
  int rc = 0;
  for (int i = 0; i < n; i++) tps[i] = 0;
  for (int r = 0; r < reps && !rc; r++)
    for (int i = 0; i < n && !rc; i++) {
      double t;
      rc = greedy(b[i], g->prompts[0], g->plen[0], steps, out, &t);
      if (!rc && t > tps[i]) tps[i] = t;
    }
  free(out);
  return rc;
}

typedef struct traj_stats {
  double kl_mean, kl_max, ov_mean, ov_min;
  int n;
} traj_stats;

/* Along one trajectory chosen by the FP branch (sampled with T/top-p/seed, or greedy when
 * sample_t <= 0), the KL(FP||B) of next-token distributions at temperature kl_t and the top-k
 * overlap, per step into kl[]/ov[] (may be NULL). */
static int trajectory(gctx *g, branch *fp, branch *b, const int32_t *p, int n, int steps, double sample_t,
                      double top_p, uint64_t seed, double kl_t, int k, double *kl, double *ov, traj_stats *ts) {
  int V = g->vocab;
  float *lf = malloc((size_t)V * 4), *lb = malloc((size_t)V * 4);
  int32_t *hist = malloc((size_t)(n + steps + 1) * 4);
  qins_sampler *s = NULL;
  int rc = QINS_ENOMEM;
  if (!lf || !lb || !hist) goto done;
  qins_sampler_params sp = qins_sampler_defaults();
  sp.temperature = (float)sample_t;
  sp.top_p = (float)top_p;
  sp.seed = seed;
  if ((rc = qins_sampler_create(&sp, V, &s))) goto done;
  qins_llm_reset(fp->llm);
  qins_llm_reset(b->llm);
  if ((rc = qins_llm_forward(fp->llm, p, n, 0, lf, NULL)) || (rc = qins_llm_forward(b->llm, p, n, 0, lb, NULL)))
    goto done;
  memcpy(hist, p, (size_t)n * 4);
  memset(ts, 0, sizeof *ts);
  ts->ov_min = 1;
  for (int i = 0; i < steps; i++) {
    double d = qins_eval_kl_logits(lf, lb, V, kl_t), o = qins_eval_topk_overlap(lf, lb, V, k);
    if (kl) kl[i] = d;
    if (ov) ov[i] = o;
    ts->kl_mean += d;
    ts->ov_mean += o;
    if (d > ts->kl_max) ts->kl_max = d;
    if (o < ts->ov_min) ts->ov_min = o;
    ts->n++;
    if (i + 1 == steps) break;
    int32_t next = sample_t > 0 ? qins_sampler_sample(s, lf, NULL, 0) : qins_argmax_f32(lf, V);
    hist[n + i] = next;
    if ((rc = qins_llm_forward(fp->llm, &next, 1, 0, lf, NULL)) || (rc = qins_llm_forward(b->llm, &next, 1, 0, lb, NULL)))
      goto done;
  }
  if (ts->n) ts->kl_mean /= ts->n, ts->ov_mean /= ts->n;
  rc = 0;
done:
  qins_sampler_destroy(s);
  free(lf);
  free(lb);
  free(hist);
  return rc;
}

typedef struct greedy_stats {
  double match;      /* over all prompts' generated tokens */
  int min_first_div; /* earliest first divergence (steps if none) */
  int tokens;
  double tps;        /* mean decode tokens/s */
} greedy_stats;

/* Greedy parity of branch b against FP reference ids ref[i] (steps[i] tokens each). */
static int greedy_vs(gctx *g, branch *b, int32_t **ref, const int *steps, int np, greedy_stats *gs, const char *table) {
  memset(gs, 0, sizeof *gs);
  gs->min_first_div = 1 << 30;
  long same = 0;
  double tps_sum = 0;
  for (int i = 0; i < np; i++) {
    int32_t *out = malloc((size_t)(steps[i] ? steps[i] : 1) * 4);
    if (!out) return QINS_ENOMEM;
    double tps = NAN;
    int rc = greedy(b, g->prompts[i], g->plen[i], steps[i], out, &tps);
    if (rc) {
      free(out);
      return rc;
    }
    int fd;
    double mr = qins_eval_match(ref[i], out, steps[i], &fd);
    same += lround(mr * steps[i]);
    gs->tokens += steps[i];
    if (fd < gs->min_first_div) gs->min_first_div = fd;
    tps_sum += tps;
    if (table) {
      json_t *row = json_object();
      json_object_set_new(row, "branch", json_string(b->name));
      json_object_set_new(row, "prompt", json_integer(i));
      json_object_set_new(row, "steps", json_integer(steps[i]));
      json_object_set_new(row, "match", json_real(mr));
      json_object_set_new(row, "first_divergence", fd == steps[i] ? json_string("none") : json_integer(fd));
      qins_report_row(&g->rep, table, row);
    }
    free(out);
  }
  gs->match = gs->tokens ? (double)same / gs->tokens : 1;
  gs->tps = tps_sum / np;
  return 0;
}

/* FP greedy references for every prompt. */
static int fp_refs(gctx *g, branch *fp, int steps_param, int32_t **ref, int *steps, double *tps) {
  double sum = 0;
  for (int i = 0; i < g->n_prompts; i++) {
    steps[i] = steps_for(g, g->plen[i], steps_param);
    ref[i] = malloc((size_t)(steps[i] ? steps[i] : 1) * 4);
    if (!ref[i]) return QINS_ENOMEM;
    double t = NAN;
    int rc = greedy(fp, g->prompts[i], g->plen[i], steps[i], ref[i], &t);
    if (rc) return rc;
    sum += t;
  }
  if (tps) *tps = sum / g->n_prompts;
  return 0;
}

static void free_refs(int32_t **ref, int n) {
  for (int i = 0; i < n; i++) free(ref[i]);
}

/* ---------------------------------------------------------------- gates */

static int gate_a1(gctx *g) {
  qins_codec_report_opts ro;
  memset(&ro, 0, sizeof ro);
  const char *fl = p_str(g, "formats", "qins-f32,qins8,qins6,int8-row,int8-block32,f16,bf16");
  int rc = qins_codec_report_parse_formats(fl, &ro);
  if (rc) return rc;
  if ((rc = qins_alpha_spec_parse(p_str(g, "alpha", "mse"), &ro.alpha))) return rc;
  qins_report_run_str(&g->rep, "formats", fl);
  qins_report_run_str(&g->rep, "alpha", p_str(g, "alpha", "mse"));
  qins_codec_report *cr;
  if ((rc = qins_codec_report_model(g->be, g->m, &ro, &cr))) return rc;
  for (int f = 0; f < cr->n_formats; f++) {
    qins_codec_summary *s = &cr->summary[f];
    json_t *row = json_object();
    json_object_set_new(row, "format", json_string(fmt_name(s->format)));
    json_object_set_new(row, "tensors", json_integer(s->tensors));
    json_object_set_new(row, "min_cosine", json_real(s->min_cosine));
    json_object_set_new(row, "max_abs_err", json_real(s->max_abs_err));
    json_object_set_new(row, "max_rel_err", json_real(s->max_rel_err));
    json_object_set_new(row, "nmse", json_real(s->nmse));
    json_object_set_new(row, "bit_exact", json_real(s->bit_exact));
    json_object_set_new(row, "bytes", json_integer((json_int_t)s->bytes));
    qins_report_row(&g->rep, "per format (int8 and f16 baselines beside QINS)", row);
    double x = f, y = s->nmse > 0 ? s->nmse : 1e-30;
    qins_report_series(&g->rep, "NMSE per format (x = index in the table)", "format index", "NMSE", 1,
                       fmt_name(s->format), &x, &y, 1);
    if (s->gated) {
      qins_report_check(&g->rep, "qins-f32 min cosine over tensors", s->min_cosine, ">=", QINS_A1_MIN_COSINE,
                        "QINS.md 7: cos >= 0.999999");
      qins_report_check(&g->rep, "qins-f32 max |err| / max(1,|x|)", s->max_rel_err, "<=", QINS_A1_MAX_REL_ERR,
                        "QINS.md 7: err <= 1e-6 * max(1, |x|)");
      char note[128];
      snprintf(note, sizeof note, "%d of %d tensors pass", s->a1_passed, s->tensors);
      qins_report_check(&g->rep, "qins-f32 tensors passing A1", s->a1_passed, ">=", s->tensors, note);
    }
  }
  for (int t = 0; t < cr->n_tensors && t < 64; t++) {
    json_t *row = json_object();
    json_object_set_new(row, "tensor", json_string(cr->tensors[t].name));
    for (int f = 0; f < cr->n_formats; f++) {
      char k[64];
      snprintf(k, sizeof k, "cos %s", fmt_name(cr->tensors[t].m[f].format));
      json_object_set_new(row, k, json_real(cr->tensors[t].m[f].cosine));
    }
    qins_report_row(&g->rep, "per tensor cosine", row);
  }
  if (!cr->a1_measured) qins_report_check_not_run(&g->rep, "qins-f32 A1", "qins-f32 not among the formats");
  qins_codec_report_free(cr);
  return 0;
}

static int gate_a2(gctx *g) {
  int steps_p = p_int(g, "steps", -1);
  double thr = p_num(g, "thresholds.match", 1.0);
  qins_dtype base[4];
  int nb = p_formats(g, "baselines", base, 4);
  branch fp;
  int32_t *ref[MAX_PROMPTS] = {0};
  int steps[MAX_PROMPTS];
  int rc = make_branch(g, "fp32", NULL, &fp);
  if (rc) return rc;
  if ((rc = fp_refs(g, &fp, steps_p, ref, steps, NULL))) goto out;
  qins_report_run_num(&g->rep, "steps_per_prompt", steps[0]);
  qins_report_run_str(&g->rep, "steps_rule", steps_p < 0 ? "max: max_seq_len - prompt length" : "fixed");
  for (int bi = -1; bi < nb && !rc; bi++) {
    qins_policy pol;
    char nm[600];
    if (bi < 0) pol = g->pol, snprintf(nm, sizeof nm, "QINS (%s)", g->pol_desc);
    else baseline_policy(&g->pol, base[bi], &pol), snprintf(nm, sizeof nm, "%s baseline", fmt_name(base[bi]));
    branch b;
    if ((rc = make_branch(g, nm, &pol, &b))) break;
    greedy_stats gs;
    rc = greedy_vs(g, &b, ref, steps, g->n_prompts, &gs, "per prompt");
    if (!rc) {
      json_t *row = json_object();
      json_object_set_new(row, "branch", json_string(nm));
      json_object_set_new(row, "match", json_real(gs.match));
      json_object_set_new(row, "tokens", json_integer(gs.tokens));
      json_object_set_new(row, "earliest_divergence", json_integer(gs.min_first_div));
      qins_report_row(&g->rep, "summary (FP f32 reference)", row);
      double x = bi + 1, y = gs.match;
      qins_report_series(&g->rep, "greedy token match vs FP", "branch (0 = QINS, then baselines)", "match", 0, nm, &x,
                         &y, 1);
      if (bi < 0) {
        char note[128];
        snprintf(note, sizeof note, "earliest first divergence at step %d of %d", gs.min_first_div, steps[0]);
        qins_report_check(&g->rep, "greedy token match (QINS vs FP)", gs.match, ">=", thr, note);
      }
    }
    free_branch(&b);
  }
out:
  free_refs(ref, g->n_prompts);
  free_branch(&fp);
  return rc;
}

/* A3 (and C1's sampling part): KL/top-k along FP-sampled trajectories for QINS, baselines, noise. */
static int sampling_kl(gctx *g, branch *fp, const qins_policy *qpol, const char *qname, qins_dtype *base, int nb,
                       int steps_p, double T, double top_p, int k, double *kl_q, double *ov_q, double *kl_noise,
                       const char *table) {
  int rc = 0;
  *kl_noise = NAN;
  for (int bi = -2; bi < nb && !rc; bi++) {
    qins_policy pol;
    char nm[600];
    if (bi == -2) pol = *qpol, snprintf(nm, sizeof nm, "%s", qname);
    else if (bi == -1) {
      /* the FP noise floor: every weight path in f16 (the reference's own rounding noise) */
      qins_alpha_spec a = {QINS_ALPHA_MSE, 0};
      qins_policy_init_uniform(&pol, g->m->cfg.n_layers, QINS_DT_F16, a, 0);
      snprintf(nm, sizeof nm, "FP noise floor (f32 vs f16 weights)");
    } else {
      baseline_policy(qpol, base[bi], &pol);
      snprintf(nm, sizeof nm, "%s baseline", fmt_name(base[bi]));
    }
    branch b;
    if ((rc = make_branch(g, nm, &pol, &b))) break;
    double kls = 0, ovs = 0, klmax = 0, ovmin = 1;
    int cnt = 0;
    for (int i = 0; i < g->n_prompts && !rc; i++) {
      int steps = steps_for(g, g->plen[i], steps_p);
      double *kl = malloc((size_t)(steps + 1) * sizeof(double)), *x = malloc((size_t)(steps + 1) * sizeof(double));
      traj_stats ts;
      rc = kl && x ? trajectory(g, fp, &b, g->prompts[i], g->plen[i], steps, T, top_p, 1000 + (uint64_t)i, T, k, kl,
                                NULL, &ts)
                   : QINS_ENOMEM;
      if (!rc) {
        kls += ts.kl_mean * ts.n;
        ovs += ts.ov_mean * ts.n;
        cnt += ts.n;
        if (ts.kl_max > klmax) klmax = ts.kl_max;
        if (ts.ov_min < ovmin) ovmin = ts.ov_min;
        if (i == 0) {
          for (int s = 0; s < steps; s++) x[s] = g->plen[i] + s;
          qins_report_series(&g->rep, "KL(FP || branch) along prompt 0's sampled trajectory", "position", "KL (nats)",
                             1, nm, x, kl, steps);
        }
      }
      free(kl);
      free(x);
    }
    if (!rc) {
      double klm = cnt ? kls / cnt : NAN, ovm = cnt ? ovs / cnt : NAN;
      json_t *row = json_object();
      json_object_set_new(row, "branch", json_string(nm));
      json_object_set_new(row, "kl_mean", json_real(klm));
      json_object_set_new(row, "kl_max", json_real(klmax));
      json_object_set_new(row, "top_k_overlap_mean", json_real(ovm));
      json_object_set_new(row, "top_k_overlap_min", json_real(ovmin));
      json_object_set_new(row, "positions", json_integer(cnt));
      qins_report_row(&g->rep, table, row);
      if (bi == -2) *kl_q = klm, *ov_q = ovm;
      if (bi == -1) *kl_noise = klm;
    }
    free_branch(&b);
  }
  return rc;
}

static int gate_a3(gctx *g) {
  double T = p_num(g, "temperature", 0.7), top_p = p_num(g, "top_p", 0.9);
  int k = p_int(g, "top_k_overlap", 10), steps_p = p_int(g, "steps", 128);
  double noise_factor = p_num(g, "thresholds.kl_noise_factor", 10), ov_thr = p_num(g, "thresholds.top_k_overlap", 0.97);
  qins_dtype base[4];
  int nb = p_formats(g, "baselines", base, 4);
  qins_report_run_num(&g->rep, "temperature", T);
  qins_report_run_num(&g->rep, "top_p", top_p);
  qins_report_run_num(&g->rep, "top_k_overlap_k", k);
  qins_report_run_num(&g->rep, "steps_per_prompt", steps_for(g, g->plen[0], steps_p));
  branch fp;
  int rc = make_branch(g, "fp32", NULL, &fp);
  if (rc) return rc;
  double klq, ovq, kln;
  char qn[600];
  snprintf(qn, sizeof qn, "QINS (%s)", g->pol_desc);
  rc = sampling_kl(g, &fp, &g->pol, qn, base, nb, steps_p, T, top_p, k, &klq, &ovq, &kln, "KL and top-k overlap");
  if (!rc) {
    char note[200];
    snprintf(note, sizeof note, "threshold = %g x the FP noise floor KL %.3e (f32 vs f16 weights)", noise_factor, kln);
    qins_report_check(&g->rep, "mean KL(FP || QINS) at T, along FP-sampled trajectories", klq, "<=",
                      noise_factor * kln, note);
    qins_report_check(&g->rep, "mean top-k overlap", ovq, ">=", ov_thr, "QINS.md 7: top-10 >= 97%");
    qins_report_note(&g->rep, "KL is computed on the full tempered distributions softmax(logits/T); top-p only "
                              "shapes the sampled trajectory (a truncated Q can be 0 where P is not: KL infinite).");
  }
  free_branch(&fp);
  return rc;
}

static int gate_b1(gctx *g) {
  qins_cfg *ctxs = param(g, "contexts");
  double thr_match = p_num(g, "thresholds.match", 0.98), thr_kl = p_num(g, "thresholds.kl_mean", 1e-3);
  double thr_flat = p_num(g, "thresholds.kl_flat_ratio", 10);
  qins_alpha_spec al;
  int rc = qins_alpha_spec_parse(p_str(g, "alpha", "mse"), &al);
  if (rc) return rc;
  int contexts[16], nc = 0, ran = 0;
  if (ctxs && ctxs->type == QINS_CFG_SEQ)
    for (int i = 0; i < ctxs->n && nc < 16; i++) {
      long long v;
      if (!qins_cfg_as_int(ctxs->items[i], "contexts", &v)) contexts[nc++] = (int)v;
    }
  if (!nc) contexts[nc++] = 2048;
  qins_policy pol;
  qins_policy_init_fp(&pol, g->m->cfg.n_layers);
  for (int l = 0; l < pol.n_layers; l++) pol.p[l][QINS_PATH_VCACHE].format = QINS_DT_QINS8, pol.p[l][QINS_PATH_VCACHE].alpha = al;
  qins_report_run_str(&g->rep, "policy", "V cache qins8 (one alpha per token and KV head), weights f32");
  qins_report_run_str(&g->rep, "alpha", p_str(g, "alpha", "mse"));
  int list[17], nl = 0, any_fit = 0;
  for (int i = 0; i < nc; i++) {
    if (contexts[i] <= g->max_seq) {
      list[nl++] = contexts[i];
      any_fit = 1;
    } else {
      char what[96], why[160];
      snprintf(what, sizeof what, "context %d", contexts[i]);
      snprintf(why, sizeof why, "not run: context %d exceeds the model's max_seq_len %d", contexts[i], g->max_seq);
      qins_report_check_not_run(&g->rep, what, why);
    }
  }
  if (!any_fit) list[nl++] = g->max_seq; /* the longest the model allows */
  branch fp, qb;
  if ((rc = make_branch(g, "fp32", NULL, &fp))) return rc;
  if ((rc = make_branch(g, "qins8 V cache", &pol, &qb))) {
    free_branch(&fp);
    return rc;
  }
  for (int ci = 0; ci < nl && !rc; ci++) {
    int L = list[ci], plen = g->plen[0], steps = L - plen;
    if (steps < 1) continue;
    int32_t *a = malloc((size_t)steps * 4), *b = malloc((size_t)steps * 4);
    double *kl = malloc((size_t)steps * sizeof(double));
    if (!a || !b || !kl) rc = QINS_ENOMEM;
    if (!rc) rc = greedy(&fp, g->prompts[0], plen, steps, a, NULL);
    if (!rc) rc = greedy(&qb, g->prompts[0], plen, steps, b, NULL);
    traj_stats ts;
    if (!rc) rc = trajectory(g, &fp, &qb, g->prompts[0], plen, steps, 0, 1, 0, 1.0, 10, kl, NULL, &ts);
    if (!rc) {
      int fd;
      double mr = qins_eval_match(a, b, steps, &fd);
      /* KL against position in 8 buckets: "small and flat" */
      double bx[8], by[8];
      int nbk = steps < 8 ? steps : 8;
      for (int k = 0; k < nbk; k++) {
        int s0 = steps * k / nbk, s1 = steps * (k + 1) / nbk;
        double sum = 0;
        for (int s = s0; s < s1; s++) sum += kl[s];
        bx[k] = plen + (s0 + s1) / 2.0;
        by[k] = s1 > s0 ? sum / (s1 - s0) : 0;
      }
      char nm[64];
      snprintf(nm, sizeof nm, "context %d", L);
      qins_report_series(&g->rep, "KL(FP || qins8 V cache) vs position (bucket means, greedy FP trajectory)",
                         "position", "KL (nats)", 1, nm, bx, by, nbk);
      double first = by[0] > 1e-12 ? by[0] : 1e-12, worst = 0;
      for (int k = 0; k < nbk; k++) worst = by[k] > worst ? by[k] : worst;
      json_t *row = json_object();
      json_object_set_new(row, "context", json_integer(L));
      json_object_set_new(row, "generated", json_integer(steps));
      json_object_set_new(row, "greedy_match", json_real(mr));
      json_object_set_new(row, "first_divergence", fd == steps ? json_string("none") : json_integer(fd));
      json_object_set_new(row, "kl_mean", json_real(ts.kl_mean));
      json_object_set_new(row, "kl_max", json_real(ts.kl_max));
      json_object_set_new(row, "kl_last_bucket_over_first", json_real(by[nbk - 1] / first));
      qins_report_row(&g->rep, "per context", row);
      char what[128], note[160];
      snprintf(what, sizeof what, "greedy match at context %d%s", L, any_fit ? "" : " (the model's max)");
      snprintf(note, sizeof note, "first divergence %s", fd == steps ? "none" : "");
      if (fd != steps) snprintf(note, sizeof note, "first divergence at generated step %d", fd);
      qins_report_check(&g->rep, what, mr, ">=", thr_match, note);
      snprintf(what, sizeof what, "mean KL at context %d", L);
      qins_report_check(&g->rep, what, ts.kl_mean, "<=", thr_kl, "KL small (threshold from the gate YAML)");
      snprintf(what, sizeof what, "KL flatness at context %d (worst bucket / first bucket)", L);
      qins_report_check(&g->rep, what, worst / first, "<=", thr_flat, "KL flat along the context");
      ran++;
    }
    free(a);
    free(b);
    free(kl);
  }
  qins_report_note(&g->rep, "Baselines: the runtime has no int8 or f16 V cache, so the int8/f16 baselines of this gate "
                            "are not run; the f32 V cache is the reference.");
  free_branch(&fp);
  free_branch(&qb);
  return rc;
}

/* A4: qins6 packing throughput and end-to-end overhead of qins6 vs qins8 weights. */
static int gate_a4(gctx *g) {
  int n = p_int(g, "pack_elements", 1 << 22), reps = p_int(g, "pack_repeats", 5), steps_p = p_int(g, "steps", -1);
  double thr = p_num(g, "thresholds.overhead", 0.01);
  uint8_t *codes = malloc((size_t)n), *packed = malloc((size_t)(n / 4 + 1) * 3), *back = malloc((size_t)n);
  if (!codes || !packed || !back) {
    free(codes), free(packed), free(back);
    return QINS_ENOMEM;
  }
  uint64_t st = qins_rng_seed(7);
  for (int i = 0; i < n; i++) codes[i] = (uint8_t)(qins_rng_next(&st) & 63);
  double tp = 1e30, tu = 1e30;
  for (int r = 0; r < reps; r++) {
    double t0 = now_s();
    qins_codec_pack6(codes, n, packed);
    double t1 = now_s();
    qins_codec_unpack6(packed, n, back);
    double t2 = now_s();
    if (t1 - t0 < tp) tp = t1 - t0;
    if (t2 - t1 < tu) tu = t2 - t1;
  }
  int same = !memcmp(codes, back, (size_t)n);
  free(codes), free(packed), free(back);
  json_t *row = json_object();
  json_object_set_new(row, "elements", json_integer(n));
  json_object_set_new(row, "pack_Melem_per_s", json_real(n / tp / 1e6));
  json_object_set_new(row, "unpack_Melem_per_s", json_real(n / tu / 1e6));
  json_object_set_new(row, "round_trip_exact", json_boolean(same));
  qins_report_row(&g->rep, "qins6 pack/unpack (scalar reference, best of repeats)", row);
  qins_report_check(&g->rep, "qins6 pack/unpack round trip exact", same, ">=", 1, "");
  /* end to end: qins8 vs qins6 vs int8 on the same policy paths */
  branch fp;
  int rc = make_branch(g, "fp32", NULL, &fp);
  if (rc) return rc;
  int32_t *ref[MAX_PROMPTS] = {0};
  int steps[MAX_PROMPTS];
  double tps_fp;
  if ((rc = fp_refs(g, &fp, steps_p, ref, steps, &tps_fp))) goto out;
  qins_dtype fmts[3] = {QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_INT8_ROW};
  double tps[4] = {0}, match[3] = {0};
  int reps_e2e = p_int(g, "e2e_repeats", 3);
  branch bs[3];
  memset(bs, 0, sizeof bs);
  for (int f = 0; f < 3 && !rc; f++) {
    qins_policy pol;
    baseline_policy(&g->pol, fmts[f], &pol);
    if ((rc = make_branch(g, fmt_name(fmts[f]), &pol, &bs[f]))) break;
    greedy_stats gs;
    if ((rc = greedy_vs(g, &bs[f], ref, steps, g->n_prompts, &gs, NULL))) break;
    match[f] = gs.match;
  }
  branch *order[4] = {&fp, &bs[0], &bs[1], &bs[2]};
  if (!rc) rc = speed_alternating(g, order, 4, steps[0], reps_e2e, tps);
  for (int f = 0; f < 3 && !rc; f++) {
    json_t *row2 = json_object();
    json_object_set_new(row2, "weights", json_string(fmt_name(fmts[f])));
    json_object_set_new(row2, "decode_tok_per_s", json_real(tps[f + 1]));
    json_object_set_new(row2, "greedy_match_vs_fp", json_real(match[f]));
    qins_report_row(&g->rep, "end to end decode (fused kernels, prompt 0, best of alternating repeats)", row2);
  }
  for (int f = 0; f < 3; f++) free_branch(&bs[f]);
  tps_fp = tps[0];
  memmove(tps, tps + 1, 3 * sizeof(double));
  if (!rc) {
    double overhead = tps[0] / tps[1] - 1; /* time per token ratio qins6/qins8 - 1 */
    qins_report_check(&g->rep, "decode latency overhead of qins6 vs qins8", overhead, "<=", thr,
                      "QINS.md 7: <= 1% overhead (time per token)");
    qins_report_check(&g->rep, "qins6 greedy match vs FP", match[1], ">=", p_num(g, "thresholds.match", 0.0),
                      "reported; threshold from the gate YAML");
    qins_report_note(&g->rep, "FP f32 decode: %.1f tok/s. Wall-clock timings on a shared machine vary by several "
                              "percent between runs.", tps_fp);
  }
out:
  free_refs(ref, g->n_prompts);
  free_branch(&fp);
  return rc;
}

/* Time spent in matmul (and, for the unfused path, the weight's dequantize) so far, as the
 * backend measures it: wall time per call on the cpu, GPU timestamps on vk (after a sync). */
static uint64_t a5_op_ns(qins_backend *be) {
  return be->stats[QINS_OP_MATMUL].ns + be->stats[QINS_OP_DEQUANTIZE].ns;
}

/* A5: fused vs unfused quantized matmul: time and equality, per format, on the model's matrices,
 * on the gate's backend (the path is the backend's qmatmul_path, so cpu and vk alike). */
static int gate_a5(gctx *g) {
  int reps = p_int(g, "repeats", 20), M = p_int(g, "rows", 1);
  double tol = p_num(g, "thresholds.rel_diff", 1e-5);
  qins_dtype fmts[5] = {QINS_DT_QINS8, QINS_DT_QINS6, QINS_DT_QINS_F32, QINS_DT_INT8_ROW, QINS_DT_INT8_B32};
  branch b;
  int rc = 0;
  int all_faster = 1, timed = 1;
  double worst_diff = 0, sum_ratio = 0;
  qins_report_run_str(&g->rep, "weights_path",
                      "both: the fused quantized matmul and the unfused one (dequantize, then f32), on this backend");
  for (int f = 0; f < 5 && !rc; f++) {
    qins_policy pol;
    baseline_policy(&g->pol, fmts[f], &pol);
    rc = make_branch(g, fmt_name(fmts[f]), &pol, &b);
    if (rc) break;
    double tf = 0, tu = 0, maxrel = 0;
    for (int m = QINS_LLM_WV; m <= QINS_LLM_WDOWN && !rc; m++) {
      qins_tensor *w = qins_llm_matrix(b.llm, 0, (qins_llm_mat)m);
      if (!w || !qins_dtype_is_quantized(w->dtype)) continue;
      int64_t N = w->shape[0], K = w->shape[1];
      qins_tensor x, y1, y2;
      int64_t sx[2] = {M, K}, sy[2] = {M, N};
      qins_tensor_init(&x, "x", QINS_DT_F32, 2, sx);
      qins_tensor_init(&y1, "y fused", QINS_DT_F32, 2, sy);
      qins_tensor_init(&y2, "y unfused", QINS_DT_F32, 2, sy);
      if ((rc = qins_tensor_alloc(g->be, &x)) || (rc = qins_tensor_alloc(g->be, &y1)) ||
          (rc = qins_tensor_alloc(g->be, &y2)))
        break;
      float *hx = malloc((size_t)(M * K) * 4), *h1 = malloc((size_t)(M * N) * 4), *h2 = malloc((size_t)(M * N) * 4);
      uint64_t st = qins_rng_seed(99);
      for (int64_t i = 0; i < M * K; i++) hx[i] = qins_rng_uniform(&st) * 2 - 1;
      qins_tensor_write(&x, hx);
      double best_f = 1e30, best_u = 1e30;
      for (int r = 0; r < reps && !rc; r++) {
        rc = qins_backend_sync(g->be);
        uint64_t n0 = a5_op_ns(g->be);
        if (!rc) rc = qins_op_matmul(g->be, &x, w, NULL, &y1);
        if (!rc) rc = qins_backend_sync(g->be);
        uint64_t n1 = a5_op_ns(g->be);
        qins_backend_set_qmatmul_path(g->be, QINS_QMATMUL_UNFUSED);
        if (!rc) rc = qins_op_matmul(g->be, &x, w, NULL, &y2);
        qins_backend_set_qmatmul_path(g->be, QINS_QMATMUL_FUSED);
        if (!rc) rc = qins_backend_sync(g->be);
        uint64_t n2 = a5_op_ns(g->be);
        double t_f = (double)(n1 - n0) * 1e-9, t_u = (double)(n2 - n1) * 1e-9;
        if (t_f < best_f) best_f = t_f;
        if (t_u < best_u) best_u = t_u;
      }
      if (!rc) {
        qins_tensor_read(&y1, h1);
        qins_tensor_read(&y2, h2);
        double num = 0, den = 0;
        for (int64_t i = 0; i < M * N; i++) num += (double)(h1[i] - h2[i]) * (h1[i] - h2[i]), den += (double)h2[i] * h2[i];
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (rel > maxrel) maxrel = rel;
        tf += best_f;
        tu += best_u;
        json_t *row = json_object();
        json_object_set_new(row, "format", json_string(fmt_name(fmts[f])));
        json_object_set_new(row, "matrix", json_string(w->name));
        json_object_set_new(row, "shape", json_sprintf("%lldx%lld, M=%d", (long long)N, (long long)K, M));
        json_object_set_new(row, "fused_us", json_real(best_f * 1e6));
        json_object_set_new(row, "unfused_us", json_real(best_u * 1e6));
        json_object_set_new(row, "rel_l2_diff", json_real(rel));
        qins_report_row(&g->rep, "layer 0 matrices", row);
      }
      free(hx), free(h1), free(h2);
      qins_tensor_free(&x), qins_tensor_free(&y1), qins_tensor_free(&y2);
    }
    if (!rc) {
      if (tf <= 0 || tu <= 0) timed = 0;
      double ratio = tf > 0 ? tu / tf : NAN;
      double xi = f;
      qins_report_series(&g->rep, "unfused time / fused time (layer 0 matrices, summed)", "format index",
                         "speed-up", 0, fmt_name(fmts[f]), &xi, &ratio, 1);
      if (fmts[f] == QINS_DT_QINS8 || fmts[f] == QINS_DT_QINS6) {
        char what[96];
        snprintf(what, sizeof what, "%s fused speed-up over unfused", fmt_name(fmts[f]));
        qins_report_check(&g->rep, what, ratio, ">=", 1.0, "QINS.md 7: faster or equal");
        if (ratio < 1) all_faster = 0;
        sum_ratio += ratio;
      }
      if (maxrel > worst_diff) worst_diff = maxrel;
    }
    free_branch(&b);
  }
  if (!rc) qins_report_check(&g->rep, "fused vs unfused output, worst relative L2 difference", worst_diff, "<=", tol,
                             "QINS.md 4: agree to float rounding");
  if (!rc && !timed)
    qins_report_set_verdict(&g->rep, "not-run",
                            "the backend measured no op time (a device without timestamp queries): equality was "
                            "checked, speed cannot be");
  (void)all_faster;
  (void)sum_ratio;
  qins_report_note(&g->rep, "Unfused = dequantize the weight to an f32 buffer, then the f32 matmul (the reference "
                            "path, the backend's qmatmul_path), timed per call including the dequantize. Times are "
                            "the backend's own op times, best of the repeats: wall time on the cpu, GPU timestamp "
                            "queries on vk (kernel time, no submission). int8 formats are the baselines.");
  return rc;
}

/* B5: attention over a qins8 V cache (decode folded into the probabilities) vs decode-then-attend. */
static int gate_b5(gctx *g) {
  qins_cfg *ctxs = param(g, "contexts");
  int reps = p_int(g, "repeats", 10);
  const qins_model_config *c = &g->m->cfg;
  int contexts[16], nc = 0;
  if (ctxs && ctxs->type == QINS_CFG_SEQ)
    for (int i = 0; i < ctxs->n && nc < 16; i++) {
      long long v;
      if (!qins_cfg_as_int(ctxs->items[i], "contexts", &v)) contexts[nc++] = (int)v;
    }
  if (!nc) contexts[nc++] = 2048;
  qins_report_run_str(&g->rep, "data", "random keys/values/queries in the model's head shape (kernel throughput)");
  int64_t hq = c->n_heads, hkv = c->n_kv_heads, hd = c->head_dim;
  int rc = 0;
  for (int ci = 0; ci < nc && !rc; ci++) {
    int64_t T = contexts[ci];
    qins_tensor q, kc, vc, vq, va, vdec, o1, o2;
    int64_t sq[3] = {1, hq, hd}, sc[3] = {T, hkv, hd}, sa[1] = {T * hkv};
    qins_tensor_init(&q, "q", QINS_DT_F32, 3, sq);
    qins_tensor_init(&kc, "k", QINS_DT_F32, 3, sc);
    qins_tensor_init(&vc, "v", QINS_DT_F32, 3, sc);
    qins_tensor_init(&vq, "vq", QINS_DT_QINS8, 3, sc);
    qins_tensor_init(&va, "alpha", QINS_DT_F32, 1, sa);
    qins_tensor_init(&vdec, "v decoded", QINS_DT_F32, 3, sc);
    qins_tensor_init(&o1, "o fused", QINS_DT_F32, 3, sq);
    qins_tensor_init(&o2, "o decode", QINS_DT_F32, 3, sq);
    qins_tensor *all[] = {&q, &kc, &vc, &vq, &va, &vdec, &o1, &o2}; /* vq.scale is set after: one buffer each */
    for (int i = 0; i < 8 && !rc; i++) rc = qins_tensor_alloc(g->be, all[i]);
    vq.scale = &va;
    size_t nkv = (size_t)(T * hkv * hd);
    float *h = malloc(nkv * 4), *r1 = malloc((size_t)(hq * hd) * 4), *r2 = malloc((size_t)(hq * hd) * 4);
    uint64_t st = qins_rng_seed(5);
    if (!rc && h) {
      for (size_t i = 0; i < nkv; i++) h[i] = qins_rng_uniform(&st) * 2 - 1;
      qins_tensor_write(&kc, h);
      for (size_t i = 0; i < nkv; i++) h[i] = qins_rng_uniform(&st) * 2 - 1;
      qins_tensor_write(&vc, h);
      for (int64_t i = 0; i < hq * hd; i++) h[i] = qins_rng_uniform(&st) * 2 - 1;
      qins_tensor_write(&q, h);
      qins_alpha_spec al = {QINS_ALPHA_MSE, 0};
      qins_tensor v2 = vc, vq2 = vq;
      v2.ndim = 2, v2.shape[0] = T * hkv, v2.shape[1] = hd;
      vq2.ndim = 2, vq2.shape[0] = T * hkv, vq2.shape[1] = hd;
      vq2.scale = &va;
      rc = qins_op_calibrate(g->be, &v2, QINS_DT_QINS8, al, &va);
      if (!rc) rc = qins_op_quantize(g->be, &v2, &vq2);
    }
    double bf = 1e30, bd = 1e30;
    float scale = 1.0f / sqrtf((float)hd);
    for (int r = 0; r < reps && !rc; r++) {
      qins_backend_sync(g->be);
      double t0 = now_s();
      rc = qins_op_attention(g->be, &q, &kc, &vq, T - 1, scale, &o1);
      qins_backend_sync(g->be);
      double t1 = now_s();
      if (!rc) rc = qins_op_dequantize(g->be, &vq, &vdec);
      if (!rc) rc = qins_op_attention(g->be, &q, &kc, &vdec, T - 1, scale, &o2);
      qins_backend_sync(g->be);
      double t2 = now_s();
      if (t1 - t0 < bf) bf = t1 - t0;
      if (t2 - t1 < bd) bd = t2 - t1;
    }
    if (rc) {
      char why[300];
      snprintf(why, sizeof why, "not run: %s", qins_error_msg());
      qins_report_set_verdict(&g->rep, "not-run", why);
      rc = 0;
    } else if (h && r1 && r2) {
      qins_tensor_read(&o1, r1);
      qins_tensor_read(&o2, r2);
      double num = 0, den = 0;
      for (int64_t i = 0; i < hq * hd; i++) num += (double)(r1[i] - r2[i]) * (r1[i] - r2[i]), den += (double)r2[i] * r2[i];
      json_t *row = json_object();
      json_object_set_new(row, "context", json_integer(T));
      json_object_set_new(row, "fast_path_us", json_real(bf * 1e6));
      json_object_set_new(row, "decode_then_attend_us", json_real(bd * 1e6));
      json_object_set_new(row, "speedup", json_real(bd / bf));
      json_object_set_new(row, "rel_l2_diff", json_real(den > 0 ? sqrt(num / den) : 0));
      qins_report_row(&g->rep, "one decode step (1 query) over the cache", row);
      double x = (double)T, y = bd / bf;
      qins_report_series(&g->rep, "speed-up of the qins8 V fast path over decode-then-attend", "context", "speed-up",
                         0, "fast path", &x, &y, 1);
      char what[96];
      snprintf(what, sizeof what, "fast path speed-up at context %lld", (long long)T);
      qins_report_check(&g->rep, what, bd / bf, ">", 1.0, "QINS.md 7: faster");
    }
    free(h), free(r1), free(r2);
    vq.scale = NULL; /* va is freed on its own */
    for (int i = 0; i < 8; i++) qins_tensor_free(all[i]);
  }
  return rc;
}

static int gate_c1(gctx *g) {
  int steps_p = p_int(g, "steps", -1), ks_steps = p_int(g, "sampling_steps", 128);
  int ppl_tokens = p_int(g, "ppl_tokens", 4096), stride = p_int(g, "ppl_stride", 256);
  double T = p_num(g, "temperature", 0.7), top_p = p_num(g, "top_p", 0.9);
  double thr_ppl = p_num(g, "thresholds.delta_ppl_rel", 0.01), thr_match = p_num(g, "thresholds.match", 0.98);
  double thr_noise = p_num(g, "thresholds.kl_noise_factor", 10), thr_speed = p_num(g, "thresholds.speed_ratio", 1.0);
  qins_dtype base[4];
  int nb = p_formats(g, "baselines", base, 4);
  /* corpus */
  const char *corpus = p_str(g, "corpus", "../shared/data/tinyshakespeare.txt");
  FILE *f = fopen(corpus, "rb");
  if (!f) {
    char why[1200];
    snprintf(why, sizeof why, "not run: cannot read the corpus %s", corpus);
    qins_report_set_verdict(&g->rep, "not-run", why);
    return 0;
  }
  size_t cap = (size_t)ppl_tokens * 8 + 16;
  char *text = malloc(cap + 1);
  size_t got = text ? fread(text, 1, cap, f) : 0;
  fclose(f);
  if (!text) return QINS_ENOMEM;
  text[got] = 0;
  int32_t *ids = NULL;
  size_t nids = 0;
  int rc;
  if (g->tok) {
    if ((rc = qins_tokenizer_encode(g->tok, text, QINS_TOK_ADD_SPECIAL, &ids, &nids))) {
      free(text);
      return rc;
    }
    qins_report_run_str(&g->rep, "corpus", corpus);
  } else {
    ids = malloc(got * 4);
    for (size_t i = 0; ids && i < got; i++) ids[nids++] = (uint8_t)text[i] % g->vocab;
    qins_report_run_str(&g->rep, "corpus", "corpus bytes mod vocab (the model has no tokenizer)");
  }
  free(text);
  if (!ids) return QINS_ENOMEM;
  if ((int)nids > ppl_tokens) nids = (size_t)ppl_tokens;
  qins_report_run_num(&g->rep, "ppl_tokens", (double)nids);
  qins_report_run_num(&g->rep, "ppl_window", g->max_seq);
  qins_report_run_num(&g->rep, "ppl_stride", stride);
  branch fp;
  if ((rc = make_branch(g, "fp32", NULL, &fp))) {
    free(ids);
    return rc;
  }
  double ppl_fp;
  int64_t scored;
  int32_t *ref[MAX_PROMPTS] = {0};
  int steps[MAX_PROMPTS];
  double tps_fp;
  if ((rc = qins_eval_perplexity(fp.llm, ids, (int)nids, g->max_seq, stride, &ppl_fp, &scored))) goto out;
  if ((rc = fp_refs(g, &fp, steps_p, ref, steps, &tps_fp))) goto out;
  {
    json_t *row = json_object();
    json_object_set_new(row, "branch", json_string("fp32"));
    json_object_set_new(row, "ppl", json_real(ppl_fp));
    json_object_set_new(row, "delta_ppl_rel", json_real(0));
    json_object_set_new(row, "greedy_match", json_real(1));
    json_object_set_new(row, "decode_tok_per_s", json_real(tps_fp));
    json_object_set_new(row, "fp_decode_tok_per_s_same_run", json_real(tps_fp));
    json_object_set_new(row, "weight_bytes", json_integer(qins_llm_weight_bytes(fp.llm)));
    json_object_set_new(row, "kv_cache_bytes", json_integer(qins_llm_cache_bytes(fp.llm)));
    qins_report_row(&g->rep, "branches", row);
  }
  for (int bi = -1; bi < nb && !rc; bi++) {
    qins_policy pol;
    char nm[600];
    if (bi < 0) pol = g->pol, snprintf(nm, sizeof nm, "QINS (%s)", g->pol_desc);
    else baseline_policy(&g->pol, base[bi], &pol), snprintf(nm, sizeof nm, "%s baseline (V cache f32)", fmt_name(base[bi]));
    branch b;
    if ((rc = make_branch(g, nm, &pol, &b))) break;
    double ppl;
    greedy_stats gs;
    double tp2[2] = {0, 0};
    branch *pair[2] = {&fp, &b};
    if (!(rc = qins_eval_perplexity(b.llm, ids, (int)nids, g->max_seq, stride, &ppl, NULL)) &&
        !(rc = greedy_vs(g, &b, ref, steps, g->n_prompts, &gs, NULL)) &&
        !(rc = speed_alternating(g, pair, 2, steps[0], p_int(g, "speed_repeats", 5), tp2))) {
      double tps = tp2[1];
      tps_fp = tp2[0];
      int64_t orig, now = qins_policy_state_bytes(b.st, &orig);
      int64_t wb = qins_llm_weight_bytes(b.llm) - orig + now;
      json_t *row = json_object();
      json_object_set_new(row, "branch", json_string(nm));
      json_object_set_new(row, "ppl", json_real(ppl));
      json_object_set_new(row, "delta_ppl_rel", json_real(ppl / ppl_fp - 1));
      json_object_set_new(row, "greedy_match", json_real(gs.match));
      json_object_set_new(row, "decode_tok_per_s", json_real(tps));
      json_object_set_new(row, "fp_decode_tok_per_s_same_run", json_real(tps_fp));
      json_object_set_new(row, "weight_bytes", json_integer(wb));
      json_object_set_new(row, "kv_cache_bytes", json_integer(qins_llm_cache_bytes(b.llm)));
      qins_report_row(&g->rep, "branches", row);
      if (bi < 0) {
        /* hidden-state cosine after every layer on prompt 0 + its FP continuation */
        int L = g->m->cfg.n_layers, nt = g->plen[0] + steps[0];
        double *cosl = malloc((size_t)L * sizeof(double)), *xl = malloc((size_t)L * sizeof(double));
        int32_t *seq = malloc((size_t)nt * 4);
        if (cosl && xl && seq) {
          memcpy(seq, g->prompts[0], (size_t)g->plen[0] * 4);
          memcpy(seq + g->plen[0], ref[0], (size_t)steps[0] * 4);
          if (!qins_eval_layer_cosine(fp.llm, b.llm, seq, nt, cosl)) {
            for (int l = 0; l < L; l++) {
              xl[l] = l;
              json_t *cr = json_object();
              json_object_set_new(cr, "layer", json_integer(l));
              json_object_set_new(cr, "mean_cosine_fp_vs_qins", json_real(cosl[l]));
              qins_report_row(&g->rep, "hidden-state cosine per layer (weights; pipeline path keeps f32 V caches)", cr);
            }
            qins_report_series(&g->rep, "hidden-state cosine FP vs QINS after each layer", "layer", "mean cosine", 0,
                               "QINS weights", xl, cosl, L);
          }
        }
        free(cosl), free(xl), free(seq);
        char note[160];
        snprintf(note, sizeof note, "ppl FP %.4f, QINS %.4f over %lld tokens", ppl_fp, ppl, (long long)scored);
        qins_report_check(&g->rep, "|delta perplexity| / FP perplexity", fabs(ppl / ppl_fp - 1), "<=", thr_ppl, note);
        qins_report_check(&g->rep, "greedy token match vs FP", gs.match, ">=", thr_match, "");
        snprintf(note, sizeof note, "decode tok/s: FP %.1f, QINS %.1f (speed gain wanted)", tps_fp, tps);
        qins_report_check(&g->rep, "decode speed QINS / FP", tps / tps_fp, ">=", thr_speed, note);
        snprintf(note, sizeof note, "weights %lld -> %lld bytes, KV cache %lld -> %lld bytes",
                 (long long)qins_llm_weight_bytes(fp.llm), (long long)wb, (long long)qins_llm_cache_bytes(fp.llm),
                 (long long)qins_llm_cache_bytes(b.llm));
        qins_report_check(&g->rep, "memory (weights + KV) QINS / FP",
                          (double)(wb + qins_llm_cache_bytes(b.llm)) /
                              (double)(qins_llm_weight_bytes(fp.llm) + qins_llm_cache_bytes(fp.llm)),
                          "<", 1.0, note);
      }
    }
    free_branch(&b);
  }
  if (!rc) {
    double klq, ovq, kln;
    char qn[600];
    snprintf(qn, sizeof qn, "QINS (%s)", g->pol_desc);
    rc = sampling_kl(g, &fp, &g->pol, qn, base, 0, ks_steps, T, top_p, 10, &klq, &ovq, &kln, "sampling KL");
    if (!rc) {
      char note[160];
      snprintf(note, sizeof note, "threshold = %g x FP noise floor %.3e (f32 vs f16 weights)", thr_noise, kln);
      qins_report_check(&g->rep, "sampling KL(FP || QINS) at T", klq, "<=", thr_noise * kln, note);
    }
  }
out:
  free_refs(ref, g->n_prompts);
  free(ids);
  free_branch(&fp);
  return rc;
}

/* B2-B4: transport (QINS.md section 4) on real activations, every layer and QINS-eligible path
 * (core/llm/transport.h: the runtime's tap captures each matmul's input rows during an FP
 * forward): exact transport (activations as qins-f32, and as qins8 codes with alpha per channel,
 * through the table) and linearised transport (per-channel operating points x0/y0 from the
 * calibration rows, W'' and c), against FP. */
static void lin_row(gctx *g, const char *what, const char *path, const qins_transport_lin *lin,
                    const qins_transport_stats *r) {
  json_t *row = json_object();
  json_object_set_new(row, "input", json_string(what));
  json_object_set_new(row, "path", json_string(path));
  json_object_set_new(row, "rel_err_exact_qinsf32", json_real(r->rel_exact_f32));
  json_object_set_new(row, "rel_err_exact", json_real(r->rel_exact));
  json_object_set_new(row, "rel_err_linearised", json_real(r->rel_lin));
  json_object_set_new(row, "linearised_vs_exact", json_real(r->rel_lin_vs_exact));
  json_object_set_new(row, "spread_std_over_mean", json_real(lin->spread));
  json_object_set_new(row, "x_cross_zero", json_real(r->cross_in));
  json_object_set_new(row, "y_cross_zero", json_real(r->cross_out));
  json_object_set_new(row, "jacobian_ratio_median", json_real(lin->jac_med));
  json_object_set_new(row, "jacobian_ratio_p90", json_real(lin->jac_p90));
  json_object_set_new(row, "jacobian_ratio_max", json_real(lin->jac_max));
  json_object_set_new(row, "fp_us", json_real(r->t_fp * 1e6));
  json_object_set_new(row, "exact_us", json_real(r->t_exact * 1e6));
  json_object_set_new(row, "linearised_us", json_real(r->t_lin * 1e6));
  qins_report_row(&g->rep, "per layer and path (FP reference = the same rows in float)", row);
}

static const char *transport_path_label(const qins_model_config *c, qins_path p) {
  static const char *const llama[] = {"v_proj", "o_proj", "up_proj", "gate_proj", "down_proj"};
  static const char *const phi3[] = {"qkv_proj V rows", "o_proj", "gate_up_proj up rows", "gate_up_proj gate rows",
                                     "down_proj"};
  static const char *const gpt2[] = {"c_attn V columns", "attn.c_proj", "mlp.c_fc", "-", "mlp.c_proj"};
  return c->arch == QINS_ARCH_GPT2 ? gpt2[p] : c->arch == QINS_ARCH_PHI3 ? phi3[p] : llama[p];
}

static int gate_transport(gctx *g) {
  const qins_model_config *c = &g->m->cfg;
  double thr_err = p_num(g, "thresholds.lin_rel_err", 0.01), thr_speed = p_num(g, "thresholds.layer_speedup", 1.2);
  double thr_cross = p_num(g, "thresholds.cross_zero", 0.01), thr_f32 = p_num(g, "thresholds.exact_f32_rel_err", 1e-5);
  int ntok = p_int(g, "tokens", 256), reps = p_int(g, "repeats", 5);
  qins_report_run_str(&g->rep, "matrices",
                      "every layer and path the policy covers: v_proj, o_proj, MLP up, gate, down (Phi-3: row "
                      "blocks of qkv_proj / gate_up_proj; GPT-2: c_attn V columns, attn.c_proj, mlp.c_fc, "
                      "mlp.c_proj; no gate)");
  qins_report_run_str(&g->rep, "activation alpha", "mse per input channel (calibration rows); output alpha per channel");
  /* synthetic sanity rows: QINS.md 4 quotes ~2.5e-5 at spread 0.01 and ~3e-3 at 0.1 */
  int K = 64, N = 64, T = 256;
  float *W = malloc((size_t)N * K * 4), *x = malloc((size_t)T * K * 4), *mu = malloc((size_t)K * 4);
  if (!W || !x || !mu) {
    free(W), free(x), free(mu);
    return QINS_ENOMEM;
  }
  uint64_t st = qins_rng_seed(11);
  double spreads[3] = {0.01, 0.1, 1.0};
  for (int i = 0; i < K; i++) mu[i] = (qins_rng_uniform(&st) < 0.5f ? -1.0f : 1.0f) * (0.5f + qins_rng_uniform(&st));
  /* W_oi mu_i > 0 everywhere: outputs' operating points far from 0, so only the inputs' spread
   * decides whether anything crosses 0 (tests/test_transport.c uses the same construction) */
  for (int o = 0; o < N; o++)
    for (int i = 0; i < K; i++) W[o * K + i] = (0.02f + 0.18f * qins_rng_uniform(&st)) * (mu[i] > 0 ? 1.0f : -1.0f);
  for (int s = 0; s < 3; s++) {
    for (int t = 0; t < T; t++)
      for (int i = 0; i < K; i++) {
        float u1 = qins_rng_uniform(&st) + 1e-7f, u2 = qins_rng_uniform(&st);
        float nrm = sqrtf(-2 * logf(u1)) * cosf(6.2831853f * u2);
        x[t * K + i] = mu[i] * (1 + (float)spreads[s] * nrm);
      }
    qins_transport_lin lin;
    qins_transport_stats r;
    if (qins_transport_calibrate(x, T / 2, W, NULL, N, K, &lin) == 0) {
      if (qins_transport_measure(&lin, x + (size_t)(T / 2) * K, T - T / 2, W, NULL, reps, &r) == 0) {
        char what[64];
        snprintf(what, sizeof what, "synthetic, channels vary by %g around their means", spreads[s]);
        lin_row(g, what, "synthetic 64x64", &lin, &r);
      }
      qins_transport_lin_free(&lin);
    }
  }
  free(W), free(x), free(mu);
  /* real activations: the FP trajectory of prompt 0 (prompt + greedy continuation) */
  branch fp;
  int rc = make_branch(g, "fp32", NULL, &fp);
  if (rc) return rc;
  int T2 = ntok < g->max_seq ? ntok : g->max_seq;
  int32_t *ids = malloc((size_t)T2 * 4);
  qins_transport_capture *cap = NULL;
  if (!ids) rc = QINS_ENOMEM;
  int pl = g->plen[0] < T2 ? g->plen[0] : T2;
  if (!rc) {
    memcpy(ids, g->prompts[0], (size_t)pl * 4);
    if (T2 > pl) rc = greedy(&fp, g->prompts[0], pl, T2 - pl, ids + pl, NULL);
  }
  const int32_t *pp[1] = {ids};
  if (!rc) rc = qins_transport_capture_run(fp.llm, pp, &T2, 1, &cap);
  char rows_desc[160];
  snprintf(rows_desc, sizeof rows_desc, "%d token rows of prompt 0's FP greedy trajectory: rows 0..%d calibrate, "
           "%d..%d evaluate", T2, T2 / 2 - 1, T2 / 2, T2 - 1);
  if (!rc) qins_report_run_str(&g->rep, "real activations", rows_desc);
  double worst_err = 0, sum_fp = 0, sum_lin = 0, worst_cross = 0, worst_f32 = 0;
  int n_real = 0;
  for (int l = 0; l < c->n_layers && !rc; l++) {
    for (int p = QINS_PATH_V; p < QINS_TRANSPORT_PATHS && !rc; p++) {
      int n;
      if (!qins_transport_capture_rows(cap, l, (qins_path)p, &n, NULL)) continue; /* GPT-2: no gate */
      const qins_path_policy *cover = &g->pol.p[l][p];
      if (cover->fallback || cover->format == QINS_DT_F32) continue; /* the gate policy keeps this path FP */
      qins_transport_lin lin;
      qins_transport_stats r;
      if ((rc = qins_transport_layer(fp.llm, cap, l, (qins_path)p, T2 / 2, reps, &lin, &r))) break;
      char what[96];
      snprintf(what, sizeof what, "layer %d %s (real activations)", l, qins_path_name((qins_path)p));
      lin_row(g, what, transport_path_label(c, (qins_path)p), &lin, &r);
      qins_transport_lin_free(&lin);
      char title[96], sname[64];
      double xs = l, ys[2] = {r.rel_exact, r.rel_lin};
      snprintf(title, sizeof title, "relative error vs FP per layer, %s", qins_path_name((qins_path)p));
      snprintf(sname, sizeof sname, "exact (qins8 activations)");
      qins_report_series(&g->rep, title, "layer", "relative L2 error", 1, sname, &xs, &ys[0], 1);
      qins_report_series(&g->rep, title, "layer", "relative L2 error", 1, "linearised", &xs, &ys[1], 1);
      if (r.rel_lin_vs_exact > worst_err || isnan(r.rel_lin_vs_exact)) worst_err = r.rel_lin_vs_exact;
      if (r.rel_exact_f32 > worst_f32 || isnan(r.rel_exact_f32)) worst_f32 = r.rel_exact_f32;
      sum_fp += r.t_fp, sum_lin += r.t_lin;
      if (r.cross_in > worst_cross) worst_cross = r.cross_in;
      n_real++;
    }
  }
  if (!rc) {
    char nrs[32];
    snprintf(nrs, sizeof nrs, "%d", n_real);
    qins_report_run_str(&g->rep, "layer-path pairs measured", nrs);
    if (!strcmp(g->name, "B2")) {
      qins_report_check(&g->rep, "worst relative error, exact transport with qins-f32 activations", worst_f32, "<=",
                        thr_f32, "exact transport is lossless up to float rounding (QINS.md 2: qins-f32 near-exact)");
      qins_report_check(&g->rep, "worst layer relative error, linearised vs exact", worst_err, "<=", thr_err,
                        "threshold chosen here (the plan names the measure, not a bound)");
    }
    if (!strcmp(g->name, "B3"))
      qins_report_check(&g->rep, "layer speed, FP time / linearised time (summed over layers and paths)",
                        sum_fp / sum_lin, ">", thr_speed,
                        "QINS.md 7: > 1.2x layer speed; same scalar host loops for FP, exact and linearised");
    if (!strcmp(g->name, "B4"))
      qins_report_check(&g->rep, "largest fraction of inputs on the other side of 0 from x0", worst_cross, "<=",
                        thr_cross, "the linearisation breaks where E jumps (QINS.md 4); threshold chosen here");
    qins_report_note(&g->rep, "Inputs are the real rows each matmul sees in the FP runtime (qins_llm_set_tap): the "
                              "normed hidden rows (v_proj, MLP up/gate), the attention output (o_proj) and the "
                              "activated MLP rows (down); biases (GPT-2, Phi-3 where present) are part of y = W x + b. "
                              "Exact transport = the activation as qins-f32 (z = E(x) in float) or as qins8 codes "
                              "(alpha per channel) through the table, then the f32 weight; linearised = D(W'' E(x) + c) "
                              "with W'' = E'(y0) W / E'(x0), c = E(y0) - W'' E(x0), x0 = per-channel mean of the "
                              "calibration rows, y0 = W x0 + b. Experimental: never enabled in the runtime. Synthetic "
                              "rows: channel means of magnitude 0.5..1.5 with the stated relative spread, |W| in "
                              "0.02..0.2 signed so every output is far from 0 (nothing but the inputs' spread can "
                              "cross 0); alphas mse per channel.");
  }
  qins_transport_capture_free(cap);
  free(ids);
  free_branch(&fp);
  return rc;
}

/* ---------------------------------------------------------------- driver */

static const char *gate_title(const char *n) {
  static const char *const t[][2] = {
      {"A1", "codec: every weight through every format and back"},
      {"A2", "greedy parity: N prompts x the longest greedy run"},
      {"A3", "sampling: KL(FP || QINS) and top-10 overlap at T=0.7, top-p 0.9"},
      {"A4", "bit-pack: qins6 pack/unpack throughput and end-to-end overhead vs qins8"},
      {"A5", "fused decode: fused vs unfused quantized matmul, time and equality"},
      {"B1", "KV-V qins8: greedy match and KL against context length"},
      {"B2", "transport: exact vs linearised, layer relative error"},
      {"B3", "transport: layer speed vs FP"},
      {"B4", "transport: Jacobian statistics of the linearisation"},
      {"B5", "KV fast path: qins8 V attention vs decode-then-attend"},
      {"C1", "full QINS: delta perplexity, greedy match, sampling KL, speed, memory"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (!strcmp(t[i][0], n)) return t[i][1];
  return "?";
}

int qins_gate_run(const char *name, const qins_gate_opts *o, char *verdict, size_t vn) {
  int known = 0;
  for (int i = 0; qins_gate_names[i]; i++) known |= !strcmp(name, qins_gate_names[i]);
  if (!known)
    return qins_error_set(QINS_EINPUT, "gate '%s': unknown (A1 A2 A3 A4 A5 B1 B2 B3 B4 B5 C1)", name);
  gctx g;
  memset(&g, 0, sizeof g);
  g.o = o;
  g.name = name;
  char path[1200];
  snprintf(path, sizeof path, "%s/%s.yaml", o->gate_dir ? o->gate_dir : "pipelines/gates", name);
  int rc = qins_cfg_load_file(path, &g.cfg);
  if (rc) return rc;
  for (int i = 0; i < o->n_sets && !rc; i++) rc = qins_cfg_set(g.cfg, o->sets[i]);
  if (rc) {
    qins_cfg_free(g.cfg);
    return rc;
  }
  static const char *const keys[] = {"gate", "title", "policy", "baselines", "prompts", "n_prompts", "steps",
                                     "sampling_steps", "temperature", "top_p", "top_k_overlap", "thresholds",
                                     "contexts", "formats", "alpha", "quick", "corpus", "ppl_tokens", "ppl_stride", "speed_repeats",
                                     "pack_elements", "pack_repeats", "e2e_repeats", "repeats", "rows", "description", "tokens",
                                     NULL};
  if ((rc = qins_cfg_check_keys(g.cfg, path, keys))) {
    qins_cfg_free(g.cfg);
    return rc;
  }
  qins_report_init(&g.rep, name, gate_title(name));
  {
    qins_cfg *th = qins_cfg_get(g.cfg, "thresholds"); /* about one check per threshold: progress */
    qins_gate_board_begin(name, th && th->type == QINS_CFG_MAP ? th->n : 1);
  }
  double t0 = now_s();
  const char *be_spec = o->backend ? o->backend : "cpu";
  rc = qins_model_open(o->model_path, &g.m);
  if (rc) goto fail_input;
  g.vocab = g.m->cfg.vocab_size;
  g.max_seq = g.m->cfg.max_seq_len;
  char tp[1200];
  if (o->tokenizer) {
    if ((rc = qins_tokenizer_open(o->tokenizer, &g.tok))) goto fail_input;
  } else if (find_tokenizer(o->model_path, tp, sizeof tp)) {
    if (strstr(tp, ".bin")) rc = qins_tokenizer_open_llama2c(tp, g.vocab, &g.tok);
    else rc = qins_tokenizer_open(tp, &g.tok);
    if (rc) g.tok = NULL, rc = 0;
  }
  qins_report_run_str(&g.rep, "model", o->model_path);
  qins_report_run_str(&g.rep, "model_arch", qins_arch_name(g.m->cfg.arch));
  qins_report_run_num(&g.rep, "model_params", (double)qins_model_param_count(g.m));
  qins_report_run_num(&g.rep, "max_seq_len", g.max_seq);
  qins_report_run_str(&g.rep, "gate_yaml", path);
  qins_report_run_str(&g.rep, "quick", o->quick ? "yes (CI parameters from the YAML's quick: block)" : "no");
  {
    struct utsname u;
    char mach[512];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!uname(&u)) snprintf(mach, sizeof mach, "%s %s %s, %ld cpus", u.nodename, u.sysname, u.machine, ncpu);
    else snprintf(mach, sizeof mach, "unknown");
    qins_report_run_str(&g.rep, "machine", mach);
    time_t now = time(NULL);
    char ts[64];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    qins_report_run_str(&g.rep, "date", ts);
  }
  if ((rc = qins_backend_create(be_spec, &g.be))) {
    char why[600];
    snprintf(why, sizeof why, "not run: backend %s unavailable: %s", be_spec, qins_error_msg());
    qins_report_set_verdict(&g.rep, "not-run", why);
    rc = 0;
    goto write;
  }
  qins_report_run_str(&g.rep, "backend", g.be->name);
  /* every backend has the fused quantized matmul (cpu: core/cpu/cpu_qmatmul.c, vk: the matmul
   * shaders' quantized variants), so the weights stay quantized; QINS_MATMUL_UNFUSED=1 switches a
   * backend to dequantize-then-f32 (qins_qmatmul_path_default) and the report says so */
  qins_report_run_str(&g.rep, "weights_path",
                      g.be->qmatmul_path == QINS_QMATMUL_UNFUSED
                          ? "quantized weights, unfused matmul (dequantize to f32, then the f32 matmul)"
                          : "quantized weights, fused quantized matmul");
  qins_report_run_str(&g.rep, "device", g.be->device_name);
  if ((rc = qins_policy_parse(qins_cfg_get(g.cfg, "policy"), g.m->cfg.n_layers, &g.pol))) goto fail_input;
  qins_policy_describe(&g.pol, g.pol_desc, sizeof g.pol_desc);
  qins_report_run_str(&g.rep, "policy", g.pol_desc);
  {
    qins_dtype base[4];
    int nb = p_formats(&g, "baselines", base, 4);
    json_t *bl = json_array();
    for (int i = 0; i < nb; i++) json_array_append_new(bl, json_string(fmt_name(base[i])));
    qins_report_run_json(&g.rep, "baselines", bl);
  }
  if (strcmp(name, "A1") && strcmp(name, "B5") && (rc = load_prompts(&g)))
    goto fail_input;
  if (!strcmp(name, "A1")) rc = gate_a1(&g);
  else if (!strcmp(name, "A2")) rc = gate_a2(&g);
  else if (!strcmp(name, "A3")) rc = gate_a3(&g);
  else if (!strcmp(name, "A4")) rc = gate_a4(&g);
  else if (!strcmp(name, "A5")) rc = gate_a5(&g);
  else if (!strcmp(name, "B1")) rc = gate_b1(&g);
  else if (!strcmp(name, "B5")) rc = gate_b5(&g);
  else if (!strcmp(name, "C1")) rc = gate_c1(&g);
  else rc = gate_transport(&g);
  if (rc) {
    /* a kernel or shape this model/backend cannot do: the gate did not run, it did not pass */
    char why[700];
    snprintf(why, sizeof why, "not run: %s", qins_error_msg());
    qins_report_set_verdict(&g.rep, "not-run", why);
    rc = 0;
  }
write:
  qins_report_run_num(&g.rep, "wall_s", now_s() - t0);
  rc = qins_report_write(&g.rep, o->out_dir ? o->out_dir : "reports");
  if (!rc) snprintf(verdict, vn, "%s", qins_report_finish(&g.rep));
  qins_gate_board_finish(name, rc ? "not-run" : verdict);
  goto done;
fail_input:;
  int keep = rc;
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", qins_error_msg());
  char why[1100];
  snprintf(why, sizeof why, "not run: %s", msg);
  qins_report_set_verdict(&g.rep, "not-run", why);
  qins_report_run_num(&g.rep, "wall_s", now_s() - t0);
  qins_report_write(&g.rep, o->out_dir ? o->out_dir : "reports");
  snprintf(verdict, vn, "not-run");
  qins_gate_board_finish(name, "not-run");
  qins_error_set(keep, "%s", msg);
  rc = keep;
done:
  for (int i = 0; i < g.n_prompts; i++) free(g.prompts[i]);
  if (g.tok) qins_tokenizer_close(g.tok);
  if (g.be) qins_backend_destroy(g.be);
  if (g.m) qins_model_close(g.m);
  qins_report_free(&g.rep);
  qins_cfg_free(g.cfg);
  return rc;
}
