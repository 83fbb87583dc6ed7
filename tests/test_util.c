/* Test helpers: seeded randomness, poisoning, error metrics, backend enumeration. */
#include "tests/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state;
static int seeded;

uint64_t test_seed(void) {
  if (!seeded) {
    const char *env = getenv("QINS_TEST_SEED");
    rng_state = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    if (!rng_state) rng_state = 0x9e3779b97f4a7c15ull;
    fprintf(stderr, "test seed: QINS_TEST_SEED=%llu\n", (unsigned long long)rng_state);
    seeded = 1;
  }
  return rng_state;
}

uint64_t test_rand_u64(void) {
  test_seed();
  /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dull;
}

float test_rand_uniform(float lo, float hi) {
  double u = (double)(test_rand_u64() >> 11) / (double)(1ull << 53);
  return (float)(lo + (hi - lo) * u);
}

float test_rand_normal(void) {
  double u1 = ((double)(test_rand_u64() >> 11) + 0.5) / (double)(1ull << 53);
  double u2 = (double)(test_rand_u64() >> 11) / (double)(1ull << 53);
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void test_fill_normal(float *x, int64_t n, float std) {
  for (int64_t i = 0; i < n; i++) {
    float v;
    do v = test_rand_normal() * std; while (v == 0.0f);
    x[i] = v;
  }
}

void test_fill_uniform(float *x, int64_t n, float lo, float hi) {
  for (int64_t i = 0; i < n; i++) {
    float v;
    do v = test_rand_uniform(lo, hi); while (v == 0.0f);
    x[i] = v;
  }
}

void test_poison(qins_tensor *t) {
  size_t n = qins_tensor_nbytes(t);
  unsigned char *p = malloc(n);
  /* 0xff bytes: NaN for f32/f16/bf16, -1 for i32 indices, code 255 for u8 */
  memset(p, 0xff, n);
  assert_int_equal(qins_tensor_write(t, p), 0);
  free(p);
}

double test_rel_l2(const float *a, const float *b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * (double)b[i];
  }
  return sqrt(num) / (den > 1e-30 ? sqrt(den) : 1e-15);
}

void test_assert_close(const char *what, const float *got, const float *want, int64_t n, double tol) {
  double err = test_rel_l2(got, want, n);
  if (!(err <= tol)) {
    int64_t first = -1;
    for (int64_t i = 0; i < n && first < 0; i++)
      if (!(fabs((double)got[i] - (double)want[i]) <= tol * (fabs((double)want[i]) + 1e-6))) first = i;
    fail_msg("%s: relative L2 error %.3g > tolerance %.3g (n=%lld; first bad element %lld: got %.9g want %.9g)", what,
             err, tol, (long long)n, (long long)first, first >= 0 ? got[first] : 0.0, first >= 0 ? want[first] : 0.0);
  }
}

int test_backends(char names[][64], int max) {
  const char *only = getenv("QINS_TEST_BACKENDS"); /* e.g. "cpu" to skip Vulkan while debugging */
  int n = qins_backend_list(names, max);
  if (!only) return n;
  int kept = 0;
  for (int i = 0; i < n; i++)
    if (strstr(only, names[i]) || (strncmp(names[i], "vk", 2) == 0 && strstr(only, "vk")))
      memmove(names[kept++], names[i], 64);
  return kept;
}

void test_tensor_make(qins_backend *be, qins_tensor *t, const char *name, qins_dtype dt, int ndim,
                      const int64_t *shape, const void *data) {
  assert_int_equal(qins_tensor_init(t, name, dt, ndim, shape), 0);
  assert_int_equal(qins_tensor_alloc(be, t), 0);
  if (data) assert_int_equal(qins_tensor_write(t, data), 0);
}

const char *test_shared_path(const char *rel) {
  static char buf[4][1024];
  static int slot;
  char *p = buf[slot++ % 4];
  const char *root = getenv("QINS_SHARED_DIR");
  snprintf(p, 1024, "%s/%s", root ? root : QINS_SHARED_DIR, rel);
  return p;
}

char *test_slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *b = malloc((size_t)n + 1);
  size_t got = fread(b, 1, (size_t)n, f);
  fclose(f);
  b[got] = 0;
  if (len) *len = got;
  return b;
}
