/* Pipelines: a YAML file parsed, overridden with --set and validated into stages, workers and
 * edges before anything starts. Every error names file:line:column (or the --set) and the key. */
#ifndef QINS_PIPELINE_H
#define QINS_PIPELINE_H

#include <stddef.h>

#include "core/config.h"

struct qins_stage_type;

#define QINS_PL_NAME 64

typedef struct qins_pl_stage {
  char name[QINS_PL_NAME];
  const struct qins_stage_type *type;
  const qins_cfg *options; /* may be NULL */
  const qins_cfg *node;    /* the whole stage entry (for messages) */
  int worker;              /* index into workers */
  char in_port[128], out_port[128];
} qins_pl_stage;

typedef struct qins_pl_worker {
  char name[QINS_PL_NAME];
  char host[256]; /* "" = local; "tcp://HOST:PORT" = the coordinator listens there for it */
  int replicas;
  int n_stages;
  int *stages; /* stage indices in listed order */
  const qins_cfg *node;
} qins_pl_worker;

typedef struct qins_pl_edge {
  int from, to; /* stage indices */
  int loop;     /* the declared autoregressive back edge: not followed on QINS_MSG_END */
  const qins_cfg *node; /* the YAML entry (NULL for default listed-order edges) */
} qins_pl_edge;

typedef enum qins_restart_policy { QINS_RESTART_STOP = 0, QINS_RESTART_RESTART } qins_restart_policy;

typedef struct qins_pipeline {
  char path[512];
  char name[QINS_PL_NAME];
  char *model, *tokenizer, *backend; /* NULL when absent; model/tokenizer resolved like paths given */
  int n_stages, n_workers, n_edges;
  qins_pl_stage *stages;
  qins_pl_worker *workers;
  qins_pl_edge *edges;
  int entry;       /* the stage the coordinator feeds (no incoming non-loop edge) */
  int exit_stage;  /* the stage whose outputs go back to the coordinator (no outgoing edge) */
  /* inputs: inline prompts or a JSONL file with a "prompt" field (and optional "id") */
  int n_prompts;
  char **prompts;
  char *input_file;
  char *output_jsonl; /* NULL: records to stdout */
  qins_restart_policy restart;
  int restart_max;   /* restarts allowed per worker */
  char *monitor;     /* dashboard address, NULL if absent */
  int heartbeat_ms;
  int max_seq;           /* context for model stages (0: the model's) */
  int slots;             /* slots per channel ring */
  long long slot_bytes;  /* bytes per slot */
  int max_inflight;      /* requests in flight per entry replica */
  qins_cfg *root;        /* the (overridden) tree; nodes referenced above live here */
  char *yaml_text;       /* original text, handed to remote workers */
  size_t yaml_len;
  int n_sets;
  char **sets;
} qins_pipeline;

/* Parse and validate. `sets` are "key.path=value" overrides applied before validation.
 * QINS_EINPUT with a located message on any problem. */
int qins_pipeline_load(const char *path, const char *const *sets, int n_sets, qins_pipeline **out);
int qins_pipeline_load_string(const char *text, size_t len, const char *origin, const char *const *sets, int n_sets,
                              qins_pipeline **out);
void qins_pipeline_free(qins_pipeline *pl);
int qins_pipeline_stage_index(const qins_pipeline *pl, const char *name);
/* Load the prompts (inline or from the JSONL file). ids[i] is the request's "id" field text as
 * JSON (or the index). Caller frees with qins_pipeline_free_inputs. */
int qins_pipeline_read_inputs(const qins_pipeline *pl, int *n, char ***prompts, char ***ids);
void qins_pipeline_free_inputs(int n, char **prompts, char **ids);
/* {"name","stages":[{name,type,worker,in,out}],"workers":[{name,host,replicas,stages}],
 *  "edges":[{from,to,loop}]} : caller frees. */
char *qins_pipeline_graph_json(const qins_pipeline *pl);

/* Port strings: "dtype[d0,d1]"; check that `out` can feed `in` (dtype and rank equal, integer
 * dims equal, symbols equal by name or bound consistently). */
int qins_port_compatible(const char *out, const char *in, char *why, size_t n);

#endif
