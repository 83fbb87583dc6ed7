/* Engine memory: every allocation is charged to a named owner (a stage, a model, a backend),
 * so metrics can report who holds how many bytes. Backed by jemalloc (system malloc in
 * sanitizer builds). */
#ifndef QINS_MEM_H
#define QINS_MEM_H

#include <stddef.h>
#include <stdint.h>

typedef struct qins_mem_owner qins_mem_owner;

/* Owners live for the whole process (a fixed table); the same name returns the same owner. */
qins_mem_owner *qins_mem_owner_get(const char *name);
const char *qins_mem_owner_name(const qins_mem_owner *owner);
int64_t qins_mem_owner_bytes(const qins_mem_owner *owner);
int64_t qins_mem_owner_peak(const qins_mem_owner *owner);
/* Report bytes held outside qins_mem (mmap'd files, device memory) against an owner. */
void qins_mem_owner_charge(qins_mem_owner *owner, int64_t delta);

/* Visit every owner (for metrics). */
typedef void (*qins_mem_visit_fn)(const qins_mem_owner *owner, void *user);
void qins_mem_foreach(qins_mem_visit_fn fn, void *user);
int64_t qins_mem_total_bytes(void);

/* NULL owner charges the "misc" owner. Allocation failure returns NULL and sets the error. */
void *qins_mem_alloc(qins_mem_owner *owner, size_t bytes);
void *qins_mem_calloc(qins_mem_owner *owner, size_t count, size_t size);
/* Aligned to `align` bytes (a power of two, >= sizeof(void*)); freed with qins_mem_free. */
void *qins_mem_alloc_aligned(qins_mem_owner *owner, size_t bytes, size_t align);
void *qins_mem_realloc(qins_mem_owner *owner, void *ptr, size_t bytes);
char *qins_mem_strdup(qins_mem_owner *owner, const char *s);
void qins_mem_free(qins_mem_owner *owner, void *ptr);
/* "jemalloc 5.3.0-..." or "system malloc": for reports. */
const char *qins_mem_allocator(void);

#endif
