/* Stage type `perplexity`: sliding-window perplexity (qins_eval_perplexity) of the worker's model
 * branch (its `policy:`) over a corpus file, or over the request's text when no corpus is set.
 * The record holds ppl, mean NLL, the token count, NLL per window and, with `bin`, NLL against the
 * position in the window (how much context a token had: a long-context curve). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/eval/eval.h"
#include "stages/eval_stage.h"
#include "stages/model_shared.h"

#define MAX_BINS 1024

static const qins_opt_spec opts[] = {
    {"corpus", QINS_OPT_STRING, "", 1, 0, "text file scored for every request (\"\": the request's text)"},
    {"window", QINS_OPT_INT, "0", 0, 1 << 24, "tokens per window (0: the runtime's context)"},
    {"stride", QINS_OPT_INT, "0", 0, 1 << 24, "tokens between window starts (0: window)"},
    {"max_tokens", QINS_OPT_INT, "0", 0, 1 << 30, "score at most this many corpus tokens (0: all)"},
    {"bin", QINS_OPT_INT, "0", 0, 1 << 24, "NLL binned by position in the window, this many positions per bin (0: off)"},
    {"policy", QINS_OPT_NODE, "", 1, 0, "this branch's coverage policy: a map (as the root policy:), a policy YAML path, or none"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct ppl_stage {
  qins_stage_model *m;
  int32_t *corpus; /* tokenized once at init (NULL: score the request's text) */
  size_t n_corpus;
  int window, stride, max_tokens, bin;
  qins_eval_mean ppl, nll;
  qins_metric *records, *tokens;
} ppl_stage;

/* What the per-token callback accumulates for one request. */
typedef struct acc {
  int n_win, cap_win;
  double *win_nll;
  int *win_start, *win_count;
  double bin_nll[MAX_BINS];
  long long bin_count[MAX_BINS];
  int n_bins, bin;
  int oom;
} acc;

static int tokenize(ppl_stage *p, const char *text, size_t len, int32_t **ids, size_t *n) {
  if (p->m->tok) return qins_tokenizer_encode_n(p->m->tok, text, len, QINS_TOK_ADD_SPECIAL, ids, n);
  /* a model without a tokenizer: bytes mod vocab, as the gates do */
  int V = qins_llm_vocab(p->m->llm);
  *ids = malloc(sizeof(int32_t) * (len + 1));
  if (!*ids) return qins_error_set(QINS_ENOMEM, "out of memory");
  for (size_t i = 0; i < len; i++) (*ids)[i] = (uint8_t)text[i] % V;
  *n = len;
  return 0;
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  ppl_stage *p = calloc(1, sizeof *p);
  if (!p) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = p;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM | (ctx->tokenizer_path ? QINS_NEED_TOK : 0), &p->m);
  if (rc) return rc;
  p->window = (int)qins_stage_opt_int(st, "window");
  p->stride = (int)qins_stage_opt_int(st, "stride");
  p->max_tokens = (int)qins_stage_opt_int(st, "max_tokens");
  p->bin = (int)qins_stage_opt_int(st, "bin");
  const char *corpus = qins_stage_opt_string(st, "corpus");
  if (corpus && *corpus) {
    char w[256];
    const qins_cfg *c = qins_cfg_get(ctx->options, "corpus");
    FILE *f = fopen(corpus, "rb");
    if (!f)
      return qins_error_set(QINS_EINPUT, "%s: stage '%s': options.corpus: cannot read '%s': %s",
                            qins_cfg_where(c, w, sizeof w), ctx->stage_name, corpus, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    /* only what max_tokens can use (a token is rarely more than 16 bytes) */
    size_t limit = p->max_tokens > 0 ? (size_t)p->max_tokens * 16 + 64 : (size_t)1 << 31;
    while (len < limit) {
      if (len + 65536 + 1 > cap) {
        cap = (len + 65536 + 1) * 2;
        char *t = realloc(text, cap);
        if (!t) {
          free(text);
          fclose(f);
          return qins_error_set(QINS_ENOMEM, "out of memory");
        }
        text = t;
      }
      size_t r = fread(text + len, 1, 65536 < limit - len ? 65536 : limit - len, f);
      if (r == 0) break;
      len += r;
    }
    fclose(f);
    if (!text) text = calloc(1, 1);
    if (!text) return qins_error_set(QINS_ENOMEM, "out of memory");
    text[len] = 0;
    rc = tokenize(p, text, len, &p->corpus, &p->n_corpus);
    free(text);
    if (rc) return qins_error_wrap(rc, "stage '%s': tokenizing %s: ", ctx->stage_name, corpus);
    if (p->max_tokens > 0 && p->n_corpus > (size_t)p->max_tokens) p->n_corpus = (size_t)p->max_tokens;
    if (p->n_corpus < 2)
      return qins_error_set(QINS_EINPUT, "%s: stage '%s': options.corpus: '%s' gives %zu tokens; perplexity needs 2",
                            qins_cfg_where(c, w, sizeof w), ctx->stage_name, corpus, p->n_corpus);
  }
  qins_eval_mean_init(&p->ppl, ctx, "qins_eval_perplexity", "sliding-window perplexity (mean over records)", NULL);
  qins_eval_mean_init(&p->nll, ctx, "qins_eval_nll", "mean NLL per scored token in nats (mean over records)", NULL);
  p->records = qins_eval_records_metric(ctx);
  char labels[256];
  snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"", ctx->stage_name, ctx->worker_name ? ctx->worker_name : "");
  p->tokens = qins_metric_counter("qins_eval_scored_tokens_total", "tokens scored by perplexity stages", labels);
  return 0;
}

static void fini(qins_stage *st) {
  ppl_stage *p = st->priv;
  if (!p) return;
  free(p->corpus);
  free(p);
}

static void on_token(void *user, int win, int pos_in_window, int abs_pos, double nll) {
  acc *a = user;
  if (win >= a->cap_win) {
    int cap = (win + 1) * 2;
    double *wn = realloc(a->win_nll, sizeof(double) * (size_t)cap);
    if (wn) a->win_nll = wn;
    int *ws = realloc(a->win_start, sizeof(int) * (size_t)cap);
    if (ws) a->win_start = ws;
    int *wc = realloc(a->win_count, sizeof(int) * (size_t)cap);
    if (wc) a->win_count = wc;
    if (!wn || !ws || !wc) {
      a->oom = 1;
      return;
    }
    for (int i = a->cap_win; i < cap; i++) a->win_nll[i] = 0, a->win_count[i] = 0, a->win_start[i] = 0;
    a->cap_win = cap;
  }
  if (win + 1 > a->n_win) a->n_win = win + 1;
  a->win_nll[win] += nll;
  a->win_count[win]++;
  a->win_start[win] = abs_pos - pos_in_window;
  if (a->bin > 0) {
    int k = pos_in_window / a->bin;
    if (k >= MAX_BINS) k = MAX_BINS - 1;
    a->bin_nll[k] += nll;
    a->bin_count[k]++;
    if (k + 1 > a->n_bins) a->n_bins = k + 1;
  }
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  ppl_stage *p = st->priv;
  int32_t *own = NULL;
  const int32_t *ids = p->corpus;
  size_t n = p->n_corpus;
  if (!ids) {
    if (in->dtype != QINS_DT_U8 || in->ndim != 1)
      return qins_error_set(QINS_EINPUT, "perplexity %s: expected u8[N] text", st->ctx.stage_name);
    int rc = tokenize(p, in->data, in->nbytes, &own, &n);
    if (rc) return rc;
    if (p->max_tokens > 0 && n > (size_t)p->max_tokens) n = (size_t)p->max_tokens;
    ids = own;
  }
  acc *a = calloc(1, sizeof *a);
  if (!a) {
    free(own);
    return qins_error_set(QINS_ENOMEM, "out of memory");
  }
  a->bin = p->bin;
  double ppl = NAN;
  int64_t scored = 0;
  int rc = n < 2 ? qins_error_set(QINS_EINPUT, "perplexity %s, request %llu: the text gives %zu tokens; need 2",
                                  st->ctx.stage_name, (unsigned long long)in->req, n)
                 : qins_eval_perplexity_ex(p->m->llm, ids, (int)n, p->window, p->stride, on_token, a, &ppl, &scored);
  free(own);
  if (!rc && a->oom) rc = qins_error_set(QINS_ENOMEM, "out of memory");
  if (rc) {
    free(a->win_nll);
    free(a->win_start);
    free(a->win_count);
    free(a);
    return qins_error_wrap(rc, "perplexity %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
  }
  int window = p->window <= 0 || p->window > qins_llm_max_seq(p->m->llm) ? qins_llm_max_seq(p->m->llm) : p->window;
  int stride = p->stride <= 0 || p->stride > window ? window : p->stride;
  json_t *rec = json_object(), *wins = json_array();
  json_object_set_new(rec, "eval", json_string("perplexity"));
  json_object_set_new(rec, "ppl", qins_eval_json_num(ppl));
  json_object_set_new(rec, "nll", qins_eval_json_num(log(ppl)));
  json_object_set_new(rec, "tokens", json_integer(scored));
  json_object_set_new(rec, "window", json_integer(window));
  json_object_set_new(rec, "stride", json_integer(stride));
  for (int w = 0; w < a->n_win; w++) {
    if (!a->win_count[w]) continue;
    json_array_append_new(wins, json_pack("{s:i,s:i,s:o}", "start", a->win_start[w], "tokens", a->win_count[w], "nll",
                                          qins_eval_json_num(a->win_nll[w] / a->win_count[w])));
  }
  json_object_set_new(rec, "windows", wins);
  if (a->bin > 0) {
    json_t *cv = json_object(), *pos = json_array(), *nl = json_array(), *cnt = json_array();
    for (int k = 0; k < a->n_bins; k++) {
      if (!a->bin_count[k]) continue;
      json_array_append_new(pos, json_integer((json_int_t)k * a->bin));
      json_array_append_new(nl, qins_eval_json_num(a->bin_nll[k] / (double)a->bin_count[k]));
      json_array_append_new(cnt, json_integer(a->bin_count[k]));
    }
    json_object_set_new(cv, "bin", json_integer(a->bin));
    json_object_set_new(cv, "positions", pos);
    json_object_set_new(cv, "nll", nl);
    json_object_set_new(cv, "count", cnt);
    json_object_set_new(rec, "curve", cv);
  }
  free(a->win_nll);
  free(a->win_start);
  free(a->win_count);
  free(a);
  qins_eval_mean_add(&p->ppl, ppl);
  qins_eval_mean_add(&p->nll, log(ppl));
  qins_metric_add(p->tokens, (double)scored);
  qins_metric_add(p->records, 1);
  rc = qins_eval_emit(out, in, rec);
  out->flags = QINS_MSG_END;
  return rc;
}

static const char *const metrics[] = {"qins_eval_perplexity", "qins_eval_nll", "qins_eval_scored_tokens_total",
                                      "qins_eval_records_total", NULL};

const qins_stage_type qins_stage_perplexity = {
    .name = "perplexity",
    .summary = "sliding-window perplexity of the worker's model branch over a corpus (or the request's text)",
    .options = opts,
    .in_port = "u8[N]",
    .out_port = "u8[N]",
    .metrics = metrics,
    .init = init,
    .forward = fwd,
    .fini = fini,
};
