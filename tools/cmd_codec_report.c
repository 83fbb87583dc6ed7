/* `qins codec-report`: the A1 report, every weight of a model round-tripped through every storage format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/codec_report.h"
#include "core/error.h"
#include "core/model/model.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins codec-report --model PATH [--json] [--formats LIST] [--alpha MODE] [--backend SPEC] [--check]\n"
          "\n"
          "Encodes every f32/f16/bf16 weight of the model (llama2.c .bin, Hugging Face folder or .safetensors)\n"
          "into each storage format and back, and prints per tensor and format: cosine, max abs error,\n"
          "max relative error |err|/max(1,|x|), NMSE, fraction bit-exact, bytes (codes + scales), then a\n"
          "summary per format and the A1 gate on qins-f32 (cosine >= 0.999999, err <= 1e-6 * max(1,|x|)).\n"
          "\n"
          "  --formats LIST  comma-separated (default qins-f32,qins8,qins6,int8-row,int8-block32,f16,bf16)\n"
          "  --alpha MODE    mse (default), absmax, std:C, fixed:V  (per-row alpha of the QINS formats)\n"
          "  --backend SPEC  cpu (default), cpu:T, vk, vk:N\n"
          "  --json          print one JSON document instead of the table\n"
          "  --check         exit 1 when A1 fails (default: exit 0 whenever the report was made)\n"
          "\n"
          "exit status: 0 report made, 1 failure (or A1 failed with --check), 2 bad usage or bad model file\n");
}

int cmd_codec_report(int argc, char **argv) {
  const char *model = NULL, *formats = NULL, *alpha = "mse", *backend = "cpu";
  int json = 0, check = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = 1;
    } else if (!strcmp(a, "--check")) {
      check = 1;
    } else if (!strcmp(a, "--model") || !strcmp(a, "--formats") || !strcmp(a, "--alpha") || !strcmp(a, "--backend")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "qins codec-report: %s needs a value\n", a);
        return 2;
      }
      const char *v = argv[++i];
      if (!strcmp(a, "--model")) model = v;
      else if (!strcmp(a, "--formats")) formats = v;
      else if (!strcmp(a, "--alpha")) alpha = v;
      else backend = v;
    } else {
      fprintf(stderr, "qins codec-report: unexpected argument '%s' (see qins codec-report --help)\n", a);
      return 2;
    }
  }
  if (!model) {
    fprintf(stderr, "qins codec-report: --model PATH is required\n");
    usage(stderr);
    return 2;
  }
  qins_codec_report_opts opts;
  memset(&opts, 0, sizeof opts);
  int rc;
  if (formats && (rc = qins_codec_report_parse_formats(formats, &opts))) return qins_cli_fail(rc);
  if ((rc = qins_alpha_spec_parse(alpha, &opts.alpha))) return qins_cli_fail(rc);

  qins_backend *be = NULL;
  if ((rc = qins_backend_create(backend, &be))) return qins_cli_fail(rc);
  qins_model *m = NULL;
  if ((rc = qins_model_open(model, &m))) {
    qins_backend_destroy(be);
    qins_cli_fail(rc);
    return 2; /* a missing or unreadable model is bad input too */
  }
  qins_codec_report *r = NULL;
  rc = qins_codec_report_model(be, m, &opts, &r);
  qins_model_close(m);
  qins_backend_destroy(be);
  if (rc) return qins_cli_fail(rc);
  if (json) {
    char *s = qins_codec_report_json(r);
    if (!s) {
      qins_codec_report_free(r);
      return qins_cli_fail(qins_error_set(QINS_ENOMEM, "codec-report: JSON output"));
    }
    printf("%s\n", s);
    free(s);
  } else {
    qins_codec_report_print(r, stdout);
  }
  int status = check && !r->a1_pass ? 1 : 0;
  qins_codec_report_free(r);
  return status;
}
