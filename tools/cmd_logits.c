/* `qins logits`: one forward over given ids, raw f32 logits [len(ids), vocab] to a file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/llm/llm.h"
#include "core/model/model.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins logits --model PATH --ids 1,2,3 --out FILE.f32 [--backend B]\n"
          "  One forward over all ids; writes little-endian float32 logits [len(ids), vocab].\n"
          "  --backend: cpu, cpu:T, vk, vk:N, auto (default auto)\n");
}

int cmd_logits(int argc, char **argv) {
  const char *model_path = NULL, *ids_text = NULL, *out_path = NULL, *backend = "auto";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "qins logits: unknown option or missing value: %s\n", a);
      usage(stderr);
      return 2;
    }
    if (!strcmp(a, "--model")) model_path = argv[++i];
    else if (!strcmp(a, "--ids")) ids_text = argv[++i];
    else if (!strcmp(a, "--out")) out_path = argv[++i];
    else if (!strcmp(a, "--backend")) backend = argv[++i];
    else {
      fprintf(stderr, "qins logits: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (!model_path || !ids_text || !out_path) {
    fprintf(stderr, "qins logits: --model, --ids and --out are required\n");
    usage(stderr);
    return 2;
  }
  int32_t *ids = NULL;
  int n = 0;
  int rc = cli_parse_ids(ids_text, &ids, &n);
  if (rc) return qins_cli_fail(rc);
  qins_model *m = NULL;
  qins_backend *be = NULL;
  qins_llm *l = NULL;
  float *logits = NULL;
  if ((rc = qins_model_open(model_path, &m))) goto done;
  if ((rc = qins_backend_create(backend, &be))) goto done;
  qins_llm_options opt = {n, 0};
  if ((rc = qins_llm_create(m, be, &opt, &l))) goto done;
  size_t count = (size_t)n * (size_t)qins_llm_vocab(l);
  logits = malloc(count * sizeof(float));
  if (!logits) {
    rc = qins_error_set(QINS_ENOMEM, "no memory for %zu logits", count);
    goto done;
  }
  if ((rc = qins_llm_forward(l, ids, n, 1, logits, NULL))) goto done;
  FILE *f = fopen(out_path, "wb");
  if (!f) {
    rc = qins_error_set(QINS_EIO, "%s: cannot create", out_path);
    goto done;
  }
  /* the engine only targets little-endian hosts, so the in-memory floats are the file format */
  size_t wrote = fwrite(logits, sizeof(float), count, f);
  if (fclose(f) != 0 || wrote != count) rc = qins_error_set(QINS_EIO, "%s: write failed", out_path);
done:
  free(logits);
  free(ids);
  qins_llm_destroy(l);
  if (be) qins_backend_destroy(be);
  if (m) qins_model_close(m);
  return rc ? qins_cli_fail(rc) : 0;
}
