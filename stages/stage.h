/* The stage interface: every stage type is a vtable (init, forward, optional backward, forget,
 * fini) plus the schema of its YAML options and its declared input/output ports. A stage sees
 * messages, never channels: it does not know whether its neighbour is in this process. */
#ifndef QINS_STAGE_H
#define QINS_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "core/tensor.h"

struct qins_pipeline;

/* Message flags. */
enum {
  QINS_MSG_END = 1u << 0,  /* last message of a request: `loop: true` edges are not followed */
  QINS_MSG_STOP = 1u << 1, /* the request ended on a stop id: this message carries no token */
  /* a gradient (or other backward-flowing) message: it travels the pipeline's edges in reverse,
   * from an edge's consumer to its producer, and the worker hands it to the producer's backward().
   * An output's own GRAD flag decides where it goes: outputs start with the input's flags, so a
   * forward() output travels forward unless the stage sets GRAD (turns around, e.g. after the
   * loss) and a backward() output travels backward unless the stage clears it. */
  QINS_MSG_GRAD = 1u << 2,
  /* an end marker (no data, always with END): when a stage that feeds a loop edge (`sample`) ends a
   * request, the worker sends this along its loop edges in place of the END message; the workers
   * pass it along the non-loop edges of the stages it reaches without calling them, so the stages
   * beyond the loop (a join of two `head`s, say) learn that the request ended however it ended. It
   * stops at stages that feed a loop edge themselves (they end their requests on their own), never
   * follows a loop edge again, never reaches the coordinator; join stages get it in their set. */
  QINS_MSG_MARK = 1u << 3,
};

/* forward()/backward() return value: output produced AND more to come; the worker routes the
 * output and calls the same function again with the same input (a stage emitting several
 * messages for one input, e.g. the micro-batches of a training step). */
#define QINS_STAGE_MORE 2

#define QINS_PORT_MAX 64

/* qins_stage_type.join value: every incoming (non-loop) edge is a branch (at least 2), and each
 * branch gives one message per request (a record): they are paired by (request, attempt) alone,
 * whatever their steps. */
#define QINS_JOIN_ALL (-1)
/* Is a stage type a join (forward_join, branches paired by the worker)? */
#define QINS_STAGE_IS_JOIN(t) ((t)->join > 1 || (t)->join == QINS_JOIN_ALL)

/* One unit of work flowing along an edge: one tensor (text travels as u8[N]) tagged with the
 * request it belongs to. `data` is valid only during the forward() call that receives it. */
typedef struct qins_msg {
  uint64_t req;     /* request id (input order) */
  uint32_t attempt; /* replay number: per-request state is keyed by (req, attempt) */
  int32_t step;     /* 0 = prompt/prefill, k = k-th generated token */
  uint32_t flags;
  uint32_t route;   /* which replica serves this request (worker-managed; copied by qins_msg_output) */
  int32_t pos;      /* sequence position of the first row (model stages; copied by qins_msg_output) */
  int32_t last_id;  /* the latest token id fed to the model before this message's data (-1: none) */
  qins_dtype dtype;
  int ndim;
  int64_t shape[QINS_MAX_DIMS];
  void *data;
  size_t nbytes;
  /* Output allocation, set by the worker before forward(): use qins_msg_output*(). */
  void *(*alloc)(struct qins_msg *m, size_t bytes);
  void *alloc_user;
} qins_msg;

/* Give `out` a buffer for a tensor of this dtype/shape (plain dtypes) and return it (NULL +
 * error on failure). Copies req/attempt/step/flags/route/pos/last_id from `in` first if in != NULL. */
void *qins_msg_output(qins_msg *out, const qins_msg *in, qins_dtype dt, int ndim, const int64_t *shape);
/* Text output (u8[len], not NUL-terminated on the wire). */
int qins_msg_output_text(qins_msg *out, const qins_msg *in, const char *text, size_t len);

/* QINS_OPT_NODE: any YAML value (a map, a list or a scalar); the stage reads ctx->options itself
 * (e.g. a per-stage `policy:` given inline or as a path). */
typedef enum qins_opt_type { QINS_OPT_INT, QINS_OPT_FLOAT, QINS_OPT_BOOL, QINS_OPT_STRING, QINS_OPT_NODE } qins_opt_type;

typedef struct qins_opt_spec {
  const char *name;
  qins_opt_type type;
  const char *def;  /* default as YAML text; NULL = required */
  double min, max;  /* numeric range (ignored when min > max) */
  const char *help;
} qins_opt_spec;

typedef struct qins_stage qins_stage;

/* What init() gets: its identity, the pipeline-wide settings and its validated options. */
typedef struct qins_stage_ctx {
  const char *stage_name;
  const char *worker_name; /* worker instance ("w1" or "pool#2") */
  const char *model_path, *tokenizer_path, *backend_name; /* pipeline-level; may be NULL */
  const qins_cfg *options;  /* the stage's `options:` mapping (may be NULL) */
  const struct qins_pipeline *pipeline;
  /* Objects shared by the stages of one worker (a loaded model, a backend): get returns NULL
   * when absent; put hands ownership to the worker, which calls destroy at exit. */
  void *(*shared_get)(const struct qins_stage_ctx *ctx, const char *key);
  int (*shared_put)(const struct qins_stage_ctx *ctx, const char *key, void *obj, void (*destroy)(void *));
  void *worker;
} qins_stage_ctx;

typedef struct qins_stage_type {
  const char *name;
  const char *summary;
  const qins_opt_spec *options; /* terminated by {NULL} */
  /* Ports as "dtype[dims]": dims are integers or symbols ("i32[T]", "f32[T,dim]", "u8[N]" for
   * text, "*" any). NULL: the port does not exist (a source has no input). */
  const char *in_port, *out_port;
  /* Optional: ports depending on options (e.g. dims from a model); fills in/out. */
  int (*ports)(const qins_cfg *options, const struct qins_pipeline *pl, char *in, char *out);
  const char *const *metrics; /* names of the metrics it exports beyond the common ones; NULL-terminated */

  int (*init)(qins_stage *st, const qins_stage_ctx *ctx);
  /* Consume `in`, maybe produce `out` (call qins_msg_output*). Returns 1: out produced,
   * 0: nothing to send (dropped or accumulated), QINS_STAGE_MORE: out produced and call again,
   * <0: error (message set). */
  int (*forward)(qins_stage *st, const qins_msg *in, qins_msg *out);
  /* Optional: messages flagged QINS_MSG_GRAD (arriving over reverse edges) go here; same return
   * values as forward(). A stage type with a backward() gets reverse channels on its outgoing
   * cross-worker edges (workers/topo.h). */
  int (*backward)(qins_stage *st, const qins_msg *grad_out, qins_msg *grad_in);
  /* Drop per-request state for `req` with attempt < below (UINT32_MAX: all). Optional. */
  void (*forget)(qins_stage *st, uint64_t req, uint32_t below);
  void (*fini)(qins_stage *st);

  /* Join (workers/join.h): join > 1 means the stage takes exactly `join` incoming (non-loop)
   * edges, its branches, numbered in the order the edges are listed. The worker pairs their
   * messages by (request, attempt, step) and calls forward_join once per complete set; after a
   * branch's END message, later steps of the other branches come with in[k] = NULL for the
   * ended branch k. forward is then unused. Same return values as forward. */
  int join; /* QINS_JOIN_ALL: as many branches as the stage has incoming (non-loop) edges, >= 2 */
  int (*forward_join)(qins_stage *st, const qins_msg *const *in, int n, qins_msg *out);
} qins_stage_type;

struct qins_stage {
  const qins_stage_type *type;
  qins_stage_ctx ctx;
  void *priv; /* the stage type's state */
  /* common metrics (labels stage, worker), maintained by the worker */
  qins_metric *m_items, *m_errors, *m_latency, *m_bytes_in;
};

/* Registry of stage types. */
const qins_stage_type *qins_stage_type_find(const char *name);
int qins_stage_type_count(void);
const qins_stage_type *qins_stage_type_at(int i);

/* Options with defaults applied (validated already; these never fail on a valid pipeline). */
long long qins_stage_opt_int(const qins_stage *st, const char *name);
double qins_stage_opt_float(const qins_stage *st, const char *name);
int qins_stage_opt_bool(const qins_stage *st, const char *name);
const char *qins_stage_opt_string(const qins_stage *st, const char *name);
/* Validate an `options:` mapping against a type's schema (unknown key, type, range, required). */
int qins_stage_check_options(const qins_stage_type *t, const qins_cfg *opts, const char *what);

#endif
