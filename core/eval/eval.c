/* Evaluation metrics: KL, top-k overlap, cosine, NLL/perplexity, greedy match, per-layer cosine. */
#include "core/eval/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static double log_sum_exp(const float *x, int n, double inv_t) {
  double m = -INFINITY;
  for (int i = 0; i < n; i++)
    if (x[i] * inv_t > m) m = x[i] * inv_t;
  double s = 0;
  for (int i = 0; i < n; i++) s += exp(x[i] * inv_t - m);
  return m + log(s);
}

double qins_eval_kl_logits(const float *lp, const float *lq, int n, double temperature) {
  double inv_t = temperature > 0 ? 1.0 / temperature : 1.0;
  double zp = log_sum_exp(lp, n, inv_t), zq = log_sum_exp(lq, n, inv_t), kl = 0;
  for (int i = 0; i < n; i++) {
    double a = lp[i] * inv_t - zp, b = lq[i] * inv_t - zq;
    kl += exp(a) * (a - b);
  }
  return kl > 0 ? kl : 0;
}

double qins_eval_kl_probs(const float *p, const float *q, int n) {
  double kl = 0;
  for (int i = 0; i < n; i++) {
    if (p[i] <= 0) continue;
    if (q[i] <= 0) return INFINITY;
    kl += (double)p[i] * log((double)p[i] / (double)q[i]);
  }
  return kl > 0 ? kl : 0;
}

/* indices of the k largest (ties: lower index first), by partial selection */
static void topk(const float *x, int n, int k, int *idx) {
  for (int j = 0; j < k; j++) idx[j] = -1;
  for (int i = 0; i < n; i++) {
    int pos = k;
    while (pos > 0 && (idx[pos - 1] < 0 || x[i] > x[idx[pos - 1]])) pos--;
    if (pos >= k) continue;
    memmove(idx + pos + 1, idx + pos, (size_t)(k - pos - 1) * sizeof(int));
    idx[pos] = i;
  }
}

double qins_eval_topk_overlap(const float *a, const float *b, int n, int k) {
  if (k > n) k = n;
  if (k < 1) return 1;
  int *ia = malloc((size_t)k * sizeof(int)), *ib = malloc((size_t)k * sizeof(int));
  if (!ia || !ib) {
    free(ia);
    free(ib);
    return NAN;
  }
  topk(a, n, k, ia);
  topk(b, n, k, ib);
  int common = 0;
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      if (ia[i] == ib[j]) {
        common++;
        break;
      }
  free(ia);
  free(ib);
  return (double)common / k;
}

double qins_eval_cosine(const float *a, const float *b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; i++) {
    ab += (double)a[i] * b[i];
    aa += (double)a[i] * a[i];
    bb += (double)b[i] * b[i];
  }
  if (aa == 0 && bb == 0) return 1;
  if (aa == 0 || bb == 0) return 0;
  return ab / sqrt(aa * bb);
}

double qins_eval_nll(const float *logits, int n, int target) { return log_sum_exp(logits, n, 1.0) - logits[target]; }

double qins_eval_match(const int32_t *a, const int32_t *b, int n, int *first_div) {
  int same = 0, first = n;
  for (int i = 0; i < n; i++) {
    if (a[i] == b[i])
      same++;
    else if (first == n)
      first = i;
  }
  if (first_div) *first_div = first;
  return n > 0 ? (double)same / n : 1;
}

int qins_eval_perplexity(qins_llm *llm, const int32_t *ids, int n, int window, int stride, double *ppl,
                         int64_t *scored) {
  return qins_eval_perplexity_ex(llm, ids, n, window, stride, NULL, NULL, ppl, scored);
}

int qins_eval_perplexity_ex(qins_llm *llm, const int32_t *ids, int n, int window, int stride,
                            void (*on_token)(void *user, int win, int pos_in_window, int abs_pos, double nll),
                            void *user, double *ppl, int64_t *scored) {
  int V = qins_llm_vocab(llm);
  if (window <= 0 || window > qins_llm_max_seq(llm)) window = qins_llm_max_seq(llm);
  if (stride <= 0 || stride > window) stride = window;
  if (n < 2) return qins_error_set(QINS_EINVAL, "perplexity: need at least 2 tokens, got %d", n);
  float *logits = malloc((size_t)window * (size_t)V * sizeof(float));
  if (!logits) return QINS_ENOMEM;
  double nll = 0;
  int64_t count = 0;
  int done_to = 1; /* tokens [1, done_to) are scored */
  int rc = 0;
  int win = 0;
  for (int s = 0; done_to < n; s += stride, win++) {
    int len = n - s < window ? n - s : window;
    if (len < 2) break;
    qins_llm_reset(llm);
    if ((rc = qins_llm_forward(llm, ids + s, len, 1, logits, NULL))) break;
    for (int t = 1; t < len; t++) {
      int abs = s + t;
      if (abs < done_to) continue;
      double e = qins_eval_nll(logits + (size_t)(t - 1) * (size_t)V, V, ids[abs]);
      nll += e;
      count++;
      if (on_token) on_token(user, win, t, abs, e);
    }
    done_to = s + len;
    if (s + len >= n) break;
  }
  free(logits);
  qins_llm_reset(llm);
  if (rc) return rc;
  *ppl = exp(nll / (double)count);
  if (scored) *scored = count;
  return 0;
}

int qins_eval_layer_cosine(qins_llm *a, qins_llm *b, const int32_t *ids, int n, double *cos) {
  const qins_model_config *c = qins_llm_config(a);
  int L = c->n_layers, D = c->dim;
  qins_llm_kv *ka = NULL, *kb = NULL;
  float *xa = malloc((size_t)n * (size_t)D * sizeof(float)), *xb = malloc((size_t)n * (size_t)D * sizeof(float));
  int rc = QINS_ENOMEM;
  if (!xa || !xb) goto done;
  if ((rc = qins_llm_kv_create(a, 0, L, &ka)) || (rc = qins_llm_kv_create(b, 0, L, &kb))) goto done;
  for (int l = 0; l < L; l++) {
    if ((rc = qins_llm_forward_range(a, ka, l ? NULL : ids, xa, n, 0, l, l + 1, NULL, NULL))) goto done;
    if ((rc = qins_llm_forward_range(b, kb, l ? NULL : ids, xb, n, 0, l, l + 1, NULL, NULL))) goto done;
    double s = 0;
    for (int r = 0; r < n; r++) s += qins_eval_cosine(xa + (size_t)r * D, xb + (size_t)r * D, D);
    cos[l] = s / n;
  }
done:
  qins_llm_kv_destroy(ka);
  qins_llm_kv_destroy(kb);
  free(xa);
  free(xb);
  return rc;
}
