/* Internal to core/backend*.c: the checks and the dispatch the qins_op_* wrappers share. */
#ifndef QINS_BACKEND_CHECK_H
#define QINS_BACKEND_CHECK_H

#include <stdint.h>

#include "core/backend.h"
#include "core/error.h"

/* Each DESC in one expression gets its own buffer (__COUNTER__ differs per use). */
#define DESC(t) qins_tensor_describe((t), dbuf[__COUNTER__ % 4], sizeof dbuf[0])
#define DESC_DECL char dbuf[4][192]; (void)dbuf
#define RET_IF(x) do { int rc__ = (x); if (rc__) return rc__; } while (0)

/* t has a buffer on `be` and fits inside it; the message names op and tensor. */
int qins_backend_check_placed(const char *op, const qins_tensor *t, qins_backend *be);
/* The same inside a wrapper, whose backend is `be`. */
#define PLACED(op, t) qins_backend_check_placed((op), (t), be)
uint64_t qins_backend_now_ns(void);
int qins_backend_unsupported(qins_backend *be, qins_op_kind kind);

/* cpu ops are synchronous: their wall time is their cost. Device backends record their own
 * (timestamp queries) and only the call count is kept here. */
#define DISPATCH(kind, member, ...)                                            \
  do {                                                                         \
    if (!be->ops->member) return qins_backend_unsupported(be, kind);           \
    uint64_t t0 = be->threads ? qins_backend_now_ns() : 0;                     \
    int rc_ = be->ops->member(be, __VA_ARGS__);                                \
    be->stats[kind].calls++;                                                   \
    if (be->threads) be->stats[kind].ns += qins_backend_now_ns() - t0;         \
    return rc_;                                                                \
  } while (0)

#endif
