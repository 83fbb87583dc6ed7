/* The join: a stage that takes several branches (two model branches of one request, say) sees
 * their messages side by side. Messages are paired by (request, attempt, step); a branch that
 * ended (QINS_MSG_END) leaves a hole (NULL) in the later sets of the others. */
#ifndef QINS_WORKERS_JOIN_H
#define QINS_WORKERS_JOIN_H

#include <stddef.h>
#include <stdint.h>

#include "stages/stage.h"

typedef struct qins_join qins_join;

/* Called for every complete set, in step order per request: in[k] is branch k's message (NULL if
 * branch k ended before this step). Its return value stops the put (negative) or is ignored. */
typedef int (*qins_join_fn)(void *user, const qins_msg *const *in, int n);

int qins_join_create(int n_branches, qins_join **out);
void qins_join_destroy(qins_join *j);
/* Hold a copy of `m` (branch k) and deliver every set it completes. A second message for the same
 * (request, attempt, step, branch) is dropped (replayed channels never resend, but be safe). */
int qins_join_put(qins_join *j, int k, const qins_msg *m, qins_join_fn fn, void *user);
/* Drop everything of `req` with attempt < below (a replay or a finished request). */
void qins_join_forget(qins_join *j, uint64_t req, uint32_t below);
/* Messages held (waiting for their partners), bytes held. */
size_t qins_join_held(const qins_join *j, size_t *bytes);

#endif
