/* BPE merges engine: repeatedly merge the adjacent pair of lowest rank (leftmost on ties),
 * using a binary heap of candidate pairs with lazy invalidation, so long words stay O(n log n). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

typedef struct cand {
  float rank;
  int32_t pos; /* index of the left symbol; symbols keep their original order */
  int32_t merged;
} cand;

typedef struct heap {
  cand *a;
  size_t n, cap;
} heap;

static int cand_less(const cand *x, const cand *y) {
  if (x->rank != y->rank) return x->rank < y->rank;
  return x->pos < y->pos;
}

static int heap_push(heap *h, cand c) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 64;
    cand *p = realloc(h->a, cap * sizeof *p);
    if (!p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (BPE heap)");
    h->a = p;
    h->cap = cap;
  }
  size_t i = h->n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!cand_less(&c, &h->a[parent])) break;
    h->a[i] = h->a[parent];
    i = parent;
  }
  h->a[i] = c;
  return 0;
}

static cand heap_pop(heap *h) {
  cand top = h->a[0], last = h->a[--h->n];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    const cand *best = &last;
    if (l < h->n && cand_less(&h->a[l], best)) {
      m = l;
      best = &h->a[l];
    }
    if (r < h->n && cand_less(&h->a[r], best)) m = r;
    if (m == i) break;
    h->a[i] = h->a[m];
    i = m;
  }
  if (h->n) h->a[i] = last;
  return top;
}

int tok_bpe_merge(const qins_tokenizer *t, const int32_t *syms, size_t n, tok_ids *out) {
  if (n == 0) return 0;
  if (n == 1) return tok_ids_push(out, syms[0]);
  int32_t *id = malloc(n * sizeof *id), *prev = malloc(n * sizeof *prev), *next = malloc(n * sizeof *next);
  heap h = {0};
  int rc = 0;
  if (!id || !prev || !next) {
    rc = qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (BPE word of %zu symbols)", n);
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    id[i] = syms[i];
    prev[i] = (int32_t)i - 1;
    next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  for (size_t i = 0; i + 1 < n && !rc; i++) {
    cand c = {0, (int32_t)i, 0};
    if (tok_pairmap_get(&t->merges, id[i], id[i + 1], &c.rank, &c.merged)) rc = heap_push(&h, c);
  }
  while (h.n && !rc) {
    cand c = heap_pop(&h);
    int32_t p = c.pos;
    /* Stale candidates: the left symbol was absorbed, has no right neighbour any more, or the
     * pair at this position changed since the candidate was pushed. */
    if (id[p] < 0 || next[p] < 0) continue;
    int32_t q = next[p];
    float rank;
    int32_t merged;
    if (!tok_pairmap_get(&t->merges, id[p], id[q], &rank, &merged) || merged != c.merged) continue;
    id[p] = merged;
    id[q] = -1;
    next[p] = next[q];
    if (next[q] >= 0) prev[next[q]] = p;
    if (prev[p] >= 0) {
      cand l = {0, prev[p], 0};
      if (tok_pairmap_get(&t->merges, id[prev[p]], id[p], &l.rank, &l.merged)) rc = heap_push(&h, l);
    }
    if (!rc && next[p] >= 0) {
      cand r = {0, p, 0};
      if (tok_pairmap_get(&t->merges, id[p], id[next[p]], &r.rank, &r.merged)) rc = heap_push(&h, r);
    }
  }
  for (int32_t i = 0; i >= 0 && !rc; i = next[i]) rc = tok_ids_push(out, id[i]);
done:
  free(id);
  free(prev);
  free(next);
  free(h.a);
  return rc;
}

size_t tok_utf8_len(const unsigned char *s, size_t avail) {
  size_t n = 1;
  if (s[0] >= 0xF0 && s[0] < 0xF8) n = 4;
  else if (s[0] >= 0xE0) n = s[0] < 0xF0 ? 3 : 1;
  else if (s[0] >= 0xC2) n = 2;
  if (n > avail) return 1;
  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xC0) != 0x80) return 1;
  return n;
}

/* HF BPE model on one pre-token: whole-word lookup when ignore_merges, else one symbol per
 * character (vocab, else byte-fallback tokens, else unk, fused when fuse_unk), then merges. */
int tok_bpe_word(const qins_tokenizer *t, const char *w, size_t len, tok_ids *out) {
  if (len == 0) return 0;
  if (t->ignore_merges) {
    int32_t whole = tok_strmap_get(&t->vocab, w, len);
    if (whole >= 0) return tok_ids_push(out, whole);
  }
  tok_ids syms = {0};
  int rc = 0;
  int32_t pending_unk = -1; /* an unk symbol not yet emitted (so fuse_unk can extend it) */
  for (size_t i = 0; i < len && !rc;) {
    size_t cl = tok_utf8_len((const unsigned char *)w + i, len - i);
    int32_t id = tok_strmap_get(&t->vocab, w + i, cl);
    if (id >= 0) {
      if (pending_unk >= 0) rc = tok_ids_push(&syms, pending_unk);
      pending_unk = -1;
      if (!rc) rc = tok_ids_push(&syms, id);
    } else {
      int done = 0;
      if (t->byte_fallback) {
        done = 1;
        for (size_t k = 0; k < cl; k++)
          if (t->byte_ids[(unsigned char)w[i + k]] < 0) done = 0;
        for (size_t k = 0; done && k < cl && !rc; k++)
          rc = tok_ids_push(&syms, t->byte_ids[(unsigned char)w[i + k]]);
      }
      if (!done && t->unk_id >= 0) {
        if (pending_unk >= 0 && !t->fuse_unk) rc = tok_ids_push(&syms, pending_unk);
        pending_unk = t->unk_id;
      }
      /* No unk token and no byte fallback: HF drops the character; so do we. */
    }
    i += cl;
  }
  if (!rc && pending_unk >= 0) rc = tok_ids_push(&syms, pending_unk);
  if (!rc) rc = tok_bpe_merge(t, syms.p, syms.len, out);
  free(syms.p);
  return rc;
}
