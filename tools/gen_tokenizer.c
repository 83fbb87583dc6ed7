/* Adapter from `qins generate` to core/tokenizer: opening beside a model, encoding, streaming pieces. */
#include "tools/gen_tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tokenizer.h"

struct gen_tok {
  qins_tokenizer *tok;
};

int gen_tok_open(const char *path, const qins_model *m, gen_tok **out) {
  *out = NULL;
  gen_tok *g = calloc(1, sizeof *g);
  if (!g) return qins_error_set(QINS_ENOMEM, "out of memory");
  size_t l = strlen(path);
  int rc;
  /* a llama2.c tokenizer.bin does not record its vocabulary size: the model's says how many */
  if (l > 4 && strcmp(path + l - 4, ".bin") == 0 && m && strcmp(m->format, "llama2c") == 0)
    rc = qins_tokenizer_open_llama2c(path, m->cfg.vocab_size, &g->tok);
  else
    rc = qins_tokenizer_open(path, &g->tok);
  if (rc) {
    free(g);
    return rc;
  }
  *out = g;
  return 0;
}

void gen_tok_close(gen_tok *t) {
  if (!t) return;
  qins_tokenizer_close(t->tok);
  free(t);
}

int gen_tok_encode(gen_tok *t, const char *text, int add_bos, int32_t **ids, int *n) {
  size_t count = 0;
  int rc = qins_tokenizer_encode(t->tok, text, add_bos ? QINS_TOK_ADD_SPECIAL : 0, ids, &count);
  if (rc) return rc;
  if (count > (size_t)INT32_MAX) {
    free(*ids);
    *ids = NULL;
    return qins_error_set(QINS_EINPUT, "prompt too long");
  }
  *n = (int)count;
  return 0;
}

int gen_tok_piece(gen_tok *t, int32_t prev, int32_t id, char *buf, size_t n) {
  return qins_tokenizer_decode_piece(t->tok, prev, id, buf, n);
}
