/* Unicode canonical normalization (NFC, NFD) for the NFC/NFD normalizers: decompose, order
 * combining marks, recompose primary composites; Hangul done arithmetically. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/nfc_tables.h"
#include "core/tokenizer/tok_internal.h"

enum { SBASE = 0xAC00, LBASE = 0x1100, VBASE = 0x1161, TBASE = 0x11A7, LCOUNT = 19, VCOUNT = 21, TCOUNT = 28,
       NCOUNT = VCOUNT * TCOUNT, SCOUNT = LCOUNT * NCOUNT };

static int ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  size_t lo = 0, hi = sizeof nfc_ccc / sizeof nfc_ccc[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (nfc_ccc[mid][0] == cp) return (int)nfc_ccc[mid][1];
    if (nfc_ccc[mid][0] < cp) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

static const uint32_t *decomp_of(uint32_t cp, uint32_t *len) {
  size_t lo = 0, hi = sizeof nfc_decomp / sizeof nfc_decomp[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (nfc_decomp[mid][0] == cp) {
      *len = nfc_decomp[mid][2];
      return nfc_decomp_data + nfc_decomp[mid][1];
    }
    if (nfc_decomp[mid][0] < cp) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
    return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
  if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE && b < TBASE + TCOUNT)
    return a + (b - TBASE);
  size_t lo = 0, hi = sizeof nfc_comp / sizeof nfc_comp[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const uint32_t *e = nfc_comp[mid];
    if (e[0] == a && e[1] == b) return e[2];
    if (e[0] < a || (e[0] == a && e[1] < b)) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

typedef struct cps {
  uint32_t *p;
  size_t n, cap;
} cps;

static int cps_push(cps *v, uint32_t c) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    uint32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (normalization)");
    v->p = p;
    v->cap = cap;
  }
  v->p[v->n++] = c;
  return 0;
}

static int decompose(uint32_t cp, cps *v) {
  if (cp >= SBASE && cp < SBASE + SCOUNT) {
    uint32_t s = cp - SBASE, t = s % TCOUNT;
    int rc = cps_push(v, LBASE + s / NCOUNT);
    if (!rc) rc = cps_push(v, VBASE + (s % NCOUNT) / TCOUNT);
    if (!rc && t) rc = cps_push(v, TBASE + t);
    return rc;
  }
  uint32_t len;
  const uint32_t *d = decomp_of(cp, &len);
  if (!d) return cps_push(v, cp);
  for (uint32_t i = 0; i < len; i++) {
    int rc = cps_push(v, d[i]);
    if (rc) return rc;
  }
  return 0;
}

/* Canonical ordering: stable sort of each run of non-starters by combining class. */
static void reorder(cps *v) {
  for (size_t i = 1; i < v->n; i++) {
    int c = ccc_of(v->p[i]);
    if (!c) continue;
    for (size_t j = i; j > 0; j--) {
      int pc = ccc_of(v->p[j - 1]);
      if (pc <= c) break;
      uint32_t tmp = v->p[j];
      v->p[j] = v->p[j - 1];
      v->p[j - 1] = tmp;
    }
  }
}

/* Canonical composition as in UAX #15: a mark composes with the last starter unless a mark of
 * the same or higher class (or a starter) stands between them. */
static void compose(cps *v) {
  if (v->n < 2) return;
  size_t starter = 0, w = 1;
  int last = ccc_of(v->p[0]) ? 256 : 0;
  for (size_t r = 1; r < v->n; r++) {
    uint32_t ch = v->p[r];
    int c = ccc_of(ch);
    uint32_t comp = compose_pair(v->p[starter], ch);
    if (comp && (last < c || last == 0)) {
      v->p[starter] = comp;
      continue;
    }
    if (c == 0) starter = w;
    last = c;
    v->p[w++] = ch;
  }
  v->n = w;
}

static int put_utf8(tok_buf *out, uint32_t c) {
  char b[4];
  size_t n;
  if (c < 0x80) {
    b[0] = (char)c;
    n = 1;
  } else if (c < 0x800) {
    b[0] = (char)(0xC0 | (c >> 6));
    b[1] = (char)(0x80 | (c & 0x3F));
    n = 2;
  } else if (c < 0x10000) {
    b[0] = (char)(0xE0 | (c >> 12));
    b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    b[2] = (char)(0x80 | (c & 0x3F));
    n = 3;
  } else {
    b[0] = (char)(0xF0 | (c >> 18));
    b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    b[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    b[3] = (char)(0x80 | (c & 0x3F));
    n = 4;
  }
  return tok_buf_put(out, b, n);
}

static int flush(cps *v, int do_compose, tok_buf *out) {
  reorder(v);
  if (do_compose) compose(v);
  int rc = 0;
  for (size_t i = 0; i < v->n && !rc; i++) rc = put_utf8(out, v->p[i]);
  v->n = 0;
  return rc;
}

int tok_unicode_normalize(const char *s, size_t len, int do_compose, tok_buf *out) {
  out->len = 0;
  int rc = tok_buf_put(out, "", 0);
  size_t i = 0;
  while (i < len && (unsigned char)s[i] < 0x80) i++;
  if (i == len) return rc ? rc : tok_buf_put(out, s, len); /* ASCII is already normalized */
  cps v = {0};
  for (i = 0; i < len && !rc;) {
    const unsigned char *u = (const unsigned char *)s + i;
    size_t cl = tok_utf8_len(u, len - i);
    uint32_t cp;
    if (cl == 1 && u[0] >= 0x80) { /* not UTF-8: keep the byte, it also ends the run */
      rc = flush(&v, do_compose, out);
      if (!rc) rc = tok_buf_put(out, u, 1);
      i++;
      continue;
    }
    if (cl == 1) cp = u[0];
    else if (cl == 2) cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    else if (cl == 3) cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    else cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    if ((cl == 3 && cp < 0x800) || (cl == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp < 0xE000)) {
      rc = flush(&v, do_compose, out); /* overlong or surrogate: bytes kept as they are */
      if (!rc) rc = tok_buf_put(out, u, cl);
    } else {
      rc = decompose(cp, &v);
    }
    i += cl;
  }
  if (!rc) rc = flush(&v, do_compose, out);
  free(v.p);
  return rc;
}
