/* Adapter from the CLI to the tokenizers (core/tokenizer): placeholder until they land. */
#include "tools/gen_tokenizer.h"

#include "core/error.h"

int gen_tok_open(const char *path, const qins_model *m, gen_tok **out) {
  *out = NULL;
  return qins_error_set(QINS_EUNSUPPORTED, "%s: tokenizers are not built into this qins yet; use --ids", path);
}
void gen_tok_close(gen_tok *t) { (void)t; }
int gen_tok_encode(gen_tok *t, const char *text, int add_bos, int32_t **ids, int *n) {
  return qins_error_set(QINS_EUNSUPPORTED, "no tokenizer");
}
int gen_tok_piece(gen_tok *t, int32_t prev, int32_t id, char *buf, size_t n) {
  return qins_error_set(QINS_EUNSUPPORTED, "no tokenizer");
}
