/* `qins tokenize` and `qins detokenize`: text <-> token ids with any supported tokenizer. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tokenizer.h"
#include "tools/commands.h"

/* Whole file into a malloc'd buffer (for --file); NULL with the error set. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    qins_error_set(QINS_EINPUT, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *p = realloc(buf, cap * 2);
    if (!p) free(buf);
    buf = p;
    cap *= 2;
  }
  fclose(f);
  if (!buf) qins_error_set(QINS_ENOMEM, "%s: out of memory", path);
  *len = n;
  return buf;
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

int cmd_tokenize(int argc, char **argv) {
  const char *path = NULL, *text = NULL, *file = NULL;
  int special = 0, json = 0;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      printf("usage: qins tokenize --tokenizer PATH (--text TEXT | --file FILE) [--special] [--json]\n\n"
             "Prints the token ids of TEXT (or of FILE's bytes), space-separated (--json: {\"ids\":[...],\"tokens\":[...]}).\n"
             "PATH: tokenizer.json, encoder.json or vocab.bpe (GPT-2 pair), llama2.c tokenizer.bin,\n"
             "or a folder holding one of them.\n"
             "--special adds the tokenizer's special tokens (BOS) and recognises special tokens\n"
             "such as <|begin_of_text|> written in the text.\n");
      return 0;
    }
    if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) path = argv[++i];
    else if (strcmp(argv[i], "--text") == 0 && i + 1 < argc) text = argv[++i];
    else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) file = argv[++i];
    else if (strcmp(argv[i], "--special") == 0) special = 1;
    else if (strcmp(argv[i], "--json") == 0) json = 1;
    else {
      fprintf(stderr, "qins tokenize: unexpected argument '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  if (!path || !text == !file) {
    fprintf(stderr, "qins tokenize: --tokenizer and one of --text / --file are required (see --help)\n");
    return 2;
  }
  size_t tlen = text ? strlen(text) : 0;
  char *fbuf = file ? slurp(file, &tlen) : NULL;
  if (file && !fbuf) return qins_cli_fail(qins_error_code());
  qins_tokenizer *tok;
  int rc = qins_tokenizer_open(path, &tok);
  if (rc) {
    free(fbuf);
    return qins_cli_fail(rc);
  }
  int32_t *ids;
  size_t n;
  rc = qins_tokenizer_encode_n(tok, file ? fbuf : text, tlen, special ? QINS_TOK_ADD_SPECIAL | QINS_TOK_PARSE_SPECIAL : 0,
                               &ids, &n);
  free(fbuf);
  if (rc) {
    qins_tokenizer_close(tok);
    return qins_cli_fail(rc);
  }
  if (json) {
    json_t *o = json_object(), *ja = json_array(), *ta = json_array();
    for (size_t i = 0; i < n; i++) {
      const char *s = qins_tokenizer_token_text(tok, ids[i]);
      json_array_append_new(ja, json_integer(ids[i]));
      /* llama2.c byte tokens may not be UTF-8: jansson refuses those, so give null. */
      json_t *js = json_string(s ? s : "");
      json_array_append_new(ta, js ? js : json_null());
    }
    json_object_set_new(o, "ids", ja);
    json_object_set_new(o, "tokens", ta);
    char *out = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    printf("%s\n", out ? out : "null");
    free(out);
    json_decref(o);
  } else {
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
  }
  free(ids);
  qins_tokenizer_close(tok);
  return 0;
}

int cmd_detokenize(int argc, char **argv) {
  const char *path = NULL, *list = NULL;
  int special = 0;
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      printf("usage: qins detokenize --tokenizer PATH --ids 1,2,3 [--special]\n\n"
             "Prints the text of the ids (commas or spaces between them). Special tokens are\n"
             "skipped unless --special is given.\n");
      return 0;
    }
    if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) path = argv[++i];
    else if (strcmp(argv[i], "--ids") == 0 && i + 1 < argc) list = argv[++i];
    else if (strcmp(argv[i], "--special") == 0) special = 1;
    else {
      fprintf(stderr, "qins detokenize: unexpected argument '%s' (see --help)\n", argv[i]);
      return 2;
    }
  }
  if (!path || !list) {
    fprintf(stderr, "qins detokenize: --tokenizer and --ids are required (see --help)\n");
    return 2;
  }
  size_t cap = strlen(list) / 2 + 1, n = 0;
  int32_t *ids = malloc(cap * sizeof *ids);
  if (!ids) return qins_cli_fail(qins_error_set(QINS_ENOMEM, "out of memory"));
  for (const char *p = list; *p;) {
    if (*p == ',' || *p == ' ') {
      p++;
      continue;
    }
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
      free(ids);
      fprintf(stderr, "qins detokenize: --ids: '%s' is not a list of token ids\n", list);
      return 2;
    }
    ids[n++] = (int32_t)v;
    p = end;
  }
  qins_tokenizer *tok;
  int rc = qins_tokenizer_open(path, &tok);
  if (rc) {
    free(ids);
    return qins_cli_fail(rc);
  }
  char *text;
  size_t len;
  rc = qins_tokenizer_decode_ex(tok, ids, n, special ? QINS_TOK_KEEP_SPECIAL : 0, &text, &len);
  free(ids);
  qins_tokenizer_close(tok);
  if (rc) return qins_cli_fail(rc);
  fwrite(text, 1, len, stdout);
  printf("\n");
  free(text);
  return 0;
}
