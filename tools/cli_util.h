/* Small argument helpers shared by the generate/logits subcommands. */
#ifndef QINS_TOOLS_CLI_UTIL_H
#define QINS_TOOLS_CLI_UTIL_H

#include <stdint.h>

/* Parse "1,2,3" into a fresh array (free with free()). Returns 0 or QINS_EINVAL with a message. */
int cli_parse_ids(const char *text, int32_t **ids, int *n);
/* Strict number parsing: the whole string must be a number. 0 or QINS_EINVAL naming the option. */
int cli_parse_int(const char *opt, const char *text, long lo, long hi, long *out);
int cli_parse_float(const char *opt, const char *text, double lo, double hi, double *out);

#endif
