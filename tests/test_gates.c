/* CI gate run: every gate on stories260K with the YAMLs' quick parameters, then each report is
 * checked: well-formed JSON with gate, verdict (pass/fail/not-run), what was run, checks; the
 * Markdown and SVG beside it. Verdicts are printed, not asserted (they are measurements). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/eval/gate_board.h"
#include "core/eval/gates.h"
#include "core/metrics.h"
#include "monitor/monitor.h"
#include "tests/test_util.h"

static const char *out_dir;

static void test_all_gates(void **state) {
  (void)state;
  const char *exe = getenv("QINS_EXE");
  assert_non_null(exe);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s gate all --model %s --quick --out %s", exe,
           test_shared_path("models/stories260K/stories260K.bin"), out_dir);
  printf("%s\n", cmd);
  fflush(stdout);
  assert_int_equal(system(cmd), 0);
  for (int i = 0; qins_gate_names[i]; i++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s.json", out_dir, qins_gate_names[i]);
    json_error_t err;
    json_t *r = json_load_file(path, 0, &err);
    if (!r) fail_msg("%s: %s (line %d)", path, err.text, err.line);
    assert_string_equal(json_string_value(json_object_get(r, "gate")), qins_gate_names[i]);
    const char *v = json_string_value(json_object_get(r, "verdict"));
    assert_non_null(v);
    assert_true(!strcmp(v, "pass") || !strcmp(v, "fail") || !strcmp(v, "not-run"));
    json_t *run = json_object_get(r, "run");
    assert_true(json_is_object(run));
    assert_true(json_is_string(json_object_get(run, "model")));
    assert_true(json_is_array(json_object_get(r, "checks")));
    /* a gate that ran has measured checks; a not-run gate says why */
    if (!strcmp(v, "not-run")) assert_true(strlen(json_string_value(json_object_get(r, "reason"))) > 0);
    else assert_true(json_array_size(json_object_get(r, "checks")) > 0);
    printf("%s: %s (%s)\n", qins_gate_names[i], v, json_string_value(json_object_get(r, "reason")));
    json_decref(r);
    const char *ext[2] = {"md", "svg"};
    for (int e = 0; e < 2; e++) {
      snprintf(path, sizeof path, "%s/%s.%s", out_dir, qins_gate_names[i], ext[e]);
      FILE *f = fopen(path, "r");
      assert_non_null(f);
      char head[8] = {0};
      assert_true(fread(head, 1, 4, f) == 4);
      fclose(f);
      if (e) assert_string_equal(head, "<svg");
      else assert_true(head[0] == '#');
    }
  }
  /* unknown gate: bad usage, exit 2 */
  snprintf(cmd, sizeof cmd, "%s gate Z9 --model %s --out %s 2>/dev/null", exe,
           test_shared_path("models/stories260K/stories260K.bin"), out_dir);
  int st = system(cmd);
  assert_int_equal(WEXITSTATUS(st), 2);
}

/* The pipeline YAML's `policy:` reaches the model stages: a qins6 policy runs, a float-only path
 * is refused with exit 2 naming QINS.md section 5. */
static void test_pipeline_policy(void **state) {
  (void)state;
  const char *exe = getenv("QINS_EXE");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "%s run pipelines/generate.yaml --set 'inputs.prompts=[Once upon a time]' --set model=%s --set tokenizer=%s "
           "--set 'policy={format: qins6}' > /dev/null",
           exe, test_shared_path("models/stories260K/stories260K.bin"), test_shared_path("models/stories260K/tok512.bin"));
  assert_int_equal(WEXITSTATUS(system(cmd)), 0);
  snprintf(cmd, sizeof cmd,
           "%s run pipelines/generate.yaml --set 'inputs.prompts=[Once upon a time]' --set model=%s --set tokenizer=%s "
           "--set 'policy={format: qins8, k_proj: qins8}' > /dev/null 2>&1",
           exe, test_shared_path("models/stories260K/stories260K.bin"), test_shared_path("models/stories260K/tok512.bin"));
  assert_int_equal(WEXITSTATUS(system(cmd)), 2);
}

static char *board_json(void *ctx) {
  (void)ctx;
  return qins_gate_board_json();
}

/* The row of gate `name` in a gates document. */
static json_t *gate_row(json_t *doc, const char *name) {
  json_t *arr = json_object_get(doc, "gates"), *e;
  size_t i;
  json_array_foreach(arr, i, e) if (!strcmp(json_string_value(json_object_get(e, "name")), name)) return e;
  return NULL;
}

/* What `qins gate --dashboard` publishes: after a quick A3 the monitor's gates document holds its
 * verdict (the report's), progress 1 and a measured check, a queued gate stays queued, and the
 * metrics hold the code/error histograms of the policy A3 applied; the CLI flag starts the server. */
static void test_gate_dashboard(void **state) {
  (void)state;
  qins_metrics_reset();
  qins_gate_board_reset();
  assert_null(qins_gate_board_json());
  qins_gate_board_queue("A3");
  qins_gate_board_queue("B1");
  qins_gate_opts o = {.model_path = test_shared_path("models/stories260K/stories260K.bin"), .out_dir = out_dir,
                      .quick = 1};
  char verdict[32] = "";
  assert_int_equal(qins_gate_run("A3", &o, verdict, sizeof verdict), 0);
  qins_monitor_providers p = {.gates_json = board_json};
  qins_monitor_snapshot snap;
  assert_int_equal(qins_monitor_snapshot_collect(&p, &snap), 0);
  assert_non_null(snap.gates);
  json_t *doc = json_loads(snap.gates, 0, NULL);
  assert_non_null(doc);
  json_t *a3 = gate_row(doc, "A3"), *b1 = gate_row(doc, "B1");
  assert_non_null(a3);
  assert_non_null(b1);
  assert_string_equal(json_string_value(json_object_get(a3, "verdict")), verdict);
  assert_true(!strcmp(verdict, "pass") || !strcmp(verdict, "fail"));
  assert_true(json_real_value(json_object_get(a3, "progress")) == 1.0);
  assert_true(strlen(json_string_value(json_object_get(a3, "metric"))) > 0);
  assert_true(json_is_number(json_object_get(a3, "value")));
  assert_true(json_is_number(json_object_get(a3, "threshold")));
  assert_string_equal(json_string_value(json_object_get(b1, "verdict")), "queued");
  assert_true(json_real_value(json_object_get(b1, "progress")) == 0.0);
  json_decref(doc);
  assert_non_null(snap.metrics);
  assert_non_null(strstr(snap.metrics, "\"qins_codes\""));
  assert_non_null(strstr(snap.metrics, "\"qins_recon_error\""));
  qins_monitor_snapshot_free(&snap);

  const char *exe = getenv("QINS_EXE");
  assert_non_null(exe);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s gate A3 --model %s --quick --out %s --dashboard 127.0.0.1:0", exe,
           test_shared_path("models/stories260K/stories260K.bin"), out_dir);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  char line[512];
  int url = 0, result = 0;
  while (fgets(line, sizeof line, f)) {
    url |= !strncmp(line, "dashboard: http://127.0.0.1:", 28);
    result |= !strncmp(line, "A3: ", 4);
  }
  assert_int_equal(pclose(f), 0);
  assert_true(url);
  assert_true(result);
}

int main(int argc, char **argv) {
  test_seed();
  out_dir = argc > 1 ? argv[1] : "reports-ci";
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_all_gates), cmocka_unit_test(test_pipeline_policy),
                                     cmocka_unit_test(test_gate_dashboard)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
