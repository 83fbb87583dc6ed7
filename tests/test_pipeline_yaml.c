/* Pipeline YAML validation: every error class names file:line:column (or the --set) and the key;
 * valid pipelines get default edges, loop edges, replicas, --set overrides and a graph. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/pipeline.h"
#include "tests/test_util.h"

static const char *BASE =
    "name: t\n"                                   /* 1 */
    "workers:\n"                                  /* 2 */
    "  - name: w0\n"                              /* 3 */
    "    stages: [tok, embed, mix, sample]\n"     /* 4 */
    "  - name: w1\n"                              /* 5 */
    "    stages: [detok, sink]\n"                 /* 6 */
    "stages:\n"                                   /* 7 */
    "  - name: tok\n"                             /* 8 */
    "    type: test_bytes\n"                      /* 9 */
    "  - name: embed\n"                           /* 10 */
    "    type: test_embed\n"                      /* 11 */
    "    options: {dim: 8}\n"                     /* 12 */
    "  - name: mix\n"                             /* 13 */
    "    type: test_affine\n"                     /* 14 */
    "    options: {dim: 8, scale: 2}\n"           /* 15 */
    "  - name: sample\n"                          /* 16 */
    "    type: test_sample\n"                     /* 17 */
    "  - name: detok\n"                           /* 18 */
    "    type: test_detok\n"                      /* 19 */
    "  - name: sink\n"                            /* 20 */
    "    type: sink\n"                            /* 21 */
    "edges:\n"                                    /* 22 */
    "  - {from: sample, to: embed, loop: true}\n" /* 23 */
    "inputs:\n"                                   /* 24 */
    "  prompts: [a, b]\n";                        /* 25 */

/* Replace the first occurrence of `from` in BASE by `to`, load, expect failure containing all needles. */
static void expect_error_sets(const char *from, const char *to, const char *const *sets, int n_sets, const char *n1,
                              const char *n2, const char *n3) {
  char text[4096];
  const char *p = from ? strstr(BASE, from) : NULL;
  if (from) assert_non_null(p);
  if (p)
    snprintf(text, sizeof text, "%.*s%s%s", (int)(p - BASE), BASE, to, p + strlen(from));
  else
    snprintf(text, sizeof text, "%s", BASE);
  qins_pipeline *pl = NULL;
  int rc = qins_pipeline_load_string(text, strlen(text), "t.yaml", sets, n_sets, &pl);
  if (rc == 0) {
    qins_pipeline_free(pl);
    fail_msg("expected an error containing '%s' for replacing '%s' by '%s'", n1, from ? from : "", to ? to : "");
  }
  assert_int_equal(rc, QINS_EINPUT);
  const char *msg = qins_error_msg();
  const char *needles[3] = {n1, n2, n3};
  for (int i = 0; i < 3; i++)
    if (needles[i] && !strstr(msg, needles[i])) fail_msg("message '%s' lacks '%s'", msg, needles[i]);
}

static void expect_error(const char *from, const char *to, const char *n1, const char *n2, const char *n3) {
  expect_error_sets(from, to, NULL, 0, n1, n2, n3);
}

static void test_valid(void **state) {
  (void)state;
  qins_pipeline *pl;
  assert_int_equal(qins_pipeline_load_string(BASE, strlen(BASE), "t.yaml", NULL, 0, &pl), 0);
  assert_int_equal(pl->n_stages, 6);
  assert_int_equal(pl->n_edges, 6); /* 5 in listed order + the loop */
  assert_int_equal(pl->entry, 0);
  assert_int_equal(pl->exit_stage, 5);
  assert_string_equal(pl->stages[pl->edges[0].from].name, "sample");
  assert_true(pl->edges[0].loop);
  assert_int_equal(pl->stages[qins_pipeline_stage_index(pl, "detok")].worker, 1);
  assert_int_equal(pl->n_prompts, 2);
  assert_int_equal(pl->restart, QINS_RESTART_STOP);
  assert_int_equal(pl->heartbeat_ms, 1000);
  char *g = qins_pipeline_graph_json(pl);
  assert_non_null(strstr(g, "\"cross_worker\":true"));
  assert_non_null(strstr(g, "\"name\":\"w1\""));
  free(g);
  qins_pipeline_free(pl);
}

static void test_set_overrides(void **state) {
  (void)state;
  const char *sets[] = {"stages.mix.options.scale=3.5", "workers.0.replicas=3", "heartbeat_ms=50",
                        "inputs.prompts=[x, y, z]", "restart=restart"};
  qins_pipeline *pl;
  assert_int_equal(qins_pipeline_load_string(BASE, strlen(BASE), "t.yaml", sets, 5, &pl), 0);
  assert_int_equal(pl->workers[0].replicas, 3);
  assert_int_equal(pl->heartbeat_ms, 50);
  assert_int_equal(pl->n_prompts, 3);
  assert_int_equal(pl->restart, QINS_RESTART_RESTART);
  assert_string_equal(qins_cfg_get(pl->stages[2].options, "scale")->value, "3.5");
  qins_pipeline_free(pl);
  /* an override that breaks validation is named in the message */
  const char *bad[] = {"stages.mix.options.scale=abc"};
  expect_error_sets(NULL, NULL, bad, 1, "--set stages.mix.options.scale=abc", "expected a number", NULL);
  const char *bad2[] = {"stages.nosuch.options.scale=1"};
  expect_error_sets(NULL, NULL, bad2, 1, "--set stages.nosuch", "no list item named 'nosuch'", NULL);
  const char *bad3[] = {"workers.7.replicas=2"};
  expect_error_sets(NULL, NULL, bad3, 1, "--set workers.7", "out of range", NULL);
  const char *bad4[] = {"noequals"};
  expect_error_sets(NULL, NULL, bad4, 1, "--set noequals", "KEY.PATH=VALUE", NULL);
  const char *bad5[] = {"bogus=1"};
  expect_error_sets(NULL, NULL, bad5, 1, "--set bogus=1", "unknown key 'bogus'", NULL);
}

static void test_syntax_and_keys(void **state) {
  (void)state;
  expect_error("  prompts: [a, b]\n", "  prompts: [a, b\n", "t.yaml:", "YAML syntax error", NULL);
  expect_error("name: t\n", "name: t\nbogus: 1\n", "t.yaml:2:1", "unknown key 'bogus'", "expected one of");
  expect_error("    type: test_bytes\n", "    type: test_bytes\n    optons: {}\n", "t.yaml:10:5", "stages[tok]",
               "unknown key 'optons'");
  expect_error("  - name: w1\n", "  - name: w1\n    cpu: 3\n", "t.yaml:6:5", "workers[w1]", "unknown key 'cpu'");
  expect_error("name: t\n", "name: t\nname: u\n", "t.yaml:2:1", "key 'name': duplicate key", NULL);
  expect_error("  - name: tok\n    type: test_bytes\n", "  - name: tok\n", "t.yaml:8:5", "stages[tok]",
               "missing key 'type'");
}

static void test_wrong_types(void **state) {
  (void)state;
  expect_error("name: t\n", "name: t\nheartbeat_ms: fast\n", "t.yaml:2:15", "heartbeat_ms", "expected an integer");
  expect_error("name: t\n", "name: t\nheartbeat_ms: 1\n", "t.yaml:2:15", "heartbeat_ms", "outside 10..60000");
  expect_error("    options: {dim: 8, scale: 2}\n", "    options: {dim: 8, scale: [2]}\n", "t.yaml:15:",
               "stages[mix].options.scale", "expected a number");
  expect_error("    options: {dim: 8, scale: 2}\n", "    options: {dim: 0, scale: 2}\n", "t.yaml:15:",
               "stages[mix].options.dim", "outside");
  expect_error("    options: {dim: 8, scale: 2}\n", "    options: {dim: 8, scael: 2}\n", "t.yaml:15:",
               "unknown option 'scael'", "test_affine");
  expect_error("  - {from: sample, to: embed, loop: true}\n", "  - {from: sample, to: embed, loop: maybe}\n",
               "t.yaml:23:", "edges[0].loop", "expected true or false");
  expect_error("workers:\n", "workers: 3\nx:\n", "t.yaml:", "workers", NULL);
  expect_error("    stages: [detok, sink]\n", "    stages: [detok, sink]\n    replicas: two\n", "t.yaml:7:15",
               "workers[w1].replicas", "expected an integer");
  expect_error("    stages: [detok, sink]\n", "    stages: [detok, sink]\n    host: 10.0.0.1\n", "t.yaml:7:11",
               "workers[w1].host", "tcp://HOST:PORT");
}

static void test_stage_types_and_names(void **state) {
  (void)state;
  expect_error("    type: test_detok\n", "    type: test_detokk\n", "t.yaml:19:11", "stages[detok].type",
               "unknown stage type 'test_detokk'");
  expect_error("  - {from: sample, to: embed, loop: true}\n", "  - {from: sample, to: embd, loop: true}\n",
               "t.yaml:23:", "edges[0].to", "unknown stage 'embd'");
  expect_error("    stages: [detok, sink]\n", "    stages: [detok, sink, nope]\n", "t.yaml:6:", "workers[w1].stages",
               "unknown stage 'nope'");
  expect_error("    stages: [detok, sink]\n", "    stages: [detok, sink, mix]\n", "t.yaml:6:", "placed twice",
               "worker 'w0'");
  expect_error("    stages: [detok, sink]\n", "    stages: [detok]\n", "t.yaml:20:", "stage 'sink'",
               "not placed on any worker");
  expect_error("  - name: detok\n", "  - name: mix\n", "t.yaml:18:", "stage 'mix' is defined twice", NULL);
  expect_error("  - name: detok\n", "  - name: de tok\n", "t.yaml:18:", "not a valid name", NULL);
}

static void test_graph_errors(void **state) {
  (void)state;
  /* a cycle without loop: true */
  expect_error("  - {from: sample, to: embed, loop: true}\n",
               "  - {from: tok, to: embed}\n  - {from: embed, to: mix}\n  - {from: mix, to: sample}\n"
               "  - {from: sample, to: embed}\n  - {from: sample, to: detok}\n  - {from: detok, to: sink}\n",
               "t.yaml:26:", "undeclared cycle", "embed -> mix -> sample -> embed");
  /* shape mismatch across an edge: dim 8 vs dim 4 */
  expect_error("    options: {dim: 8, scale: 2}\n", "    options: {dim: 4, scale: 2}\n", "edge embed -> mix",
               "f32[T,8]", "f32[T,4]");
}

static void test_dtype_mismatch(void **state) {
  (void)state;
  const char *t =
      "workers: [{name: w, stages: [tok, mix, sink]}]\n"
      "stages:\n"
      "  - {name: tok, type: test_bytes}\n"
      "  - {name: mix, type: test_affine}\n"
      "  - {name: sink, type: sink}\n";
  qins_pipeline *pl;
  assert_int_equal(qins_pipeline_load_string(t, strlen(t), "d.yaml", NULL, 0, &pl), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "d.yaml:4:5"));
  assert_non_null(strstr(qins_error_msg(), "edge tok -> mix"));
  assert_non_null(strstr(qins_error_msg(), "dtype i32 does not match f32"));
  /* the entry stage must take text */
  const char *t2 =
      "workers: [{name: w, stages: [mix, sink]}]\n"
      "stages:\n"
      "  - {name: mix, type: test_affine}\n"
      "  - {name: sink, type: sink}\n";
  assert_int_equal(qins_pipeline_load_string(t2, strlen(t2), "e.yaml", NULL, 0, &pl), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "e.yaml:3:5"));
  assert_non_null(strstr(qins_error_msg(), "entry stage"));
  /* two entry stages (a branch that never joins) */
  const char *t3 =
      "workers: [{name: w, stages: [a, b, sink]}]\n"
      "stages:\n"
      "  - {name: a, type: test_bytes}\n"
      "  - {name: b, type: test_bytes}\n"
      "  - {name: sink, type: sink}\n"
      "edges:\n"
      "  - {from: a, to: sink}\n";
  assert_int_equal(qins_pipeline_load_string(t3, strlen(t3), "f.yaml", NULL, 0, &pl), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "one entry stage"));
  /* a missing file names the path */
  assert_int_equal(qins_pipeline_load("/nonexistent/p.yaml", NULL, 0, &pl), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "/nonexistent/p.yaml"));
}

static void test_inputs_file(void **state) {
  (void)state;
  char path[] = "/tmp/qins-test-inputs-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fprintf(f, "{\"id\": \"q1\", \"prompt\": \"hello\"}\n\n{\"prompt\": \"two\"}\n{\"nope\": 1}\n");
  fclose(f);
  char set[128];
  snprintf(set, sizeof set, "inputs={file: %s}", path);
  const char *sets[] = {set};
  qins_pipeline *pl;
  assert_int_equal(qins_pipeline_load_string(BASE, strlen(BASE), "t.yaml", sets, 1, &pl), 0);
  int n;
  char **pr, **ids;
  assert_int_equal(qins_pipeline_read_inputs(pl, &n, &pr, &ids), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), ":4:"));
  f = fopen(path, "w");
  fprintf(f, "{\"id\": \"q1\", \"prompt\": \"hello\"}\n\n{\"prompt\": \"two\"}\n");
  fclose(f);
  assert_int_equal(qins_pipeline_read_inputs(pl, &n, &pr, &ids), 0);
  assert_int_equal(n, 2);
  assert_string_equal(pr[0], "hello");
  assert_string_equal(ids[0], "\"q1\"");
  assert_string_equal(ids[1], "1");
  qins_pipeline_free_inputs(n, pr, ids);
  qins_pipeline_free(pl);
  unlink(path);
}

static void test_ports(void **state) {
  (void)state;
  char why[128];
  assert_true(qins_port_compatible("f32[T,8]", "f32[T,8]", why, sizeof why));
  assert_true(qins_port_compatible("f32[T,8]", "f32[T,*]", why, sizeof why));
  assert_true(qins_port_compatible("f32[T,dim]", "f32[T,8]", why, sizeof why));
  assert_false(qins_port_compatible("f32[T,8]", "f32[T,9]", why, sizeof why));
  assert_false(qins_port_compatible("f32[T]", "f32[T,9]", why, sizeof why));
  assert_false(qins_port_compatible("i32[T]", "f32[T]", why, sizeof why));
  assert_false(qins_port_compatible("f32[T,dim]", "f32[T,vocab]", why, sizeof why));
  assert_true(qins_port_compatible("*", "f32[T]", why, sizeof why));
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),          cmocka_unit_test(test_set_overrides),
      cmocka_unit_test(test_syntax_and_keys), cmocka_unit_test(test_wrong_types),
      cmocka_unit_test(test_stage_types_and_names), cmocka_unit_test(test_graph_errors),
      cmocka_unit_test(test_dtype_mismatch), cmocka_unit_test(test_inputs_file),
      cmocka_unit_test(test_ports),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
