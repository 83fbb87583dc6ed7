/* qins-bench-decode: prefill and decode tokens/s per backend, against the memory-bandwidth bound
 * (weight bytes per token / measured memcpy bandwidth), for stories260K and a synthetic ~110M Llama;
 * with --formats, per weight format (f32, f16, qins8, qins6, int8-row, ...) re-encoded through the
 * coverage policy (core/llm/policy.h): the QINS.md section 5 rule or every layer matrix. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/llm/llm.h"
#include "core/llm/policy.h"
#include "core/qins_codec.h"
#include "core/model/model.h"
#include "bench/bench_util.h"



/* ---------------------------------------------------------------- synthetic Llama */

typedef struct synth {
  qins_model m;
  float *blob;
} synth;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float rnd(void) { /* uniform in [-1, 1): weights only need plausible magnitudes */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (float)((rng_state * 0x2545F4914F6CDD1Dull) >> 40) / 8388608.0f - 1.0f;
}

static int synth_add(synth *s, size_t *off, const char *name, int64_t d0, int64_t d1, float scale, int fill_ones) {
  qins_weight *w = &s->m.weights[s->m.n_weights++];
  snprintf(w->name, sizeof w->name, "%s", name);
  w->dtype = QINS_DT_F32;
  w->ndim = d1 ? 2 : 1;
  w->shape[0] = d0;
  w->shape[1] = d1;
  size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
  float *p = s->blob + *off;
  for (size_t i = 0; i < n; i++) p[i] = fill_ones ? 1.0f : scale * rnd();
  w->data = p;
  w->nbytes = n * sizeof(float);
  w->file = "synthetic";
  *off += n;
  return 0;
}

/* Llama with dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000, tied head: ~110M parameters. */
static int synth_create(synth *s, int dim, int layers, int heads, int ffn, int vocab, int seq) {
  memset(s, 0, sizeof *s);
  qins_model_config *c = &s->m.cfg;
  c->arch = QINS_ARCH_LLAMA;
  c->dim = dim;
  c->n_layers = layers;
  c->n_heads = heads;
  c->n_kv_heads = heads;
  c->head_dim = dim / heads;
  c->ffn_dim = ffn;
  c->vocab_size = vocab;
  c->max_seq_len = seq;
  c->norm_eps = 1e-5f;
  c->tied_embeddings = 1;
  c->bos_id = 1;
  c->eos_id = 2;
  c->rope_theta = 10000.0f;
  c->rope_dim = c->head_dim;
  c->rope_mode = QINS_ROPE_HALF;
  c->rope_attn_factor = 1.0f;
  snprintf(s->m.path, sizeof s->m.path, "synthetic-llama-%dx%d", dim, layers);
  snprintf(s->m.format, sizeof s->m.format, "synthetic");
  size_t per_layer = 4 * (size_t)dim * dim + 3 * (size_t)dim * ffn + 2 * (size_t)dim;
  size_t total = (size_t)vocab * dim + (size_t)dim + per_layer * (size_t)layers;
  s->blob = malloc(total * sizeof(float));
  s->m.weights = calloc((size_t)(layers * 9 + 2), sizeof(qins_weight));
  if (!s->blob || !s->m.weights) return qins_error_set(QINS_ENOMEM, "synthetic model: %zu floats", total);
  size_t off = 0;
  float ws = 1.0f / sqrtf((float)dim), fs = 1.0f / sqrtf((float)ffn);
  char name[128];
  synth_add(s, &off, "model.embed_tokens.weight", vocab, dim, 1.0f, 0);
  synth_add(s, &off, "model.norm.weight", dim, 0, 0, 1);
  for (int i = 0; i < layers; i++) {
    static const char *mats[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"};
    for (int k = 0; k < 4; k++) {
      snprintf(name, sizeof name, "model.layers.%d.%s.weight", i, mats[k]);
      synth_add(s, &off, name, dim, dim, ws, 0);
    }
    snprintf(name, sizeof name, "model.layers.%d.mlp.gate_proj.weight", i);
    synth_add(s, &off, name, ffn, dim, ws, 0);
    snprintf(name, sizeof name, "model.layers.%d.mlp.up_proj.weight", i);
    synth_add(s, &off, name, ffn, dim, ws, 0);
    snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", i);
    synth_add(s, &off, name, dim, ffn, fs, 0);
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
    synth_add(s, &off, name, dim, 0, 0, 1);
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
    synth_add(s, &off, name, dim, 0, 0, 1);
  }
  return 0;
}

static void synth_free(synth *s) {
  free(s->blob);
  free(s->m.weights);
}

/* ---------------------------------------------------------------- measurement */

typedef enum coverage { COV_RULE = 0, COV_ALL = 1 } coverage;
static const char *coverage_name(coverage c) { return c == COV_ALL ? "all" : "rule"; }

/* One run's weights: a format and how much of the model it covers. f32 = the model as loaded. */
typedef struct wcfg {
  qins_dtype fmt;
  coverage cov;
} wcfg;

typedef struct result {
  char model[64], backend[64], device[256];
  wcfg w;
  int64_t f32_bytes; /* weight bytes per token of the same model in f32 (for the ceiling) */
  int64_t params, weight_bytes;
  int prefill_tokens, decode_tokens;
  double prefill_tps, decode_tps, bound_tps, fraction;
  double matmul_share, attention_share; /* of op time during decode (cpu measures wall per op) */
  double vs_f32;  /* decode tok/s / the f32 run's on the same backend and model */
  double ceiling; /* f32 weight bytes / these weight bytes: the bandwidth-bound ceiling of vs_f32 */
} result;

/* The host f32 data of weight `name` of a loaded model (NULL when absent or not f32). */
static const float *model_f32(const qins_model *m, const char *name) {
  for (int i = 0; i < m->n_weights; i++)
    if (!strcmp(m->weights[i].name, name)) return m->weights[i].dtype == QINS_DT_F32 ? m->weights[i].data : NULL;
  return NULL;
}

/* Re-encode the runtime's weights as `w` says. COV_RULE: the policy's eligible paths (v_proj,
 * o_proj, MLP: QINS.md section 5; Q, K, embeddings and the tied lm_head stay f32). COV_ALL: also
 * Q and K of every layer (encoded here with the codec and handed to the policy state); the tied
 * embedding/lm_head table stays f32 in both, since the runtime's embed op reads float rows.
 * Alpha: absmax (speed does not depend on alpha; mse would add seconds of calibration per run).
 * *bytes: the weight bytes per token after re-encoding. */
static int apply_weights(qins_llm *l, qins_backend *be, const qins_model *m, wcfg w, qins_policy_state **st,
                         int64_t *bytes) {
  *st = NULL;
  *bytes = qins_llm_weight_bytes(l);
  if (w.fmt == QINS_DT_F32) return 0;
  const qins_model_config *c = qins_llm_config(l);
  qins_alpha_spec alpha = {QINS_ALPHA_ABSMAX, 0};
  static qins_policy pol; /* large (per-layer table): not on the stack */
  qins_policy_init_uniform(&pol, c->n_layers, w.fmt, alpha, 0);
  int rc = qins_policy_apply(l, be, &pol, 0, st);
  if (rc) return rc;
  int64_t orig = 0, coded = qins_policy_state_bytes(*st, &orig);
  for (int layer = 0; w.cov == COV_ALL && layer < c->n_layers && !rc; layer++) {
    static const char *names[2] = {"q_proj", "k_proj"};
    for (int k = 0; k < 2 && !rc; k++) {
      qins_tensor *t = qins_llm_matrix(l, layer, k ? QINS_LLM_WK : QINS_LLM_WQ);
      char name[128];
      snprintf(name, sizeof name, "model.layers.%d.self_attn.%s.weight", layer, names[k]);
      const float *x = model_f32(m, name);
      if (!t || !x || t->dtype != QINS_DT_F32) {
        rc = qins_error_set(QINS_EINVAL, "bench: coverage all needs f32 %s in the model", name);
        break;
      }
      int64_t rows = t->shape[0], cols = t->shape[1];
      int64_t ns = qins_format_scale_count(w.fmt, rows, cols);
      float *sc = malloc((size_t)(ns > 0 ? ns : 1) * sizeof *sc);
      size_t cb = (size_t)rows * qins_format_row_bytes(w.fmt, cols);
      void *codes = malloc(cb ? cb : 1);
      if (!sc || !codes) rc = QINS_ENOMEM;
      if (!rc && qins_dtype_is_qins(w.fmt))
        for (int64_t r = 0; r < rows; r++) sc[r] = qins_codec_calibrate_row(x + r * cols, cols, w.fmt, alpha);
      if (!rc) rc = qins_codec_encode(w.fmt, x, rows, cols, qins_dtype_is_qins(w.fmt) ? sc : NULL, codes, sc);
      if (!rc) rc = qins_policy_state_set_matrix(*st, be, t, w.fmt, codes, ns > 0 ? sc : NULL);
      orig += rows * cols * 4;
      free(sc);
      free(codes);
    }
  }
  coded = qins_policy_state_bytes(*st, NULL);
  *bytes = qins_llm_weight_bytes(l) - orig + coded;
  return rc;
}

/* Decode blocks per run (--repeats): the best block's rate is reported (a shared machine's load
 * only ever slows a block down). */
static int g_repeats = 1;

/* One weight configuration's runtime, kept alive so the decode blocks of all configurations can
 * be interleaved (each sees the same mix of a shared machine's load). */
typedef struct run_state {
  const qins_model *m;
  const char *model_name, *backend;
  wcfg w;
  qins_backend *be;
  qins_llm *l;
  qins_policy_state *st;
  int32_t *ids, next;
  int prefill, decode, reps, blocks, ok;
  int64_t wbytes, f32_bytes;
  double tp, td;
} run_state;

static void run_free(run_state *rs) {
  free(rs->ids);
  qins_llm_destroy(rs->l);
  qins_policy_state_free(rs->st);
  qins_backend_destroy(rs->be);
  rs->ids = NULL, rs->l = NULL, rs->st = NULL, rs->be = NULL;
}

/* Create the runtime, re-encode its weights, warm up, time the prefill. */
static int run_setup(run_state *rs, const qins_model *m, const char *model_name, const char *backend, int prefill,
                     int decode, wcfg w) {
  memset(rs, 0, sizeof *rs);
  rs->m = m, rs->model_name = model_name, rs->backend = backend, rs->w = w;
  rs->prefill = prefill, rs->decode = decode;
  int rc = qins_backend_create(backend, &rs->be);
  if (rc) return rc;
  int reps = g_repeats;
  if (decode > 0 && prefill + decode * reps + 1 > m->cfg.max_seq_len) reps = (m->cfg.max_seq_len - 1 - prefill) / decode;
  rs->reps = reps < 1 ? 1 : reps;
  int seq = prefill + decode * rs->reps + 1;
  qins_llm_options opt = {seq, prefill};
  if ((rc = qins_llm_create(m, rs->be, &opt, &rs->l))) goto fail;
  rs->f32_bytes = qins_llm_weight_bytes(rs->l);
  if ((rc = apply_weights(rs->l, rs->be, m, w, &rs->st, &rs->wbytes))) goto fail;
  rs->ids = malloc((size_t)seq * sizeof(int32_t));
  if (!rs->ids) {
    rc = QINS_ENOMEM;
    goto fail;
  }
  for (int i = 0; i < seq; i++) rs->ids[i] = (int32_t)((uint32_t)(i * 2654435761u) % (uint32_t)m->cfg.vocab_size);
  /* warm-up: first touch of mapped weights, pipeline creation on vk */
  if ((rc = qins_llm_forward(rs->l, rs->ids, 2, 0, NULL, &rs->next))) goto fail;
  qins_llm_reset(rs->l);
  double t0 = bench_now_s();
  if ((rc = qins_llm_forward(rs->l, rs->ids, prefill, 0, NULL, &rs->next))) goto fail;
  rs->tp = bench_now_s() - t0;
  memset(rs->be->stats, 0, sizeof rs->be->stats);
  rs->ok = 1;
  return 0;
fail:
  run_free(rs);
  return rc;
}

/* One timed block of `decode` single-token forwards (the cache grows); keeps the fastest. */
static int run_block(run_state *rs) {
  if (!rs->ok || rs->blocks >= rs->reps) return 0;
  double t0 = bench_now_s();
  for (int i = 0; i < rs->decode; i++) {
    int32_t cur = rs->next;
    int rc = qins_llm_forward(rs->l, &cur, 1, 0, NULL, &rs->next);
    if (rc) return rc;
  }
  double t = bench_now_s() - t0;
  if (rs->blocks++ == 0 || t < rs->td) rs->td = t;
  return 0;
}

/* The result of a finished run, then its runtime freed. */
static void run_finish(run_state *rs, double bw, result *r) {
  qins_backend *be = rs->be;
  const qins_model *m = rs->m;
  memset(r, 0, sizeof *r);
  uint64_t total_ns = 0;
  for (int k = 0; k < QINS_OP_COUNT; k++) total_ns += be->stats[k].ns;
  if (getenv("QINS_BENCH_OPS"))
    for (int k = 0; k < QINS_OP_COUNT; k++)
      if (be->stats[k].calls)
        fprintf(stderr, "  %s %s: %llu calls, %.3f ms\n", rs->backend, qins_op_name((qins_op_kind)k),
                (unsigned long long)be->stats[k].calls, be->stats[k].ns / 1e6);
  if (total_ns) {
    r->matmul_share = (double)be->stats[QINS_OP_MATMUL].ns / (double)total_ns;
    r->attention_share = (double)be->stats[QINS_OP_ATTENTION].ns / (double)total_ns;
  }
  snprintf(r->model, sizeof r->model, "%s", rs->model_name);
  snprintf(r->backend, sizeof r->backend, "%s", rs->backend);
  snprintf(r->device, sizeof r->device, "%s", be->device_name);
  for (int i = 0; i < m->n_weights; i++) {
    int64_t n = 1;
    for (int d = 0; d < m->weights[i].ndim; d++) n *= m->weights[i].shape[d];
    r->params += n;
  }
  r->weight_bytes = rs->wbytes;
  r->f32_bytes = rs->f32_bytes;
  r->w = rs->w;
  r->prefill_tokens = rs->prefill;
  r->decode_tokens = rs->decode;
  r->prefill_tps = rs->prefill / rs->tp;
  r->decode_tps = rs->td > 0 ? rs->decode / rs->td : 0;
  r->bound_tps = bw / (double)r->weight_bytes;
  r->fraction = r->decode_tps / r->bound_tps;
  run_free(rs);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins-bench-decode [--quick] [--json FILE] [--backend B[,B...]] [--model stories260K|synthetic]\n"
          "                         [--prefill N] [--decode N] [--repeats R] [--formats F[,F...]]\n"
          "                         [--coverage rule|all|both]\n"
          "  Prefill and decode tokens/s for stories260K and a synthetic 110M Llama (f32 weights), and the\n"
          "  fraction of the bandwidth bound (memcpy bandwidth / weight bytes per token) decode reaches.\n"
          "  Default backends: every one available (qins backends).\n"
          "  --repeats  decode R blocks of N tokens (the cache grows) and report the fastest block; the\n"
          "             blocks of all weight configurations run round-robin (all runtimes stay loaded)\n"
          "  --formats  weight formats to compare, e.g. f32,f16,qins8,qins6,int8-row (also bf16, qins-f32,\n"
          "             int8-block32); f32 is always run first as the baseline. Each format re-encodes the\n"
          "             weights through the coverage policy (core/llm/policy.h, alpha absmax).\n"
          "  --coverage rule: QINS.md section 5 (v_proj, o_proj, MLP in the format; Q, K, embeddings and\n"
          "             lm_head f32; the default); all: Q and K too (the tied embedding/lm_head stays f32:\n"
          "             the runtime's embed reads float rows); both: one run of each.\n"
          "  Columns: 'vs f32' = decode tok/s over the f32 run's on the same backend; 'bytes ceiling' =\n"
          "  f32 weight bytes / this run's weight bytes, the most a bandwidth-bound decode can gain.\n");
}

int main(int argc, char **argv) {
  int quick = 0, prefill = 0, decode = 0;
  const char *json_path = NULL, *backend_list = NULL, *only = NULL, *formats = NULL, *cov_arg = "rule";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!strcmp(argv[i], "--backend") && i + 1 < argc) backend_list = argv[++i];
    else if (!strcmp(argv[i], "--model") && i + 1 < argc) only = argv[++i];
    else if (!strcmp(argv[i], "--prefill") && i + 1 < argc) prefill = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--decode") && i + 1 < argc) decode = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--formats") && i + 1 < argc) formats = argv[++i];
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) g_repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--coverage") && i + 1 < argc) cov_arg = argv[++i];
    else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (g_repeats < 1 || g_repeats > 100) {
    fprintf(stderr, "qins-bench-decode: --repeats must be in 1..100\n");
    return 2;
  }
  if (prefill < 0 || decode < 0 || prefill > 4096 || decode > 4096) {
    fprintf(stderr, "qins-bench-decode: --prefill/--decode must be in 0..4096\n");
    return 2;
  }
  /* the weight configurations: f32 first (the baseline), then each format x coverage */
  wcfg cfgs[32];
  int ncfg = 0;
  cfgs[ncfg++] = (wcfg){QINS_DT_F32, COV_RULE};
  int cov_lo = !strcmp(cov_arg, "all") ? COV_ALL : COV_RULE, cov_hi = !strcmp(cov_arg, "rule") ? COV_RULE : COV_ALL;
  if (strcmp(cov_arg, "rule") && strcmp(cov_arg, "all") && strcmp(cov_arg, "both")) {
    fprintf(stderr, "qins-bench-decode: --coverage is rule, all or both\n");
    return 2;
  }
  if (formats) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", formats);
    for (char *tok = strtok(tmp, ","); tok; tok = strtok(NULL, ",")) {
      qins_dtype dt;
      if (qins_dtype_parse(tok, &dt) || (dt != QINS_DT_F16 && dt != QINS_DT_BF16 && dt != QINS_DT_F32 &&
                                         !qins_dtype_is_quantized(dt))) {
        fprintf(stderr, "qins-bench-decode: --formats: '%s' is not a weight format (f32, f16, bf16, qins-f32, qins8, "
                        "qins6, int8-row, int8-block32)\n", tok);
        return 2;
      }
      if (dt == QINS_DT_F32) continue;
      for (int cv = cov_lo; cv <= cov_hi && ncfg < 32; cv++) cfgs[ncfg++] = (wcfg){dt, (coverage)cv};
    }
  }
  if (!prefill) prefill = quick ? 16 : 64;
  if (!decode) decode = quick ? 4 : 16;

  char names[16][64];
  int nb = 0;
  if (backend_list) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", backend_list);
    for (char *tok = strtok(tmp, ","); tok && nb < 16; tok = strtok(NULL, ",")) snprintf(names[nb++], 64, "%s", tok);
  } else {
    nb = qins_backend_list(names, 16);
  }

  double bw = 1e9 * bench_memcpy_gbps(quick ? (64u << 20) : (256u << 20), quick ? 4 : 8);
  printf("memcpy bandwidth: %.2f GB/s (bytes read + written per second, best of several passes)\n", bw / 1e9);

  if (only && strcmp(only, "stories260K") && strcmp(only, "synthetic")) {
    fprintf(stderr, "qins-bench-decode: --model is stories260K or synthetic\n");
    return 2;
  }
  qins_model *stories = NULL;
  char spath[1200];
  snprintf(spath, sizeof spath, "%s/models/stories260K/stories260K.bin", QINS_SHARED_DIR);
  if ((!only || !strcmp(only, "stories260K")) && qins_model_open(spath, &stories))
    fprintf(stderr, "skipping stories260K: %s\n", qins_error_msg());
  synth big;
  memset(&big, 0, sizeof big);
  if ((!only || !strcmp(only, "synthetic")) && synth_create(&big, 768, 12, 12, 2048, 32000, 4096)) {
    fprintf(stderr, "qins-bench-decode: %s\n", qins_error_msg());
    return 1;
  }

  result res[256];
  int nr = 0, failed = 0;
  printf("\n| model | backend | device | weights (coverage) | params | weight MB/token | prefill tok/s (N) | "
         "decode tok/s (N) | bound tok/s | decode / bound | decode vs f32 | bytes ceiling | decode op time: matmul / "
         "attention |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int mi = 0; mi < 2; mi++) {
    const qins_model *m = mi == 0 ? stories : big.blob ? &big.m : NULL;
    const char *mname = mi == 0 ? "stories260K" : "synthetic-llama-110M";
    if (!m) continue;
    int p = prefill, d = decode;
    if (mi == 0) { /* the tiny model runs fast: more tokens for a steadier number */
      p = prefill * 4;
      d = decode * 16;
      if (p + d + 1 > m->cfg.max_seq_len) {
        p = m->cfg.max_seq_len / 2;
        d = m->cfg.max_seq_len / 2 - 1;
      }
    }
    for (int b = 0; b < nb; b++) {
      /* every configuration set up first, then the decode blocks round-robin */
      run_state rs[32];
      for (int ci = 0; ci < ncfg; ci++)
        if (run_setup(&rs[ci], m, mname, names[b], p, d, cfgs[ci])) {
          fprintf(stderr, "%s on %s, %s: %s\n", mname, names[b], qins_dtype_name(cfgs[ci].fmt), qins_error_msg());
          failed++;
        }
      for (int rep = 0; rep < g_repeats; rep++)
        for (int ci = 0; ci < ncfg; ci++)
          if (rs[ci].ok && run_block(&rs[ci])) {
            fprintf(stderr, "%s on %s, %s: %s\n", mname, names[b], qins_dtype_name(cfgs[ci].fmt), qins_error_msg());
            failed++;
            run_free(&rs[ci]);
            rs[ci].ok = 0;
          }
      double f32_tps = 0;
      for (int ci = 0; ci < ncfg; ci++) {
        if (!rs[ci].ok || nr >= 256) {
          run_free(&rs[ci]);
          continue;
        }
        result *r = &res[nr++];
        run_finish(&rs[ci], bw, r);
        if (cfgs[ci].fmt == QINS_DT_F32) f32_tps = r->decode_tps;
        r->vs_f32 = f32_tps > 0 ? r->decode_tps / f32_tps : 0;
        r->ceiling = r->weight_bytes > 0 ? (double)r->f32_bytes / (double)r->weight_bytes : 0;
        char wname[64];
        snprintf(wname, sizeof wname, "%s%s%s%s", qins_dtype_name(r->w.fmt), r->w.fmt == QINS_DT_F32 ? "" : " (",
                 r->w.fmt == QINS_DT_F32 ? "" : coverage_name(r->w.cov), r->w.fmt == QINS_DT_F32 ? "" : ")");
        printf("| %s | %s | %s | %s | %.1fM | %.1f | %.1f (%d) | %.2f (%d) | %.2f | %.1f%% | %.2fx | %.2fx | ", r->model,
               r->backend, r->device, wname, r->params / 1e6, r->weight_bytes / 1e6, r->prefill_tps,
               r->prefill_tokens, r->decode_tps, r->decode_tokens, r->bound_tps, 100.0 * r->fraction, r->vs_f32,
               r->ceiling);
        if (r->matmul_share > 0)
          printf("%.0f%% / %.0f%% |\n", 100.0 * r->matmul_share, 100.0 * r->attention_share);
        else
          printf("n/a |\n");
        fflush(stdout);
      }
    }
  }
  if (json_path) {
    json_t *root = json_object(), *arr = json_array();
    json_object_set_new(root, "memcpy_bytes_per_s", json_real(bw));
    json_object_set_new(root, "quick", json_boolean(quick));
    json_object_set_new(root, "decode_repeats", json_integer(g_repeats));
    for (int i = 0; i < nr; i++) {
      result *r = &res[i];
      json_t *o = json_object();
      json_object_set_new(o, "model", json_string(r->model));
      json_object_set_new(o, "backend", json_string(r->backend));
      json_object_set_new(o, "device", json_string(r->device));
      json_object_set_new(o, "weights", json_string(qins_dtype_name(r->w.fmt)));
      json_object_set_new(o, "coverage", json_string(r->w.fmt == QINS_DT_F32 ? "none" : coverage_name(r->w.cov)));
      json_object_set_new(o, "f32_weight_bytes_per_token", json_integer(r->f32_bytes));
      json_object_set_new(o, "decode_vs_f32", json_real(r->vs_f32));
      json_object_set_new(o, "bytes_ceiling_vs_f32", json_real(r->ceiling));
      json_object_set_new(o, "params", json_integer(r->params));
      json_object_set_new(o, "weight_bytes_per_token", json_integer(r->weight_bytes));
      json_object_set_new(o, "prefill_tokens", json_integer(r->prefill_tokens));
      json_object_set_new(o, "decode_tokens", json_integer(r->decode_tokens));
      json_object_set_new(o, "prefill_tokens_per_s", json_real(r->prefill_tps));
      json_object_set_new(o, "decode_tokens_per_s", json_real(r->decode_tps));
      json_object_set_new(o, "bound_tokens_per_s", json_real(r->bound_tps));
      json_object_set_new(o, "fraction_of_bound", json_real(r->fraction));
      json_object_set_new(o, "decode_matmul_time_share", json_real(r->matmul_share));
      json_object_set_new(o, "decode_attention_time_share", json_real(r->attention_share));
      json_array_append_new(arr, o);
    }
    json_object_set_new(root, "results", arr);
    if (json_dump_file(root, json_path, JSON_INDENT(2))) {
      fprintf(stderr, "qins-bench-decode: cannot write %s\n", json_path);
      failed++;
    }
    json_decref(root);
  }
  synth_free(&big);
  qins_model_close(stories);
  return failed ? 1 : 0;
}
