/* Token shards (tokenize once, memory-map), held-out split and deterministic batches (see data.h). */
#include "core/train/data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fsutil.h"
#include "core/tokenizer/tokenizer.h"

#define SHARD_MAGIC "QINSTOK1"
#define SHARD_HEADER 128

struct qins_shard {
  char path[1024];
  const uint8_t *base;
  size_t size;
  uint32_t id_bytes, vocab;
  int64_t count;
  uint64_t tok_hash, text_hash;
  const uint8_t *ids;
};

uint64_t qins_data_fnv1a(const void *p, size_t n, uint64_t h) {
  const uint8_t *b = p;
  if (!h) h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t qins_splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Whole file into memory (malloc'd, NUL-terminated). */
static int read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return qins_error_set(QINS_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0) {
    fclose(f);
    return qins_error_set(QINS_EIO, "%s: cannot seek", path);
  }
  long n = ftell(f);
  rewind(f);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (!buf) {
    fclose(f);
    return qins_error_set(QINS_ENOMEM, "%s: no memory for %ld bytes", path, n);
  }
  size_t got = fread(buf, 1, (size_t)n, f);
  fclose(f);
  if (got != (size_t)n) {
    free(buf);
    return qins_error_set(QINS_EIO, "%s: short read", path);
  }
  buf[n] = 0;
  *out = buf;
  *len = (size_t)n;
  return 0;
}

static int hash_file(const char *path, uint64_t *h) {
  char *b;
  size_t n;
  int rc = read_file(path, &b, &n);
  if (rc) return rc;
  *h = qins_data_fnv1a(b, n, 0);
  free(b);
  return 0;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Header of an existing shard, if it parses. */
static int peek_header(const char *path, uint64_t *tok_hash, uint64_t *text_hash) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  uint8_t h[SHARD_HEADER];
  size_t got = fread(h, 1, sizeof h, f);
  fclose(f);
  if (got != sizeof h || memcmp(h, SHARD_MAGIC, 8) != 0) return -1;
  *tok_hash = get_u64(h + 24);
  *text_hash = get_u64(h + 32);
  return 0;
}

int qins_shard_build(const char *text_path, const char *tok_path, const char *shard_path, int *rebuilt) {
  if (rebuilt) *rebuilt = 0;
  char *text = NULL;
  size_t len = 0;
  uint64_t tok_hash = 0;
  int rc = hash_file(tok_path, &tok_hash);
  if (rc) return rc;
  if ((rc = read_file(text_path, &text, &len))) return rc;
  uint64_t text_hash = qins_data_fnv1a(text, len, 0);
  uint64_t eh, et;
  if (peek_header(shard_path, &eh, &et) == 0 && eh == tok_hash && et == text_hash) {
    free(text);
    return 0; /* up to date */
  }
  qins_tokenizer *tok = NULL;
  if ((rc = qins_tokenizer_open(tok_path, &tok))) {
    free(text);
    return rc;
  }
  uint32_t vocab = (uint32_t)qins_tokenizer_vocab_size(tok);
  uint32_t id_bytes = vocab <= 65536 ? 2 : 4;
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp", shard_path);
  if ((rc = qins_mkdirs_for_file(shard_path))) goto done; /* runs/ may not exist yet */
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    rc = qins_error_set(QINS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
    goto done;
  }
  uint8_t hdr[SHARD_HEADER];
  memset(hdr, 0, sizeof hdr);
  if (fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr) goto ioerr;
  /* documents = paragraphs: split at blank lines ("\n\n"), the separator stays with the paragraph
   * before it so the text is reproduced exactly by concatenating the decoded documents */
  uint64_t count = 0;
  size_t pos = 0;
  while (pos < len) {
    const char *p = strstr(text + pos, "\n\n");
    size_t end = p ? (size_t)(p - text) + 2 : len;
    while (end < len && text[end] == '\n') end++;
    int32_t *ids = NULL;
    size_t n = 0;
    if ((rc = qins_tokenizer_encode_n(tok, text + pos, end - pos, QINS_TOK_ADD_SPECIAL, &ids, &n))) {
      fclose(f);
      remove(tmp);
      goto done;
    }
    for (size_t i = 0; i < n; i++) {
      uint8_t b[4];
      if (id_bytes == 2) {
        uint16_t v = (uint16_t)ids[i];
        memcpy(b, &v, 2);
      } else {
        uint32_t v = (uint32_t)ids[i];
        memcpy(b, &v, 4);
      }
      if (fwrite(b, 1, id_bytes, f) != id_bytes) {
        free(ids);
        goto ioerr;
      }
    }
    count += n;
    free(ids);
    pos = end;
  }
  memcpy(hdr, SHARD_MAGIC, 8);
  put_u32(hdr + 8, id_bytes);
  put_u32(hdr + 12, vocab);
  put_u64(hdr + 16, count);
  put_u64(hdr + 24, tok_hash);
  put_u64(hdr + 32, text_hash);
  const char *base = strrchr(tok_path, '/');
  snprintf((char *)hdr + 40, 88, "%s", base ? base + 1 : tok_path);
  if (fseek(f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr) goto ioerr;
  if (fclose(f) != 0) {
    remove(tmp);
    rc = qins_error_set(QINS_EIO, "%s: write failed", tmp);
    goto done;
  }
  if (rename(tmp, shard_path) != 0) {
    remove(tmp);
    rc = qins_error_set(QINS_EIO, "%s: cannot rename to %s: %s", tmp, shard_path, strerror(errno));
    goto done;
  }
  if (rebuilt) *rebuilt = 1;
  rc = 0;
  goto done;
ioerr:
  fclose(f);
  remove(tmp);
  rc = qins_error_set(QINS_EIO, "%s: write failed", tmp);
done:
  qins_tokenizer_close(tok);
  free(text);
  return rc;
}

int qins_shard_open(const char *path, const char *tok_path, qins_shard **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return qins_error_set(QINS_EIO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < SHARD_HEADER) {
    close(fd);
    return qins_error_set(QINS_EINPUT, "%s: not a token shard (shorter than its %d-byte header)", path,
                          SHARD_HEADER);
  }
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return qins_error_set(QINS_EIO, "%s: mmap failed: %s", path, strerror(errno));
  const uint8_t *b = m;
  int rc = 0;
  uint32_t id_bytes = get_u32(b + 8);
  uint64_t count = get_u64(b + 16);
  if (memcmp(b, SHARD_MAGIC, 8) != 0) rc = qins_error_set(QINS_EINPUT, "%s: bad magic (not a qins token shard)", path);
  else if (id_bytes != 2 && id_bytes != 4)
    rc = qins_error_set(QINS_EINPUT, "%s: %u bytes per id (expected 2 or 4)", path, id_bytes);
  else if (count > ((uint64_t)st.st_size - SHARD_HEADER) / id_bytes ||
           SHARD_HEADER + count * id_bytes != (uint64_t)st.st_size)
    rc = qins_error_set(QINS_EINPUT, "%s: header says %llu ids but the file holds %lld bytes", path,
                        (unsigned long long)count, (long long)st.st_size);
  uint64_t th = 0;
  if (!rc && tok_path && (rc = hash_file(tok_path, &th)) == 0 && th != get_u64(b + 24))
    rc = qins_error_set(QINS_EINPUT, "%s: made with tokenizer %.88s, not with %s (hash differs); rebuild the shard",
                        path, (const char *)b + 40, tok_path);
  qins_shard *s = NULL;
  if (!rc) {
    s = calloc(1, sizeof *s);
    if (!s) rc = qins_error_set(QINS_ENOMEM, "no memory");
  }
  if (rc || !s) {
    munmap(m, (size_t)st.st_size);
    return rc;
  }
  snprintf(s->path, sizeof s->path, "%s", path);
  s->base = b;
  s->size = (size_t)st.st_size;
  s->id_bytes = id_bytes;
  s->vocab = get_u32(b + 12);
  s->count = (int64_t)count;
  s->tok_hash = get_u64(b + 24);
  s->text_hash = get_u64(b + 32);
  s->ids = b + SHARD_HEADER;
  *out = s;
  return 0;
}

void qins_shard_close(qins_shard *s) {
  if (!s) return;
  munmap((void *)s->base, s->size);
  free(s);
}

int64_t qins_shard_count(const qins_shard *s) { return s->count; }
uint32_t qins_shard_vocab(const qins_shard *s) { return s->vocab; }
uint64_t qins_shard_tokenizer_hash(const qins_shard *s) { return s->tok_hash; }

int32_t qins_shard_get(const qins_shard *s, int64_t i) {
  if (s->id_bytes == 2) {
    uint16_t v;
    memcpy(&v, s->ids + 2 * i, 2);
    return v;
  }
  uint32_t v;
  memcpy(&v, s->ids + 4 * i, 4);
  return (int32_t)v;
}

int qins_data_split_make(const qins_shard *s, double frac, int seq, qins_data_split *train, qins_data_split *heldout) {
  if (!(frac >= 0 && frac < 1)) return qins_error_set(QINS_EINVAL, "data: holdout fraction %g not in [0, 1)", frac);
  int64_t hold = (int64_t)((double)s->count * frac);
  train->shard = heldout->shard = s;
  train->begin = 0;
  train->end = s->count - hold;
  heldout->begin = train->end;
  heldout->end = s->count;
  if (train->end - train->begin < (int64_t)seq + 2)
    return qins_error_set(QINS_EINPUT, "%s: %lld training tokens, fewer than one window of %d", s->path,
                          (long long)(train->end - train->begin), seq + 1);
  if (hold > 0 && hold < (int64_t)seq + 1)
    return qins_error_set(QINS_EINPUT, "%s: held-out split has %lld tokens, fewer than one window of %d", s->path,
                          (long long)hold, seq + 1);
  return 0;
}

int qins_data_batch(const qins_data_split *sp, uint64_t seed, int64_t k, int B, int T, int32_t *out) {
  int64_t span = sp->end - sp->begin - (T + 1);
  if (B < 1 || T < 1 || span < 1)
    return qins_error_set(QINS_EINVAL, "data: batch %dx%d does not fit a split of %lld tokens", B, T + 1,
                          (long long)(sp->end - sp->begin));
  for (int b = 0; b < B; b++) {
    /* one independent stream per (seed, batch, row): no state beyond k */
    uint64_t st = seed * 0x9e3779b97f4a7c15ull ^ ((uint64_t)k << 20) ^ (uint64_t)b;
    qins_splitmix64(&st);
    int64_t start = sp->begin + (int64_t)(qins_splitmix64(&st) % (uint64_t)(span + 1));
    for (int t = 0; t <= T; t++) out[(size_t)b * (T + 1) + t] = qins_shard_get(sp->shard, start + t);
  }
  return 0;
}

int64_t qins_data_eval_windows(const qins_data_split *sp, int T) {
  int64_t n = sp->end - sp->begin;
  return n < T + 1 ? 0 : (n - 1) / T;
}

int qins_data_eval_window(const qins_data_split *sp, int64_t j, int T, int32_t *out) {
  if (j < 0 || j >= qins_data_eval_windows(sp, T))
    return qins_error_set(QINS_EINVAL, "data: held-out window %lld out of range", (long long)j);
  int64_t start = sp->begin + j * T;
  for (int t = 0; t <= T; t++) out[t] = qins_shard_get(sp->shard, start + t);
  return 0;
}
