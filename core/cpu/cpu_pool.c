/* A small fork-join thread pool: cpu ops split their rows over it; each thread keeps a scratch
 * buffer that ops reuse from call to call (no malloc in the hot path). */
#include <pthread.h>
#include <stdlib.h>

#include "core/cpu/cpu_ops.h"
#include "core/error.h"
#include "core/mem.h"

struct cpu_pool {
  int threads;
  pthread_t *tids;
  pthread_mutex_t lock;
  pthread_cond_t work_cv, done_cv;
  /* the current job */
  cpu_task_fn fn;
  void *user;
  int64_t n, chunk;
  int64_t next;      /* next unclaimed index */
  int active;        /* threads still working on this job */
  uint64_t job_id;
  int quit;
  struct worker_arg *args;
  /* per-thread scratch (index 0: the calling thread), grown by cpu_scratch_reserve */
  void **scratch;
  size_t *scratch_size;
};

static int run_chunks(cpu_pool *p, uint64_t job, int tid) {
  int did = 0;
  for (;;) {
    pthread_mutex_lock(&p->lock);
    if (p->job_id != job || p->next >= p->n) {
      pthread_mutex_unlock(&p->lock);
      return did;
    }
    int64_t b = p->next;
    int64_t e = b + p->chunk < p->n ? b + p->chunk : p->n;
    p->next = e;
    cpu_task_fn fn = p->fn;
    void *user = p->user;
    pthread_mutex_unlock(&p->lock);
    fn(user, b, e, tid);
    did = 1;
  }
}

typedef struct worker_arg {
  cpu_pool *pool;
  int tid;
} worker_arg;

static void *worker_main(void *arg) {
  cpu_pool *p = ((worker_arg *)arg)->pool;
  int tid = ((worker_arg *)arg)->tid;
  uint64_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&p->lock);
    while (!p->quit && p->job_id == seen) pthread_cond_wait(&p->work_cv, &p->lock);
    if (p->quit) {
      pthread_mutex_unlock(&p->lock);
      return NULL;
    }
    seen = p->job_id;
    pthread_mutex_unlock(&p->lock);
    run_chunks(p, seen, tid);
    pthread_mutex_lock(&p->lock);
    if (--p->active == 0) pthread_cond_signal(&p->done_cv);
    pthread_mutex_unlock(&p->lock);
  }
}

int cpu_pool_create(int threads, cpu_pool **out) {
  qins_mem_owner *owner = qins_mem_owner_get("backend.cpu");
  cpu_pool *p = qins_mem_calloc(owner, 1, sizeof *p);
  if (!p) return QINS_ENOMEM;
  p->threads = threads;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->work_cv, NULL);
  pthread_cond_init(&p->done_cv, NULL);
  p->scratch = qins_mem_calloc(owner, (size_t)threads, sizeof *p->scratch);
  p->scratch_size = qins_mem_calloc(owner, (size_t)threads, sizeof *p->scratch_size);
  p->args = qins_mem_calloc(owner, (size_t)threads, sizeof *p->args);
  if (!p->scratch || !p->scratch_size || !p->args) {
    cpu_pool_destroy(p);
    return QINS_ENOMEM;
  }
  if (threads > 1) {
    p->tids = qins_mem_calloc(owner, (size_t)threads - 1, sizeof *p->tids);
    if (!p->tids) {
      p->threads = 1;
      cpu_pool_destroy(p);
      return QINS_ENOMEM;
    }
    for (int i = 0; i < threads - 1; i++) {
      p->args[i] = (worker_arg){p, i + 1};
      if (pthread_create(&p->tids[i], NULL, worker_main, &p->args[i]) != 0) {
        p->threads = i + 1;
        break;
      }
    }
  }
  *out = p;
  return 0;
}

void cpu_pool_destroy(cpu_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->quit = 1;
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  for (int i = 0; i < p->threads - 1; i++) pthread_join(p->tids[i], NULL);
  qins_mem_owner *owner = qins_mem_owner_get("backend.cpu");
  for (int i = 0; p->scratch && i < p->threads; i++) qins_mem_free(owner, p->scratch[i]);
  qins_mem_free(owner, p->scratch);
  qins_mem_free(owner, p->scratch_size);
  qins_mem_free(owner, p->args);
  qins_mem_free(owner, p->tids);
  qins_mem_free(owner, p);
}

int cpu_threads(qins_backend *be) {
  cpu_pool *p = be->impl;
  return p ? p->threads : 1;
}

int cpu_scratch_reserve(qins_backend *be, size_t bytes) {
  cpu_pool *p = be->impl;
  qins_mem_owner *owner = qins_mem_owner_get("backend.cpu");
  for (int i = 0; i < p->threads; i++) {
    if (p->scratch_size[i] >= bytes) continue;
    /* 64-byte aligned for vector loads; old contents are not kept */
    void *q = qins_mem_alloc_aligned(owner, bytes, 64);
    if (!q) return qins_error_set(QINS_ENOMEM, "cpu backend: no memory for %zu bytes of per-thread scratch", bytes);
    qins_mem_free(owner, p->scratch[i]);
    p->scratch[i] = q;
    p->scratch_size[i] = bytes;
  }
  return 0;
}

void *cpu_scratch(qins_backend *be, int tid) { return ((cpu_pool *)be->impl)->scratch[tid]; }

/* cpu_parallel's callers take no thread index: adapt them to the task signature. */
typedef struct range_adapter {
  cpu_range_fn fn;
  void *user;
} range_adapter;

static void run_range(void *user, int64_t b, int64_t e, int tid) {
  (void)tid;
  range_adapter *a = user;
  a->fn(a->user, b, e);
}

void cpu_parallel(qins_backend *be, int64_t n, int64_t min_chunk, cpu_range_fn fn, void *user) {
  range_adapter a = {fn, user};
  cpu_parallel_tid(be, n, min_chunk, run_range, &a);
}

void cpu_parallel_tid(qins_backend *be, int64_t n, int64_t min_chunk, cpu_task_fn fn, void *user) {
  cpu_pool *p = be->impl;
  if (min_chunk < 1) min_chunk = 1;
  if (!p || p->threads <= 1 || n <= min_chunk) {
    if (n > 0) fn(user, 0, n, 0);
    return;
  }
  /* A few chunks per thread balances uneven rows without much locking. */
  int64_t chunk = (n + (int64_t)p->threads * 4 - 1) / ((int64_t)p->threads * 4);
  if (chunk < min_chunk) chunk = min_chunk;
  pthread_mutex_lock(&p->lock);
  p->fn = fn;
  p->user = user;
  p->n = n;
  p->chunk = chunk;
  p->next = 0;
  p->active = p->threads - 1;
  uint64_t job = ++p->job_id;
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->lock);
  run_chunks(p, job, 0);
  pthread_mutex_lock(&p->lock);
  while (p->active > 0) pthread_cond_wait(&p->done_cv, &p->lock);
  pthread_mutex_unlock(&p->lock);
}
