/* Training data: a text corpus tokenized once into a memory-mapped token shard, a held-out split
 * (the last fraction of the tokens) and deterministic shuffled (B, T+1) batches.
 *
 * Shard file (little-endian), 128-byte header then the ids:
 *   0  char[8]  "QINSTOK1"
 *   8  u32      bytes per id (2 or 4)
 *   12 u32      vocab size of the tokenizer
 *   16 u64      token count
 *   24 u64      FNV-1a 64 hash of the tokenizer file's bytes (identity: a shard made with another
 *               tokenizer is refused)
 *   32 u64      FNV-1a 64 hash of the corpus bytes
 *   40 char[88] tokenizer file name (basename, NUL padded)
 * The corpus is split into documents at blank lines; every document is encoded with the
 * tokenizer's BOS in front (llama2.c / stories260K style), so BOS separates documents.
 *
 * Batches: row b of batch k starts at a position drawn from splitmix64(seed, k, b), uniform over
 * the train split; the data position of a run is just k (the number of batches served), so a
 * checkpoint stores (seed, k) and a resumed run gets the same batches. */
#ifndef QINS_TRAIN_DATA_H
#define QINS_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

typedef struct qins_shard qins_shard;

/* Tokenize text_path with the tokenizer at tok_path into shard_path (written to a temporary name
 * and renamed). If shard_path exists with the same tokenizer and corpus hashes, nothing is done. */
int qins_shard_build(const char *text_path, const char *tok_path, const char *shard_path, int *rebuilt);
/* Map a shard. tok_path (may be NULL) must hash to the shard's tokenizer identity. */
int qins_shard_open(const char *shard_path, const char *tok_path, qins_shard **out);
void qins_shard_close(qins_shard *s);
int64_t qins_shard_count(const qins_shard *s);
uint32_t qins_shard_vocab(const qins_shard *s);
int32_t qins_shard_get(const qins_shard *s, int64_t i);
uint64_t qins_shard_tokenizer_hash(const qins_shard *s);

/* Splits: train = [0, n - holdout), held-out = the last holdout = floor(n * frac) tokens. */
typedef struct qins_data_split {
  const qins_shard *shard;
  int64_t begin, end;
} qins_data_split;
int qins_data_split_make(const qins_shard *s, double holdout_frac, int seq, qins_data_split *train,
                         qins_data_split *heldout);

/* Batch k of a run seeded `seed`: B rows of T+1 ids (row-major), random windows of the split. */
int qins_data_batch(const qins_data_split *sp, uint64_t seed, int64_t k, int B, int T, int32_t *out);
/* Held-out window j (0-based, non-overlapping, T+1 ids each, stride T); count via _windows. */
int64_t qins_data_eval_windows(const qins_data_split *sp, int T);
int qins_data_eval_window(const qins_data_split *sp, int64_t j, int T, int32_t *out);

uint64_t qins_data_fnv1a(const void *p, size_t n, uint64_t h); /* h = 0: the standard offset basis */
uint64_t qins_splitmix64(uint64_t *state);

#endif
