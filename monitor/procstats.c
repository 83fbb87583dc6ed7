/* Samples this process's CPU time, resident memory and engine-owned bytes into the metrics registry. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/error.h"
#include "core/mem.h"
#include "core/metrics.h"
#include "monitor/monitor.h"

/* Owners named "device.*" hold device memory (core/vk charges its allocations to "device.vk"). */
static void add_device_bytes(const qins_mem_owner *o, void *user) {
  if (strncmp(qins_mem_owner_name(o), "device.", 7) == 0) *(int64_t *)user += qins_mem_owner_bytes(o);
}

int qins_monitor_sample_process(const char *worker, int64_t device_bytes) {
  if (!worker || !*worker) return qins_error_set(QINS_EINVAL, "qins_monitor_sample_process: empty worker name");
  char lab[160];
  snprintf(lab, sizeof lab, "worker=\"%s\"", worker);
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec * 1e-6;
    /* A counter that mirrors the kernel's total: set it through the gauge-style setter would
     * change its TYPE, so add the difference since the last sample. */
    qins_metric *c = qins_metric_counter("qins_worker_cpu_seconds_total", "CPU time used by the worker process.", lab);
    double have = qins_metric_value(c);
    if (cpu > have) qins_metric_add(c, cpu - have);
  }
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  qins_metric_set(qins_metric_gauge("qins_worker_rss_bytes", "Resident memory of the worker process.", lab),
                  (double)resident * (double)sysconf(_SC_PAGESIZE));
  /* device_bytes < 0: take it from the accounting (0 for a cpu-only worker) */
  int64_t accounted_device = 0;
  qins_mem_foreach(add_device_bytes, &accounted_device);
  if (device_bytes < 0) device_bytes = accounted_device;
  qins_metric_set(qins_metric_gauge("qins_worker_engine_bytes", "Host bytes the engine allocated (qins_mem accounting).",
                                    lab),
                  (double)(qins_mem_total_bytes() - accounted_device));
  qins_metric_set(qins_metric_gauge("qins_worker_device_bytes", "Device memory held by the worker.", lab),
                  (double)device_bytes);
  return 0;
}
