/* The generation loop shared by `qins generate`, the bench and tests. */
#include "core/llm/generate.h"

#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/mem.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int qins_llm_generate(qins_llm *l, qins_sampler *s, const int32_t *prompt, int n_prompt, int max_new,
                      const int32_t *stop_ids, int n_stop, qins_gen_token_fn fn, void *user, int32_t *out,
                      qins_gen_stats *st) {
  qins_gen_stats local;
  if (!st) st = &local;
  memset(st, 0, sizeof *st);
  st->n_prompt = n_prompt;
  if (n_prompt < 1) return qins_error_set(QINS_EINVAL, "generate: the prompt has no tokens (add BOS or text)");
  if (max_new < 0) return qins_error_set(QINS_EINVAL, "generate: negative step count %d", max_new);
  int V = qins_llm_vocab(l), max_seq = qins_llm_max_seq(l);
  if (n_prompt > max_seq)
    return qins_error_set(QINS_EINVAL, "generate: prompt of %d tokens exceeds the context of %d", n_prompt, max_seq);
  qins_mem_owner *owner = qins_mem_owner_get("generate");
  float *logits = s ? qins_mem_alloc(owner, (size_t)V * sizeof(float)) : NULL;
  int32_t *hist = qins_mem_alloc(owner, (size_t)(n_prompt + max_new + 1) * sizeof(int32_t));
  if ((s && !logits) || !hist) {
    qins_mem_free(owner, logits);
    qins_mem_free(owner, hist);
    return QINS_ENOMEM;
  }
  memcpy(hist, prompt, (size_t)n_prompt * sizeof(int32_t));
  int n_hist = n_prompt;
  qins_llm_reset(l);
  int rc = 0;
  int32_t next = 0;
  double t0 = now_s();
  rc = qins_llm_forward(l, prompt, n_prompt, 0, logits, s ? NULL : &next);
  st->prefill_s = now_s() - t0;
  st->stop = QINS_GEN_STOP_STEPS;
  double t1 = now_s();
  for (int i = 0; !rc && i < max_new; i++) {
    if (s) next = qins_sampler_sample(s, logits, hist, n_hist);
    int is_stop = 0;
    for (int k = 0; k < n_stop; k++) is_stop |= next == stop_ids[k];
    if (is_stop) {
      st->stop = QINS_GEN_STOP_ID;
      break;
    }
    hist[n_hist++] = next;
    if (out) out[st->n_generated] = next;
    st->n_generated++;
    if (fn) {
      int r = fn(user, next);
      if (r < 0) {
        rc = r;
        break;
      }
      if (r > 0) {
        st->stop = QINS_GEN_STOP_CALLBACK;
        break;
      }
    }
    if (i + 1 == max_new) break; /* the last token needs no forward */
    if (qins_llm_pos(l) >= max_seq) {
      st->stop = QINS_GEN_STOP_CONTEXT;
      break;
    }
    int32_t cur = next;
    rc = qins_llm_forward(l, &cur, 1, 0, logits, s ? NULL : &next);
  }
  st->decode_s = now_s() - t1;
  qins_mem_free(owner, logits);
  qins_mem_free(owner, hist);
  return rc;
}
