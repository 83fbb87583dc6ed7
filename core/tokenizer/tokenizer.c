/* Tokenizer front end: open (detect the format), the encode pipeline, accessors, close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

/* ---------------------------------------------------------------- tables */

int tok_alloc_ids(qins_tokenizer *t, int32_t n, int with_scores) {
  t->n_vocab = n;
  t->tok = qins_mem_calloc(tok_owner(), (size_t)n, sizeof *t->tok);
  t->tok_len = qins_mem_calloc(tok_owner(), (size_t)n, sizeof *t->tok_len);
  t->special = qins_mem_calloc(tok_owner(), (size_t)n, 1);
  if (with_scores) t->scores = qins_mem_calloc(tok_owner(), (size_t)n, sizeof *t->scores);
  if (!t->tok || !t->tok_len || !t->special || (with_scores && !t->scores)) return QINS_ENOMEM;
  return 0;
}

int tok_set_token(qins_tokenizer *t, int32_t id, const char *s, size_t len) {
  char *p = qins_mem_alloc(tok_owner(), len + 1);
  if (!p) return QINS_ENOMEM;
  memcpy(p, s, len);
  p[len] = 0;
  qins_mem_free(tok_owner(), t->tok[id]);
  t->tok[id] = p;
  t->tok_len[id] = (uint32_t)len;
  return 0;
}

void tok_find_byte_tokens(qins_tokenizer *t) {
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    t->byte_ids[b] = tok_strmap_get(&t->vocab, name, 6);
  }
}

/* ---------------------------------------------------------------- open / close */

static int is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* path with its last component replaced by name (or name inside path when it is a folder). */
static char *sibling(const char *path, const char *name, int inside) {
  size_t dl = inside ? strlen(path) : (size_t)(base_name(path) - path);
  char *out = malloc(dl + strlen(name) + 2);
  if (!out) return NULL;
  memcpy(out, path, dl);
  if (inside && dl && path[dl - 1] != '/') out[dl++] = '/';
  if (!inside && dl == 0) {
    strcpy(out, name);
    return out;
  }
  strcpy(out + dl, name);
  return out;
}

static int starts_with_brace(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  int c;
  do c = fgetc(f);
  while (c == ' ' || c == '\n' || c == '\r' || c == '\t');
  fclose(f);
  return c == '{';
}

static int open_common(const char *path, qins_tokenizer **out, qins_tokenizer **t) {
  *out = NULL;
  *t = qins_mem_calloc(tok_owner(), 1, sizeof **t);
  if (!*t) return QINS_ENOMEM;
  (*t)->path = qins_mem_strdup(tok_owner(), path);
  (*t)->unk_id = (*t)->bos = (*t)->eos = -1;
  for (int b = 0; b < 256; b++) (*t)->byte_ids[b] = -1;
  return (*t)->path ? 0 : QINS_ENOMEM;
}

/* The id tables cover the model vocab and added tokens; `all` answers token_id for both. */
static int finish(qins_tokenizer *t) {
  int rc = tok_strmap_init(&t->all, (size_t)t->n_vocab);
  for (int32_t i = 0; i < t->n_vocab && !rc; i++)
    if (t->tok[i]) rc = tok_strmap_put(&t->all, t->tok[i], t->tok_len[i], i);
  return rc;
}

int qins_tokenizer_open_llama2c(const char *path, int32_t vocab_size, qins_tokenizer **out) {
  if (!path || !out) return qins_error_set(QINS_EINVAL, "qins_tokenizer_open_llama2c: NULL argument");
  qins_tokenizer *t;
  int rc = open_common(path, out, &t);
  if (!rc) {
    t->kind = QINS_TOK_LLAMA2C;
    rc = tok_load_llama2c(t, path, vocab_size);
  }
  if (!rc) rc = finish(t);
  if (rc) {
    qins_tokenizer_close(t);
    return rc;
  }
  *out = t;
  return 0;
}

int qins_tokenizer_open(const char *path, qins_tokenizer **out) {
  if (!path || !out) return qins_error_set(QINS_EINVAL, "qins_tokenizer_open: NULL argument");
  *out = NULL;
  char *a = NULL, *b = NULL;
  int rc = 0, kind = 0;
  if (is_dir(path)) {
    if (is_file(a = sibling(path, "tokenizer.json", 1))) kind = QINS_TOK_HF;
    else {
      free(a);
      a = sibling(path, "encoder.json", 1);
      b = sibling(path, "vocab.bpe", 1);
      if (a && b && is_file(a) && is_file(b)) kind = QINS_TOK_GPT2;
      else {
        free(a);
        a = sibling(path, "tokenizer.bin", 1);
        if (a && is_file(a)) kind = QINS_TOK_LLAMA2C;
      }
    }
    if (!kind) {
      free(a);
      free(b);
      return qins_error_set(QINS_EINPUT, "%s: folder holds no tokenizer.json, encoder.json + vocab.bpe or tokenizer.bin", path);
    }
  } else if (!is_file(path)) {
    return qins_error_set(QINS_EINPUT, "%s: no such tokenizer file", path);
  } else if (strcmp(base_name(path), "encoder.json") == 0 || ends_with(path, ".bpe")) {
    kind = QINS_TOK_GPT2;
    int enc_given = strcmp(base_name(path), "encoder.json") == 0;
    a = enc_given ? strdup(path) : sibling(path, "encoder.json", 0);
    b = enc_given ? sibling(path, "vocab.bpe", 0) : strdup(path);
    if (a && b && (!is_file(a) || !is_file(b))) {
      rc = qins_error_set(QINS_EINPUT, "%s: the GPT-2 tokenizer needs %s beside it", path,
                          is_file(a) ? b : a);
      free(a);
      free(b);
      return rc;
    }
  } else if (ends_with(path, ".json") || starts_with_brace(path)) {
    kind = QINS_TOK_HF;
    a = strdup(path);
  } else {
    kind = QINS_TOK_LLAMA2C;
    a = strdup(path);
  }
  if (!a || (kind == QINS_TOK_GPT2 && !b)) {
    free(a);
    free(b);
    return qins_error_set(QINS_ENOMEM, "out of memory opening %s", path);
  }
  if (kind == QINS_TOK_LLAMA2C) {
    rc = qins_tokenizer_open_llama2c(a, 0, out);
  } else {
    qins_tokenizer *t;
    rc = open_common(a, out, &t);
    if (!rc) {
      t->kind = (qins_tokenizer_kind)kind;
      rc = kind == QINS_TOK_HF ? tok_load_hf(t, a) : tok_load_gpt2(t, a, b);
    }
    if (!rc) rc = finish(t);
    if (rc) qins_tokenizer_close(t);
    else *out = t;
  }
  free(a);
  free(b);
  return rc;
}

void qins_tokenizer_close(qins_tokenizer *t) {
  if (!t) return;
  qins_mem_owner *o = tok_owner();
  for (int32_t i = 0; i < t->n_vocab && t->tok; i++) qins_mem_free(o, t->tok[i]);
  qins_mem_free(o, t->tok);
  qins_mem_free(o, t->tok_len);
  qins_mem_free(o, t->special);
  qins_mem_free(o, t->scores);
  tok_strmap_free(&t->vocab);
  tok_strmap_free(&t->all);
  tok_pairmap_free(&t->merges);
  for (int i = 0; i < t->n_added; i++) {
    qins_mem_free(o, t->added[i].text);
    qins_mem_free(o, t->added[i].shadow);
  }
  qins_mem_free(o, t->added);
  for (int i = 0; i < t->n_norm; i++) {
    qins_mem_free(o, t->norm[i].a);
    qins_mem_free(o, t->norm[i].b);
  }
  qins_mem_free(o, t->norm);
  for (int i = 0; i < t->n_pre; i++) {
    if (t->pre[i].re) tok_regex_free(t->pre[i].re);
    qins_mem_free(o, t->pre[i].replacement);
  }
  qins_mem_free(o, t->pre);
  for (int i = 0; i < t->n_dec; i++) {
    qins_mem_free(o, t->dec[i].a);
    qins_mem_free(o, t->dec[i].b);
  }
  qins_mem_free(o, t->dec);
  qins_mem_free(o, t->post_pre);
  qins_mem_free(o, t->post_post);
  qins_mem_free(o, t->path);
  qins_mem_free(o, t);
}

/* ---------------------------------------------------------------- encode */

static int encode_text(const qins_tokenizer *t, const char *s, size_t len, int first, tok_ids *out) {
  if (len == 0) return 0;
  tok_buf norm = {0};
  tok_pieces pieces = {0};
  int rc = tok_normalize(t, s, len, &norm);
  if (!rc) rc = tok_pretokenize(t, norm.p, norm.len, first, &pieces);
  for (size_t i = 0; i < pieces.n && !rc; i++) rc = tok_bpe_word(t, pieces.p[i].p, pieces.p[i].len, out);
  tok_pieces_free(&pieces);
  tok_buf_free(&norm);
  return rc;
}

static int is_word_byte(unsigned char c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The longest added token starting at s[i] (HF matches leftmost, then longest), or -1. */
static int match_added(const qins_tokenizer *t, const char *s, size_t len, size_t i, int flags) {
  int best = -1;
  for (int k = 0; k < t->n_added; k++) {
    const tok_added *a = &t->added[k];
    if (a->special && !(flags & QINS_TOK_PARSE_SPECIAL)) continue;
    if (a->len == 0 || a->len > len - i || (best >= 0 && a->len <= t->added[best].len)) continue;
    if (s[i] != a->text[0] || memcmp(s + i, a->text, a->len) != 0) continue;
    if (a->single_word && ((i > 0 && is_word_byte((unsigned char)s[i - 1])) ||
                           (i + a->len < len && is_word_byte((unsigned char)s[i + a->len]))))
      continue;
    best = k;
  }
  return best;
}

static int encode_hf(const qins_tokenizer *t, const char *s, size_t len, int flags, tok_ids *out) {
  int rc = 0;
  if (flags & QINS_TOK_ADD_SPECIAL)
    for (int i = 0; i < t->n_post_pre && !rc; i++) rc = tok_ids_push(out, t->post_pre[i]);
  size_t seg = 0; /* start of the text not yet encoded */
  for (size_t i = 0; i < len && !rc;) {
    int k = t->added_first[(unsigned char)s[i]] ? match_added(t, s, len, i, flags) : -1;
    if (k < 0) {
      i++;
      continue;
    }
    const tok_added *a = &t->added[k];
    size_t end = i + a->len, tstart = i;
    if (a->lstrip)
      while (tstart > seg && is_ws(s[tstart - 1])) tstart--;
    if (a->rstrip)
      while (end < len && is_ws(s[end])) end++;
    rc = encode_text(t, s + seg, tstart - seg, seg == 0, out);
    if (!rc) rc = tok_ids_push(out, a->id);
    seg = i = end;
  }
  if (!rc) rc = encode_text(t, s + seg, len - seg, seg == 0, out);
  if (flags & QINS_TOK_ADD_SPECIAL)
    for (int i = 0; i < t->n_post_post && !rc; i++) rc = tok_ids_push(out, t->post_post[i]);
  return rc;
}

int qins_tokenizer_encode_n(const qins_tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
                            size_t *n) {
  if (!t || (!text && len) || !ids || !n) return qins_error_set(QINS_EINVAL, "qins_tokenizer_encode: NULL argument");
  *ids = NULL;
  *n = 0;
  tok_ids out = {0};
  int rc = 0;
  if (t->kind == QINS_TOK_LLAMA2C) {
    if (flags & QINS_TOK_ADD_SPECIAL) rc = tok_ids_push(&out, t->bos);
    if (!rc) rc = tok_llama2c_encode(t, text ? text : "", len, &out);
  } else {
    rc = encode_hf(t, text ? text : "", len, flags, &out);
  }
  if (!rc && !out.p) { /* callers always get a buffer to free, even for no ids */
    rc = tok_ids_push(&out, 0);
    out.len = 0;
  }
  if (rc) {
    free(out.p);
    return rc;
  }
  *ids = out.p;
  *n = out.len;
  return 0;
}

int qins_tokenizer_encode(const qins_tokenizer *t, const char *text, int flags, int32_t **ids, size_t *n) {
  return qins_tokenizer_encode_n(t, text, text ? strlen(text) : 0, flags, ids, n);
}

/* ---------------------------------------------------------------- accessors */

const char *qins_tokenizer_token_text(const qins_tokenizer *t, int32_t id) {
  if (!t || id < 0 || id >= t->n_vocab) return NULL;
  return t->tok[id];
}

int32_t qins_tokenizer_token_id(const qins_tokenizer *t, const char *text) {
  if (!t || !text) return -1;
  return tok_strmap_get(&t->all, text, strlen(text));
}

int32_t qins_tokenizer_vocab_size(const qins_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t qins_tokenizer_bos_id(const qins_tokenizer *t) { return t ? t->bos : -1; }
int32_t qins_tokenizer_eos_id(const qins_tokenizer *t) { return t ? t->eos : -1; }
int qins_tokenizer_is_special(const qins_tokenizer *t, int32_t id) {
  return t && id >= 0 && id < t->n_vocab && t->special[id];
}
qins_tokenizer_kind qins_tokenizer_get_kind(const qins_tokenizer *t) { return t ? t->kind : 0; }

const char *qins_tokenizer_kind_name(qins_tokenizer_kind kind) {
  switch (kind) {
  case QINS_TOK_LLAMA2C: return "llama2.c tokenizer.bin";
  case QINS_TOK_HF: return "Hugging Face tokenizer.json";
  case QINS_TOK_GPT2: return "GPT-2 encoder.json + vocab.bpe";
  }
  return "unknown";
}
