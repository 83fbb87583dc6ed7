/* Stage type `tokenize`: prompt text -> token ids with the pipeline's tokenizer (BOS as the
 * tokenizer's post-processor says, like `qins generate --prompt`). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"special", QINS_OPT_BOOL, "true", 1, 0, "add the tokenizer's special tokens (BOS)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  qins_stage_model *m;
  int rc = qins_stage_model_get(ctx, QINS_NEED_TOK, &m);
  if (rc) return rc;
  st->priv = m;
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  qins_stage_model *m = st->priv;
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = qins_tokenizer_encode_n(m->tok, in->data, in->nbytes, qins_stage_opt_bool(st, "special") ? QINS_TOK_ADD_SPECIAL : 0,
                                   &ids, &n);
  if (rc) return rc;
  if (n == 0) {
    free(ids);
    return qins_error_set(QINS_EINPUT, "tokenize: request %llu: the prompt encodes to no tokens", (unsigned long long)in->req);
  }
  int64_t T = (int64_t)n;
  int32_t *o = qins_msg_output(out, in, QINS_DT_I32, 1, &T);
  if (!o) {
    free(ids);
    return QINS_ENOMEM;
  }
  memcpy(o, ids, n * sizeof(int32_t));
  free(ids);
  out->pos = 0;
  out->last_id = -1;
  return 1;
}

const qins_stage_type qins_stage_tokenize = {
    .name = "tokenize",
    .summary = "prompt text -> token ids (pipeline tokenizer)",
    .options = opts,
    .in_port = "u8[N]",
    .out_port = "i32[T]",
    .init = init,
    .forward = fwd,
};
