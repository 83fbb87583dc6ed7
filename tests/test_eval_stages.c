/* Evaluation stages: their numbers equal core/eval's on the same inputs (in process on random
 * logits/ids/hidden rows, and through `qins run` on stories260K against runtimes built here),
 * the worker's join pairs branches by step with holes after an END and forgets replayed
 * attempts, a killed worker still gives every record once and unchanged, and bad pipelines
 * (policy, branch mismatch, corpus) exit 2 naming file:line:col. */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/error.h"
#include "core/eval/eval.h"
#include "core/llm/policy.h"
#include "core/llm/sampler.h"
#include "core/pipeline.h"
#include "core/tokenizer/tokenizer.h"
#include "stages/stage.h"
#include "tests/test_util.h"
#include "workers/join.h"
#include "workers/run.h"

static char tmpdir[256];
static char model_path[600], tok_path[600];
static int have_model;

static int group_setup(void **state) {
  (void)state;
  /* the runs below spawn `qins worker`s: without the binary they would exec this test instead */
  if (!getenv("QINS_BIN")) {
    fprintf(stderr, "QINS_BIN (path of the qins binary) is not set\n");
    return -1;
  }
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins-test-evalst-XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(model_path, sizeof model_path, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok_path, sizeof tok_path, "%s", test_shared_path("models/stories260K/tok512.bin"));
  have_model = access(model_path, R_OK) == 0 && access(tok_path, R_OK) == 0;
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- in process: a stage called the way the worker calls it ---- */

static void *out_buf;
static void *test_alloc(qins_msg *m, size_t n) {
  (void)m;
  free(out_buf);
  out_buf = malloc(n + 1);
  return out_buf;
}

typedef struct harness {
  qins_stage st;
  qins_cfg *opts;
} harness;

static void h_init(harness *h, const char *type, const char *opts_yaml) {
  memset(h, 0, sizeof *h);
  h->st.type = qins_stage_type_find(type);
  assert_non_null(h->st.type);
  if (opts_yaml) assert_int_equal(qins_cfg_load_string(opts_yaml, strlen(opts_yaml), "opts.yaml", &h->opts), 0);
  assert_int_equal(qins_stage_check_options(h->st.type, h->opts, "options"), 0);
  h->st.ctx.stage_name = type;
  h->st.ctx.worker_name = "test";
  h->st.ctx.options = h->opts;
  assert_int_equal(h->st.type->init(&h->st, &h->st.ctx), 0);
}

static void h_fini(harness *h) {
  if (h->st.type->fini) h->st.type->fini(&h->st);
  qins_cfg_free(h->opts);
}

/* forward_join on one set; returns the record (parsed) or NULL when nothing was written. */
static json_t *h_join(harness *h, const qins_msg *a, const qins_msg *b) {
  const qins_msg *in[2] = {a, b};
  qins_msg out;
  memset(&out, 0, sizeof out);
  out.alloc = test_alloc;
  int rc = h->st.type->forward_join(&h->st, in, 2, &out);
  if (rc < 0) fail_msg("%s", qins_error_msg());
  if (rc == 0) return NULL;
  json_error_t je;
  json_t *j = json_loadb(out.data, out.nbytes, 0, &je);
  if (!j) fail_msg("record is not JSON: %.*s", (int)out.nbytes, (const char *)out.data);
  return j;
}

static qins_msg msg_f32(float *data, int64_t d0, int64_t d1, int pos, int step, uint32_t flags) {
  qins_msg m;
  memset(&m, 0, sizeof m);
  m.dtype = QINS_DT_F32;
  m.ndim = 2;
  m.shape[0] = d0;
  m.shape[1] = d1;
  m.data = data;
  m.nbytes = (size_t)(d0 * d1) * sizeof(float);
  m.pos = pos;
  m.step = step;
  m.flags = flags;
  return m;
}

static double num(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_number(v)) fail_msg("record lacks number '%s'", k);
  return json_number_value(v);
}

/* logit_compare and context_curve on random logits equal qins_eval_* row by row. */
static void test_logit_stages_equal_library(void **state) {
  (void)state;
  int T = 7 + (int)(test_rand_u64() % 9), V = 50 + (int)(test_rand_u64() % 100), k = 5;
  float *a = malloc(sizeof(float) * (size_t)(T * V)), *b = malloc(sizeof(float) * (size_t)(T * V));
  test_fill_normal(a, (int64_t)T * V, 2.0f);
  for (int i = 0; i < T * V; i++) b[i] = a[i] + 0.3f * test_rand_normal();
  double kl = 0, klr = 0, ov = 0, t1 = 0, temp = 0.7;
  for (int t = 0; t < T; t++) {
    kl += qins_eval_kl_logits(a + t * V, b + t * V, V, temp);
    klr += qins_eval_kl_logits(b + t * V, a + t * V, V, temp);
    ov += qins_eval_topk_overlap(a + t * V, b + t * V, V, k);
    t1 += qins_eval_topk_overlap(a + t * V, b + t * V, V, 1);
  }
  harness h;
  h_init(&h, "logit_compare", "{top_k: 5, temperature: 0.7}");
  qins_msg ma = msg_f32(a, T, V, 0, 0, 0), mb = msg_f32(b, T, V, 0, 0, 0);
  json_t *r = h_join(&h, &ma, &mb);
  assert_non_null(r);
  assert_true(num(r, "kl") == kl / T);
  assert_true(num(r, "kl_reverse") == klr / T);
  assert_true(num(r, "topk_overlap") == ov / T);
  assert_true(num(r, "top1_agree") == t1 / T);
  assert_int_equal((int)num(r, "rows"), T);
  json_decref(r);
  /* the same branch twice: KL exactly 0, overlap 1 */
  qins_msg mc = msg_f32(a, T, V, 0, 0, 0);
  ma.req = mc.req = 1;
  r = h_join(&h, &ma, &mc);
  assert_true(num(r, "kl") == 0 && num(r, "kl_reverse") == 0 && num(r, "topk_overlap") == 1 && num(r, "top1_agree") == 1);
  json_decref(r);
  h_fini(&h);

  /* context_curve: rows at positions 3..3+T-1 in bins of 4 */
  h_init(&h, "context_curve", "{bin: 4, temperature: 0.7}");
  ma = msg_f32(a, T, V, 3, 0, 0);
  mb = msg_f32(b, T, V, 3, 0, 0);
  r = h_join(&h, &ma, &mb);
  assert_non_null(r);
  json_t *pos = json_object_get(r, "positions"), *jk = json_object_get(r, "kl"), *jc = json_object_get(r, "count");
  int nb = (int)json_array_size(pos), total = 0;
  assert_int_equal(nb, (3 + T - 1) / 4 + 1);
  for (int i = 0; i < nb; i++) {
    int p0 = (int)json_integer_value(json_array_get(pos, (size_t)i));
    double s = 0;
    int c = 0;
    for (int t = 0; t < T; t++)
      if ((3 + t) / 4 * 4 == p0) s += qins_eval_kl_logits(a + t * V, b + t * V, V, 0.7), c++;
    assert_int_equal((int)json_integer_value(json_array_get(jc, (size_t)i)), c);
    assert_true(json_number_value(json_array_get(jk, (size_t)i)) == s / c);
    total += c;
  }
  assert_int_equal(total, T);
  json_decref(r);
  h_fini(&h);
  free(a);
  free(b);
}

/* compare: match rate and first divergence as qins_eval_match, unequal lengths padded; the
 * record comes only when both branches ended. */
static void test_compare_equals_library(void **state) {
  (void)state;
  harness h;
  h_init(&h, "compare", NULL);
  int na = 12, nb = 9;
  int32_t ida[12], idb[12];
  for (int i = 0; i < na; i++) ida[i] = idb[i] = (int32_t)(test_rand_u64() % 500);
  int div = 3 + (int)(test_rand_u64() % 5);
  idb[div] = ida[div] + 1;
  json_t *r = NULL;
  for (int s = 0; s < na; s++) {
    qins_msg a, b;
    memset(&a, 0, sizeof a);
    a.dtype = QINS_DT_I32;
    a.ndim = 1;
    a.shape[0] = 1;
    a.nbytes = 4;
    a.step = s + 1;
    b = a;
    a.data = &ida[s];
    b.data = &idb[s];
    if (s == na - 1) a.flags = QINS_MSG_END;
    if (s == nb - 1) b.flags = QINS_MSG_END;
    assert_null(r);
    r = h_join(&h, &a, s < nb ? &b : NULL); /* after b's END the join gives a hole */
  }
  assert_non_null(r);
  int32_t pa[12], pb[12];
  for (int i = 0; i < na; i++) pa[i] = ida[i], pb[i] = i < nb ? idb[i] : -2;
  int fd;
  double m = qins_eval_match(pa, pb, na, &fd);
  assert_true(num(r, "match") == m);
  assert_int_equal((int)num(r, "first_divergence"), fd);
  assert_int_equal(fd, div);
  assert_int_equal((int)json_array_size(json_object_get(r, "ids_b")), nb);
  json_decref(r);
  h_fini(&h);
}

/* hidden_cosine: per layer the row-mean of qins_eval_cosine. */
static void test_hidden_cosine_equals_library(void **state) {
  (void)state;
  int L = 3, T = 5, D = 16;
  size_t n = (size_t)(L * T * D);
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
  test_fill_normal(a, (int64_t)n, 1.0f);
  for (size_t i = 0; i < n; i++) b[i] = a[i] + 0.2f * test_rand_normal();
  qins_msg ma = msg_f32(a, L, T, 0, 0, 0), mb = msg_f32(b, L, T, 0, 0, 0);
  ma.ndim = mb.ndim = 3;
  ma.shape[2] = mb.shape[2] = D;
  ma.nbytes = mb.nbytes = n * sizeof(float);
  harness h;
  h_init(&h, "hidden_cosine", NULL);
  json_t *r = h_join(&h, &ma, &mb);
  json_t *c = json_object_get(r, "cosine");
  assert_int_equal((int)json_array_size(c), L);
  for (int l = 0; l < L; l++) {
    double s = 0;
    for (int t = 0; t < T; t++) s += qins_eval_cosine(a + (l * T + t) * D, b + (l * T + t) * D, D);
    assert_true(json_number_value(json_array_get(c, (size_t)l)) == s / T);
  }
  json_decref(r);
  h_fini(&h);
  free(a);
  free(b);
}

/* ---- the join itself ---- */

typedef struct got {
  int n;
  int step[64];
  int have[64][2];
  uint32_t attempt[64];
} got;

static int collect(void *u, const qins_msg *const *in, int n) {
  got *g = u;
  assert_int_equal(n, 2);
  const qins_msg *f = in[0] ? in[0] : in[1];
  g->step[g->n] = f->step;
  g->attempt[g->n] = f->attempt;
  g->have[g->n][0] = in[0] != NULL;
  g->have[g->n][1] = in[1] != NULL;
  if (in[0] && in[1]) assert_memory_equal(in[0]->data, in[1]->data, in[0]->nbytes); /* payloads copied intact */
  g->n++;
  return 0;
}

static void put(qins_join *j, int k, uint64_t req, uint32_t attempt, int step, uint32_t flags, got *g) {
  int32_t v = (int32_t)(req * 1000 + (uint64_t)step);
  qins_msg m;
  memset(&m, 0, sizeof m);
  m.req = req;
  m.attempt = attempt;
  m.step = step;
  m.flags = flags;
  m.dtype = QINS_DT_I32;
  m.ndim = 1;
  m.shape[0] = 1;
  m.data = &v;
  m.nbytes = 4;
  assert_int_equal(qins_join_put(j, k, &m, collect, g), 0);
  v = -1; /* the join must have copied it */
}

static void test_join_pairs_and_forgets(void **state) {
  (void)state;
  qins_join *j;
  assert_int_equal(qins_join_create(2, &j), 0);
  got g = {0};
  /* branch 1 runs ahead: nothing until branch 0 catches up; sets come in step order */
  put(j, 1, 5, 0, 0, 0, &g);
  put(j, 1, 5, 0, 1, 0, &g);
  put(j, 1, 5, 0, 2, 0, &g);
  assert_int_equal(g.n, 0);
  put(j, 0, 5, 0, 0, 0, &g);
  put(j, 0, 5, 0, 1, QINS_MSG_END, &g); /* branch 0 ends at step 1: step 2 of branch 1 goes alone */
  assert_int_equal(g.n, 3);
  for (int i = 0; i < 3; i++) assert_int_equal(g.step[i], i);
  assert_true(g.have[0][0] && g.have[0][1] && g.have[1][0] && g.have[1][1]);
  assert_true(!g.have[2][0] && g.have[2][1]);
  put(j, 1, 5, 0, 3, QINS_MSG_END, &g);
  assert_int_equal(g.n, 4);
  assert_true(!g.have[3][0] && g.have[3][1]);
  assert_int_equal((int)qins_join_held(j, NULL), 0);
  /* a replay: attempt 0 half-held, forgotten; attempt 1 pairs on its own */
  put(j, 0, 7, 0, 0, 0, &g);
  assert_int_equal((int)qins_join_held(j, NULL), 1);
  qins_join_forget(j, 7, 1);
  assert_int_equal((int)qins_join_held(j, NULL), 0);
  put(j, 1, 7, 1, 0, 0, &g);
  put(j, 0, 7, 1, 0, 0, &g);
  assert_int_equal(g.n, 5);
  assert_int_equal(g.attempt[4], 1);
  /* a duplicate of a held message is dropped */
  put(j, 0, 8, 0, 0, 0, &g);
  put(j, 0, 8, 0, 0, 0, &g);
  assert_int_equal((int)qins_join_held(j, NULL), 1);
  qins_join_destroy(j);
}

/* ---- through qins run on stories260K ---- */

static char *capture(const char *cmd, int *status) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  size_t k;
  while (len < cap - 1 && (k = fread(buf + len, 1, cap - 1 - len, p)) > 0) len += k;
  buf[len] = 0;
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return buf;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return strdup("");
  char *buf = calloc(1, 1 << 20);
  size_t k = fread(buf, 1, (1 << 20) - 1, f);
  buf[k] = 0;
  fclose(f);
  return buf;
}

/* Write YAML (with @M and @T replaced by the model and tokenizer paths) to tmpdir/NAME, run it;
 * returns stdout, *status the exit status, *err stderr (malloc'd, may be NULL). */
static char *run_yaml(const char *name, const char *yaml, int *status, char **err) {
  char path[600], errp[600], cmd[2048];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  snprintf(errp, sizeof errp, "%s/%s.err", tmpdir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (const char *p = yaml; *p; p++) {
    if (p[0] == '@' && p[1] == 'M') fputs(model_path, f), p++;
    else if (p[0] == '@' && p[1] == 'T') fputs(tok_path, f), p++;
    else fputc(*p, f);
  }
  fclose(f);
  /* the test's own timeout: a pipeline that hangs fails here (exit 124) instead of waiting forever */
  snprintf(cmd, sizeof cmd, "timeout -k 5 240 '%s' run '%s' --quiet 2>'%s'", getenv("QINS_BIN"), path, errp);
  char *out = capture(cmd, status);
  char *e = read_file(errp);
  if (*status != 0 && !err) fprintf(stderr, "%s: exit %d: %s\n", name, *status, e);
  if (err)
    *err = e;
  else
    free(e);
  return out;
}

/* One line per record -> the record of id `i` (id is the input index). */
static json_t *record_of(const char *out, int id) {
  const char *p = out;
  while (*p) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    json_t *o = json_loadb(p, n, 0, NULL);
    if (o && json_integer_value(json_object_get(o, "id")) == id) return o;
    json_decref(o);
    p += n + (e ? 1 : 0);
  }
  return NULL;
}

static const char *PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play.";

/* Teacher-forced logits of two branches: one embed, blocks with its own policy, head rows: all. */
static const char *LOGITS_YAML =
    "name: t-logits\nmodel: @M\ntokenizer: @T\nbackend: cpu\n"
    "workers:\n  - {name: a, stages: [tokenize, embed, blocks_a, head_a]}\n  - {name: b, stages: [blocks_b, head_b]}\n"
    "  - {name: e, stages: [cmp]}\n"
    "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n"
    "  - {name: blocks_a, type: qins_block, options: {policy: none}}\n  - {name: head_a, type: head, options: {rows: all}}\n"
    "  - {name: blocks_b, type: qins_block, options: {policy: %s}}\n  - {name: head_b, type: head, options: {rows: all}}\n"
    "  - {name: cmp, type: %s}\n"
    "edges:\n  - {from: tokenize, to: embed}\n  - {from: embed, to: blocks_a}\n  - {from: embed, to: blocks_b}\n"
    "  - {from: blocks_a, to: head_a}\n  - {from: blocks_b, to: head_b}\n  - {from: head_a, to: cmp}\n"
    "  - {from: head_b, to: cmp}\n"
    "inputs: {prompts: [\"%s\"]}\nheartbeat_ms: 2000\n";

/* A runtime of stories260K with an optional policy (YAML map text). */
typedef struct rt {
  qins_model *model;
  qins_backend *be;
  qins_llm *llm;
  qins_policy_state *ps;
} rt;

static void rt_open(rt *r, const char *policy_yaml) {
  memset(r, 0, sizeof *r);
  assert_int_equal(qins_model_open(model_path, &r->model), 0);
  assert_int_equal(qins_backend_create("cpu", &r->be), 0);
  qins_llm_options o = {0, 0};
  assert_int_equal(qins_llm_create(r->model, r->be, &o, &r->llm), 0);
  if (policy_yaml) {
    qins_cfg *c;
    assert_int_equal(qins_cfg_load_string(policy_yaml, strlen(policy_yaml), "policy.yaml", &c), 0);
    qins_policy pol;
    assert_int_equal(qins_policy_parse(c, r->model->cfg.n_layers, &pol), 0);
    assert_int_equal(qins_policy_apply(r->llm, r->be, &pol, 0, &r->ps), 0);
    qins_cfg_free(c);
  }
}

static void rt_close(rt *r) {
  qins_llm_destroy(r->llm);
  qins_policy_state_free(r->ps);
  qins_backend_destroy(r->be);
  qins_model_close(r->model);
}

static int32_t *prompt_ids(const char *text, int *n) {
  qins_tokenizer *tok;
  qins_model *m;
  assert_int_equal(qins_model_open(model_path, &m), 0);
  assert_int_equal(qins_tokenizer_open_llama2c(tok_path, m->cfg.vocab_size, &tok), 0);
  int32_t *ids;
  size_t k;
  assert_int_equal(qins_tokenizer_encode(tok, text, QINS_TOK_ADD_SPECIAL, &ids, &k), 0);
  qins_tokenizer_close(tok);
  qins_model_close(m);
  *n = (int)k;
  return ids;
}

/* logits [n, V] of a runtime on ids, computed like the stages: all layers with a cache, then the
 * head on each row */
static float *ref_logits(rt *r, const int32_t *ids, int n) {
  const qins_model_config *c = qins_llm_config(r->llm);
  float *x = malloc(sizeof(float) * (size_t)n * (size_t)c->dim);
  float *lg = malloc(sizeof(float) * (size_t)n * (size_t)c->vocab_size);
  qins_llm_kv *kv;
  assert_int_equal(qins_llm_kv_create(r->llm, 0, c->n_layers, &kv), 0);
  assert_int_equal(qins_llm_forward_range(r->llm, kv, ids, x, n, 0, 0, c->n_layers, NULL, NULL), 0);
  for (int t = 0; t < n; t++)
    assert_int_equal(qins_llm_forward_range(r->llm, NULL, NULL, x + (size_t)t * c->dim, 1, t, c->n_layers, c->n_layers,
                                            lg + (size_t)t * c->vocab_size, NULL),
                     0);
  qins_llm_kv_destroy(kv);
  free(x);
  return lg;
}

static int close_rel(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fabs(b), 1e-12); }

/* f32 vs f32 branches: KL exactly 0 and overlap 1; f32 vs qins8: the library's numbers on
 * logits computed here from runtimes with the same policy. */
static void test_pipeline_logits_equal_library(void **state) {
  (void)state;
  if (!have_model) skip();
  char yaml[4096];
  int st;
  snprintf(yaml, sizeof yaml, LOGITS_YAML, "none", "logit_compare", PROMPT);
  char *out = run_yaml("same.yaml", yaml, &st, NULL);
  assert_int_equal(st, 0);
  json_t *r = record_of(out, 0);
  assert_non_null(r);
  assert_true(num(r, "kl") == 0 && num(r, "kl_reverse") == 0 && num(r, "topk_overlap") == 1 && num(r, "top1_agree") == 1);
  json_decref(r);
  free(out);

  snprintf(yaml, sizeof yaml, LOGITS_YAML, "{format: qins8}", "logit_compare", PROMPT);
  out = run_yaml("q8.yaml", yaml, &st, NULL);
  assert_int_equal(st, 0);
  r = record_of(out, 0);
  assert_non_null(r);
  int n;
  int32_t *ids = prompt_ids(PROMPT, &n);
  rt a, b;
  rt_open(&a, NULL);
  rt_open(&b, "{format: qins8}");
  float *la = ref_logits(&a, ids, n), *lb = ref_logits(&b, ids, n);
  int V = qins_llm_vocab(a.llm);
  double kl = 0, ov = 0;
  for (int t = 0; t < n; t++) {
    kl += qins_eval_kl_logits(la + (size_t)t * V, lb + (size_t)t * V, V, 1.0);
    ov += qins_eval_topk_overlap(la + (size_t)t * V, lb + (size_t)t * V, V, 10);
  }
  assert_int_equal((int)num(r, "rows"), n);
  if (!close_rel(num(r, "kl"), kl / n, 1e-9) || !close_rel(num(r, "topk_overlap"), ov / n, 1e-12))
    fail_msg("pipeline kl %.17g overlap %.17g, library %.17g %.17g", num(r, "kl"), num(r, "topk_overlap"), kl / n, ov / n);
  assert_true(kl > 0);

  /* the same policy from a file gives the same record */
  {
    char pf[700], pol[800];
    snprintf(pf, sizeof pf, "%s/q8-policy.yaml", tmpdir);
    FILE *f = fopen(pf, "w");
    assert_non_null(f);
    fputs("# a policy file: the map itself\nformat: qins8\n", f);
    fclose(f);
    snprintf(pol, sizeof pol, "'%s'", pf);
    snprintf(yaml, sizeof yaml, LOGITS_YAML, pol, "logit_compare", PROMPT);
    char *o2 = run_yaml("q8file.yaml", yaml, &st, NULL);
    assert_int_equal(st, 0);
    json_t *r2 = record_of(o2, 0);
    assert_non_null(r2);
    assert_true(num(r2, "kl") == num(r, "kl") && num(r2, "topk_overlap") == num(r, "topk_overlap"));
    json_decref(r2);
    free(o2);
  }
  json_decref(r);
  free(out);

  /* hidden_cosine (emit: layers) against qins_eval_layer_cosine of the same two runtimes */
  static const char *HID =
      "name: t-hidden\nmodel: @M\ntokenizer: @T\nbackend: cpu\nheartbeat_ms: 2000\n"
      "workers:\n  - {name: a, stages: [tokenize, embed, la]}\n  - {name: b, stages: [lb, cos]}\n"
      "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n"
      "  - {name: la, type: qins_block, options: {emit: layers}}\n"
      "  - {name: lb, type: qins_block, options: {emit: layers, policy: {format: qins8}}}\n"
      "  - {name: cos, type: hidden_cosine}\n"
      "edges:\n  - {from: tokenize, to: embed}\n  - {from: embed, to: la}\n  - {from: embed, to: lb}\n"
      "  - {from: la, to: cos}\n  - {from: lb, to: cos}\n"
      "inputs: {prompts: [\"%s\"]}\n";
  snprintf(yaml, sizeof yaml, HID, PROMPT);
  out = run_yaml("hid.yaml", yaml, &st, NULL);
  assert_int_equal(st, 0);
  r = record_of(out, 0);
  assert_non_null(r);
  int L = qins_llm_config(a.llm)->n_layers;
  double cos[64];
  assert_int_equal(qins_eval_layer_cosine(a.llm, b.llm, ids, n, cos), 0);
  json_t *jc = json_object_get(r, "cosine");
  assert_int_equal((int)json_array_size(jc), L);
  for (int l = 0; l < L; l++)
    if (!close_rel(json_number_value(json_array_get(jc, (size_t)l)), cos[l], 1e-9))
      fail_msg("layer %d: pipeline cosine %.17g, qins_eval_layer_cosine %.17g", l,
               json_number_value(json_array_get(jc, (size_t)l)), cos[l]);
  assert_true(cos[L - 1] < 1.0);
  json_decref(r);
  free(out);

  /* perplexity: the stage's ppl is qins_eval_perplexity's on the same ids and runtime kind */
  static const char *PPL =
      "name: t-ppl\nmodel: @M\ntokenizer: @T\nbackend: cpu\nheartbeat_ms: 2000\nworkers:\n  - {name: w, stages: [ppl]}\n"
      "stages:\n  - {name: ppl, type: perplexity, options: {window: 16, stride: 8, bin: 4, policy: {format: qins8}}}\n"
      "inputs: {prompts: [\"%s\"]}\n";
  snprintf(yaml, sizeof yaml, PPL, PROMPT);
  out = run_yaml("ppl.yaml", yaml, &st, NULL);
  assert_int_equal(st, 0);
  r = record_of(out, 0);
  assert_non_null(r);
  double ppl;
  int64_t scored;
  assert_int_equal(qins_eval_perplexity(b.llm, ids, n, 16, 8, &ppl, &scored), 0);
  if (!close_rel(num(r, "ppl"), ppl, 1e-12)) fail_msg("pipeline ppl %.17g, library %.17g", num(r, "ppl"), ppl);
  assert_int_equal((int)num(r, "tokens"), (int)scored);
  assert_int_equal((int)scored, n - 1);
  json_decref(r);
  free(out);
  free(la);
  free(lb);
  free(ids);
  rt_close(&a);
  rt_close(&b);
}

/* Greedy compare of two free-running branches, on three workers (branch a, branch b, the join). */
static const char *CMP_YAML =
    "name: t-compare\nmodel: @M\ntokenizer: @T\nbackend: cpu\n"
    "workers:\n  - {name: fa, stages: [tokenize, embed_a, blocks_a, head_a, sample_a]}\n"
    "  - {name: fb, stages: [embed_b, blocks_b, head_b, sample_b]}\n  - {name: join, stages: [compare]}\n"
    "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed_a, type: embed}\n"
    "  - {name: blocks_a, type: qins_block}\n  - {name: head_a, type: head}\n"
    "  - {name: sample_a, type: sample, options: {max_tokens: 24, stop: false}}\n"
    "  - {name: embed_b, type: embed}\n  - {name: blocks_b, type: qins_block, options: {policy: %s}}\n"
    "  - {name: head_b, type: head}\n  - {name: sample_b, type: sample, options: {max_tokens: 24, stop: false}}\n"
    "  - {name: compare, type: compare}\n"
    "edges:\n  - {from: tokenize, to: embed_a}\n  - {from: tokenize, to: embed_b}\n  - {from: embed_a, to: blocks_a}\n"
    "  - {from: blocks_a, to: head_a}\n  - {from: head_a, to: sample_a}\n  - {from: sample_a, to: embed_a, loop: true}\n"
    "  - {from: embed_b, to: blocks_b}\n  - {from: blocks_b, to: head_b}\n  - {from: head_b, to: sample_b}\n"
    "  - {from: sample_b, to: embed_b, loop: true}\n  - {from: sample_a, to: compare}\n  - {from: sample_b, to: compare}\n"
    "heartbeat_ms: 2000\n"; /* a loaded CI machine must not look hung; kills are seen by waitpid */

static void test_pipeline_compare(void **state) {
  (void)state;
  if (!have_model) skip();
  char yaml[4096];
  int st;
  snprintf(yaml, sizeof yaml, "%sinputs: {prompts: [\"Once upon a time\", \"Lily wanted to\"]}\n", CMP_YAML);
  char y2[4096];
  snprintf(y2, sizeof y2, yaml, "none");
  char *out = run_yaml("cmp-same.yaml", y2, &st, NULL);
  assert_int_equal(st, 0);
  for (int i = 0; i < 2; i++) {
    json_t *r = record_of(out, i);
    assert_non_null(r);
    assert_true(num(r, "match") == 1.0);
    assert_int_equal((int)num(r, "first_divergence"), 24);
    json_decref(r);
  }
  free(out);
  /* f32 vs qins8: qins_eval_match of greedy ids computed here with the two runtimes */
  snprintf(y2, sizeof y2, yaml, "{format: qins8}");
  out = run_yaml("cmp-q8.yaml", y2, &st, NULL);
  assert_int_equal(st, 0);
  rt a, b;
  rt_open(&a, NULL);
  rt_open(&b, "{format: qins8}");
  const char *prompts[2] = {"Once upon a time", "Lily wanted to"};
  for (int i = 0; i < 2; i++) {
    int n;
    int32_t *ids = prompt_ids(prompts[i], &n);
    int32_t ga[24], gb[24];
    rt *rs[2] = {&a, &b};
    int32_t *gs[2] = {ga, gb};
    for (int k = 0; k < 2; k++) { /* greedy as the stages run it: prefill, then one token at a time */
      const qins_model_config *c = qins_llm_config(rs[k]->llm);
      qins_llm_kv *kv;
      assert_int_equal(qins_llm_kv_create(rs[k]->llm, 0, c->n_layers, &kv), 0);
      float *x = malloc(sizeof(float) * (size_t)(n + 24) * c->dim), *lg = malloc(sizeof(float) * c->vocab_size);
      int pos = 0, cur = n;
      const int32_t *feed = ids;
      for (int s = 0; s < 24; s++) {
        assert_int_equal(qins_llm_forward_range(rs[k]->llm, NULL, feed, x, cur, pos, 0, 0, NULL, NULL), 0);
        assert_int_equal(qins_llm_forward_range(rs[k]->llm, kv, NULL, x, cur, pos, 0, c->n_layers, NULL, NULL), 0);
        assert_int_equal(qins_llm_forward_range(rs[k]->llm, NULL, NULL, x + (size_t)(cur - 1) * c->dim, 1, pos + cur - 1,
                                                c->n_layers, c->n_layers, lg, NULL),
                         0);
        gs[k][s] = qins_argmax_f32(lg, c->vocab_size);
        pos += cur;
        cur = 1;
        feed = &gs[k][s];
      }
      qins_llm_kv_destroy(kv);
      free(x);
      free(lg);
    }
    int fd;
    double m = qins_eval_match(ga, gb, 24, &fd);
    json_t *r = record_of(out, i);
    assert_non_null(r);
    if (num(r, "match") != m || (int)num(r, "first_divergence") != fd)
      fail_msg("prompt %d: pipeline match %.17g first %d, library %.17g first %d", i, num(r, "match"),
               (int)num(r, "first_divergence"), m, fd);
    json_t *ja = json_object_get(r, "ids_a");
    for (int s = 0; s < 24; s++) assert_int_equal((int)json_integer_value(json_array_get(ja, (size_t)s)), ga[s]);
    json_decref(r);
    free(ids);
  }
  rt_close(&a);
  rt_close(&b);
  /* replicas: each request's branches meet on the join replica its route names */
  char y3[4200];
  const char *from[2] = {"{name: fb, stages:", "{name: join, stages:"}, *to[2] = {"{name: fb, replicas: 2, stages:",
                                                                               "{name: join, replicas: 3, stages:"};
  snprintf(y3, sizeof y3, "%s", y2);
  for (int k = 0; k < 2; k++) {
    char *p = strstr(y3, from[k]);
    assert_non_null(p);
    size_t lf = strlen(from[k]), lt = strlen(to[k]);
    memmove(p + lt, p + lf, strlen(p + lf) + 1);
    memcpy(p, to[k], lt);
  }
  char *rep = run_yaml("cmp-rep.yaml", y3, &st, NULL);
  assert_int_equal(st, 0);
  for (int i = 0; i < 2; i++) {
    json_t *r1 = record_of(out, i), *r2 = record_of(rep, i);
    assert_non_null(r1);
    assert_non_null(r2);
    assert_true(json_equal(r1, r2));
    json_decref(r1);
    json_decref(r2);
  }
  free(rep);
  free(out);
}

/* ---- a killed worker: the join's records come once each, equal to the undisturbed run ---- */

typedef struct fault {
  const char *victim;
  int after, done, restarts;
  char *metrics; /* the run's merged metrics at its end */
} fault;

static void on_event(qins_run *run, int final, void *user) {
  fault *f = user;
  if (final) {
    free(f->metrics);
    f->metrics = qins_run_metrics_json(run);
    char *s = qins_run_state_json(run);
    json_t *o = json_loads(s, 0, NULL);
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(o, "instances"), i, in) f->restarts += (int)json_integer_value(json_object_get(in, "restarts"));
    json_decref(o);
    free(s);
    return;
  }
  if (f->done || !f->victim || qins_run_done_count(run) < f->after) return;
  for (int i = 0; i < qins_run_instance_count(run); i++)
    if (strcmp(qins_run_instance_name(run, i), f->victim) == 0 && qins_run_instance_pid(run, i) > 0) {
      kill(qins_run_instance_pid(run, i), SIGKILL);
      f->done = 1;
    }
}

static int run_inproc(const char *yaml, const char *outname, fault *f) {
  char text[8192], set_out[700];
  size_t o = 0;
  for (const char *p = yaml; *p && o < sizeof text - 700; p++) {
    if (p[0] == '@' && p[1] == 'M') o += (size_t)snprintf(text + o, sizeof text - o, "%s", model_path), p++;
    else if (p[0] == '@' && p[1] == 'T') o += (size_t)snprintf(text + o, sizeof text - o, "%s", tok_path), p++;
    else text[o++] = *p;
  }
  text[o] = 0;
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s/%s}", tmpdir, outname);
  const char *sets[] = {set_out, "restart={policy: restart, max_attempts: 2}"};
  qins_pipeline *pl = NULL;
  if (qins_pipeline_load_string(text, strlen(text), "fault.yaml", sets, 2, &pl)) fail_msg("%s", qins_error_msg());
  qins_run_opts opts = {0};
  opts.worker_exe = getenv("QINS_BIN");
  opts.quiet = 1;
  opts.on_event = on_event;
  opts.user = f;
  opts.event_every_result = 1;
  int rc = qins_run_pipeline(pl, &opts);
  qins_pipeline_free(pl);
  return rc;
}

static void test_join_survives_killed_worker(void **state) {
  (void)state;
  if (!have_model) skip();
  enum { N = 16 };
  char yaml[8192], y2[8192];
  size_t o = (size_t)snprintf(yaml, sizeof yaml, "%sinputs:\n  prompts:\n", CMP_YAML);
  const char *words[] = {"Once", "Lily", "The dog", "Tom", "A big", "One day", "She", "The sun"};
  for (int i = 0; i < N; i++)
    o += (size_t)snprintf(yaml + o, sizeof yaml - o, "    - \"%s %s\"\n", words[test_rand_u64() % 8], words[test_rand_u64() % 8]);
  snprintf(y2, sizeof y2, yaml, "{format: qins8}");
  fault none = {0};
  assert_int_equal(run_inproc(y2, "ref.jsonl", &none), 0);
  char ref_path[600];
  snprintf(ref_path, sizeof ref_path, "%s/ref.jsonl", tmpdir);
  char *ref = read_file(ref_path);
  /* the records' numbers are in the metrics too: the gauge is the mean over the records */
  {
    double sum = 0;
    for (int i = 0; i < N; i++) {
      json_t *r = record_of(ref, i);
      assert_non_null(r);
      sum += num(r, "match");
      json_decref(r);
    }
    json_t *doc = json_loads(none.metrics, 0, NULL);
    assert_non_null(doc);
    size_t i;
    json_t *m;
    int seen = 0;
    json_array_foreach(json_object_get(doc, "metrics"), i, m) {
      const char *name = json_string_value(json_object_get(m, "name"));
      const char *stage = json_string_value(json_object_get(json_object_get(m, "labels"), "stage"));
      const char *worker = json_string_value(json_object_get(json_object_get(m, "labels"), "worker"));
      /* (this process ran stages of its own above, as worker "test") */
      if (!stage || strcmp(stage, "compare") != 0 || !worker || strcmp(worker, "join") != 0) continue;
      if (!strcmp(name, "qins_eval_match_rate")) {
        seen |= 1;
        if (fabs(json_number_value(json_object_get(m, "value")) - sum / N) > 1e-12)
          fail_msg("qins_eval_match_rate %.17g, records' mean %.17g", json_number_value(json_object_get(m, "value")), sum / N);
      }
      if (!strcmp(name, "qins_eval_records_total")) {
        seen |= 2;
        assert_int_equal((int)json_number_value(json_object_get(m, "value")), N);
      }
    }
    assert_int_equal(seen, 3);
    json_decref(doc);
    free(none.metrics);
  }
  const char *victims[] = {"join", "fb"};
  for (int v = 0; v < 2; v++) {
    fault f = {victims[v], N / 4, 0, 0, NULL};
    char name[64], path[600];
    snprintf(name, sizeof name, "kill-%s.jsonl", victims[v]);
    int rc = run_inproc(y2, name, &f);
    if (rc) fail_msg("run with %s killed failed: %s", victims[v], qins_error_msg());
    assert_true(f.done);
    assert_int_equal(f.restarts, 1);
    free(f.metrics);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    char *text = read_file(path);
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, N); /* every request once: N lines, and each id found below */
    for (int i = 0; i < N; i++) {
      json_t *a = record_of(text, i), *b = record_of(ref, i);
      if (!a || !b) fail_msg("request %d missing after killing %s", i, victims[v]);
      if (!json_equal(a, b)) {
        char *sa = json_dumps(a, 0), *sb = json_dumps(b, 0);
        fail_msg("request %d after killing %s: %s, undisturbed %s", i, victims[v], sa, sb);
      }
      json_decref(a);
      json_decref(b);
    }
    free(text);
  }
  free(ref);
}

/* ---- every end reaches the eval stages: context full, EOS on one branch, merged records ---- */

/* Two free-running greedy branches (policy of b: first %s; a stops at EOS, b does not; both at most
 * %d tokens) measured three ways and merged into one record per request. */
static const char *ALL_YAML =
    "name: t-all\nmodel: @M\ntokenizer: @T\nbackend: cpu\n"
    "workers:\n  - {name: fa, stages: [tokenize, embed_a, blocks_a, head_a, sample_a, detok, text]}\n"
    "  - {name: fb, stages: [embed_b, blocks_b, head_b, sample_b]}\n  - {name: e, stages: [compare, logits, curve, merge]}\n"
    "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed_a, type: embed}\n"
    "  - {name: blocks_a, type: qins_block, options: {policy: none}}\n  - {name: head_a, type: head}\n"
    "  - {name: sample_a, type: sample, options: {max_tokens: %d}}\n"
    "  - {name: embed_b, type: embed}\n  - {name: blocks_b, type: qins_block, options: {policy: %s}}\n"
    "  - {name: head_b, type: head}\n  - {name: sample_b, type: sample, options: {max_tokens: %d, stop: false}}\n"
    "  - {name: compare, type: compare}\n  - {name: logits, type: logit_compare}\n"
    "  - {name: curve, type: context_curve, options: {bin: 32}}\n  - {name: merge, type: merge_records}\n"
    "  - {name: detok, type: detokenize}\n  - {name: text, type: sink}\n"
    "edges:\n  - {from: tokenize, to: embed_a}\n  - {from: tokenize, to: embed_b}\n  - {from: embed_a, to: blocks_a}\n"
    "  - {from: blocks_a, to: head_a}\n  - {from: head_a, to: sample_a}\n  - {from: sample_a, to: embed_a, loop: true}\n"
    "  - {from: embed_b, to: blocks_b}\n  - {from: blocks_b, to: head_b}\n  - {from: head_b, to: sample_b}\n"
    "  - {from: sample_b, to: embed_b, loop: true}\n  - {from: sample_a, to: compare}\n  - {from: sample_b, to: compare}\n"
    "  - {from: head_a, to: logits}\n  - {from: head_b, to: logits}\n  - {from: head_a, to: curve}\n"
    "  - {from: head_b, to: curve}\n  - {from: compare, to: merge}\n  - {from: logits, to: merge}\n"
    "  - {from: curve, to: merge}\n  - {from: sample_a, to: detok}\n  - {from: detok, to: text}\n"
    "  - {from: text, to: merge}\n" /* a record that comes at the last step, not step 0 */
    "heartbeat_ms: 2000\n";

static long long sum_array(json_t *a) {
  long long s = 0;
  size_t i;
  json_t *v;
  json_array_foreach(a, i, v) s += json_integer_value(v);
  return s;
}

/* A teacher-forced generation loop whose context fills before max_tokens: no `steps`, the record
 * still comes (sample's END reaches the join as an end marker), with one row per head message. */
static void test_pipeline_context_full(void **state) {
  (void)state;
  if (!have_model) skip();
  static const char *yaml =
      "name: t-full\nmodel: @M\ntokenizer: @T\nbackend: cpu\n"
      "workers:\n  - {name: a, stages: [tokenize, embed_a, blocks_a, head_a, sample_a]}\n"
      "  - {name: b, stages: [embed_b, blocks_b, head_b]}\n  - {name: e, stages: [cmp, curve, merge]}\n"
      "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed_a, type: embed}\n"
      "  - {name: blocks_a, type: qins_block}\n  - {name: head_a, type: head}\n"
      "  - {name: sample_a, type: sample, options: {max_tokens: 100000, stop: false, temperature: 0.8, seed: 3}}\n"
      "  - {name: embed_b, type: embed}\n  - {name: blocks_b, type: qins_block, options: {policy: none}}\n"
      "  - {name: head_b, type: head}\n  - {name: cmp, type: logit_compare}\n"
      "  - {name: curve, type: context_curve, options: {bin: 100}}\n  - {name: merge, type: merge_records}\n"
      "edges:\n  - {from: tokenize, to: embed_a}\n  - {from: tokenize, to: embed_b}\n  - {from: embed_a, to: blocks_a}\n"
      "  - {from: blocks_a, to: head_a}\n  - {from: head_a, to: sample_a}\n  - {from: sample_a, to: embed_a, loop: true}\n"
      "  - {from: sample_a, to: embed_b, loop: true}\n  - {from: embed_b, to: blocks_b}\n  - {from: blocks_b, to: head_b}\n"
      "  - {from: head_a, to: cmp}\n  - {from: head_b, to: cmp}\n  - {from: head_a, to: curve}\n  - {from: head_b, to: curve}\n"
      "  - {from: cmp, to: merge}\n  - {from: curve, to: merge}\n"
      "inputs: {prompts: [\"Once upon a time\", \"%s\"]}\nheartbeat_ms: 2000\n";
  char y[4096];
  snprintf(y, sizeof y, yaml, PROMPT);
  int st;
  char *out = run_yaml("full.yaml", y, &st, NULL);
  assert_int_equal(st, 0); /* 124: the run hung */
  rt a;
  rt_open(&a, NULL);
  int max_seq = qins_llm_max_seq(a.llm);
  rt_close(&a);
  const char *prompts[2] = {"Once upon a time", PROMPT};
  for (int i = 0; i < 2; i++) {
    int n;
    free(prompt_ids(prompts[i], &n));
    json_t *r = record_of(out, i);
    if (!r) fail_msg("request %d: no record", i);
    json_t *l = json_object_get(r, "cmp"), *c = json_object_get(r, "curve");
    assert_string_equal(json_string_value(json_object_get(r, "eval")), "merge_records");
    assert_non_null(l);
    assert_non_null(c);
    /* head messages: the prompt's last row at n-1, then one per token up to position max_seq-1 */
    assert_int_equal((int)num(l, "rows"), max_seq - n + 1);
    assert_null(json_object_get(l, "unpaired"));
    assert_true(num(l, "kl") == 0.0 && num(l, "top1_agree") == 1.0 && num(l, "topk_overlap") == 1.0);
    assert_int_equal((int)num(c, "rows"), max_seq - n + 1);
    assert_int_equal((int)sum_array(json_object_get(c, "count")), max_seq - n + 1);
    json_t *pos = json_object_get(c, "positions");
    assert_int_equal((int)json_integer_value(json_array_get(pos, json_array_size(pos) - 1)), (max_seq - 1) / 100 * 100);
    json_decref(r);
  }
  free(out);
}

/* Branch a stops at EOS, branch b runs on to max_tokens: every record comes once, the
 * logits are compared up to a's end, and the merged record holds all three measurements. */
static void test_pipeline_eos_one_branch(void **state) {
  (void)state;
  if (!have_model) skip();
  enum { MAXT = 400 };
  char y[8192], y2[8400];
  snprintf(y, sizeof y, ALL_YAML, MAXT, "none", MAXT);
  snprintf(y2, sizeof y2, "%sinputs: {prompts: [\"Once upon a time\", \"The little dog\", \"Lily wanted to\"]}\n", y);
  int st;
  char *out = run_yaml("eos.yaml", y2, &st, NULL);
  assert_int_equal(st, 0);
  int lines = 0, stopped = 0;
  for (const char *p = out; *p; p++) lines += *p == '\n';
  assert_int_equal(lines, 3);
  for (int i = 0; i < 3; i++) {
    json_t *r = record_of(out, i);
    if (!r) fail_msg("request %d: no record", i);
    json_t *c = json_object_get(r, "compare"), *l = json_object_get(r, "logits"), *k = json_object_get(r, "curve");
    assert_non_null(c);
    assert_non_null(l);
    assert_non_null(k);
    json_t *ia = json_object_get(c, "ids_a"), *ib = json_object_get(c, "ids_b");
    int na = (int)json_array_size(ia), nb = (int)json_array_size(ib);
    assert_int_equal(nb, MAXT);
    assert_true(na <= MAXT);
    stopped += na < MAXT;
    /* the same float model: a's run is b's up to where a stopped */
    for (int t = 0; t < na; t++) assert_int_equal(json_integer_value(json_array_get(ia, t)), json_integer_value(json_array_get(ib, t)));
    /* a gave na + 1 head messages when it stopped on EOS (the last one's token is the stop id), na otherwise */
    int rows_a = na < MAXT ? na + 1 : na;
    assert_int_equal((int)num(l, "rows"), rows_a);
    assert_int_equal((int)num(k, "rows"), rows_a);
    if (rows_a < MAXT) assert_int_equal((int)num(l, "unpaired"), MAXT - rows_a);
    assert_true(num(l, "kl") == 0.0 && num(l, "top1_agree") == 1.0);
    assert_true(num(c, "match") == (double)na / MAXT);
    assert_int_equal((int)num(c, "first_divergence"), na);
    json_t *tx = json_object_get(r, "text"); /* branch a's text, from the sink */
    assert_non_null(tx);
    assert_int_equal((int)num(tx, "tokens"), na);
    assert_true(strlen(json_string_value(json_object_get(tx, "text"))) > 0);
    json_decref(r);
  }
  assert_true(stopped > 0); /* stories260K ends its stories well within 400 tokens */
  free(out);
}

/* The merged pipeline under a SIGKILL of the eval worker and of branch b's worker: every merged
 * record once, equal to the undisturbed run. */
static void test_merge_survives_killed_worker(void **state) {
  (void)state;
  if (!have_model) skip();
  enum { N = 12 };
  char yaml[8192], y2[8192];
  snprintf(yaml, sizeof yaml, ALL_YAML, 120, "{format: qins8}", 120);
  size_t o = strlen(yaml);
  o += (size_t)snprintf(yaml + o, sizeof yaml - o, "inputs:\n  prompts:\n");
  const char *words[] = {"Once", "Lily", "The dog", "Tom", "A big", "One day", "She", "The sun"};
  for (int i = 0; i < N; i++)
    o += (size_t)snprintf(yaml + o, sizeof yaml - o, "    - \"%s %s\"\n", words[test_rand_u64() % 8], words[test_rand_u64() % 8]);
  snprintf(y2, sizeof y2, "%s", yaml);
  fault none = {0};
  assert_int_equal(run_inproc(y2, "mref.jsonl", &none), 0);
  free(none.metrics);
  char path[600];
  snprintf(path, sizeof path, "%s/mref.jsonl", tmpdir);
  char *ref = read_file(path);
  const char *victims[] = {"e", "fb"};
  for (int v = 0; v < 2; v++) {
    fault f = {victims[v], N / 4, 0, 0, NULL};
    char name[64];
    snprintf(name, sizeof name, "mkill-%s.jsonl", victims[v]);
    if (run_inproc(y2, name, &f)) fail_msg("run with %s killed failed: %s", victims[v], qins_error_msg());
    assert_true(f.done);
    assert_int_equal(f.restarts, 1);
    free(f.metrics);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    char *text = read_file(path);
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, N);
    for (int i = 0; i < N; i++) {
      json_t *a = record_of(text, i), *b = record_of(ref, i);
      if (!a || !b) fail_msg("request %d missing after killing %s", i, victims[v]);
      assert_non_null(json_object_get(a, "compare"));
      assert_non_null(json_object_get(a, "logits"));
      assert_non_null(json_object_get(a, "curve"));
      assert_non_null(json_object_get(a, "text"));
      if (!json_equal(a, b)) fail_msg("request %d after killing %s differs from the undisturbed run", i, victims[v]);
      json_decref(a);
      json_decref(b);
    }
    free(text);
  }
  free(ref);
}

/* ---- bad pipelines: exit 2, file:line:col ---- */

static void expect_bad(const char *name, const char *yaml, const char *where, const char *what) {
  int st;
  char *err;
  char *out = run_yaml(name, yaml, &st, &err);
  if (st != 2 || !strstr(err, where) || !strstr(err, what))
    fail_msg("%s: exit %d, stderr '%s' (want exit 2 with '%s' and '%s')", name, st, err, where, what);
  free(out);
  free(err);
}

static void test_bad_pipelines(void **state) {
  (void)state;
  if (!have_model) skip();
  char yaml[4096], where[700];
  /* an unknown format inside the branch's policy: blocks_b is on line 14, the format value at col 67 */
  snprintf(yaml, sizeof yaml, LOGITS_YAML, "{format: qins9}", "logit_compare", PROMPT);
  snprintf(where, sizeof where, "%s/badfmt.yaml:14:67", tmpdir);
  expect_bad("badfmt.yaml", yaml, where, "qins9");
  /* a policy that is neither a map, a .yaml path nor none */
  snprintf(yaml, sizeof yaml, LOGITS_YAML, "qins8", "logit_compare", PROMPT);
  snprintf(where, sizeof where, "%s/badpol.yaml:14:", tmpdir);
  expect_bad("badpol.yaml", yaml, where, "is not a policy");
  /* a policy file that does not exist */
  snprintf(yaml, sizeof yaml, LOGITS_YAML, "/nonexistent/q8.yaml", "logit_compare", PROMPT);
  snprintf(where, sizeof where, "%s/nopol.yaml:14:", tmpdir);
  expect_bad("nopol.yaml", yaml, where, "cannot open");
  /* branch mismatch: compare of ids takes logits (validation, before anything starts) */
  snprintf(yaml, sizeof yaml, LOGITS_YAML, "none", "compare", PROMPT);
  snprintf(where, sizeof where, "%s/mismatch.yaml:", tmpdir);
  expect_bad("mismatch.yaml", yaml, where, "cannot feed");
  /* branch mismatch: head rows all vs last */
  char y2[4096];
  snprintf(y2, sizeof y2, LOGITS_YAML, "none", "logit_compare", PROMPT);
  const char *from = "{name: head_b, type: head, options: {rows: all}}", *to = "{name: head_b, type: head}";
  char *p = strstr(y2, from);
  assert_non_null(p);
  memcpy(p, to, strlen(to));
  memmove(p + strlen(to), p + strlen(from), strlen(p + strlen(from)) + 1);
  snprintf(where, sizeof where, "%s/rows.yaml:", tmpdir);
  expect_bad("rows.yaml", y2, where, "branch mismatch");
  /* a join with one branch */
  snprintf(y2, sizeof y2,
           "name: t\nmodel: @M\ntokenizer: @T\nworkers:\n  - {name: w, stages: [tokenize, embed, blocks, head, cmp]}\n"
           "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n"
           "  - {name: blocks, type: qins_block}\n  - {name: head, type: head, options: {rows: all}}\n"
           "  - {name: cmp, type: logit_compare}\ninputs: {prompts: [hi]}\n");
  snprintf(where, sizeof where, "%s/one.yaml:11:", tmpdir);
  expect_bad("one.yaml", y2, where, "joins 2 branches but takes from 1");
  /* merge_records with one input */
  snprintf(y2, sizeof y2,
           "name: t\nmodel: @M\ntokenizer: @T\nworkers:\n  - {name: w, stages: [ppl, merge]}\n"
           "stages:\n  - {name: ppl, type: perplexity}\n  - {name: merge, type: merge_records}\n"
           "inputs: {prompts: [hi]}\n");
  snprintf(where, sizeof where, "%s/merge1.yaml:", tmpdir);
  expect_bad("merge1.yaml", y2, where, "joins 2 or more branches but takes from 1 (ppl)");
  /* a missing corpus file: the option's location */
  snprintf(y2, sizeof y2,
           "name: t\nmodel: @M\ntokenizer: @T\nworkers:\n  - {name: w, stages: [ppl]}\n"
           "stages:\n  - {name: ppl, type: perplexity, options: {corpus: /nonexistent/corpus.txt}}\n"
           "inputs: {prompts: [x]}\n");
  snprintf(where, sizeof where, "%s/corpus.yaml:7:", tmpdir);
  expect_bad("corpus.yaml", y2, where, "cannot read '/nonexistent/corpus.txt'");
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_logit_stages_equal_library),
      cmocka_unit_test(test_compare_equals_library),
      cmocka_unit_test(test_hidden_cosine_equals_library),
      cmocka_unit_test(test_join_pairs_and_forgets),
      cmocka_unit_test(test_pipeline_logits_equal_library),
      cmocka_unit_test(test_pipeline_compare),
      cmocka_unit_test(test_join_survives_killed_worker),
      cmocka_unit_test(test_pipeline_context_full),
      cmocka_unit_test(test_pipeline_eos_one_branch),
      cmocka_unit_test(test_merge_survives_killed_worker),
      cmocka_unit_test(test_bad_pipelines),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
