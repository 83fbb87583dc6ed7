/* `qins gate NAME`: run one of the plan's gates (or all) and write reports/NAME.{json,md,svg}. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/gate_board.h"
#include "core/eval/gates.h"
#include "tools/commands.h"
#include "tools/live_dashboard.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins gate NAME|all --model PATH [--set key=value ...] [--backend B] [--out DIR]\n"
          "                 [--gates DIR] [--tokenizer PATH] [--quick]\n\n"
          "Runs a gate of the plan (QINS.md section 7): A1 A2 A3 A4 A5 B1 B2 B3 B4 B5 C1, with its parameters\n"
          "(C3, the training pilot, needs no --model: it runs `qins train --pilot` on pipelines/train/pilot.yaml)\n"
          "from DIR/NAME.yaml (default pipelines/gates), and writes OUT/NAME.json, .md and .svg (default\n"
          "reports/). --set overrides a key of the gate YAML (e.g. --set steps=64 --set policy.format=qins6).\n"
          "--quick applies the YAML's quick: block (short CI runs). A gate that cannot run on the model or\n"
          "backend reports verdict not-run with the reason. Exit: 0 when every gate ran and wrote its\n"
          "report (whatever the verdicts), 1 on failure, 2 on bad usage/input.\n\n"
          "Dashboard (docs/dashboard.md): gate progress and verdicts, and the QINS code / error histograms of\n"
          "every policy applied:\n%s",
          live_dashboard_help());
}

static char *prov_gates(void *ctx) {
  (void)ctx;
  return qins_gate_board_json();
}

/* The C3 report's measured increase and bar (PREFIX.json, written by the pilot). */
static void read_c3_verdict(const char *prefix, double *inc, double *bar) {
  char path[1100];
  snprintf(path, sizeof path, "%s.json", prefix);
  json_t *j = json_load_file(path, 0, NULL);
  if (!j) return;
  *inc = json_number_value(json_object_get(j, "ppl_increase_qins_vs_fp"));
  json_t *b = json_object_get(j, "bar_ppl_increase");
  if (b) *bar = json_number_value(b);
  json_decref(j);
}

int cmd_gate(int argc, char **argv) {
  qins_gate_opts o;
  memset(&o, 0, sizeof o);
  const char *sets[64];
  const char *name = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--quick")) {
      o.quick = 1;
      continue;
    }
    int drc = live_dashboard_arg(argc, argv, &i); /* --dashboard [ADDR:PORT] and friends */
    if (drc < 0) return qins_cli_fail(drc);
    if (drc) continue;
    if (a[0] == '-' && a[1] == '-') {
      if (i + 1 >= argc) {
        fprintf(stderr, "qins gate: %s needs a value\n", a);
        return 2;
      }
      const char *v = argv[++i];
      if (!strcmp(a, "--model")) o.model_path = v;
      else if (!strcmp(a, "--backend")) o.backend = v;
      else if (!strcmp(a, "--out")) o.out_dir = v;
      else if (!strcmp(a, "--gates")) o.gate_dir = v;
      else if (!strcmp(a, "--tokenizer")) o.tokenizer = v;
      else if (!strcmp(a, "--set")) {
        if (o.n_sets >= 64) {
          fprintf(stderr, "qins gate: too many --set\n");
          return 2;
        }
        sets[o.n_sets++] = v;
      } else {
        fprintf(stderr, "qins gate: unknown option %s\n", a);
        usage(stderr);
        return 2;
      }
      continue;
    }
    if (name) {
      fprintf(stderr, "qins gate: one gate name (got %s and %s)\n", name, a);
      return 2;
    }
    name = a;
  }
  if (name && !strcmp(name, "C3")) {
    /* C3 trains from scratch (no --model): the pilot of `qins train --pilot` on DIR/C3.yaml if
     * --gates is given, else pipelines/train/pilot.yaml; --quick shrinks it to a CI-sized run */
    char cfg[1024], prefix[1024];
    snprintf(cfg, sizeof cfg, "%s", o.gate_dir ? o.gate_dir : "pipelines/train/pilot.yaml");
    if (o.gate_dir) snprintf(cfg, sizeof cfg, "%s/C3.yaml", o.gate_dir);
    snprintf(prefix, sizeof prefix, "%s/C3", o.out_dir ? o.out_dir : "reports");
    static const char *quick[] = {"run.out_dir=runs/pilot-quick", "run.steps=40", "run.batch=4", "run.seq=32",
                                  "run.eval_every=20", "run.eval_windows=8", "model.dim=32", "model.layers=2",
                                  "model.heads=2", "model.kv_heads=1", "model.ffn=64", "model.seq=64",
                                  "optim.lr=1e-2", "optim.qins_lr_scale=3"};
    const char *all_sets[64 + 14];
    int n = 0;
    if (o.quick)
      for (int i = 0; i < 14; i++) all_sets[n++] = quick[i];
    for (int i = 0; i < o.n_sets; i++) all_sets[n++] = sets[i];
    /* dashboard: C3 on the gate board (running, then its verdict) and the three runs' curves */
    qins_gate_board_reset();
    qins_gate_board_begin("C3", 1);
    qins_monitor_providers prov = {.gates_json = prov_gates, .training_json = qins_cli_pilot_training_json};
    live_dashboard_start("gate", &prov);
    int rc = qins_cli_train_pilot(cfg, all_sets, n, prefix, 0, 1, o.quick ? 2 : 1);
    if (!rc) {
      double inc = 0, bar = 0.03;
      read_c3_verdict(prefix, &inc, &bar);
      qins_gate_board_check("C3", "ppl_increase", inc, bar, inc <= bar);
      qins_gate_board_finish("C3", inc <= bar ? "pass" : "fail");
      printf("C3: %s -> %s.{json,md,svg}\n", inc <= bar ? "pass" : "fail", prefix);
      fflush(stdout);
    } else {
      qins_gate_board_finish("C3", "not-run");
    }
    live_dashboard_finish();
    return rc ? qins_cli_fail(rc) : 0;
  }
  if (!name || !o.model_path) {
    usage(stderr);
    return 2;
  }
  o.sets = sets;
  int all = !strcmp(name, "all");
  int worst = 0;
  qins_gate_board_reset();
  for (int i = 0; all ? qins_gate_names[i] != NULL : i < 1; i++) qins_gate_board_queue(all ? qins_gate_names[i] : name);
  qins_monitor_providers prov = {.gates_json = prov_gates};
  live_dashboard_start("gate", &prov);
  for (int i = 0; all ? qins_gate_names[i] != NULL : i < 1; i++) {
    const char *g = all ? qins_gate_names[i] : name;
    char verdict[32] = "";
    int rc = qins_gate_run(g, &o, verdict, sizeof verdict);
    if (rc) {
      int code = qins_cli_fail(rc);
      if (!all) {
        live_dashboard_finish();
        return code;
      }
      if (code > worst) worst = code;
      continue;
    }
    printf("%s: %s -> %s/%s.{json,md,svg}\n", g, verdict, o.out_dir ? o.out_dir : "reports", g);
    fflush(stdout);
  }
  live_dashboard_finish();
  return worst;
}
