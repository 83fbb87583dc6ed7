/* The CLI's view of a tokenizer: open beside a model, encode a prompt, decode one token's text. */
#ifndef QINS_TOOLS_GEN_TOKENIZER_H
#define QINS_TOOLS_GEN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/model/model.h"

typedef struct gen_tok gen_tok;

int gen_tok_open(const char *path, const qins_model *m, gen_tok **out);
void gen_tok_close(gen_tok *t);
/* ids = (BOS if add_bos) + encode(text); free with free(). */
int gen_tok_encode(gen_tok *t, const char *text, int add_bos, int32_t **ids, int *n);
/* Text bytes of `id` following `prev` (some tokenizers drop a leading space after BOS);
 * returns the byte count written (< n) or a negative status. */
int gen_tok_piece(gen_tok *t, int32_t prev, int32_t id, char *buf, size_t n);

#endif
