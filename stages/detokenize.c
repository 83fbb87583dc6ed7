/* Stage type `detokenize`: generated ids -> the text they add (streaming pieces, as `qins
 * generate` prints them: the previous token decides a leading space). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/model_shared.h"

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  qins_stage_model *m;
  int rc = qins_stage_model_get(ctx, QINS_NEED_TOK, &m);
  st->priv = m;
  return rc;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  qins_stage_model *m = st->priv;
  if (in->dtype != QINS_DT_I32) return qins_error_set(QINS_EINPUT, "detokenize %s: expected i32 ids", st->ctx.stage_name);
  int64_t n = in->ndim ? in->shape[0] : 0;
  size_t cap = 64 * (size_t)n + 1, len = 0;
  char *buf = malloc(cap + 64);
  if (!buf) return qins_error_set(QINS_ENOMEM, "out of memory");
  int32_t prev = in->last_id;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = ((const int32_t *)in->data)[i];
    int k = qins_tokenizer_decode_piece(m->tok, prev, id, buf + len, cap + 64 - len);
    if (k < 0) {
      free(buf);
      return qins_error_wrap(k, "detokenize %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
    }
    len += (size_t)k;
    prev = id;
  }
  int rc = qins_msg_output_text(out, in, buf, len);
  free(buf);
  return rc ? rc : 1;
}

const qins_stage_type qins_stage_detokenize = {
    .name = "detokenize",
    .summary = "ids -> text pieces (pipeline tokenizer)",
    .in_port = "i32[T]",
    .out_port = "u8[N]",
    .init = init,
    .forward = fwd,
};
