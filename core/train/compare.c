/* KL / greedy agreement / cross-entropy of a student against a teacher (see compare.h). */
#include "core/train/compare.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/llm/llm.h"
#include "core/model/model.h"

/* log-softmax of one row into out (double for the sums). */
static void log_softmax(const float *x, int n, double *out) {
  double mx = x[0];
  for (int i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  double s = 0;
  for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
  double lse = mx + log(s);
  for (int i = 0; i < n; i++) out[i] = (double)x[i] - lse;
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

int qins_train_compare(const char *teacher, const char *student, const qins_data_split *sp, int T, int windows,
                       qins_agreement *out) {
  memset(out, 0, sizeof *out);
  qins_model *mt = NULL, *ms = NULL;
  qins_backend *be = NULL;
  qins_llm *lt = NULL, *ls = NULL;
  float *ft = NULL, *fs = NULL;
  double *pt = NULL, *ps = NULL;
  int32_t *ids = NULL;
  int rc;
  if ((rc = qins_model_open(teacher, &mt)) || (rc = qins_model_open(student, &ms)) ||
      (rc = qins_backend_create("cpu", &be)))
    goto done;
  qins_llm_options o = {T + 1, 0};
  if ((rc = qins_llm_create(mt, be, &o, &lt)) || (rc = qins_llm_create(ms, be, &o, &ls))) goto done;
  int V = qins_llm_vocab(lt);
  if (qins_llm_vocab(ls) != V) {
    rc = qins_error_set(QINS_EINPUT, "compare: vocabularies differ (%s %d, %s %d)", teacher, V, student,
                        qins_llm_vocab(ls));
    goto done;
  }
  int64_t nw = qins_data_eval_windows(sp, T);
  if (nw > windows) nw = windows;
  if (nw < 1) {
    rc = qins_error_set(QINS_EINPUT, "compare: no window of %d ids in the split", T + 1);
    goto done;
  }
  ft = malloc((size_t)T * V * sizeof *ft);
  fs = malloc((size_t)T * V * sizeof *fs);
  pt = malloc((size_t)V * sizeof *pt);
  ps = malloc((size_t)V * sizeof *ps);
  ids = malloc((size_t)(T + 1) * sizeof *ids);
  if (!ft || !fs || !pt || !ps || !ids) {
    rc = qins_error_set(QINS_ENOMEM, "no memory");
    goto done;
  }
  double kl = 0, agree = 0, lt_sum = 0, ls_sum = 0;
  int64_t npos = 0;
  for (int64_t w = 0; w < nw; w++) {
    if ((rc = qins_data_eval_window(sp, w, T, ids))) goto done;
    qins_llm_reset(lt);
    qins_llm_reset(ls);
    if ((rc = qins_llm_forward(lt, ids, T, 1, ft, NULL)) || (rc = qins_llm_forward(ls, ids, T, 1, fs, NULL))) goto done;
    for (int t = 0; t < T; t++) {
      const float *a = ft + (size_t)t * V, *b = fs + (size_t)t * V;
      log_softmax(a, V, pt);
      log_softmax(b, V, ps);
      double k = 0;
      for (int v = 0; v < V; v++) k += exp(pt[v]) * (pt[v] - ps[v]);
      kl += k;
      agree += argmax(a, V) == argmax(b, V);
      lt_sum -= pt[ids[t + 1]];
      ls_sum -= ps[ids[t + 1]];
      npos++;
    }
  }
  out->kl = kl / (double)npos;
  out->agree = agree / (double)npos;
  out->teacher_loss = lt_sum / (double)npos;
  out->student_loss = ls_sum / (double)npos;
  out->positions = npos;
done:
  free(ft);
  free(fs);
  free(pt);
  free(ps);
  free(ids);
  qins_llm_destroy(lt);
  qins_llm_destroy(ls);
  if (be) qins_backend_destroy(be);
  qins_model_close(mt);
  qins_model_close(ms);
  return rc;
}
