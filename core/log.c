/* Levelled logging: one line per call, written with a single write so processes do not interleave. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;
static char log_tag[64];

static const char *level_names[] = {"error", "warn", "info", "debug", "trace"};

static void log_init_from_env(void) {
  const char *env = getenv("QINS_LOG");
  log_level = QINS_LOG_WARN;
  if (!env) return;
  for (int i = 0; i <= QINS_LOG_TRACE; i++)
    if (strcmp(env, level_names[i]) == 0) log_level = i;
}

void qins_log_set_level(qins_log_level level) { log_level = (int)level; }

qins_log_level qins_log_get_level(void) {
  if (log_level < 0) log_init_from_env();
  return (qins_log_level)log_level;
}

void qins_log_set_tag(const char *tag) { snprintf(log_tag, sizeof log_tag, "%s", tag ? tag : ""); }

void qins_log(qins_log_level level, const char *fmt, ...) {
  if ((int)level > (int)qins_log_get_level()) return;
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s%s%s ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, level_names[level], log_tag[0] ? " " : "", log_tag);
  va_list ap;
  va_start(ap, fmt);
  if (n < (int)sizeof line) n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
