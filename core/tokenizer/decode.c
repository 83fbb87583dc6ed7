/* Decoding: ids -> bytes through llama2.c's rule or the HF decoder chain, and streaming pieces. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

static int check_id(const qins_tokenizer *t, int32_t id) {
  if (id < 0 || id >= t->n_vocab || !t->tok[id])
    return qins_error_set(QINS_EINPUT, "%s: token id %d is outside the vocabulary (size %d)", t->path, (int)id,
                          (int)t->n_vocab);
  return 0;
}

static int hex_byte(const char *s, uint32_t len) {
  if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

/* run.c's decode of one token: drop the leading space at the start or after BOS; <0xXX> -> byte. */
static int llama2c_piece(const qins_tokenizer *t, int32_t prev, int32_t id, tok_buf *out) {
  const char *p = t->tok[id];
  uint32_t len = t->tok_len[id];
  if ((prev < 0 || prev == t->bos) && len && p[0] == ' ') {
    p++;
    len--;
  }
  int b = hex_byte(p, len);
  if (b >= 0) return tok_buf_putc(out, (char)b);
  return tok_buf_put(out, p, len);
}

static int replace_all(const char *s, size_t len, const char *a, const char *b, tok_buf *out) {
  size_t al = strlen(a), bl = strlen(b);
  int rc = tok_buf_put(out, "", 0);
  for (size_t i = 0; i < len && !rc;) {
    if (al && i + al <= len && memcmp(s + i, a, al) == 0) {
      rc = tok_buf_put(out, b, bl);
      i += al;
    } else {
      rc = tok_buf_putc(out, s[i++]);
    }
  }
  return rc;
}

typedef struct tok_list {
  tok_buf *p;
  size_t n;
} tok_list;

static void list_free(tok_list *l) {
  for (size_t i = 0; i < l->n; i++) tok_buf_free(&l->p[i]);
  free(l->p);
  l->p = NULL;
  l->n = 0;
}

/* One HF decoder step over the token list. `first` is false when decoding a token in the middle
 * of a stream, where start-of-text stripping must not happen. */
static int dec_step(const tok_dec *d, tok_list *l, int first) {
  int rc = 0;
  switch (d->kind) {
  case DEC_REPLACE:
  case DEC_METASPACE:
    for (size_t i = 0; i < l->n && !rc; i++) {
      tok_buf nb = {0};
      /* HF's Metaspace decoder drops every replacement char of the first token (the prefix it
       * added) unless the prepend scheme is "never"; elsewhere they become spaces. */
      const char *to = d->kind == DEC_REPLACE ? d->b : (i == 0 && first && d->prepend) ? "" : " ";
      rc = replace_all(l->p[i].p, l->p[i].len, d->a, to, &nb);
      tok_buf_free(&l->p[i]);
      l->p[i] = nb;
    }
    break;
  case DEC_BYTEFALLBACK: /* <0xXX> tokens become their bytes (HF groups them; bytes are bytes) */
    for (size_t i = 0; i < l->n; i++) {
      int b = hex_byte(l->p[i].p, (uint32_t)l->p[i].len);
      if (b >= 0) {
        l->p[i].p[0] = (char)b;
        l->p[i].len = 1;
        l->p[i].p[1] = 0;
      }
    }
    break;
  case DEC_FUSE:
  case DEC_BYTELEVEL: {
    tok_buf all = {0};
    rc = tok_buf_put(&all, "", 0);
    for (size_t i = 0; i < l->n && !rc; i++)
      rc = d->kind == DEC_FUSE ? tok_buf_put(&all, l->p[i].p, l->p[i].len)
                               : tok_bytelevel_decode(l->p[i].p, l->p[i].len, &all);
    list_free(l);
    l->p = malloc(sizeof *l->p);
    if (!l->p) {
      tok_buf_free(&all);
      return rc ? rc : qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (decode)");
    }
    l->p[0] = all;
    l->n = 1;
    break;
  }
  case DEC_STRIP:
    for (size_t i = 0; i < l->n; i++) {
      tok_buf *b = &l->p[i];
      size_t a = 0, e = b->len;
      char c = d->a[0];
      for (int k = 0; first && k < d->start && a < e && b->p[a] == c; k++) a++;
      for (int k = 0; k < d->stop && e > a && b->p[e - 1] == c; k++) e--;
      memmove(b->p, b->p + a, e - a);
      b->len = e - a;
      b->p[b->len] = 0;
    }
    break;
  }
  return rc;
}

static int decode_hf(const qins_tokenizer *t, const int32_t *ids, size_t n, int flags, int first, tok_buf *out) {
  tok_list l = {calloc(n ? n : 1, sizeof(tok_buf)), 0};
  if (!l.p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (decode)");
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    if (t->special[ids[i]] && !(flags & QINS_TOK_KEEP_SPECIAL)) continue;
    rc = tok_buf_put(&l.p[l.n++], t->tok[ids[i]], t->tok_len[ids[i]]);
  }
  for (int k = 0; k < t->n_dec && !rc; k++) rc = dec_step(&t->dec[k], &l, first);
  for (size_t i = 0; i < l.n && !rc; i++) {
    /* Without a decoder HF joins tokens with spaces. */
    if (!t->has_decoder && i) rc = tok_buf_putc(out, ' ');
    if (!rc) rc = tok_buf_put(out, l.p[i].p, l.p[i].len);
  }
  list_free(&l);
  return rc;
}

int qins_tokenizer_decode_ex(const qins_tokenizer *t, const int32_t *ids, size_t n, int flags, char **text,
                             size_t *len) {
  if (!t || (!ids && n) || !text) return qins_error_set(QINS_EINVAL, "qins_tokenizer_decode: NULL argument");
  *text = NULL;
  if (len) *len = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = check_id(t, ids[i]);
    if (rc) return rc;
  }
  tok_buf out = {0};
  int rc = tok_buf_put(&out, "", 0);
  if (!rc && t->kind == QINS_TOK_LLAMA2C) {
    for (size_t i = 0; i < n && !rc; i++) {
      if (t->special[ids[i]] && !(flags & QINS_TOK_KEEP_SPECIAL)) continue;
      rc = llama2c_piece(t, i ? ids[i - 1] : -1, ids[i], &out);
    }
  } else if (!rc) {
    rc = decode_hf(t, ids, n, flags, 1, &out);
  }
  if (rc) {
    tok_buf_free(&out);
    return rc;
  }
  *text = out.p;
  if (len) *len = out.len;
  return 0;
}

int qins_tokenizer_decode(const qins_tokenizer *t, const int32_t *ids, size_t n, char **text) {
  return qins_tokenizer_decode_ex(t, ids, n, 0, text, NULL);
}

int qins_tokenizer_decode_piece(const qins_tokenizer *t, int32_t prev_id, int32_t id, char *buf, size_t cap) {
  if (!t || !buf || cap == 0) return qins_error_set(QINS_EINVAL, "qins_tokenizer_decode_piece: bad argument");
  int rc = check_id(t, id);
  if (rc) return rc;
  buf[0] = 0;
  if (t->special[id]) return 0;
  tok_buf out = {0};
  int first = prev_id < 0 || prev_id == t->bos;
  rc = t->kind == QINS_TOK_LLAMA2C ? llama2c_piece(t, first ? -1 : prev_id, id, &out)
                                   : decode_hf(t, &id, 1, 0, first, &out);
  if (rc) {
    tok_buf_free(&out);
    return rc;
  }
  size_t n = out.len < cap - 1 ? out.len : cap - 1;
  if (n) memcpy(buf, out.p, n);
  buf[n] = 0;
  tok_buf_free(&out);
  return (int)n;
}
