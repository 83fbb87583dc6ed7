/* Tokenizers: Hugging Face tokenizer.json (BPE), GPT-2 encoder.json + vocab.bpe, llama2.c tokenizer.bin. */
#ifndef QINS_TOKENIZER_H
#define QINS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct qins_tokenizer qins_tokenizer;

/* What a tokenizer was loaded from. */
typedef enum qins_tokenizer_kind {
  QINS_TOK_LLAMA2C = 1, /* llama2.c tokenizer.bin (scores, greedy pair merging, run.c semantics) */
  QINS_TOK_HF = 2,      /* Hugging Face tokenizer.json, model type BPE */
  QINS_TOK_GPT2 = 3,    /* original GPT-2 encoder.json + vocab.bpe */
} qins_tokenizer_kind;

/* Encode flags. Passing `true` (1) means "add the post-processor's special tokens" (BOS). */
enum {
  QINS_TOK_ADD_SPECIAL = 1,   /* add BOS/EOS as the post-processor says (llama2.c: BOS=1) */
  QINS_TOK_PARSE_SPECIAL = 2, /* recognise special added tokens ("<|begin_of_text|>") in the text;
                                 non-special added tokens are always recognised, as in HF */
};

/* Decode flags (qins_tokenizer_decode_ex). */
enum {
  QINS_TOK_KEEP_SPECIAL = 1, /* also render special tokens (BOS/EOS/...); default skips them */
};

/* Open a tokenizer, detecting the kind:
 *   - a folder: tokenizer.json, else encoder.json + vocab.bpe, else tokenizer.bin inside it;
 *   - encoder.json or vocab.bpe: the GPT-2 pair (the other file must be beside it);
 *   - any other *.json / a file starting with '{': Hugging Face tokenizer.json;
 *   - anything else: llama2.c tokenizer.bin, vocab size taken from the file length.
 * Bad files give QINS_EINPUT with the file named (and JSON line/column). */
int qins_tokenizer_open(const char *path, qins_tokenizer **out);
/* llama2.c tokenizer.bin with a known vocab size (0: read tokens until the end of the file). */
int qins_tokenizer_open_llama2c(const char *path, int32_t vocab_size, qins_tokenizer **out);
void qins_tokenizer_close(qins_tokenizer *tok);

/* Encode NUL-terminated UTF-8 text. *ids is allocated with malloc (free it with free());
 * *n is the count. Thread-safe on one tokenizer. Invalid UTF-8 is accepted: byte-level and
 * byte-fallback tokenizers encode the raw bytes. */
int qins_tokenizer_encode(const qins_tokenizer *tok, const char *text, int flags, int32_t **ids,
                          size_t *n);
/* Same with an explicit length (text may hold NUL bytes; llama2.c stops at the first NUL). */
int qins_tokenizer_encode_n(const qins_tokenizer *tok, const char *text, size_t len, int flags,
                            int32_t **ids, size_t *n);

/* Decode ids to text (malloc'd, NUL-terminated; free with free()). Special tokens are skipped.
 * The result is the raw bytes the tokens stand for: where HF would print U+FFFD for bytes that
 * are not valid UTF-8, qins returns the bytes themselves. Ids out of range: QINS_EINPUT. */
int qins_tokenizer_decode(const qins_tokenizer *tok, const int32_t *ids, size_t n, char **text);
/* With flags (QINS_TOK_KEEP_SPECIAL) and the byte length (*len may be NULL). */
int qins_tokenizer_decode_ex(const qins_tokenizer *tok, const int32_t *ids, size_t n, int flags,
                             char **text, size_t *len);
/* Streaming: the bytes token `id` adds after `prev_id` (-1 at the start), like llama2.c run.c's
 * decode: a leading space is dropped at the start or after BOS (where the tokenizer adds a
 * prefix space), <0xXX> tokens give their byte, byte-level tokens give their raw bytes (possibly
 * part of a UTF-8 character: print bytes as they come). Special tokens give "". Writes up to
 * cap-1 bytes plus a NUL into buf; returns the byte count or a negative QINS_E* code. */
int qins_tokenizer_decode_piece(const qins_tokenizer *tok, int32_t prev_id, int32_t id, char *buf,
                                size_t cap);

/* The token's vocabulary string as stored ("Ġworld", "▁world", "<0x0A>", " world"), or NULL for
 * an id out of range or unused. */
const char *qins_tokenizer_token_text(const qins_tokenizer *tok, int32_t id);
/* The id of an exact vocabulary string (model vocab or added tokens), or -1. */
int32_t qins_tokenizer_token_id(const qins_tokenizer *tok, const char *text);
/* Number of ids (max id + 1, added tokens included). */
int32_t qins_tokenizer_vocab_size(const qins_tokenizer *tok);
/* BOS / EOS ids, -1 if the tokenizer has none. HF: tokenizer_config.json beside tokenizer.json
 * when present, else the post-processor's first special token / well-known names. */
int32_t qins_tokenizer_bos_id(const qins_tokenizer *tok);
int32_t qins_tokenizer_eos_id(const qins_tokenizer *tok);
int qins_tokenizer_is_special(const qins_tokenizer *tok, int32_t id);
qins_tokenizer_kind qins_tokenizer_get_kind(const qins_tokenizer *tok);
const char *qins_tokenizer_kind_name(qins_tokenizer_kind kind);

#endif
