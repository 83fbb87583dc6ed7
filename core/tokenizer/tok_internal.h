/* Internal tokenizer structures shared by the files of core/tokenizer/ (not a public header). */
#ifndef QINS_TOK_INTERNAL_H
#define QINS_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/mem.h"
#include "core/tokenizer/tokenizer.h"

qins_mem_owner *tok_owner(void);

/* ---- growable byte buffer and id vector (hash.c) ---- */
typedef struct tok_buf {
  char *p;
  size_t len, cap;
} tok_buf;
int tok_buf_put(tok_buf *b, const void *data, size_t n);
int tok_buf_putc(tok_buf *b, char c);
void tok_buf_free(tok_buf *b);

typedef struct tok_ids {
  int32_t *p;
  size_t len, cap;
} tok_ids;
int tok_ids_push(tok_ids *v, int32_t id);

/* ---- string -> id hash table (open addressing; keys point into storage the owner keeps) ---- */
typedef struct tok_strmap {
  const char **keys;
  uint32_t *lens;
  int32_t *vals;
  size_t cap, count; /* cap is a power of two */
} tok_strmap;
int tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Insert unless present (first wins, as duplicate keys in a vocab must not move an id). */
int tok_strmap_put(tok_strmap *m, const char *key, uint32_t len, int32_t val);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len); /* -1 if absent */

/* ---- (id, id) -> (rank, merged id) hash table ---- */
typedef struct tok_pairmap {
  uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
  float *ranks;
  int32_t *vals;
  size_t cap, count;
} tok_pairmap;
int tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
/* First insertion of a pair wins (merges listed earlier have priority). */
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, float rank, int32_t merged);
int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, float *rank, int32_t *merged);

/* ---- pipeline steps ---- */
typedef enum { NORM_PREPEND, NORM_REPLACE, NORM_STRIP, NORM_NFC, NORM_NFD } norm_kind;
typedef struct tok_norm {
  norm_kind kind;
  char *a, *b; /* prepend: a; replace: a -> b */
  int left, right;
} tok_norm;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
typedef enum { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } split_behavior;
typedef struct tok_pre {
  pre_kind kind;
  void *re; /* pcre2_code_8 * for SPLIT and BYTELEVEL with use_regex */
  split_behavior behavior;
  int invert;
  int add_prefix_space; /* ByteLevel */
  int use_regex;        /* ByteLevel */
  char *replacement;    /* Metaspace */
  int prepend;          /* Metaspace: 0 never, 1 always, 2 first */
  int split;            /* Metaspace */
} tok_pre;

typedef enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_BYTELEVEL, DEC_METASPACE } dec_kind;
typedef struct tok_dec {
  dec_kind kind;
  char *a, *b;       /* replace a -> b; metaspace replacement in a */
  int start, stop;   /* strip counts */
  int prepend;       /* metaspace: strip first space unless prepend scheme is "never" */
} tok_dec;

typedef struct tok_added {
  char *text;
  uint32_t len;
  int32_t id;
  int special, lstrip, rstrip, single_word;
  char *shadow; /* the model vocab's own string for this id when the added token renamed it */
} tok_added;

struct qins_tokenizer {
  qins_tokenizer_kind kind;
  char *path;
  int32_t n_vocab;   /* max id + 1 */
  char **tok;        /* id -> NUL-terminated vocab string (NULL for holes) */
  uint32_t *tok_len;
  uint8_t *special;  /* skipped by decode */
  float *scores;     /* llama2.c only */
  tok_strmap vocab;  /* model vocab */
  tok_strmap all;    /* model vocab + added tokens (token_id lookups) */
  tok_pairmap merges;
  int32_t unk_id;
  int byte_fallback, ignore_merges, fuse_unk;
  int32_t byte_ids[256]; /* <0xXX> tokens, -1 when absent */
  tok_added *added;
  int n_added;
  uint8_t added_first[256]; /* first bytes of added tokens: most positions need no matching */
  tok_norm *norm;
  int n_norm;
  tok_pre *pre;
  int n_pre;
  tok_dec *dec;
  int n_dec;
  int has_decoder;
  int32_t *post_pre, *post_post; /* ids the post-processor puts before / after the sequence */
  int n_post_pre, n_post_post;
  int32_t bos, eos;
};

/* Allocate the id tables for n ids (tok, tok_len, special; scores if with_scores). */
int tok_alloc_ids(qins_tokenizer *t, int32_t n, int with_scores);
/* Set the string of id (copied). */
int tok_set_token(qins_tokenizer *t, int32_t id, const char *s, size_t len);
/* Fill byte_ids from the vocab's "<0xXX>" tokens. */
void tok_find_byte_tokens(qins_tokenizer *t);

/* bpe.c: BPE over initial symbols using t->merges; appends to out. */
int tok_bpe_merge(const qins_tokenizer *t, const int32_t *syms, size_t n, tok_ids *out);
/* bpe.c: HF BPE model on one pre-token (chars -> vocab / byte fallback / unk, then merges). */
int tok_bpe_word(const qins_tokenizer *t, const char *w, size_t len, tok_ids *out);

/* byte_level.c */
int tok_bytelevel_encode(const char *s, size_t len, tok_buf *out);
/* Append the bytes a byte-level string stands for; chars outside the map are copied as is. */
int tok_bytelevel_decode(const char *s, size_t len, tok_buf *out);
/* The GPT-2 split regex (ByteLevel use_regex). */
extern const char tok_gpt2_pattern[];

/* pretokenize.c: a list of pieces */
typedef struct tok_pieces {
  tok_buf *p;
  size_t n, cap;
  tok_buf scratch;
} tok_pieces;
void tok_pieces_free(tok_pieces *l);
int tok_pieces_add(tok_pieces *l, const char *s, size_t len);
void *tok_regex_compile(const char *pattern, int literal, const char *file, const char *what);
void tok_regex_free(void *re);
int tok_pretokenize(const qins_tokenizer *t, const char *s, size_t len, int first, tok_pieces *out);

/* nfc.c: canonical composition (NFC) or decomposition (NFD) of UTF-8; invalid bytes pass through. */
int tok_unicode_normalize(const char *s, size_t len, int compose, tok_buf *out);

/* normalize.c */
int tok_normalize(const qins_tokenizer *t, const char *s, size_t len, tok_buf *out);

/* Utilities */
size_t tok_utf8_len(const unsigned char *s, size_t avail); /* bytes of the char at s (1 if invalid) */

/* Loaders (return 0 or QINS_E*, t already allocated and zeroed by the caller). */
int tok_load_llama2c(qins_tokenizer *t, const char *path, int32_t vocab_size);
int tok_load_hf(qins_tokenizer *t, const char *path);
int tok_load_gpt2(qins_tokenizer *t, const char *encoder_path, const char *bpe_path);
/* llama2c_tok.c */
int tok_llama2c_encode(const qins_tokenizer *t, const char *text, size_t len, tok_ids *out);

#endif
