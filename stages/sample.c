/* Stage type `sample`: logits -> the next token (greedy or sampled, with the sampler options of
 * `qins generate`), ending a request at a stop id (EOS; also BOS for llama2.c models, as run.c
 * does), at a stop string, at max_tokens or when the context is full. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/llm/sampler.h"
#include "core/pipeline.h"
#include "stages/model_shared.h"

static const char *const metric_names[] = {"qins_tokens_total", NULL};

static const qins_opt_spec opts[] = {
    {"max_tokens", QINS_OPT_INT, "32", 1, 1 << 24, "tokens generated per request at most"},
    {"temperature", QINS_OPT_FLOAT, "0", 0, 100, "0: greedy (argmax, ties to the lowest id)"},
    {"top_k", QINS_OPT_INT, "0", 0, 1 << 24, "keep the k most likely (0: off)"},
    {"top_p", QINS_OPT_FLOAT, "1", 1e-9, 1, "nucleus mass (1: off)"},
    {"min_p", QINS_OPT_FLOAT, "0", 0, 1, "keep p >= min_p * p_max (0: off)"},
    {"repeat_penalty", QINS_OPT_FLOAT, "1", 1e-6, 1e6, "penalise ids already fed to the model (1: off)"},
    {"repeat_last_n", QINS_OPT_INT, "0", 0, 1 << 24, "how many previous ids count (0: all)"},
    {"seed", QINS_OPT_INT, "0", 0, 9.2e18, "RNG seed; request r uses seed + r"},
    {"stop", QINS_OPT_BOOL, "true", 1, 0, "end a request at EOS (and BOS for llama2.c models)"},
    {"stop_string", QINS_OPT_STRING, "", 1, 0, "end a request once its generated text contains this"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* Per-request state: the sampler (RNG stream) and, for stop strings, the text so far. */
typedef struct sreq {
  qins_sampler *smp;
  char *text;
  size_t len, cap;
} sreq;

typedef struct sample {
  qins_stage_model *m;
  int greedy, max_seq, vocab;
  int32_t stops[2];
  int n_stops;
  const char *stop_str; /* NULL: none */
  qins_sampler_params sp;
  qins_reqids *ids;    /* the worker's fed ids (repetition penalty only) */
  qins_reqstate *reqs; /* (req, attempt) -> sreq */
  qins_metric *m_tokens; /* qins_tokens_total{stage, worker} */
} sample;

static void sreq_free(void *p, void *u) {
  (void)u;
  sreq *r = p;
  if (!r) return;
  qins_sampler_destroy(r->smp);
  free(r->text);
  free(r);
}

/* Is an `embed` stage placed on the same worker as this stage? */
static int embed_beside(const qins_stage_ctx *ctx) {
  const qins_pipeline *pl = ctx->pipeline;
  if (!pl) return 0;
  int me = qins_pipeline_stage_index(pl, ctx->stage_name);
  if (me < 0) return 0;
  const qins_pl_worker *w = &pl->workers[pl->stages[me].worker];
  for (int i = 0; i < w->n_stages; i++)
    if (strcmp(pl->stages[w->stages[i]].type->name, "embed") == 0) return 1;
  return 0;
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  sample *s = calloc(1, sizeof *s);
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = s;
  const char *ss = qins_stage_opt_string(st, "stop_string");
  s->stop_str = ss && *ss ? ss : NULL;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM | (s->stop_str ? QINS_NEED_TOK : 0), &s->m);
  if (rc) return s->stop_str ? qins_error_wrap(rc, "sample %s: stop_string needs the tokenizer: ", ctx->stage_name) : rc;
  const qins_model *m = s->m->model;
  s->vocab = qins_llm_vocab(s->m->llm);
  s->max_seq = qins_llm_max_seq(s->m->llm);
  if (qins_stage_opt_bool(st, "stop")) {
    if (m->cfg.eos_id >= 0) s->stops[s->n_stops++] = m->cfg.eos_id;
    if (strcmp(m->format, "llama2c") == 0 && m->cfg.bos_id >= 0 && m->cfg.bos_id != m->cfg.eos_id)
      s->stops[s->n_stops++] = m->cfg.bos_id;
  }
  s->sp = qins_sampler_defaults();
  s->sp.temperature = (float)qins_stage_opt_float(st, "temperature");
  s->sp.top_k = (int)qins_stage_opt_int(st, "top_k");
  s->sp.top_p = (float)qins_stage_opt_float(st, "top_p");
  s->sp.min_p = (float)qins_stage_opt_float(st, "min_p");
  s->sp.repeat_penalty = (float)qins_stage_opt_float(st, "repeat_penalty");
  s->sp.repeat_last_n = (int)qins_stage_opt_int(st, "repeat_last_n");
  s->sp.seed = (uint64_t)qins_stage_opt_int(st, "seed");
  /* as qins generate: a penalty makes even temperature 0 go through the sampler (argmax after it) */
  s->greedy = !(s->sp.temperature > 0.0f) && s->sp.repeat_penalty == 1.0f;
  char labels[256];
  snprintf(labels, sizeof labels, "stage=\"%s\",worker=\"%s\"", ctx->stage_name,
           ctx->worker_name ? ctx->worker_name : "");
  s->m_tokens = qins_metric_counter("qins_tokens_total", "tokens generated (stop ids not counted)", labels);
  if (s->sp.repeat_penalty != 1.0f) {
    /* the prompt never reaches this stage: the embed stage beside it records what it embeds */
    if (!embed_beside(ctx)) {
      char w[256];
      const qins_cfg *c = qins_cfg_get(ctx->options, "repeat_penalty");
      return qins_error_set(QINS_EINPUT,
                            "%s: sample %s: repeat_penalty needs an 'embed' stage on the same worker (it records "
                            "the ids fed to the model)",
                            qins_cfg_where(c, w, sizeof w), ctx->stage_name);
    }
    if (!(s->ids = qins_reqids_get(ctx, 1))) return qins_error_code() ? qins_error_code() : QINS_ENOMEM;
  }
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  sample *s = st->priv;
  qins_reqstate_forget(&s->reqs, req, below, sreq_free, NULL);
  qins_reqids_forget(s->ids, req, below);
}

static void fini(qins_stage *st) {
  sample *s = st->priv;
  if (!s) return;
  qins_reqstate_clear(&s->reqs, sreq_free, NULL);
  free(s);
}

/* Append the text `id` adds and say whether the text now contains the stop string (looking only
 * where the new piece could complete a match, as qins generate does). */
static int stop_text(sample *s, sreq *r, int32_t prev, int32_t id, int *hit) {
  char piece[512];
  int k = qins_tokenizer_decode_piece(s->m->tok, prev, id, piece, sizeof piece);
  if (k < 0) return k;
  if (r->len + (size_t)k + 1 > r->cap) {
    size_t cap = (r->cap + (size_t)k + 1) * 2;
    char *t = realloc(r->text, cap);
    if (!t) return qins_error_set(QINS_ENOMEM, "out of memory");
    r->text = t;
    r->cap = cap;
  }
  size_t before = r->len, sl = strlen(s->stop_str);
  memcpy(r->text + r->len, piece, (size_t)k);
  r->len += (size_t)k;
  r->text[r->len] = 0;
  size_t from = before >= sl ? before - sl + 1 : 0;
  *hit = strstr(r->text + from, s->stop_str) != NULL;
  return 0;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  sample *s = st->priv;
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != s->vocab)
    return qins_error_set(QINS_EINPUT, "sample %s: expected f32[1,%d] logits", st->ctx.stage_name, s->vocab);
  const float *logits = (const float *)in->data + (size_t)(in->shape[0] - 1) * (size_t)s->vocab;
  sreq *r = NULL;
  if (!s->greedy || s->stop_str) {
    r = qins_reqstate_find(s->reqs, in->req, in->attempt);
    if (!r) {
      if (in->step > 0) return 0; /* forgotten attempt */
      r = calloc(1, sizeof *r);
      if (!r) return qins_error_set(QINS_ENOMEM, "out of memory");
      int rc = 0;
      if (!s->greedy) {
        qins_sampler_params p = s->sp;
        p.seed += in->req;
        rc = qins_sampler_create(&p, s->vocab, &r->smp);
      }
      if (!rc) rc = qins_reqstate_add(&s->reqs, in->req, in->attempt, r);
      if (rc) {
        sreq_free(r, NULL);
        return rc;
      }
    }
  }
  int32_t id;
  if (s->greedy) {
    id = qins_argmax_f32(logits, s->vocab);
  } else {
    const qins_idvec *h = qins_reqids_find(s->ids, in->req, in->attempt);
    id = qins_sampler_sample(r->smp, logits, h ? h->ids : NULL, h ? h->n : 0);
  }
  int is_stop = 0, hit = 0;
  for (int i = 0; i < s->n_stops; i++) is_stop |= id == s->stops[i];
  if (!is_stop && s->stop_str) {
    int rc = stop_text(s, r, in->last_id, id, &hit);
    if (rc) return qins_error_wrap(rc, "sample %s, request %llu: ", st->ctx.stage_name, (unsigned long long)in->req);
  }
  int64_t n = is_stop ? 0 : 1;
  int32_t *o = qins_msg_output(out, in, QINS_DT_I32, 1, &n);
  if (!o && n) return QINS_ENOMEM;
  if (n) {
    o[0] = id;
    qins_metric_add(s->m_tokens, 1);
  }
  out->step = in->step + 1;
  out->pos = in->pos + 1; /* where the new token goes if it is fed back */
  out->flags = 0;
  if (is_stop)
    out->flags = QINS_MSG_END | QINS_MSG_STOP;
  else if (hit || out->step >= qins_stage_opt_int(st, "max_tokens") || out->pos >= s->max_seq)
    out->flags = QINS_MSG_END; /* a stop string's last token is kept, as in qins generate */
  if (out->flags & QINS_MSG_END) forget(st, in->req, in->attempt + 1);
  return 1;
}

const qins_stage_type qins_stage_sample = {
    .name = "sample",
    .summary = "logits -> next token (greedy/temperature/top-k/top-p/min-p/repetition penalty); stop ids, "
               "stop_string, max_tokens",
    .options = opts,
    .metrics = metric_names,
    .in_port = "f32[1,vocab]",
    .out_port = "i32[T]",
    .init = init,
    .forward = fwd,
    .forget = forget,
    .fini = fini,
};
