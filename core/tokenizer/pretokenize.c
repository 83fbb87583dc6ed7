/* Pre-tokenizers: regex Split (PCRE2, UTF + UCP), ByteLevel and Metaspace, applied in sequence. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

void tok_pieces_free(tok_pieces *l) {
  for (size_t i = 0; i < l->n; i++) tok_buf_free(&l->p[i]);
  free(l->p);
  tok_buf_free(&l->scratch);
  memset(l, 0, sizeof *l);
}

int tok_pieces_add(tok_pieces *l, const char *s, size_t len) {
  if (len == 0) return 0; /* HF drops empty splits */
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    tok_buf *p = realloc(l->p, cap * sizeof *p);
    if (!p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (pieces)");
    l->p = p;
    l->cap = cap;
  }
  tok_buf *b = &l->p[l->n++];
  memset(b, 0, sizeof *b);
  return tok_buf_put(b, s, len);
}

/* HF regexes are Oniguruma; PCRE2 with UTF and UCP reads \p{L}, \p{N}, (?i:...), \s+(?!\S) the
 * same way. MATCH_INVALID_UTF lets invalid bytes through (they never match a character class and
 * end up in the gaps between matches) instead of failing the whole match. */
void *tok_regex_compile(const char *pattern, int literal, const char *file, const char *what) {
  int err;
  PCRE2_SIZE eoff;
  uint32_t opts = literal ? PCRE2_LITERAL : (PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF);
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &eoff, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    qins_error_set(QINS_EINPUT, "%s: %s: regex %s does not compile at offset %zu: %s", file, what, pattern,
                   (size_t)eoff, (char *)msg);
    return NULL;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter works without it */
  return re;
}

void tok_regex_free(void *re) { pcre2_code_free((pcre2_code *)re); }

typedef struct seg {
  size_t start, end;
  int match;
} seg;

/* Cut s into alternating gap / match segments covering all of it. */
static int regex_segments(const pcre2_code *re, const char *s, size_t len, seg **out, size_t *nout) {
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
  if (!md) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (regex match data)");
  seg *v = NULL;
  size_t n = 0, cap = 0, pos = 0, gap = 0;
  int rc = 0;
  while (pos <= len) {
    int m = pcre2_match(re, (PCRE2_SPTR)s, len, pos, 0, md, NULL);
    if (m == PCRE2_ERROR_NOMATCH) break;
    if (m < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(m, msg, sizeof msg);
      rc = qins_error_set(QINS_EINPUT, "tokenizer: regex match failed: %s", (char *)msg);
      break;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t ms = ov[0], me = ov[1];
    if (me == ms) { /* empty match: step over one character */
      if (ms >= len) break;
      pos = ms + tok_utf8_len((const unsigned char *)s + ms, len - ms);
      continue;
    }
    if (n + 2 > cap) {
      cap = cap ? cap * 2 : 32;
      seg *p = realloc(v, cap * sizeof *p);
      if (!p) {
        rc = qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (regex segments)");
        break;
      }
      v = p;
    }
    if (ms > gap) v[n++] = (seg){gap, ms, 0};
    v[n++] = (seg){ms, me, 1};
    pos = gap = me;
  }
  if (!rc && gap < len) {
    seg *p = n + 1 > cap ? realloc(v, (n + 1) * sizeof *p) : v;
    if (!p) rc = qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (regex segments)");
    else {
      v = p;
      v[n++] = (seg){gap, len, 0};
    }
  }
  pcre2_match_data_free(md);
  if (rc) {
    free(v);
    return rc;
  }
  *out = v;
  *nout = n;
  return 0;
}

/* Apply HF's SplitDelimiterBehavior to the segments of one piece. */
static int split_piece(const tok_pre *p, const char *s, size_t len, tok_pieces *out) {
  seg *v = NULL;
  size_t n = 0;
  int rc = regex_segments((const pcre2_code *)p->re, s, len, &v, &n);
  if (rc) return rc;
  if (p->invert)
    for (size_t i = 0; i < n; i++) v[i].match = !v[i].match;
  size_t pend_start = 0, pend_end = 0; /* a piece being built (MergedWith*, Contiguous) */
  int have = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    seg g = v[i];
    switch (p->behavior) {
    case SPLIT_ISOLATED:
      rc = tok_pieces_add(out, s + g.start, g.end - g.start);
      break;
    case SPLIT_REMOVED:
      if (!g.match) rc = tok_pieces_add(out, s + g.start, g.end - g.start);
      break;
    case SPLIT_MERGED_PREV: /* a delimiter ends the piece before it */
      if (!have) pend_start = g.start;
      pend_end = g.end;
      have = 1;
      if (g.match) {
        rc = tok_pieces_add(out, s + pend_start, pend_end - pend_start);
        have = 0;
      }
      break;
    case SPLIT_MERGED_NEXT: /* a delimiter starts the next piece */
      if (g.match && have) {
        rc = tok_pieces_add(out, s + pend_start, pend_end - pend_start);
        have = 0;
      }
      if (!have) pend_start = g.start;
      pend_end = g.end;
      have = 1;
      break;
    case SPLIT_CONTIGUOUS: /* consecutive delimiters stay together */
      if (have && !(g.match && v[i - 1].match)) {
        rc = tok_pieces_add(out, s + pend_start, pend_end - pend_start);
        have = 0;
      }
      if (!have) pend_start = g.start;
      pend_end = g.end;
      have = 1;
      break;
    }
  }
  if (!rc && have) rc = tok_pieces_add(out, s + pend_start, pend_end - pend_start);
  free(v);
  return rc;
}

static int bytelevel_piece(const tok_pre *p, const char *s, size_t len, tok_pieces *out, tok_buf *tmp) {
  tmp->len = 0;
  int rc = 0;
  if (p->add_prefix_space && (len == 0 || s[0] != ' ')) rc = tok_buf_putc(tmp, ' ');
  if (!rc) rc = tok_buf_put(tmp, s, len);
  if (rc) return rc;
  tok_pieces parts = {0};
  if (p->use_regex) {
    tok_pre iso = *p;
    iso.behavior = SPLIT_ISOLATED;
    iso.invert = 0;
    rc = split_piece(&iso, tmp->p, tmp->len, &parts);
  } else {
    rc = tok_pieces_add(&parts, tmp->p, tmp->len);
  }
  for (size_t i = 0; i < parts.n && !rc; i++) {
    tok_buf mapped = {0};
    rc = tok_bytelevel_encode(parts.p[i].p, parts.p[i].len, &mapped);
    if (!rc) rc = tok_pieces_add(out, mapped.p, mapped.len);
    tok_buf_free(&mapped);
  }
  tok_pieces_free(&parts);
  return rc;
}

static int metaspace_piece(const tok_pre *p, const char *s, size_t len, int first, tok_pieces *out, tok_buf *tmp) {
  size_t rl = strlen(p->replacement);
  tmp->len = 0;
  int rc = 0;
  /* As HF: spaces become the replacement first, then the replacement is prepended unless the
   * piece already starts with one (so " a" gives "▁a", not "▁▁a"). "first" prepends only on the
   * piece at the very start of the text. */
  int prepend = p->prepend == 1 || (p->prepend == 2 && first);
  if (prepend && !(len >= 1 && s[0] == ' ') && !(len >= rl && memcmp(s, p->replacement, rl) == 0))
    rc = tok_buf_put(tmp, p->replacement, rl);
  for (size_t i = 0; i < len && !rc; i++)
    rc = s[i] == ' ' ? tok_buf_put(tmp, p->replacement, rl) : tok_buf_putc(tmp, s[i]);
  if (rc) return rc;
  if (!p->split) return tok_pieces_add(out, tmp->p, tmp->len);
  size_t start = 0; /* split before every replacement char (MergedWithNext) */
  for (size_t i = 1; i + rl <= tmp->len && !rc; i++) {
    if (memcmp(tmp->p + i, p->replacement, rl) == 0) {
      rc = tok_pieces_add(out, tmp->p + start, i - start);
      start = i;
    }
  }
  if (!rc) rc = tok_pieces_add(out, tmp->p + start, tmp->len - start);
  return rc;
}

int tok_pretokenize(const qins_tokenizer *t, const char *s, size_t len, int first, tok_pieces *out) {
  tok_pieces cur = {0};
  int rc = tok_pieces_add(&cur, s, len);
  tok_buf tmp = {0};
  for (int k = 0; k < t->n_pre && !rc; k++) {
    const tok_pre *p = &t->pre[k];
    tok_pieces next = {0};
    for (size_t i = 0; i < cur.n && !rc; i++) {
      const char *ps = cur.p[i].p;
      size_t pl = cur.p[i].len;
      switch (p->kind) {
      case PRE_SPLIT: rc = split_piece(p, ps, pl, &next); break;
      case PRE_BYTELEVEL: rc = bytelevel_piece(p, ps, pl, &next, &tmp); break;
      case PRE_METASPACE: rc = metaspace_piece(p, ps, pl, first && i == 0, &next, &tmp); break;
      }
    }
    tok_pieces_free(&cur);
    cur = next;
  }
  tok_buf_free(&tmp);
  if (rc) {
    tok_pieces_free(&cur);
    return rc;
  }
  *out = cur;
  return 0;
}
