/* Instances (worker x replica) and channels (edge x producer x consumer) of a pipeline. */
#include "workers/topo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/stage.h"

static int add_chan(qins_topo *t, qins_topo_chan c) {
  qins_topo_chan *p = realloc(t->chan, sizeof *p * (size_t)(t->n_chan + 1));
  if (!p) return qins_error_set(QINS_ENOMEM, "out of memory");
  t->chan = p;
  t->chan[t->n_chan++] = c;
  return 0;
}

int qins_topo_build(const qins_pipeline *pl, qins_topo *t) {
  memset(t, 0, sizeof *t);
  if (pl->n_workers <= 0) return qins_error_set(QINS_EINVAL, "pipeline has no workers");
  int n = 0;
  for (int g = 0; g < pl->n_workers; g++) n += pl->workers[g].replicas;
  t->inst = calloc((size_t)n + 1, sizeof *t->inst);
  t->group_first = calloc((size_t)pl->n_workers, sizeof(int));
  if (!t->inst || !t->group_first) return qins_error_set(QINS_ENOMEM, "out of memory");
  for (int g = 0; g < pl->n_workers; g++) {
    const qins_pl_worker *w = &pl->workers[g];
    t->group_first[g] = t->n_inst;
    for (int r = 0; r < w->replicas; r++) {
      qins_topo_inst *in = &t->inst[t->n_inst++];
      in->group = g;
      in->replica = r;
      in->remote = w->host[0] != 0;
      if (in->remote) t->has_remote = 1;
      if (w->replicas > 1)
        snprintf(in->name, sizeof in->name, "%s#%d", w->name, r);
      else
        snprintf(in->name, sizeof in->name, "%s", w->name);
    }
  }
  size_t ring = (size_t)pl->slots * (size_t)pl->slot_bytes;
  ring = (ring + 4095) & ~(size_t)4095;
  int rc;
  const qins_pl_worker *eg = &pl->workers[pl->stages[pl->entry].worker];
  for (int r = 0; r < eg->replicas; r++)
    if ((rc = add_chan(t, (qins_topo_chan){-1, QINS_COORD, t->group_first[pl->stages[pl->entry].worker] + r, -1,
                                           pl->entry, 0, 0, 0})))
      return rc;
  for (int e = 0; e < pl->n_edges; e++) {
    int ga = pl->stages[pl->edges[e].from].worker, gb = pl->stages[pl->edges[e].to].worker;
    if (ga == gb) continue; /* same process: pointers, no channel */
    for (int a = 0; a < pl->workers[ga].replicas; a++)
      for (int b = 0; b < pl->workers[gb].replicas; b++) {
        int ia = t->group_first[ga] + a, ib = t->group_first[gb] + b;
        qins_topo_chan c = {e, ia, ib, pl->edges[e].from, pl->edges[e].to, 0, 0, 0};
        if (!t->inst[ia].remote && !t->inst[ib].remote) {
          c.shm = 1;
          c.offset = t->arena_size;
          t->arena_size += ring;
        }
        if ((rc = add_chan(t, c))) return rc;
      }
  }
  /* reverse edges: gradients flow from the consumer back to a producer that has a backward() */
  for (int e = 0; e < pl->n_edges; e++) {
    int ga = pl->stages[pl->edges[e].from].worker, gb = pl->stages[pl->edges[e].to].worker;
    if (ga == gb || pl->edges[e].loop || !pl->stages[pl->edges[e].from].type->backward) continue;
    for (int a = 0; a < pl->workers[ga].replicas; a++)
      for (int b = 0; b < pl->workers[gb].replicas; b++) {
        int ia = t->group_first[ga] + a, ib = t->group_first[gb] + b;
        qins_topo_chan c = {e, ib, ia, pl->edges[e].to, pl->edges[e].from, 0, 0, 1};
        if (!t->inst[ia].remote && !t->inst[ib].remote) {
          c.shm = 1;
          c.offset = t->arena_size;
          t->arena_size += ring;
        }
        if ((rc = add_chan(t, c))) return rc;
      }
  }
  const qins_pl_worker *xg = &pl->workers[pl->stages[pl->exit_stage].worker];
  for (int r = 0; r < xg->replicas; r++)
    if ((rc = add_chan(t, (qins_topo_chan){-2, t->group_first[pl->stages[pl->exit_stage].worker] + r, QINS_COORD,
                                           pl->exit_stage, -1, 0, 0, 0})))
      return rc;
  return 0;
}

void qins_topo_free(qins_topo *t) {
  free(t->inst);
  free(t->group_first);
  free(t->chan);
  memset(t, 0, sizeof *t);
}

int qins_topo_chan_for(const qins_pipeline *pl, const qins_topo *t, int edge, int from, unsigned route) {
  int to_group;
  if (edge == -1)
    to_group = pl->stages[pl->entry].worker;
  else if (edge == -2)
    to_group = -1;
  else
    to_group = pl->stages[pl->edges[edge].to].worker;
  int to = to_group < 0 ? QINS_COORD : t->group_first[to_group] + (int)(route % (unsigned)pl->workers[to_group].replicas);
  for (int i = 0; i < t->n_chan; i++)
    if (t->chan[i].edge == edge && !t->chan[i].reverse && t->chan[i].from_inst == from && t->chan[i].to_inst == to)
      return i;
  return -1;
}

int qins_topo_chan_back(const qins_pipeline *pl, const qins_topo *t, int edge, int from, unsigned route) {
  if (edge < 0 || edge >= pl->n_edges) return -1;
  int g = pl->stages[pl->edges[edge].from].worker;
  int to = t->group_first[g] + (int)(route % (unsigned)pl->workers[g].replicas);
  for (int i = 0; i < t->n_chan; i++)
    if (t->chan[i].edge == edge && t->chan[i].reverse && t->chan[i].from_inst == from && t->chan[i].to_inst == to)
      return i;
  return -1;
}

const char *qins_topo_stage_list(const qins_pipeline *pl, const qins_topo *t, int inst, char *buf, size_t n) {
  const qins_pl_worker *w = &pl->workers[t->inst[inst].group];
  size_t len = 0;
  buf[0] = 0;
  for (int k = 0; k < w->n_stages && len + 2 < n; k++)
    len += (size_t)snprintf(buf + len, n - len, "%s%s", k ? ", " : "", pl->stages[w->stages[k]].name);
  return buf;
}
