/* Shared helpers for the cmocka tests: fresh random data, poisoned outputs, error metrics,
 * and the list of backends every op test runs on. */
#ifndef QINS_TEST_UTIL_H
#define QINS_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/backend.h"

/* Seed: QINS_TEST_SEED if set, else fresh from the clock; printed once so a failure can be replayed. */
uint64_t test_seed(void);
uint64_t test_rand_u64(void);
float test_rand_uniform(float lo, float hi); /* never exactly 0 when lo < 0 < hi is avoided by callers */
float test_rand_normal(void);
/* Fill with N(0, std) values, none exactly zero. */
void test_fill_normal(float *x, int64_t n, float std);
void test_fill_uniform(float *x, int64_t n, float lo, float hi);
/* NaN-poison a tensor's buffer so unwritten elements fail the comparison. */
void test_poison(qins_tensor *t);
/* ||a - b|| / max(||b||, tiny); returns +inf if either holds a NaN or Inf. */
double test_rel_l2(const float *a, const float *b, int64_t n);
/* Assert rel L2 <= tol with a message naming what was compared. */
void test_assert_close(const char *what, const float *got, const float *want, int64_t n, double tol);

/* Backends available here ("cpu", "vk:0", ...). */
int test_backends(char names[][64], int max);
/* Make a tensor on a backend and upload host data (if data != NULL). */
void test_tensor_make(qins_backend *be, qins_tensor *t, const char *name, qins_dtype dt, int ndim,
                      const int64_t *shape, const void *data);
/* Path under ../shared (QINS_SHARED_DIR). */
const char *test_shared_path(const char *rel);
/* A whole file, NUL-terminated (malloc'd); *len (or NULL) its size. NULL when it cannot be opened. */
char *test_slurp(const char *path, size_t *len);

#endif
