/* File-system helpers: mkdir -p and file copies for run folders, reports, checkpoints and data shards. */
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

int qins_copy_file(const char *src, const char *dst) {
  FILE *a = fopen(src, "rb");
  if (!a) return qins_error_set(QINS_EIO, "%s: cannot open: %s", src, strerror(errno));
  FILE *b = fopen(dst, "wb");
  if (!b) {
    fclose(a);
    return qins_error_set(QINS_EIO, "%s: cannot create: %s", dst, strerror(errno));
  }
  char buf[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(buf, 1, sizeof buf, a)) > 0)
    if (fwrite(buf, 1, n, b) != n) rc = qins_error_set(QINS_EIO, "%s: write failed", dst);
  fclose(a);
  if (fclose(b) != 0 && !rc) rc = qins_error_set(QINS_EIO, "%s: write failed", dst);
  return rc;
}
