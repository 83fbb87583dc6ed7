/* Token samplers: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded RNG. */
#ifndef QINS_SAMPLER_H
#define QINS_SAMPLER_H

#include <stdint.h>

typedef struct qins_sampler_params {
  float temperature;    /* <= 0: greedy (argmax, ties to the lowest id) */
  int top_k;            /* keep the k most likely tokens; <= 0: off */
  float top_p;          /* keep the smallest most-likely set with mass >= top_p; >= 1: off */
  float min_p;          /* keep tokens with p >= min_p * p_max; <= 0: off */
  float repeat_penalty; /* logits of tokens already seen: / r if positive, * r if not; 1: off */
  int repeat_last_n;    /* how many previous tokens count as seen; <= 0: all given */
  uint64_t seed;
} qins_sampler_params;

typedef struct qins_sampler qins_sampler;

/* Defaults: temperature 1, no top-k/p, min-p, penalty; seed 0. */
qins_sampler_params qins_sampler_defaults(void);
int qins_sampler_create(const qins_sampler_params *p, int vocab, qins_sampler **out);
void qins_sampler_destroy(qins_sampler *s);
/* Restart the RNG stream from the seed. */
void qins_sampler_reseed(qins_sampler *s, uint64_t seed);

/* Pick the next token from logits[vocab] (not modified); hist: previous tokens (for the
 * repetition penalty), may be NULL. */
int32_t qins_sampler_sample(qins_sampler *s, const float *logits, const int32_t *hist, int n_hist);
/* The distribution sample draws from (after penalty, temperature, top-k, top-p, min-p and
 * renormalisation): probs[vocab], zero outside the kept set. Greedy gives a one-hot. */
void qins_sampler_probs(qins_sampler *s, const float *logits, const int32_t *hist, int n_hist, float *probs);

/* Apply the repetition penalty to logits in place (each distinct seen token once). */
void qins_sampler_apply_penalty(float *logits, int vocab, const int32_t *hist, int n_hist, float penalty);
/* Lowest index of the largest value. */
int32_t qins_argmax_f32(const float *x, int n);

/* The RNG: xorshift64* over a splitmix64-scrambled seed; uniform floats in [0,1) from the top 24
 * bits. Pure integer arithmetic, so a seed gives the same stream on every machine. */
uint64_t qins_rng_next(uint64_t *state);
float qins_rng_uniform(uint64_t *state);
uint64_t qins_rng_seed(uint64_t seed);

#endif
