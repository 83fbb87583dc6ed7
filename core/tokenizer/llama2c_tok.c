/* llama2.c tokenizer.bin: loader and encoder with run.c's semantics (dummy prefix, <0xXX> byte
 * fallback at ids 3..258, greedy merging of the best-scoring adjacent pair). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

static int read_file(const char *path, unsigned char **data, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return qins_error_set(errno == ENOENT ? QINS_EINPUT : QINS_EIO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    unsigned char *p = realloc(buf, cap * 2);
    if (!p) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = p;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf) return qins_error_set(QINS_ENOMEM, "%s: out of memory reading the file", path);
  if (err) {
    free(buf);
    return qins_error_set(QINS_EIO, "%s: read error", path);
  }
  *data = buf;
  *size = n;
  return 0;
}

static int32_t rd_i32(const unsigned char *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

int tok_load_llama2c(qins_tokenizer *t, const char *path, int32_t vocab_size) {
  unsigned char *d = NULL;
  size_t size = 0;
  int rc = read_file(path, &d, &size);
  if (rc) return rc;
  /* Count records first when the vocab size is not given: the file has no header for it. */
  if (size < 4) {
    free(d);
    return qins_error_set(QINS_EINPUT, "%s: llama2.c tokenizer truncated (%zu bytes, no header)", path, size);
  }
  int32_t max_len = rd_i32(d);
  if (max_len <= 0 || max_len > (1 << 20)) {
    free(d);
    return qins_error_set(QINS_EINPUT, "%s: not a llama2.c tokenizer (max_token_length %d)", path, (int)max_len);
  }
  int32_t count = 0;
  size_t off = 4;
  while (off < size && (vocab_size <= 0 || count < vocab_size)) {
    if (size - off < 8) break;
    int32_t len = rd_i32(d + off + 4);
    if (len < 0 || (size_t)len > size - off - 8) break;
    off += 8 + (size_t)len;
    count++;
  }
  if ((vocab_size > 0 && count < vocab_size) || (vocab_size <= 0 && off != size)) {
    free(d);
    return qins_error_set(QINS_EINPUT, "%s: llama2.c tokenizer truncated or corrupt at byte %zu (token %d%s%d)",
                          path, off, (int)count, vocab_size > 0 ? " of " : "", vocab_size > 0 ? (int)vocab_size : 0);
  }
  if (count < 3) {
    free(d);
    return qins_error_set(QINS_EINPUT, "%s: llama2.c tokenizer has only %d tokens", path, (int)count);
  }
  rc = tok_alloc_ids(t, count, 1);
  if (!rc) rc = tok_strmap_init(&t->vocab, (size_t)count);
  off = 4;
  for (int32_t i = 0; i < count && !rc; i++) {
    float score;
    memcpy(&score, d + off, 4);
    int32_t len = rd_i32(d + off + 4);
    t->scores[i] = score;
    rc = tok_set_token(t, i, (const char *)d + off + 8, (size_t)len);
    if (!rc) rc = tok_strmap_put(&t->vocab, t->tok[i], t->tok_len[i], i);
    off += 8 + (size_t)len;
  }
  free(d);
  if (rc) return rc;
  /* The merge of (a, b) is the vocab entry spelling a+b, ranked by its score (higher first):
   * enumerate every split of every token once, so encoding needs no string building. */
  rc = tok_pairmap_init(&t->merges, (size_t)count * 2);
  for (int32_t i = 0; i < count && !rc; i++) {
    const char *s = t->tok[i];
    uint32_t len = t->tok_len[i];
    int32_t merged = tok_strmap_get(&t->vocab, s, len);
    for (uint32_t k = 1; k < len && !rc; k++) {
      int32_t a = tok_strmap_get(&t->vocab, s, k), b = tok_strmap_get(&t->vocab, s + k, len - k);
      if (a >= 0 && b >= 0) rc = tok_pairmap_put(&t->merges, a, b, -t->scores[merged], merged);
    }
  }
  if (rc) return rc;
  t->unk_id = 0;
  t->bos = 1;
  t->eos = 2;
  t->special[0] = t->special[1] = t->special[2] = 1;
  tok_find_byte_tokens(t);
  return 0;
}

int tok_llama2c_encode(const qins_tokenizer *t, const char *text, size_t len, tok_ids *out) {
  len = strnlen(text, len); /* run.c works on C strings */
  if (len == 0) return 0;
  if (t->n_vocab < 259)
    return qins_error_set(QINS_EINPUT, "%s: llama2.c tokenizer has %d tokens, fewer than the 259 its byte fallback needs",
                          t->path, (int)t->n_vocab);
  tok_ids syms = {0};
  int32_t space = tok_strmap_get(&t->vocab, " ", 1);
  int rc = space >= 0 ? tok_ids_push(&syms, space) : 0; /* the dummy prefix */
  /* run.c groups a lead byte with up to 3 following continuation bytes, looks the group up and
   * falls back to one token per byte (byte + 3). */
  size_t start = 0;
  for (size_t i = 0; i < len && !rc; i++) {
    if (((unsigned char)text[i] & 0xC0) != 0x80) start = i;
    size_t glen = i - start + 1;
    if (i + 1 < len && ((unsigned char)text[i + 1] & 0xC0) == 0x80 && glen < 4) continue;
    int32_t id = tok_strmap_get(&t->vocab, text + start, glen);
    if (id >= 0) {
      rc = tok_ids_push(&syms, id);
    } else {
      for (size_t k = 0; k < glen && !rc; k++) rc = tok_ids_push(&syms, (unsigned char)text[start + k] + 3);
    }
    start = i + 1;
  }
  if (!rc) rc = tok_bpe_merge(t, syms.p, syms.len, out);
  free(syms.p);
  return rc;
}
