/* Private helpers shared by the model loaders: file mappings, the weight list, cleanup. */
#ifndef QINS_MODEL_INTERNAL_H
#define QINS_MODEL_INTERNAL_H

#include <stddef.h>

#include "core/mem.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"

/* A read-only file mapping. */
typedef struct qins_map {
  char path[1024];
  void *addr;   /* NULL for an empty file */
  size_t size;
} qins_map;

/* Map `path` read-only. Missing/unreadable/non-regular file: QINS_EINPUT; other OS errors: QINS_EIO. */
int qins_map_open(const char *path, qins_map *m);
void qins_map_close(qins_map *m);

/* What a model holds on to until qins_model_close. */
typedef struct qins_model_impl {
  qins_map map;              /* llama2.c: the checkpoint */
  qins_st_file **st;         /* safetensors files (one per shard) */
  int n_st;
  int *sorted;               /* weight indices sorted by name, for qins_model_find */
  int cap_weights;
  void **owned;              /* buffers the loader allocated (decoded QINS weights), freed at close */
  int n_owned;
} qins_model_impl;

qins_mem_owner *qins_model_owner(void);
/* Append a weight (name copied; data not). Returns 0 or QINS_ENOMEM / QINS_EINPUT (name too long). */
int qins_model_add_weight(qins_model *m, const char *name, qins_dtype dt, int ndim, const int64_t *shape,
                          const void *data, size_t nbytes, const char *file);
/* Build the name index; QINS_EINPUT on a duplicate name. */
int qins_model_index(qins_model *m);

/* Loaders (fill an allocated, zeroed qins_model whose impl is set). */
int qins_llama2c_load(qins_model *m, const char *path);
int qins_hf_load(qins_model *m, const char *dir);
int qins_st_model_load(qins_model *m, const char *path); /* bare .safetensors or index.json */

/* A file written by `qins convert` (metadata qins.converted): decode every QINS segment into an
 * f32 weight under its Hugging Face name, so the runtime loads it like any model (core/model/qins_st.c). */
int qins_model_expand_qins(qins_model *m);

/* Parse config.json into cfg (rope factor arrays allocated with qins_model_owner(), freed by
 * qins_model_close). */
int qins_hf_config_parse(const char *path, qins_model_config *cfg);

#endif
