/* Tokenizer containers: growable buffers, string->id and (id,id)->merge hash tables. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

static qins_mem_owner *owner;
static pthread_once_t owner_once = PTHREAD_ONCE_INIT;
static void owner_init(void) { owner = qins_mem_owner_get("tokenizer"); }

qins_mem_owner *tok_owner(void) {
  pthread_once(&owner_once, owner_init);
  return owner;
}

/* Growable buffers use plain realloc: they are short-lived per call or handed to the caller. */
int tok_buf_put(tok_buf *b, const void *data, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = 0;
  return 0;
}

int tok_buf_putc(tok_buf *b, char c) { return tok_buf_put(b, &c, 1); }

void tok_buf_free(tok_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

int tok_ids_push(tok_ids *v, int32_t id) {
  if (v->len == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 32;
    int32_t *p = realloc(v->p, cap * sizeof *p);
    if (!p) return qins_error_set(QINS_ENOMEM, "tokenizer: out of memory (%zu ids)", cap);
    v->p = p;
    v->cap = cap;
  }
  v->p[v->len++] = id;
  return 0;
}

/* FNV-1a folded through a final mixer: vocab keys are short, so this is cheap and spreads well. */
static uint64_t str_hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

static size_t pow2_for(size_t expected) {
  size_t cap = 64;
  while (cap < expected * 2) cap *= 2; /* load factor <= 1/2 keeps probes short */
  return cap;
}

int tok_strmap_init(tok_strmap *m, size_t expected) {
  memset(m, 0, sizeof *m);
  m->cap = pow2_for(expected);
  m->keys = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->keys);
  m->lens = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->lens);
  m->vals = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->vals);
  if (!m->keys || !m->lens || !m->vals) {
    tok_strmap_free(m);
    return QINS_ENOMEM;
  }
  return 0;
}

void tok_strmap_free(tok_strmap *m) {
  qins_mem_free(tok_owner(), m->keys);
  qins_mem_free(tok_owner(), m->lens);
  qins_mem_free(tok_owner(), m->vals);
  memset(m, 0, sizeof *m);
}

static int strmap_grow(tok_strmap *m) {
  tok_strmap bigger;
  int rc = tok_strmap_init(&bigger, m->cap);
  if (rc) return rc;
  for (size_t i = 0; i < m->cap; i++)
    if (m->keys[i]) tok_strmap_put(&bigger, m->keys[i], m->lens[i], m->vals[i]);
  tok_strmap_free(m);
  *m = bigger;
  return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, uint32_t len, int32_t val) {
  if ((m->count + 1) * 2 > m->cap) {
    int rc = strmap_grow(m);
    if (rc) return rc;
  }
  size_t mask = m->cap - 1, i = str_hash(key, len) & mask;
  while (m->keys[i]) {
    if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return 0;
    i = (i + 1) & mask;
  }
  m->keys[i] = key;
  m->lens[i] = len;
  m->vals[i] = val;
  m->count++;
  return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
  if (!m->cap) return -1;
  size_t mask = m->cap - 1, i = str_hash(key, len) & mask;
  while (m->keys[i]) {
    if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return m->vals[i];
    i = (i + 1) & mask;
  }
  return -1;
}

static uint64_t pair_hash(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

int tok_pairmap_init(tok_pairmap *m, size_t expected) {
  memset(m, 0, sizeof *m);
  m->cap = pow2_for(expected);
  m->keys = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->keys);
  m->ranks = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->ranks);
  m->vals = qins_mem_calloc(tok_owner(), m->cap, sizeof *m->vals);
  if (!m->keys || !m->ranks || !m->vals) {
    tok_pairmap_free(m);
    return QINS_ENOMEM;
  }
  return 0;
}

void tok_pairmap_free(tok_pairmap *m) {
  qins_mem_free(tok_owner(), m->keys);
  qins_mem_free(tok_owner(), m->ranks);
  qins_mem_free(tok_owner(), m->vals);
  memset(m, 0, sizeof *m);
}

static uint64_t pair_key(int32_t a, int32_t b) {
  return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
}

static int pairmap_grow(tok_pairmap *m) {
  tok_pairmap bigger;
  int rc = tok_pairmap_init(&bigger, m->cap);
  if (rc) return rc;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i]) continue;
    uint64_t k = m->keys[i] - 1;
    tok_pairmap_put(&bigger, (int32_t)(k >> 32), (int32_t)(uint32_t)k, m->ranks[i], m->vals[i]);
  }
  tok_pairmap_free(m);
  *m = bigger;
  return 0;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, float rank, int32_t merged) {
  if ((m->count + 1) * 2 > m->cap) {
    int rc = pairmap_grow(m);
    if (rc) return rc;
  }
  uint64_t k = pair_key(a, b);
  size_t mask = m->cap - 1, i = pair_hash(k) & mask;
  while (m->keys[i]) {
    if (m->keys[i] == k) return 0;
    i = (i + 1) & mask;
  }
  m->keys[i] = k;
  m->ranks[i] = rank;
  m->vals[i] = merged;
  m->count++;
  return 0;
}

int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, float *rank, int32_t *merged) {
  if (!m->cap) return 0;
  uint64_t k = pair_key(a, b);
  size_t mask = m->cap - 1, i = pair_hash(k) & mask;
  while (m->keys[i]) {
    if (m->keys[i] == k) {
      *rank = m->ranks[i];
      *merged = m->vals[i];
      return 1;
    }
    i = (i + 1) & mask;
  }
  return 0;
}
