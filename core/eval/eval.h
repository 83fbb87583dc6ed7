/* Evaluation metrics for comparing two branches of one model (FP vs QINS): KL of next-token
 * distributions, top-k overlap, cosine, perplexity with a sliding window, greedy token match. */
#ifndef QINS_EVAL_H
#define QINS_EVAL_H

#include <stdint.h>

#include "core/llm/llm.h"

/* KL(P || Q) in nats between softmax(lp / T) and softmax(lq / T) over n logits (double sums,
 * log-sum-exp, so no overflow for any finite logits). T <= 0 is treated as 1. Always >= 0. */
double qins_eval_kl_logits(const float *lp, const float *lq, int n, double temperature);
/* KL(P || Q) of two probability vectors; terms with p = 0 count 0; p > 0 with q = 0 gives +inf. */
double qins_eval_kl_probs(const float *p, const float *q, int n);
/* |top-k(a) ∩ top-k(b)| / k (ties broken by lower index, as the argmax op does). k clamped to n. */
double qins_eval_topk_overlap(const float *a, const float *b, int n, int k);
/* cos(a, b) in double; 1 when both are all zero, 0 when only one is. */
double qins_eval_cosine(const float *a, const float *b, int64_t n);
/* -log softmax(logits)[target] in nats. */
double qins_eval_nll(const float *logits, int n, int target);
/* Fraction of equal ids among n; *first_div receives the first differing index (n if none). */
double qins_eval_match(const int32_t *a, const int32_t *b, int n, int *first_div);

/* Perplexity over ids[0..n) with a sliding window: windows of `window` tokens start every `stride`
 * tokens; each token is scored once, by the first window in which it has at least window-stride
 * tokens of context (the first window scores all its tokens but the first). Returns exp(mean NLL);
 * *scored (may be NULL) receives the token count. window <= 0: the runtime's context. */
int qins_eval_perplexity(qins_llm *llm, const int32_t *ids, int n, int window, int stride, double *ppl,
                         int64_t *scored);

/* The same, calling on_token (may be NULL) for every scored token: window index, its position
 * in the window (its context length), its position in ids, and its NLL in nats. */
int qins_eval_perplexity_ex(qins_llm *llm, const int32_t *ids, int n, int window, int stride,
                            void (*on_token)(void *user, int win, int pos_in_window, int abs_pos, double nll),
                            void *user, double *ppl, int64_t *scored);

/* Mean cosine between the hidden rows of two runtimes of the same model after every layer, on
 * one sequence (cos[n_layers]): forward_range layer by layer (f32 K/V caches of the pipeline path). */
int qins_eval_layer_cosine(qins_llm *a, qins_llm *b, const int32_t *ids, int n, double *cos);

#endif
