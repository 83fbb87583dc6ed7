/* Levelled logging to stderr; the level comes from QINS_LOG (error|warn|info|debug|trace). */
#ifndef QINS_LOG_H
#define QINS_LOG_H

typedef enum { QINS_LOG_ERROR, QINS_LOG_WARN, QINS_LOG_INFO, QINS_LOG_DEBUG, QINS_LOG_TRACE } qins_log_level;

void qins_log_set_level(qins_log_level level);
qins_log_level qins_log_get_level(void);
/* Tag names the component (worker id, stage) shown before each line. */
void qins_log_set_tag(const char *tag);
void qins_log(qins_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define QINS_ERROR(...) qins_log(QINS_LOG_ERROR, __VA_ARGS__)
#define QINS_WARN(...) qins_log(QINS_LOG_WARN, __VA_ARGS__)
#define QINS_INFO(...) qins_log(QINS_LOG_INFO, __VA_ARGS__)
#define QINS_DEBUG(...) qins_log(QINS_LOG_DEBUG, __VA_ARGS__)

#endif
