/* Normalizers: Prepend, Replace (literal string), Strip, NFC and NFD, applied in sequence. */
#include <string.h>

#include "core/tokenizer/tok_internal.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int apply(const tok_norm *n, const char *s, size_t len, tok_buf *out) {
  out->len = 0;
  int rc = tok_buf_put(out, "", 0);
  switch (n->kind) {
  case NORM_PREPEND: /* HF prepends only to non-empty text */
    if (len && !rc) rc = tok_buf_put(out, n->a, strlen(n->a));
    if (!rc) rc = tok_buf_put(out, s, len);
    break;
  case NORM_REPLACE: {
    size_t al = strlen(n->a), bl = strlen(n->b);
    for (size_t i = 0; i < len && !rc;) {
      if (al && i + al <= len && memcmp(s + i, n->a, al) == 0) {
        rc = tok_buf_put(out, n->b, bl);
        i += al;
      } else {
        rc = tok_buf_putc(out, s[i++]);
      }
    }
    break;
  }
  case NORM_NFC:
  case NORM_NFD:
    rc = tok_unicode_normalize(s, len, n->kind == NORM_NFC, out);
    break;
  case NORM_STRIP: {
    size_t a = 0, b = len;
    if (n->left)
      while (a < b && is_space(s[a])) a++;
    if (n->right)
      while (b > a && is_space(s[b - 1])) b--;
    if (!rc) rc = tok_buf_put(out, s + a, b - a);
    break;
  }
  }
  return rc;
}

int tok_normalize(const qins_tokenizer *t, const char *s, size_t len, tok_buf *out) {
  out->len = 0;
  int rc = tok_buf_put(out, s, len);
  tok_buf tmp = {0};
  for (int i = 0; i < t->n_norm && !rc; i++) {
    rc = apply(&t->norm[i], out->p, out->len, &tmp);
    tok_buf swap = *out;
    *out = tmp;
    tmp = swap;
  }
  tok_buf_free(&tmp);
  return rc;
}
