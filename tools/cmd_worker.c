/* `qins worker --connect tcp://HOST:PORT`: join a running pipeline from this host (the
 * coordinator spawns local workers itself with the internal form of this command). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tools/commands.h"
#include "workers/run.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins worker --connect tcp://HOST:PORT [--name WORKER]\n\n"
          "Joins the pipeline whose coordinator (`qins run`) listens at tcp://HOST:PORT (the pipeline\n"
          "lists that address as the worker's host). --name picks which worker to serve when several\n"
          "wait at that address. Payloads travel inside the ZeroMQ messages (no shared memory).\n");
}

int cmd_worker(int argc, char **argv) {
  qins_worker_args a = {0};
  a.instance = -1;
  a.shm_fd = -1;
  int internal = 0;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--internal")) {
      internal = 1;
    } else if (!strcmp(argv[i], "--connect") && v) {
      a.control = v, i++;
    } else if (!strcmp(argv[i], "--control") && v) {
      a.control = v, i++;
    } else if (!strcmp(argv[i], "--name") && v) {
      a.name = v, i++;
    } else if (!strcmp(argv[i], "--instance") && v) {
      a.instance = atoi(v), i++;
    } else if (!strcmp(argv[i], "--shm-fd") && v) {
      a.shm_fd = atoi(v), i++;
    } else if (!strcmp(argv[i], "--shm-size") && v) {
      a.shm_size = (size_t)strtoull(v, NULL, 10), i++;
    } else {
      fprintf(stderr, "qins worker: unexpected argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (!a.control || (!internal && strncmp(a.control, "tcp://", 6) != 0)) {
    fprintf(stderr, "qins worker: --connect tcp://HOST:PORT is required\n");
    usage(stderr);
    return 2;
  }
  if (!internal) a.instance = -1;
  return qins_worker_main(&a);
}
