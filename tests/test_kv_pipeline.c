/* qins8 V cache in pipeline caches (qins_llm_kv, kv_store v_format, policy v_cache): same logits as
 * the single runtime's qins8 V cache, same records as `qins generate --policy`, smaller V bytes. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/llm/llm.h"
#include "core/model/model.h"
#include "core/pipeline.h"
#include "tests/test_util.h"
#include "workers/run.h"

static char tmpdir[256];
static char model[600], tok[600];

static int group_setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins-test-kvpl-XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  snprintf(model, sizeof model, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok, sizeof tok, "%s", test_shared_path("models/stories260K/tok512.bin"));
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Library level, every backend: a qins_llm_kv made after qins_llm_set_vcache holds qins8 codes
 * and gives bit-identical logits to the runtime's own qins8 V cache (prefill then decode), and
 * both differ from the f32 V cache (the codes are really used). */
static void test_kv_matches_runtime(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  char names[8][64];
  int nb = test_backends(names, 8);
  qins_model *m;
  assert_int_equal(qins_model_open(model, &m), 0);
  const int32_t prompt[] = {1, 403, 407, 261, 378};
  const int np = 5, steps = 12;
  for (int b = 0; b < nb; b++) {
    qins_backend *be;
    if (qins_backend_create(names[b], &be)) continue;
    qins_llm *l;
    qins_llm_options opt = {64, 0};
    assert_int_equal(qins_llm_create(m, be, &opt, &l), 0);
    int V = qins_llm_vocab(l), L = qins_llm_config(l)->n_layers;
    float *ref = malloc(sizeof(float) * (size_t)V * (steps + 1)), *got = malloc(sizeof(float) * (size_t)V);
    float *fp = malloc(sizeof(float) * (size_t)V);
    int32_t ids[64];
    memcpy(ids, prompt, sizeof prompt);
    /* f32 V first (the FP reference for "the codes are used") */
    assert_int_equal(qins_llm_forward(l, ids, np, 0, fp, NULL), 0);
    qins_llm_reset(l);
    qins_alpha_spec spec = {QINS_ALPHA_MSE, 0};
    for (int i = 0; i < L; i++) assert_int_equal(qins_llm_set_vcache(l, i, QINS_DT_QINS8, spec), 0);
    /* runtime: greedy steps, logits of each */
    assert_int_equal(qins_llm_forward(l, ids, np, 0, ref, NULL), 0);
    for (int s = 0; s < steps; s++) {
      const float *lg = ref + (size_t)s * V;
      int best = 0;
      for (int v = 1; v < V; v++)
        if (lg[v] > lg[best]) best = v;
      ids[np + s] = best;
      assert_int_equal(qins_llm_forward(l, &ids[np + s], 1, 0, ref + (size_t)(s + 1) * V, NULL), 0);
    }
    assert_true(test_rel_l2(ref, fp, V) > 0); /* qins8 V changes the numbers */
    /* pipeline pieces: embed + layers 0..1 | layers 2..L + head, two caches, same ids */
    qins_llm_kv *k0, *k1;
    int split = L / 2;
    assert_int_equal(qins_llm_kv_create(l, 0, split, &k0), 0);
    assert_int_equal(qins_llm_kv_create(l, split, L, &k1), 0);
    int64_t vb, all = qins_llm_kv_bytes(k1, &vb);
    const qins_model_config *c = qins_llm_config(l);
    int64_t rows = 64LL * c->n_kv_heads, per_layer_v = rows * c->head_dim + rows * 4;
    assert_int_equal(vb, per_layer_v * (L - split));
    assert_int_equal(all - vb, rows * c->head_dim * 4 * (L - split)); /* K stays f32 */
    float *x = malloc(sizeof(float) * (size_t)c->dim * np);
    int pos = 0;
    for (int s = 0; s <= steps; s++) {
      int n = s == 0 ? np : 1;
      const int32_t *in = s == 0 ? ids : &ids[np + s - 1];
      assert_int_equal(qins_llm_forward_range(l, k0, in, x, n, pos, 0, split, NULL, NULL), 0);
      assert_int_equal(qins_llm_forward_range(l, k1, NULL, x, n, pos, split, L, got, NULL), 0);
      if (memcmp(got, ref + (size_t)s * V, sizeof(float) * (size_t)V) != 0)
        fail_msg("%s: step %d: pipeline qins8 V logits differ from the runtime's (rel %g)", names[b], s,
                 test_rel_l2(got, ref + (size_t)s * V, V));
      pos += n;
    }
    /* a cache made after switching back to f32 holds f32 values */
    for (int i = 0; i < L; i++) assert_int_equal(qins_llm_set_vcache(l, i, QINS_DT_F32, spec), 0);
    qins_llm_kv *k2;
    assert_int_equal(qins_llm_kv_create(l, 0, L, &k2), 0);
    qins_llm_kv_bytes(k2, &vb);
    assert_int_equal(vb, rows * c->head_dim * 4 * L);
    qins_llm_kv_destroy(k2);
    qins_llm_kv_destroy(k0);
    qins_llm_kv_destroy(k1);
    free(x), free(ref), free(got), free(fp);
    qins_llm_destroy(l);
    qins_backend_destroy(be);
  }
  qins_model_close(m);
}

static char *capture(const char *cmd, int *status) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t k;
  while ((k = fread(buf + len, 1, cap - 1 - len, p)) > 0) len += k;
  buf[len] = 0;
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return buf;
}

static const char *const prompts[] = {"Once upon a time", "The little dog", "Lily", "Tom and his mom"};
enum { NPROMPTS = 4, MAX_TOKENS = 40 };

/* A split pipeline (front: layers 0:2, back: 2:5 + head, 2 replicas), V cache set either by a
 * kv_store on each block worker (kv_opts != NULL) or by the root policy (top). */
static void write_split(const char *path, const char *backend, const char *kv_opts, const char *top) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  /* heartbeat 2 s: vk on lavapipe under the sanitizers and a loaded CI machine must not look hung */
  fprintf(f, "name: kvq\nmodel: %s\ntokenizer: %s\nbackend: %s\nheartbeat_ms: 2000\n%s", model, tok, backend, top);
  if (kv_opts)
    fprintf(f, "workers:\n  - {name: front, stages: [tokenize, embed, kv0, blocks0, detokenize, sink]}\n"
               "  - {name: back, replicas: 2, stages: [kv1, blocks1, head, sample]}\n");
  else
    fprintf(f, "workers:\n  - {name: front, stages: [tokenize, embed, blocks0, detokenize, sink]}\n"
               "  - {name: back, replicas: 2, stages: [blocks1, head, sample]}\n");
  fprintf(f, "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n");
  if (kv_opts) fprintf(f, "  - {name: kv0, type: kv_store, options: %s}\n", kv_opts);
  fprintf(f, "  - {name: blocks0, type: qins_block, options: {layers: \"0:2\"}}\n");
  if (kv_opts) fprintf(f, "  - {name: kv1, type: kv_store, options: %s}\n", kv_opts);
  fprintf(f, "  - {name: blocks1, type: qins_block, options: {layers: \"2:5\"}}\n  - {name: head, type: head}\n"
             "  - {name: sample, type: sample, options: {max_tokens: %d}}\n  - {name: detokenize, type: detokenize}\n"
             "  - {name: sink, type: sink}\nedges:\n  - {from: sample, to: embed, loop: true}\ninputs:\n  prompts: [",
          MAX_TOKENS);
  for (int i = 0; i < NPROMPTS; i++) fprintf(f, "%s\"%s\"", i ? ", " : "", prompts[i]);
  fprintf(f, "]\n");
  fclose(f);
}

/* Records of `qins run` by id: text[i], tokens[i]. */
static void run_records(const char *yaml, char **text, int *tokens) {
  char cmd[1024];
  int st;
  snprintf(cmd, sizeof cmd, "'%s' run '%s' --quiet", getenv("QINS_BIN"), yaml);
  char *out = capture(cmd, &st);
  if (st != 0) fail_msg("qins run %s failed (%d): %s", yaml, st, out);
  for (int i = 0; i < NPROMPTS; i++) text[i] = NULL;
  char *line = out;
  while (line && *line) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    json_t *r = json_loads(line, 0, NULL);
    assert_non_null(r);
    int id = (int)json_integer_value(json_object_get(r, "id"));
    assert_true(id >= 0 && id < NPROMPTS);
    text[id] = strdup(json_string_value(json_object_get(r, "text")));
    tokens[id] = (int)json_integer_value(json_object_get(r, "tokens"));
    json_decref(r);
    line = nl ? nl + 1 : NULL;
  }
  for (int i = 0; i < NPROMPTS; i++) assert_non_null(text[i]);
  free(out);
}

/* `qins generate --json` with a policy: text and number of generated ids. */
static char *generate(const char *backend, const char *prompt, const char *policy, int *n_ids) {
  char cmd[2048];
  int st;
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --tokenizer '%s' --prompt '%s' --steps %d --backend %s --json %s%s%s 2>/dev/null",
           getenv("QINS_BIN"), model, tok, prompt, MAX_TOKENS, backend, policy ? "--policy '" : "", policy ? policy : "",
           policy ? "'" : "");
  char *out = capture(cmd, &st);
  if (st != 0) fail_msg("qins generate failed (%d): %s", st, out);
  json_t *o = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  assert_non_null(o);
  char *t = strdup(json_string_value(json_object_get(o, "text")));
  *n_ids = (int)json_array_size(json_object_get(o, "ids"));
  json_decref(o);
  free(out);
  return t;
}

static void compare_backend(const char *backend) {
  char yaml[600];
  char *text[NPROMPTS], *fp_text[NPROMPTS];
  int tokens[NPROMPTS], fp_tokens[NPROMPTS];
  /* kv_store v_format qins8, alpha absmax (differs from the f32 run on stories260K) */
  snprintf(yaml, sizeof yaml, "%s/kv_%s.yaml", tmpdir, backend);
  write_split(yaml, backend, "{v_format: qins8, v_alpha: absmax}", "");
  run_records(yaml, text, tokens);
  snprintf(yaml, sizeof yaml, "%s/fp_%s.yaml", tmpdir, backend);
  write_split(yaml, backend, NULL, "");
  run_records(yaml, fp_text, fp_tokens);
  int differs = 0;
  for (int i = 0; i < NPROMPTS; i++) {
    int n;
    char *g = generate(backend, prompts[i], "{paths: [v_cache], v_cache: {format: qins8, alpha: absmax}}", &n);
    assert_string_equal(text[i], g);
    assert_int_equal(tokens[i], n);
    differs |= strcmp(text[i], fp_text[i]) != 0;
    free(g);
    free(text[i]);
  }
  assert_true(differs); /* the qins8 V cache is really in use */
  /* the root policy's v_cache (alpha mse) through the same split */
  snprintf(yaml, sizeof yaml, "%s/pol_%s.yaml", tmpdir, backend);
  write_split(yaml, backend, NULL, "policy: {paths: [v_cache]}\n");
  run_records(yaml, text, tokens);
  for (int i = 0; i < NPROMPTS; i++) {
    int n;
    char *g = generate(backend, prompts[i], "{paths: [v_cache]}", &n);
    assert_string_equal(text[i], g);
    assert_int_equal(tokens[i], n);
    free(g);
    free(text[i]);
    free(fp_text[i]);
  }
}

static void test_split_equals_generate_cpu(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  compare_backend("cpu");
}

static void test_split_equals_generate_vk(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  char names[8][64];
  int nb = test_backends(names, 8), have = 0;
  for (int i = 0; i < nb; i++) have |= strncmp(names[i], "vk", 2) == 0;
  if (!have) skip();
  compare_backend("vk");
}

static void grab_metrics(qins_run *run, int final, void *user) {
  if (!final) return;
  *(char **)user = qins_run_metrics_json(run);
}

/* Bytes of the V (part "v") or K caches the qins_block stages report, summed over workers. */
static double kv_metric(json_t *ms, const char *part) {
  double sum = 0;
  size_t i;
  json_t *m;
  json_array_foreach(ms, i, m) {
    if (strcmp(json_string_value(json_object_get(m, "name")), "qins_kv_cache_bytes") != 0) continue;
    const char *p = json_string_value(json_object_get(json_object_get(m, "labels"), "part"));
    if (p && !strcmp(p, part)) sum += json_number_value(json_object_get(m, "value"));
  }
  return sum;
}

static void run_for_metrics(const char *kv_opts, double *k, double *v) {
  char yaml[600], out[600], set_out[700];
  snprintf(yaml, sizeof yaml, "%s/mem.yaml", tmpdir);
  write_split(yaml, "cpu", kv_opts, "max_seq: 128\n");
  snprintf(out, sizeof out, "%s/mem.jsonl", tmpdir);
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s}", out);
  const char *sets[] = {set_out};
  qins_pipeline *pl = NULL;
  if (qins_pipeline_load(yaml, sets, 1, &pl)) fail_msg("%s", qins_error_msg());
  char *mj = NULL;
  qins_run_opts o = {0};
  o.quiet = 1;
  o.on_event = grab_metrics;
  o.user = &mj;
  int rc = qins_run_pipeline(pl, &o);
  qins_pipeline_free(pl);
  if (rc) fail_msg("run failed: %s", qins_error_msg());
  assert_non_null(mj);
  json_t *doc = json_loads(mj, 0, NULL);
  assert_non_null(doc);
  json_t *ms = json_object_get(doc, "metrics");
  *k = kv_metric(ms, "k");
  *v = kv_metric(ms, "v");
  json_decref(doc);
  free(mj);
}

/* The workers' accounting: the same requests hold the same K bytes, and V shrinks from 4 bytes a
 * value to 1 byte + 4 bytes of alpha per (token, KV head) row of head_dim values. */
static void test_worker_memory(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  double k32, v32, k8, v8;
  run_for_metrics("{v_format: f32}", &k32, &v32);
  run_for_metrics("{v_format: qins8}", &k8, &v8);
  qins_model *m;
  assert_int_equal(qins_model_open(model, &m), 0);
  double hd = m->cfg.head_dim;
  qins_model_close(m);
  assert_true(k32 > 0 && v32 > 0);
  assert_true(k8 == k32);
  assert_true(v32 == k32);
  assert_true(fabs(v8 / v32 - (hd + 4) / (4 * hd)) < 1e-12);
}

/* A policy's FP fallback for the V cache overrides a kv_store's qins8: the records equal the f32
 * run's; without the fallback they do not. */
static void test_policy_fallback_wins(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  char yaml[600];
  char *fp[NPROMPTS], *fb[NPROMPTS], *q8[NPROMPTS];
  int n[NPROMPTS];
  snprintf(yaml, sizeof yaml, "%s/fb_fp.yaml", tmpdir);
  write_split(yaml, "cpu", NULL, "");
  run_records(yaml, fp, n);
  snprintf(yaml, sizeof yaml, "%s/fb.yaml", tmpdir);
  write_split(yaml, "cpu", "{v_format: qins8, v_alpha: absmax}",
              "policy: {paths: [v_cache], layers: [{layers: all, v_cache: {fallback: true}}]}\n");
  run_records(yaml, fb, n);
  snprintf(yaml, sizeof yaml, "%s/fb_q8.yaml", tmpdir);
  write_split(yaml, "cpu", "{v_format: qins8, v_alpha: absmax}", "");
  run_records(yaml, q8, n);
  int differs = 0;
  for (int i = 0; i < NPROMPTS; i++) {
    assert_string_equal(fb[i], fp[i]);
    differs |= strcmp(q8[i], fp[i]) != 0;
    free(fp[i]), free(fb[i]), free(q8[i]);
  }
  assert_true(differs);
}

/* A bad v_format / v_alpha is refused with the option's location. */
static void test_bad_options(void **state) {
  (void)state;
  if (access(model, R_OK) != 0) skip();
  const char *bad[] = {"{v_format: qins4}", "{v_format: qins8, v_alpha: median}"};
  const char *want[] = {"v_format 'qins4': expected f32 or qins8", "v_alpha 'median'"};
  for (int i = 0; i < 2; i++) {
    char yaml[600], cmd[1400], errf[600];
    snprintf(yaml, sizeof yaml, "%s/bad.yaml", tmpdir);
    snprintf(errf, sizeof errf, "%s/bad.err", tmpdir);
    write_split(yaml, "cpu", bad[i], "");
    snprintf(cmd, sizeof cmd, "'%s' run '%s' --quiet 2>'%s'", getenv("QINS_BIN"), yaml, errf);
    int st;
    free(capture(cmd, &st));
    assert_int_equal(st, 2);
    FILE *f = fopen(errf, "r");
    char msg[2048] = "";
    size_t k = fread(msg, 1, sizeof msg - 1, f);
    msg[k] = 0;
    fclose(f);
    if (!strstr(msg, "bad.yaml:") || !strstr(msg, want[i])) fail_msg("stderr '%s' lacks '%s' with a location", msg, want[i]);
  }
}

int main(void) {
  test_seed();
  if (!getenv("QINS_BIN")) {
    fprintf(stderr, "QINS_BIN (path of the qins binary) is not set\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kv_matches_runtime),       cmocka_unit_test(test_split_equals_generate_cpu),
      cmocka_unit_test(test_split_equals_generate_vk), cmocka_unit_test(test_worker_memory),
      cmocka_unit_test(test_policy_fallback_wins),  cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
