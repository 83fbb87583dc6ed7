/* Token samplers on host logits: penalty -> temperature -> top-k -> softmax -> top-p -> min-p -> draw. */
#include "core/llm/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

struct qins_sampler {
  qins_sampler_params p;
  int vocab;
  uint64_t rng;
  float *work;    /* [vocab] adjusted logits, then probabilities */
  int32_t *order; /* [vocab] ids sorted by probability */
  uint8_t *seen;  /* [vocab] marks for the repetition penalty */
};

static qins_mem_owner *owner(void) { return qins_mem_owner_get("sampler"); }

qins_sampler_params qins_sampler_defaults(void) {
  qins_sampler_params p = {1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 0};
  return p;
}

uint64_t qins_rng_seed(uint64_t seed) {
  /* splitmix64 so that nearby seeds give unrelated streams; xorshift needs a nonzero state */
  uint64_t z = seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z ? z : 0x2545F4914F6CDD1Dull;
}

uint64_t qins_rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

float qins_rng_uniform(uint64_t *s) { return (float)(qins_rng_next(s) >> 40) / 16777216.0f; }

int qins_sampler_create(const qins_sampler_params *p, int vocab, qins_sampler **out) {
  *out = NULL;
  if (vocab < 1) return qins_error_set(QINS_EINVAL, "sampler: vocabulary size %d", vocab);
  if (p->temperature != p->temperature || p->top_p != p->top_p || p->min_p != p->min_p || p->min_p > 1.0f ||
      p->top_p <= 0.0f || !(p->repeat_penalty > 0.0f))
    return qins_error_set(QINS_EINVAL,
                          "sampler: bad parameters (temperature %g, top-p %g in (0,1], min-p %g in [0,1], "
                          "repeat penalty %g > 0)",
                          (double)p->temperature, (double)p->top_p, (double)p->min_p, (double)p->repeat_penalty);
  qins_sampler *s = qins_mem_calloc(owner(), 1, sizeof *s);
  if (!s) return QINS_ENOMEM;
  s->p = *p;
  s->vocab = vocab;
  s->work = qins_mem_alloc(owner(), (size_t)vocab * sizeof(float));
  s->order = qins_mem_alloc(owner(), (size_t)vocab * sizeof(int32_t));
  s->seen = qins_mem_calloc(owner(), (size_t)vocab, 1);
  if (!s->work || !s->order || !s->seen) {
    qins_sampler_destroy(s);
    return QINS_ENOMEM;
  }
  s->rng = qins_rng_seed(p->seed);
  *out = s;
  return 0;
}

void qins_sampler_destroy(qins_sampler *s) {
  if (!s) return;
  qins_mem_free(owner(), s->work);
  qins_mem_free(owner(), s->order);
  qins_mem_free(owner(), s->seen);
  qins_mem_free(owner(), s);
}

void qins_sampler_reseed(qins_sampler *s, uint64_t seed) {
  s->p.seed = seed;
  s->rng = qins_rng_seed(seed);
}

int32_t qins_argmax_f32(const float *x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

static void penalty_marked(float *logits, int vocab, const int32_t *hist, int n_hist, float r, uint8_t *seen) {
  if (r == 1.0f || !hist) return;
  for (int i = 0; i < n_hist; i++) {
    int32_t t = hist[i];
    if (t < 0 || t >= vocab || seen[t]) continue;
    seen[t] = 1;
    logits[t] = logits[t] > 0.0f ? logits[t] / r : logits[t] * r;
  }
  for (int i = 0; i < n_hist; i++)
    if (hist[i] >= 0 && hist[i] < vocab) seen[hist[i]] = 0;
}

void qins_sampler_apply_penalty(float *logits, int vocab, const int32_t *hist, int n_hist, float penalty) {
  uint8_t *seen = qins_mem_calloc(owner(), (size_t)vocab, 1);
  if (!seen) return;
  penalty_marked(logits, vocab, hist, n_hist, penalty, seen);
  qins_mem_free(owner(), seen);
}

/* Sort by descending probability; equal probabilities keep the lower id first, so the result
 * never depends on the sort implementation. */
static int by_prob(const void *a, const void *b, void *user) {
  const float *probs = user;
  int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
  float pa = probs[ia], pb = probs[ib];
  if (pa != pb) return pa > pb ? -1 : 1;
  return ia < ib ? -1 : ia > ib;
}

/* Fills s->work with the final probabilities and s->order[0..kept) with the kept ids by
 * descending probability; returns kept (0 means greedy: order[0] is the argmax). */
static int build(qins_sampler *s, const float *logits, const int32_t *hist, int n_hist) {
  int V = s->vocab;
  float *w = s->work;
  memcpy(w, logits, (size_t)V * sizeof(float));
  if (hist) {
    int start = s->p.repeat_last_n > 0 && n_hist > s->p.repeat_last_n ? n_hist - s->p.repeat_last_n : 0;
    penalty_marked(w, V, hist + start, n_hist - start, s->p.repeat_penalty, s->seen);
  }
  if (!(s->p.temperature > 0.0f)) {
    s->order[0] = qins_argmax_f32(w, V);
    return 0;
  }
  float mx = w[qins_argmax_f32(w, V)];
  double sum = 0.0;
  for (int i = 0; i < V; i++) {
    w[i] = expf((w[i] - mx) / s->p.temperature);
    sum += w[i];
  }
  for (int i = 0; i < V; i++) w[i] = (float)(w[i] / sum);
  /* probabilities are monotone in the logits, so top-k on them equals top-k on logits */
  for (int i = 0; i < V; i++) s->order[i] = i;
  qsort_r(s->order, (size_t)V, sizeof(int32_t), by_prob, w);
  int kept = V;
  if (s->p.top_k > 0 && s->p.top_k < kept) kept = s->p.top_k;
  if (s->p.top_p < 1.0f) {
    double cum = 0.0, mass = 0.0;
    for (int i = 0; i < kept; i++) mass += w[s->order[i]];
    /* top-p over the top-k survivors, renormalised: smallest prefix reaching top_p of their mass */
    int n = 0;
    while (n < kept) {
      cum += w[s->order[n]];
      n++;
      if (cum >= (double)s->p.top_p * mass) break;
    }
    kept = n;
  }
  if (s->p.min_p > 0.0f) {
    float pmax = w[s->order[0]];
    int n = 1;
    while (n < kept && w[s->order[n]] >= s->p.min_p * pmax) n++;
    kept = n;
  }
  double mass = 0.0;
  for (int i = 0; i < kept; i++) mass += w[s->order[i]];
  float *p = w;
  for (int i = kept; i < V; i++) p[s->order[i]] = 0.0f;
  for (int i = 0; i < kept; i++) p[s->order[i]] = (float)(p[s->order[i]] / mass);
  return kept;
}

void qins_sampler_probs(qins_sampler *s, const float *logits, const int32_t *hist, int n_hist, float *probs) {
  int kept = build(s, logits, hist, n_hist);
  if (kept == 0) {
    memset(probs, 0, (size_t)s->vocab * sizeof(float));
    probs[s->order[0]] = 1.0f;
    return;
  }
  memcpy(probs, s->work, (size_t)s->vocab * sizeof(float));
}

int32_t qins_sampler_sample(qins_sampler *s, const float *logits, const int32_t *hist, int n_hist) {
  int kept = build(s, logits, hist, n_hist);
  if (kept == 0) return s->order[0];
  /* inverse CDF in descending-probability order; rounding leftovers go to the last kept id */
  float u = qins_rng_uniform(&s->rng);
  double cum = 0.0;
  for (int i = 0; i < kept; i++) {
    cum += s->work[s->order[i]];
    if ((double)u < cum) return s->order[i];
  }
  return s->order[kept - 1];
}
