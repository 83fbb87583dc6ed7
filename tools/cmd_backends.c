/* `qins backends`: list the compute backends this machine offers. */
#include <stdio.h>
#include <string.h>

#include "core/backend.h"
#include "core/error.h"
#include "tools/commands.h"

int cmd_backends(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf("usage: qins backends\n\nLists every backend name usable with --backend, with its device.\n");
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "qins backends: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  char names[16][64];
  int n = qins_backend_list(names, 16);
  for (int i = 0; i < n; i++) {
    qins_backend *be;
    if (qins_backend_create(names[i], &be) == 0) {
      printf("%-8s %s\n", names[i], be->device_name);
      qins_backend_destroy(be);
    } else {
      printf("%-8s (unavailable: %s)\n", names[i], qins_error_msg());
    }
  }
  return 0;
}
