/* Accounted allocation: sizes come from the allocator itself (usable size), so free needs none. */
#include "core/mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdio.h>

#include "core/error.h"

/* Linking jemalloc replaces malloc/free process-wide; malloc_usable_size then asks jemalloc. */
#include <malloc.h>
#ifdef QINS_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#define usable_size(p) malloc_usable_size(p)

#define QINS_MEM_MAX_OWNERS 256

struct qins_mem_owner {
  char name[64];
  _Atomic int64_t bytes;
  _Atomic int64_t peak;
};

static qins_mem_owner owners[QINS_MEM_MAX_OWNERS];
static int owner_count;
static pthread_mutex_t owner_lock = PTHREAD_MUTEX_INITIALIZER;

qins_mem_owner *qins_mem_owner_get(const char *name) {
  if (!name || !*name) name = "misc";
  pthread_mutex_lock(&owner_lock);
  qins_mem_owner *found = NULL;
  for (int i = 0; i < owner_count; i++)
    if (strncmp(owners[i].name, name, sizeof owners[i].name - 1) == 0) found = &owners[i];
  if (!found) {
    /* The table is small on purpose; past it, the last slot collects the rest. */
    found = &owners[owner_count < QINS_MEM_MAX_OWNERS ? owner_count++ : QINS_MEM_MAX_OWNERS - 1];
    if (!found->name[0]) {
      strncpy(found->name, name, sizeof found->name - 1);
    }
  }
  pthread_mutex_unlock(&owner_lock);
  return found;
}

const char *qins_mem_owner_name(const qins_mem_owner *owner) { return owner->name; }
int64_t qins_mem_owner_bytes(const qins_mem_owner *owner) { return atomic_load(&((qins_mem_owner *)owner)->bytes); }
int64_t qins_mem_owner_peak(const qins_mem_owner *owner) { return atomic_load(&((qins_mem_owner *)owner)->peak); }

void qins_mem_owner_charge(qins_mem_owner *owner, int64_t delta) {
  if (!owner) owner = qins_mem_owner_get("misc");
  int64_t now = atomic_fetch_add(&owner->bytes, delta) + delta;
  int64_t peak = atomic_load(&owner->peak);
  while (now > peak && !atomic_compare_exchange_weak(&owner->peak, &peak, now)) {
  }
}

void qins_mem_foreach(qins_mem_visit_fn fn, void *user) {
  pthread_mutex_lock(&owner_lock);
  int n = owner_count;
  pthread_mutex_unlock(&owner_lock);
  for (int i = 0; i < n; i++) fn(&owners[i], user);
}

int64_t qins_mem_total_bytes(void) {
  int64_t total = 0;
  pthread_mutex_lock(&owner_lock);
  for (int i = 0; i < owner_count; i++) total += atomic_load(&owners[i].bytes);
  pthread_mutex_unlock(&owner_lock);
  return total;
}

static void *charged(qins_mem_owner *owner, void *p, size_t bytes) {
  if (!p) {
    qins_error_set(QINS_ENOMEM, "out of memory allocating %zu bytes for %s", bytes,
                   owner ? owner->name : "misc");
    return NULL;
  }
  qins_mem_owner_charge(owner, (int64_t)usable_size(p));
  return p;
}

void *qins_mem_alloc(qins_mem_owner *owner, size_t bytes) {
  return charged(owner, malloc(bytes ? bytes : 1), bytes);
}

void *qins_mem_calloc(qins_mem_owner *owner, size_t count, size_t size) {
  if (size && count > SIZE_MAX / size) {
    qins_error_set(QINS_ENOMEM, "allocation of %zu x %zu bytes overflows", count, size);
    return NULL;
  }
  return charged(owner, calloc(count ? count : 1, size ? size : 1), count * size);
}

void *qins_mem_alloc_aligned(qins_mem_owner *owner, size_t bytes, size_t align) {
  void *p = NULL;
  if (posix_memalign(&p, align, bytes ? bytes : 1) != 0) p = NULL;
  return charged(owner, p, bytes);
}

void *qins_mem_realloc(qins_mem_owner *owner, void *ptr, size_t bytes) {
  int64_t old = ptr ? (int64_t)usable_size(ptr) : 0;
  void *p = realloc(ptr, bytes ? bytes : 1);
  if (!p) {
    qins_error_set(QINS_ENOMEM, "out of memory growing to %zu bytes for %s", bytes,
                   owner ? owner->name : "misc");
    return NULL;
  }
  qins_mem_owner_charge(owner, (int64_t)usable_size(p) - old);
  return p;
}

char *qins_mem_strdup(qins_mem_owner *owner, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = qins_mem_alloc(owner, n);
  if (p) memcpy(p, s, n);
  return p;
}

void qins_mem_free(qins_mem_owner *owner, void *ptr) {
  if (!ptr) return;
  qins_mem_owner_charge(owner, -(int64_t)usable_size(ptr));
  free(ptr);
}

const char *qins_mem_allocator(void) {
#ifdef QINS_USE_JEMALLOC
  static char name[64];
  const char *version = NULL;
  size_t len = sizeof version;
  if (!name[0]) {
    if (mallctl("version", &version, &len, NULL, 0) == 0 && version)
      snprintf(name, sizeof name, "jemalloc %.40s", version);
    else
      snprintf(name, sizeof name, "jemalloc");
  }
  return name;
#else
  return "system malloc";
#endif
}
