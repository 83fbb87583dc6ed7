/* A synthetic live pipeline for `qins monitor --demo`: fills the metrics registry like a running one. */
#ifndef QINS_MONITOR_DEMO_H
#define QINS_MONITOR_DEMO_H

#include <stdint.h>

#include "monitor/monitor.h"

typedef struct qins_monitor_demo qins_monitor_demo;

int qins_monitor_demo_create(uint64_t seed, qins_monitor_demo **out);
/* Advance simulated time by dt seconds: stages process items, queues move, gates fill, loss falls. */
void qins_monitor_demo_step(qins_monitor_demo *d, double dt);
/* Providers for graph, gates and training documents (metrics come from the registry). */
void qins_monitor_demo_providers(qins_monitor_demo *d, qins_monitor_providers *p);
void qins_monitor_demo_destroy(qins_monitor_demo *d);

#endif
