/* `qins train CONFIG.yaml [--set k=v]... [--resume CKPT]`: the training loop (core/train/trainer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/train/trainer.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f, "usage: qins train CONFIG.yaml [--set key.path=value]... [--resume CKPT_DIR] [--quiet]\n"
             "  trains as the config says (run/data/model/optim sections; docs/training.md);\n"
             "  writes OUT_DIR/train_log.jsonl and OUT_DIR/ckpt-NNNNNN/ (HF Llama folder + optimizer state)\n"
             "  --resume continues a checkpoint exactly (same config: weights, moments, data position)\n");
}

int cmd_train(int argc, char **argv) {
  const char *config = NULL, *resume = NULL;
  const char **sets = calloc((size_t)argc, sizeof *sets);
  int n_sets = 0, quiet = 0;
  if (!sets) return qins_cli_fail(qins_error_set(QINS_ENOMEM, "no memory"));
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--set") && i + 1 < argc) sets[n_sets++] = argv[++i];
    else if (!strcmp(a, "--resume") && i + 1 < argc) resume = argv[++i];
    else if (!strcmp(a, "--quiet")) quiet = 1;
    else if (a[0] != '-' && !config) config = a;
    else {
      usage(stderr);
      free(sets);
      return qins_cli_fail(qins_error_set(QINS_EINVAL, "train: unexpected argument '%s'", a));
    }
  }
  if (!config) {
    usage(stderr);
    free(sets);
    return qins_cli_fail(qins_error_set(QINS_EINVAL, "train: a CONFIG.yaml is required"));
  }
  qins_train_opts o = {config, sets, n_sets, resume, quiet ? NULL : stderr};
  qins_train_result r;
  int rc = qins_train_run(&o, &r);
  free(sets);
  if (rc) return qins_cli_fail(rc);
  printf("{\"steps\": %lld, \"loss\": %.6f, \"eval_loss\": %.6f, \"eval_ppl\": %.4f, \"tokens_per_s\": %.1f, "
         "\"checkpoint\": \"%s\"}\n",
         (long long)r.steps, r.last_loss, r.eval_loss, r.eval_ppl, r.tokens_per_s, r.last_checkpoint);
  return 0;
}
