/* File-system helpers shared by the commands that write run folders, reports and data shards. */
#ifndef QINS_FSUTIL_H
#define QINS_FSUTIL_H

/* mkdir -p: creates `dir` and any missing parents. QINS_EIO naming the folder on failure. */
int qins_mkdirs(const char *dir);
/* Creates the folder that will hold `file` (everything before its last '/'; nothing if none). */
int qins_mkdirs_for_file(const char *file);
/* Copies src to dst (created or truncated); QINS_EIO naming the file on an open, read or write failure. */
int qins_copy_file(const char *src, const char *dst);

#endif
