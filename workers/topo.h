/* Worker instances and channels derived from a pipeline; the coordinator and every worker build
 * the same tables from the same YAML, so they agree on ids without sending them around. */
#ifndef QINS_WORKERS_TOPO_H
#define QINS_WORKERS_TOPO_H

#include <stddef.h>

#include "core/pipeline.h"

#define QINS_COORD (-1) /* the coordinator as a channel end */

typedef struct qins_topo_inst {
  int group;    /* index into pl->workers */
  int replica;
  int remote;   /* joins over tcp */
  char name[96];
} qins_topo_inst;

typedef struct qins_topo_chan {
  int edge;            /* pipeline edge index, or -1 (coordinator -> entry), -2 (final -> coordinator) */
  int from_inst, to_inst; /* QINS_COORD for the coordinator */
  int from_stage, to_stage; /* -1 for the coordinator */
  int shm;             /* has a ring in the arena */
  size_t offset;       /* ring offset in the arena */
  int reverse;         /* 1: carries gradient messages (QINS_MSG_GRAD) from edge.to back to edge.from */
} qins_topo_chan;

typedef struct qins_topo {
  int n_inst;
  qins_topo_inst *inst;
  int *group_first; /* first instance of each worker group */
  int n_chan;
  qins_topo_chan *chan;
  size_t arena_size;
  int has_remote;
} qins_topo;

int qins_topo_build(const qins_pipeline *pl, qins_topo *t);
void qins_topo_free(qins_topo *t);
/* Channel from instance `from` for `edge` to the replica serving `route`; -1 if none. */
int qins_topo_chan_for(const qins_pipeline *pl, const qins_topo *t, int edge, int from, unsigned route);
/* The reverse channel of `edge` (gradients from the edge's consumer instance `from` back to the
 * producer replica serving `route`); -1 if none. Reverse channels exist for the cross-worker edges
 * whose producer stage type has a backward(), so inference pipelines get none. */
int qins_topo_chan_back(const qins_pipeline *pl, const qins_topo *t, int edge, int from, unsigned route);
/* "stage1, stage2" of an instance's worker group. */
const char *qins_topo_stage_list(const qins_pipeline *pl, const qins_topo *t, int inst, char *buf, size_t n);

#endif
