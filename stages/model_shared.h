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

typedef struct qins_reqstate {
  uint64_t req;
  uint32_t attempt;
  void *data;
  struct qins_reqstate *next;
} qins_reqstate;

/* Find the state of (req, attempt); NULL if absent. */
void *qins_reqstate_find(qins_reqstate *list, uint64_t req, uint32_t attempt);
int qins_reqstate_add(qins_reqstate **list, uint64_t req, uint32_t attempt, void *data);
/* Remove states of req with attempt < below, calling destroy(data, user) on each. */
void qins_reqstate_forget(qins_reqstate **list, uint64_t req, uint32_t below, void (*destroy)(void *, void *),
                          void *user);
void qins_reqstate_clear(qins_reqstate **list, void (*destroy)(void *, void *), void *user);

#endif
