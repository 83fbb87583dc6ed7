/* Web assets (monitor/web/ and the charting library) embedded into the binary at build time. */
#ifndef QINS_MONITOR_ASSETS_H
#define QINS_MONITOR_ASSETS_H

#include <stddef.h>

typedef struct qins_monitor_asset {
  const char *path; /* URL path, e.g. "/app.js" */
  const char *mime;
  const unsigned char *data;
  size_t len;
} qins_monitor_asset;

extern const qins_monitor_asset qins_monitor_assets[];
extern const int qins_monitor_n_assets;

#endif
