/* What the model stages of one worker share: the model mapping, the backend, one runtime (its
 * weights placed once) and the tokenizer, created by the first stage that asks. Plus a small
 * per-request state table keyed by (request, attempt). */
#ifndef QINS_STAGES_MODEL_SHARED_H
#define QINS_STAGES_MODEL_SHARED_H

#include <stdint.h>

#include "core/backend.h"
#include "core/llm/llm.h"
#include "core/model/model.h"
#include "core/tokenizer/tokenizer.h"
#include "stages/stage.h"

typedef struct qins_stage_model {
  qins_model *model;
  qins_backend *be;
  qins_llm *llm;
  qins_tokenizer *tok;
  struct qins_policy_state *policy; /* the pipeline's `policy:` applied to llm (NULL: none) */
} qins_stage_model;

/* need: bit 1 runtime (model + backend + llm), bit 2 tokenizer. Errors name the stage and key. */
enum { QINS_NEED_LLM = 1, QINS_NEED_TOK = 2 };
int qins_stage_model_get(const qins_stage_ctx *ctx, int need, qins_stage_model **out);
/* The same for an explicit shared key and policy node (NULL: none). */
int qins_stage_model_get_key(const qins_stage_ctx *ctx, int need, const char *key, qins_cfg *pn,
                             qins_stage_model **out);

/* The runtime a model stage uses (stages/branch.c): key "model" (the pipeline's root policy, in
 * *node, may be NULL) unless the stage has its own `policy:` option (map, policy YAML path or
 * none), which gives another key and node. *file_root (free it) holds a loaded policy file. */
int qins_stage_branch_policy(const qins_stage_ctx *ctx, char *key, size_t n, qins_cfg **node,
                             qins_cfg **file_root);

/* The KV cache settings for this stage's worker: from a `kv_store` stage placed on the same
 * worker (its max_seq, pool options), else max_seq 0 (the pipeline's / model's) and pool 64. */
void qins_stage_kv_config(const qins_stage_ctx *ctx, int *max_seq, int *pool);

typedef struct qins_reqstate {
  uint64_t req;
  uint32_t attempt;
  void *data;
  struct qins_reqstate *next;
} qins_reqstate;

/* Find the state of (req, attempt); NULL if absent. */
void *qins_reqstate_find(qins_reqstate *list, uint64_t req, uint32_t attempt);
int qins_reqstate_add(qins_reqstate **list, uint64_t req, uint32_t attempt, void *data);
/* The (req, attempt) entry's data, or a new zeroed `size`-byte one added to the list; NULL (error
 * set) when out of memory. */
void *qins_reqstate_get(qins_reqstate **list, uint64_t req, uint32_t attempt, size_t size);
/* Remove states of req with attempt < below, calling destroy(data, user) on each. */
void qins_reqstate_forget(qins_reqstate **list, uint64_t req, uint32_t below, void (*destroy)(void *, void *),
                          void *user);
void qins_reqstate_clear(qins_reqstate **list, void (*destroy)(void *, void *), void *user);

/* The ids a worker's model has been fed per request (prompt, then each generated token), kept
 * only when a `sample` stage with a repetition penalty asks for them: it creates the table
 * (shared key "reqids"), the `embed` stage of the same worker appends what it embeds. */
typedef struct qins_reqids {
  qins_reqstate *list; /* (req, attempt) -> qins_idvec */
} qins_reqids;
typedef struct qins_idvec {
  int32_t *ids;
  int n, cap;
} qins_idvec;

/* The worker's table: NULL when absent and !create. */
qins_reqids *qins_reqids_get(const qins_stage_ctx *ctx, int create);
int qins_reqids_append(qins_reqids *r, uint64_t req, uint32_t attempt, const int32_t *ids, int n);
const qins_idvec *qins_reqids_find(qins_reqids *r, uint64_t req, uint32_t attempt);
void qins_reqids_forget(qins_reqids *r, uint64_t req, uint32_t below);

#endif
