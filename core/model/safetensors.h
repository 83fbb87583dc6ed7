/* A reusable safetensors reader (memory-mapped, zero copy) and a small writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON (an object: tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end]} relative to the end of the header, plus an
 * optional "__metadata__" object of string -> string), then the tensor bytes.
 * Every defect (short file, bad JSON, unknown dtype, shape/offset mismatch, out-of-range or
 * overlapping data, duplicate names) gives QINS_EINPUT with the file and tensor named. */
#ifndef QINS_SAFETENSORS_H
#define QINS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

typedef struct qins_st_tensor {
  char name[QINS_NAME_MAX];
  qins_dtype dtype;         /* F32, F16, BF16, I8, U8, I32 */
  int ndim;                 /* 0 for a scalar */
  int64_t shape[QINS_MAX_DIMS];
  size_t offset;            /* byte offset of the data from the start of the file */
  size_t nbytes;
  const void *data;         /* aligned to the element size (a copy only when the file's is not) */
} qins_st_tensor;

typedef struct qins_st_file {
  char path[1024];
  const uint8_t *base;      /* the whole file */
  size_t size;
  size_t data_start;        /* 8 + header length */
  int n_tensors;
  qins_st_tensor *tensors;  /* in data order (sorted by offset) */
  int n_meta;
  char **meta_keys;         /* __metadata__, in file order */
  char **meta_values;
  void *impl;               /* mapping, aligned copies */
} qins_st_file;

/* Map and parse a file. */
int qins_st_open(const char *path, qins_st_file **out);
/* Parse bytes the caller keeps alive until qins_st_close (`name` is used in messages). */
int qins_st_parse(const char *name, const void *bytes, size_t size, qins_st_file **out);
void qins_st_close(qins_st_file *f);
const qins_st_tensor *qins_st_find(const qins_st_file *f, const char *name);
/* __metadata__ value, or NULL. */
const char *qins_st_meta(const qins_st_file *f, const char *key);

/* safetensors dtype string <-> qins dtype ("F32" ...). Returns 0 or QINS_EINPUT. */
int qins_st_dtype_parse(const char *s, qins_dtype *out);
const char *qins_st_dtype_name(qins_dtype dt); /* NULL for dtypes safetensors cannot hold */

/* One tensor to write: data holds nbytes = numel * dtype size. */
typedef struct qins_st_entry {
  const char *name;
  qins_dtype dtype;
  int ndim;
  const int64_t *shape;
  const void *data;
} qins_st_entry;

/* Write a safetensors file (tensors in the given order, header padded to 8 bytes, written to a
 * temporary name and renamed). meta: NULL or "key", "value", ..., NULL. */
int qins_st_write(const char *path, const qins_st_entry *entries, int n, const char *const *meta);

#endif
