/* Join of a stage's branches: per (request, attempt) a step-ordered list of partial sets. */
#include "workers/join.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct held {
  qins_msg m;
  max_align_t data[]; /* the payload copy: the input is valid only during the call that gave it */
} held;

typedef struct entry {
  int32_t step;
  held **slot; /* [n] */
  struct entry *next;
} entry;

typedef struct rstate {
  uint64_t req;
  uint32_t attempt;
  int32_t *ended; /* [n]: step of the branch's END message, or -1 */
  entry *entries; /* sorted by step */
  struct rstate *next;
} rstate;

struct qins_join {
  int n;
  rstate *reqs;
  size_t held, bytes;
};

int qins_join_create(int n_branches, qins_join **out) {
  if (n_branches < 1) return qins_error_set(QINS_EINVAL, "join: %d branches", n_branches);
  qins_join *j = calloc(1, sizeof *j);
  if (!j) return qins_error_set(QINS_ENOMEM, "out of memory");
  j->n = n_branches;
  *out = j;
  return 0;
}

static void entry_free(qins_join *j, entry *e) {
  for (int k = 0; k < j->n; k++)
    if (e->slot[k]) {
      j->held--;
      j->bytes -= e->slot[k]->m.nbytes;
      free(e->slot[k]);
    }
  free(e->slot);
  free(e);
}

static void rstate_free(qins_join *j, rstate *r) {
  while (r->entries) {
    entry *e = r->entries;
    r->entries = e->next;
    entry_free(j, e);
  }
  free(r->ended);
  free(r);
}

void qins_join_destroy(qins_join *j) {
  if (!j) return;
  while (j->reqs) {
    rstate *r = j->reqs;
    j->reqs = r->next;
    rstate_free(j, r);
  }
  free(j);
}

void qins_join_forget(qins_join *j, uint64_t req, uint32_t below) {
  if (!j) return;
  for (rstate **pp = &j->reqs; *pp;) {
    rstate *r = *pp;
    if (r->req == req && r->attempt < below) {
      *pp = r->next;
      rstate_free(j, r);
    } else {
      pp = &r->next;
    }
  }
}

size_t qins_join_held(const qins_join *j, size_t *bytes) {
  if (bytes) *bytes = j ? j->bytes : 0;
  return j ? j->held : 0;
}

/* Is every branch either present or ended before this step? */
static int complete(const qins_join *j, const rstate *r, const entry *e) {
  for (int k = 0; k < j->n; k++)
    if (!e->slot[k] && !(r->ended[k] >= 0 && r->ended[k] < e->step)) return 0;
  return 1;
}

int qins_join_put(qins_join *j, int k, const qins_msg *m, qins_join_fn fn, void *user) {
  if (k < 0 || k >= j->n) return qins_error_set(QINS_EINTERNAL, "join: branch %d of %d", k, j->n);
  rstate **rp = &j->reqs;
  while (*rp && !((*rp)->req == m->req && (*rp)->attempt == m->attempt)) rp = &(*rp)->next;
  rstate *r = *rp;
  if (!r) {
    r = calloc(1, sizeof *r);
    if (!r || !(r->ended = malloc(sizeof(int32_t) * (size_t)j->n))) {
      free(r);
      return qins_error_set(QINS_ENOMEM, "out of memory");
    }
    for (int b = 0; b < j->n; b++) r->ended[b] = -1;
    r->req = m->req;
    r->attempt = m->attempt;
    r->next = j->reqs;
    j->reqs = r;
  }
  if (r->ended[k] >= 0) return 0; /* nothing follows a branch's END */
  entry **ep = &r->entries;
  while (*ep && (*ep)->step < m->step) ep = &(*ep)->next;
  entry *e = *ep;
  if (!e || e->step != m->step) {
    e = calloc(1, sizeof *e);
    if (!e || !(e->slot = calloc((size_t)j->n, sizeof *e->slot))) {
      free(e);
      return qins_error_set(QINS_ENOMEM, "out of memory");
    }
    e->step = m->step;
    e->next = *ep;
    *ep = e;
  }
  if (e->slot[k]) return 0;
  held *h = malloc(sizeof *h + (m->nbytes ? m->nbytes : 1));
  if (!h) return qins_error_set(QINS_ENOMEM, "out of memory");
  h->m = *m;
  h->m.data = h->data;
  h->m.alloc = NULL;
  h->m.alloc_user = NULL;
  if (m->nbytes) memcpy(h->data, m->data, m->nbytes);
  e->slot[k] = h;
  j->held++;
  j->bytes += m->nbytes;
  if (m->flags & QINS_MSG_END) r->ended[k] = m->step;
  /* detach every set that is now complete, lowest step first (branches run in step order, so
   * sets complete in that order; one completing out of order goes as well, not held); the
   * request's state is settled before any delivery, because delivering may wait for credits and
   * so handle a FORGET that changes this table */
  entry *ready = NULL, **rt = &ready;
  for (entry **pp = &r->entries; *pp;) {
    entry *x = *pp;
    if (!complete(j, r, x)) {
      pp = &x->next;
      continue;
    }
    *pp = x->next;
    x->next = NULL;
    *rt = x;
    rt = &x->next;
  }
  /* a request whose branches all ended, or that holds nothing, needs no state */
  int all_ended = 1, nothing_ended = 1;
  for (int b = 0; b < j->n; b++) {
    all_ended &= r->ended[b] >= 0;
    nothing_ended &= r->ended[b] < 0;
  }
  if (!r->entries && (all_ended || nothing_ended)) {
    for (rstate **pp = &j->reqs; *pp; pp = &(*pp)->next)
      if (*pp == r) {
        *pp = r->next;
        rstate_free(j, r);
        break;
      }
  }
  int rc = 0;
  const qins_msg *in[64];
  int n = j->n < 64 ? j->n : 64;
  while (ready) {
    entry *x = ready;
    ready = x->next;
    for (int b = 0; b < n; b++) in[b] = x->slot[b] ? &x->slot[b]->m : NULL;
    if (rc >= 0) rc = fn(user, in, n);
    entry_free(j, x);
  }
  return rc < 0 ? rc : 0;
}
