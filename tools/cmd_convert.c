/* `qins convert`: a model plus a coverage policy YAML into a safetensors folder of QINS codes. */
#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/error.h"
#include "core/llm/convert.h"
#include "core/model/model.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f, "usage: qins convert --model PATH --policy POLICY.yaml --out DIR [--set key=value ...]\n\n"
             "Encodes the paths POLICY.yaml's `policy:` map covers (QINS.md section 5; docs/convert.md) and writes\n"
             "DIR/model.safetensors (codes U8, scales F32, float weights as they were; metadata names format,\n"
             "alpha mode and coverage), DIR/config.json and the tokenizer. Load DIR like any model.\n");
}

int cmd_convert(int argc, char **argv) {
  const char *model = NULL, *policy = NULL, *out = NULL, *sets[32];
  int n_sets = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "qins convert: %s needs a value\n", argv[i]);
      return 2;
    }
    if (!strcmp(argv[i], "--model")) model = argv[++i];
    else if (!strcmp(argv[i], "--policy")) policy = argv[++i];
    else if (!strcmp(argv[i], "--out")) out = argv[++i];
    else if (!strcmp(argv[i], "--set") && n_sets < 32) sets[n_sets++] = argv[++i];
    else {
      fprintf(stderr, "qins convert: unknown option %s\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (!model || !policy || !out) {
    usage(stderr);
    return 2;
  }
  qins_cfg *cfg = NULL;
  qins_model *m = NULL;
  int rc = qins_cfg_load_file(policy, &cfg);
  for (int i = 0; !rc && i < n_sets; i++) rc = qins_cfg_set(cfg, sets[i]);
  if (!rc) rc = qins_model_open(model, &m);
  qins_policy pol;
  if (!rc) {
    qins_cfg *node = qins_cfg_get(cfg, "policy");
    if (!node) rc = qins_error_set(QINS_EINPUT, "%s: no `policy:` map", policy);
    else rc = qins_policy_parse(node, m->cfg.n_layers, &pol);
  }
  if (!rc) rc = qins_convert(m, &pol, out);
  if (!rc) {
    char d[512];
    qins_policy_describe(&pol, d, sizeof d);
    printf("wrote %s/model.safetensors (%s)\n", out, d);
  }
  qins_model_close(m);
  qins_cfg_free(cfg);
  return rc ? qins_cli_fail(rc) : 0;
}
