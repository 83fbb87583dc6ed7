/* Smoke test (no cmocka) for qins-bench-ops: `--quick --json FILE` runs, and the JSON parses and
 * holds memcpy bandwidth plus matmul entries for every backend available here. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"

static int fail(const char *msg, const char *detail) {
  fprintf(stderr, "bench smoke: %s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) return fail("usage: test_bench_smoke PATH/qins-bench-ops", NULL);
  char path[] = "/tmp/qins-bench-smoke-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return fail("mkstemp failed", NULL);
  close(fd);
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' --quick --json '%s'", argv[1], path);
  int st = system(cmd);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    unlink(path);
    return fail("qins-bench-ops --quick failed", cmd);
  }
  json_error_t err;
  json_t *root = json_load_file(path, 0, &err);
  unlink(path);
  if (!root) return fail("JSON does not parse", err.text);
  int bad = 0;
  json_t *bw = json_object_get(root, "memcpy_gbps"), *res = json_object_get(root, "matmul");
  if (!json_is_number(bw) || !(json_number_value(bw) > 0)) bad |= fail("memcpy_gbps missing or not > 0", NULL);
  if (!json_is_string(json_object_get(json_object_get(root, "machine"), "cpu"))) bad |= fail("machine.cpu missing", NULL);
  if (!json_is_array(res)) bad |= fail("matmul array missing", NULL);
  char names[16][64];
  int nb = qins_backend_list(names, 16);
  for (int b = 0; b < nb && !bad; b++) {
    int entries = 0;
    size_t i;
    json_t *e;
    json_array_foreach(res, i, e) {
      const char *be = json_string_value(json_object_get(e, "backend"));
      if (be && strcmp(be, names[b]) == 0 && json_number_value(json_object_get(e, "gflops")) > 0) entries++;
    }
    /* 2 shapes x 2 M x 3 dtypes */
    if (entries != 12) {
      char msg[160];
      snprintf(msg, sizeof msg, "backend %.64s has %d of 12 matmul entries", names[b], entries);
      bad |= fail(msg, NULL);
    }
  }
  json_decref(root);
  if (!bad) printf("bench smoke: ok (%d backend(s))\n", nb);
  return bad;
}
