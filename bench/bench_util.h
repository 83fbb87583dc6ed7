/* Helpers every benchmark shares: a monotonic clock, the cpu's name, and the memcpy yardstick. */
#ifndef QINS_BENCH_UTIL_H
#define QINS_BENCH_UTIL_H

#include <stddef.h>

double bench_now_s(void);
/* "model name" from /proc/cpuinfo, or "unknown cpu". */
void bench_cpu_model(char *buf, size_t n);
/* Best of `reps` memcpy passes over two buffers of `bytes` (far larger than the caches), as
 * GB/s of bytes read + written; 0 if the buffers cannot be allocated. */
double bench_memcpy_gbps(size_t bytes, int reps);

#endif
