/* cpu-vs-Vulkan test helpers: one tensor on both backends (optionally a view at a byte offset). */
#include "tests/test_pair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

qins_backend *test_pair_be[2];

int test_pair_setup(void **state) {
  (void)state;
  test_seed();
  if (qins_backend_create("cpu", &test_pair_be[0])) return -1;
  char names[8][64];
  int n = qins_backend_list(names, 8);
  int have_vk = 0;
  for (int i = 0; i < n; i++) have_vk |= strcmp(names[i], "vk:0") == 0;
  if (have_vk && qins_backend_create("vk:0", &test_pair_be[1]) != 0) {
    fprintf(stderr, "vk:0 unavailable: %s\n", qins_error_msg());
    return -1;
  }
  return 0;
}

int test_pair_teardown(void **state) {
  (void)state;
  qins_backend_destroy(test_pair_be[1]);
  qins_backend_destroy(test_pair_be[0]);
  test_pair_be[0] = test_pair_be[1] = NULL;
  return 0;
}

void pmake(pair *p, const char *name, qins_dtype dt, int nd, const int64_t *shape, const void *data, size_t voff) {
  for (int i = 0; i < 2; i++) {
    qins_tensor *t = &p->t[i];
    assert_int_equal(qins_tensor_init(t, name, dt, nd, shape), 0);
    size_t n = qins_tensor_nbytes(t);
    assert_int_equal(qins_buf_alloc(test_pair_be[i], n + voff + 8, &t->buf), 0);
    t->offset = voff;
    if (data) assert_int_equal(qins_tensor_write(t, data), 0);
    else test_poison(t);
  }
}

void *pair_read(const pair *p, int i) {
  void *h = malloc(qins_tensor_nbytes(&p->t[i]) + 4);
  assert_int_equal(qins_tensor_read(&p->t[i], h), 0);
  return h;
}

void pfree(pair *p) {
  for (int i = 0; i < 2; i++) {
    qins_buf_free(p->t[i].buf);
    p->t[i].buf = NULL;
  }
}

size_t rand_off(size_t unit) { return unit * (size_t)(test_rand_u64() % 6); }
