/* File-system helpers: mkdir -p for run folders, reports and data shards. */
#include "core/fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"

int qins_mkdirs(const char *dir) {
  char buf[1024];
  if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
    return qins_error_set(QINS_EINVAL, "%.64s...: folder name too long", dir);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) return qins_error_set(QINS_EIO, "%s: mkdir: %s", buf, strerror(errno));
      *p = '/';
    }
  if (buf[0] && mkdir(buf, 0777) != 0 && errno != EEXIST)
    return qins_error_set(QINS_EIO, "%s: mkdir: %s", buf, strerror(errno));
  return 0;
}

int qins_mkdirs_for_file(const char *file) {
  char buf[1024];
  if (snprintf(buf, sizeof buf, "%s", file) >= (int)sizeof buf)
    return qins_error_set(QINS_EINVAL, "%.64s...: file name too long", file);
  char *slash = strrchr(buf, '/');
  if (!slash || slash == buf) return 0;
  *slash = 0;
  return qins_mkdirs(buf);
}
