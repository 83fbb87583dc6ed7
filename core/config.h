/* YAML configuration trees that remember where every node came from (file:line:column or the
 * --set that wrote it), so validation errors can point at the offending text. */
#ifndef QINS_CONFIG_H
#define QINS_CONFIG_H

#include <stddef.h>

typedef enum qins_cfg_type { QINS_CFG_SCALAR, QINS_CFG_SEQ, QINS_CFG_MAP } qins_cfg_type;

typedef struct qins_cfg qins_cfg;
struct qins_cfg {
  qins_cfg_type type;
  char *value;      /* scalar text ("" for an empty/null scalar) */
  int quoted;       /* scalar was quoted in the source: never a number/bool/null */
  int n;            /* items (seq) or pairs (map) */
  qins_cfg **items; /* seq items, or map values */
  qins_cfg **keys;  /* map keys (scalars, with their own marks) */
  char origin[192]; /* "file.yaml" or "--set a.b=c" */
  int line, col;    /* 1-based; 0 for --set */
};

/* Parse a YAML file / string (one document). Syntax errors: QINS_EINPUT with file:line:col. */
int qins_cfg_load_file(const char *path, qins_cfg **out);
int qins_cfg_load_string(const char *text, size_t len, const char *origin, qins_cfg **out);
void qins_cfg_free(qins_cfg *c);

/* Apply "a.b.c=value": map keys by name; sequence items by index or, for a sequence of maps,
 * by their `name` value ("stages.embed.options.dim=8"). The value is parsed as YAML (so
 * "[1,2]" is a list). Missing map keys are created. Errors name the --set. */
int qins_cfg_set(qins_cfg *root, const char *assignment);

qins_cfg *qins_cfg_get(const qins_cfg *map, const char *key); /* NULL if absent or not a map */
qins_cfg *qins_cfg_key_node(const qins_cfg *map, const char *key);
/* "file:line:col" (or the --set) of a node, into buf. */
const char *qins_cfg_where(const qins_cfg *c, char *buf, size_t n);
const char *qins_cfg_type_name(qins_cfg_type t);

/* Scalar conversions with error messages naming where + what (`what` is the key path). */
int qins_cfg_as_int(const qins_cfg *c, const char *what, long long *out);
int qins_cfg_as_double(const qins_cfg *c, const char *what, double *out);
int qins_cfg_as_bool(const qins_cfg *c, const char *what, int *out);
int qins_cfg_as_string(const qins_cfg *c, const char *what, const char **out);

/* Fail with "WHERE: KEY: unknown key 'x' (expected one of: a, b)" if the map has a key not in
 * `allowed` (NULL-terminated). `what` names the map ("stages[2]"). */
int qins_cfg_check_keys(const qins_cfg *map, const char *what, const char *const *allowed);

#endif
