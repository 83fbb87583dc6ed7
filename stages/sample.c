/* Stage type `sample`: logits -> the next token (greedy or sampled), ending a request at a stop
 * id (EOS; also BOS for llama2.c models, as run.c does), at max_tokens or when the context is
 * full, like `qins generate`. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/llm/sampler.h"
#include "stages/model_shared.h"

static const qins_opt_spec opts[] = {
    {"max_tokens", QINS_OPT_INT, "32", 1, 1 << 24, "tokens generated per request at most"},
    {"temperature", QINS_OPT_FLOAT, "0", 0, 100, "0: greedy (argmax, ties to the lowest id)"},
    {"top_k", QINS_OPT_INT, "0", 0, 1 << 24, "keep the k most likely (0: off)"},
    {"top_p", QINS_OPT_FLOAT, "1", 0, 1, "nucleus mass (1: off)"},
    {"min_p", QINS_OPT_FLOAT, "0", 0, 1, "keep p >= min_p * p_max (0: off)"},
    {"seed", QINS_OPT_INT, "0", 0, 9.2e18, "RNG seed; request r uses seed + r"},
    {"stop", QINS_OPT_BOOL, "true", 1, 0, "end a request at EOS (and BOS for llama2.c models)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct sample {
  qins_stage_model *m;
  int greedy, max_seq, vocab;
  int32_t stops[2];
  int n_stops;
  qins_sampler_params sp;
  qins_reqstate *reqs; /* (req, attempt) -> qins_sampler */
} sample;

static void sampler_free(void *p, void *u) {
  (void)u;
  qins_sampler_destroy(p);
}

static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  sample *s = calloc(1, sizeof *s);
  if (!s) return qins_error_set(QINS_ENOMEM, "out of memory");
  st->priv = s;
  int rc = qins_stage_model_get(ctx, QINS_NEED_LLM, &s->m);
  if (rc) return rc;
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
  s->sp.seed = (uint64_t)qins_stage_opt_int(st, "seed");
  s->greedy = !(s->sp.temperature > 0.0f);
  return 0;
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  sample *s = st->priv;
  qins_reqstate_forget(&s->reqs, req, below, sampler_free, NULL);
}

static void fini(qins_stage *st) {
  sample *s = st->priv;
  if (!s) return;
  qins_reqstate_clear(&s->reqs, sampler_free, NULL);
  free(s);
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  sample *s = st->priv;
  if (in->dtype != QINS_DT_F32 || in->ndim != 2 || in->shape[1] != s->vocab)
    return qins_error_set(QINS_EINPUT, "sample %s: expected f32[1,%d] logits", st->ctx.stage_name, s->vocab);
  const float *logits = (const float *)in->data + (size_t)(in->shape[0] - 1) * (size_t)s->vocab;
  int32_t id;
  if (s->greedy) {
    id = qins_argmax_f32(logits, s->vocab);
  } else {
    qins_sampler *smp = qins_reqstate_find(s->reqs, in->req, in->attempt);
    if (!smp) {
      if (in->step > 0) return 0; /* forgotten attempt */
      qins_sampler_params p = s->sp;
      p.seed += in->req;
      int rc = qins_sampler_create(&p, s->vocab, &smp);
      if (rc) return rc;
      if ((rc = qins_reqstate_add(&s->reqs, in->req, in->attempt, smp))) {
        qins_sampler_destroy(smp);
        return rc;
      }
    }
    id = qins_sampler_sample(smp, logits, NULL, 0);
  }
  int is_stop = 0;
  for (int i = 0; i < s->n_stops; i++) is_stop |= id == s->stops[i];
  int64_t n = is_stop ? 0 : 1;
  int32_t *o = qins_msg_output(out, in, QINS_DT_I32, 1, &n);
  if (!o && n) return QINS_ENOMEM;
  if (n) o[0] = id;
  out->step = in->step + 1;
  out->pos = in->pos + 1; /* where the new token goes if it is fed back */
  out->flags = 0;
  if (is_stop)
    out->flags = QINS_MSG_END | QINS_MSG_STOP;
  else if (out->step >= qins_stage_opt_int(st, "max_tokens") || out->pos >= s->max_seq)
    out->flags = QINS_MSG_END;
  if (out->flags & QINS_MSG_END) forget(st, in->req, in->attempt + 1);
  return 1;
}

const qins_stage_type qins_stage_sample = {
    .name = "sample",
    .summary = "logits -> next token (greedy/temperature/top-k/top-p/min-p); stop ids, max_tokens",
    .options = opts,
    .in_port = "f32[1,vocab]",
    .out_port = "i32[T]",
    .init = init,
    .forward = fwd,
    .forget = forget,
    .fini = fini,
};
