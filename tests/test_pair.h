/* cpu-vs-Vulkan test helpers: one tensor on both backends (optionally a view at a byte offset),
 * shared by the Vulkan tests. */
#ifndef QINS_TEST_PAIR_H
#define QINS_TEST_PAIR_H

#include "tests/test_util.h"

/* [0] cpu, [1] vk:0 (NULL without a Vulkan device); made by test_pair_setup. */
extern qins_backend *test_pair_be[2];
int test_pair_setup(void **state);
int test_pair_teardown(void **state);

#define OK(x) do { int rc_ = (x); if (rc_) fail_msg("%s -> %d: %s", #x, rc_, qins_error_msg()); } while (0)
#define NEED_VK() do { if (!test_pair_be[1]) { skip(); return; } } while (0)

typedef struct { qins_tensor t[2]; } pair;

/* The tensor on both backends at byte offset voff inside a larger buffer; data written, or the
 * buffer NaN-poisoned when data is NULL. */
void pmake(pair *p, const char *name, qins_dtype dt, int nd, const int64_t *shape, const void *data, size_t voff);
/* Host copy of backend i's bytes (malloc'd; 4 bytes of slack). */
void *pair_read(const pair *p, int i);
void pfree(pair *p);
/* 0..5 units: mostly unaligned view offsets. */
size_t rand_off(size_t unit);

#endif
