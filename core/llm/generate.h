/* Autoregressive generation: prefill a prompt, then sample token by token with the KV cache. */
#ifndef QINS_GENERATE_H
#define QINS_GENERATE_H

#include <stdint.h>

#include "core/llm/llm.h"
#include "core/llm/sampler.h"

typedef enum qins_gen_stop {
  QINS_GEN_STOP_STEPS = 0, /* max_new tokens generated */
  QINS_GEN_STOP_ID,        /* a stop id (EOS) was sampled; it is not part of the output */
  QINS_GEN_STOP_CALLBACK,  /* the callback asked to stop (e.g. a stop string) */
  QINS_GEN_STOP_CONTEXT,   /* the cache is full */
} qins_gen_stop;

typedef struct qins_gen_stats {
  int n_prompt, n_generated;
  double prefill_s, decode_s; /* wall time of the prompt's forward and of all decode forwards */
  qins_gen_stop stop;
} qins_gen_stats;

/* Called with each generated token; return 0 to go on, 1 to stop (the token is kept), < 0 to
 * abort with that status. */
typedef int (*qins_gen_token_fn)(void *user, int32_t id);

/* Reset the cache, prefill prompt[0..n_prompt), then generate up to max_new tokens.
 * sampler NULL: greedy through the backend's argmax op (no logits download). With a sampler the
 * last position's logits are downloaded and sampled on the host; the repetition penalty sees the
 * prompt and everything generated. out (may be NULL, room for max_new) receives the ids. */
int qins_llm_generate(qins_llm *llm, qins_sampler *sampler, const int32_t *prompt, int n_prompt, int max_new,
                      const int32_t *stop_ids, int n_stop, qins_gen_token_fn fn, void *user, int32_t *out,
                      qins_gen_stats *stats);

#endif
