/* `qins gate NAME`: run one of the plan's gates (or all) and write reports/NAME.{json,md,svg}. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/gates.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins gate NAME|all --model PATH [--set key=value ...] [--backend B] [--out DIR]\n"
          "                 [--gates DIR] [--tokenizer PATH] [--quick]\n\n"
          "Runs a gate of the plan (QINS.md section 7): A1 A2 A3 A4 A5 B1 B2 B3 B4 B5 C1, with its parameters\n"
          "from DIR/NAME.yaml (default pipelines/gates), and writes OUT/NAME.json, .md and .svg (default\n"
          "reports/). --set overrides a key of the gate YAML (e.g. --set steps=64 --set policy.format=qins6).\n"
          "--quick applies the YAML's quick: block (short CI runs). A gate that cannot run on the model or\n"
          "backend reports verdict not-run with the reason. Exit: 0 when every gate ran and wrote its\n"
          "report (whatever the verdicts), 1 on failure, 2 on bad usage/input.\n");
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
  if (!name || !o.model_path) {
    usage(stderr);
    return 2;
  }
  o.sets = sets;
  int all = !strcmp(name, "all");
  int worst = 0;
  for (int i = 0; all ? qins_gate_names[i] != NULL : i < 1; i++) {
    const char *g = all ? qins_gate_names[i] : name;
    char verdict[32] = "";
    int rc = qins_gate_run(g, &o, verdict, sizeof verdict);
    if (rc) {
      int code = qins_cli_fail(rc);
      if (!all) return code;
      if (code > worst) worst = code;
      continue;
    }
    printf("%s: %s -> %s/%s.{json,md,svg}\n", g, verdict, o.out_dir ? o.out_dir : "reports", g);
    fflush(stdout);
  }
  return worst;
}
