/* Control-message framing over ZeroMQ (type frame + JSON frame). */
#include "workers/proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/error.h"

static int send_part(void *sock, const void *p, size_t n, int flags) {
  for (;;) {
    if (zmq_send(sock, p, n, flags) >= 0) return 0;
    if (errno != EINTR) return qins_error_set(QINS_EIPC, "control send: %s", zmq_strerror(errno));
  }
}

int qins_ctl_send(void *sock, const char *ident, const char *type, json_t *body) {
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  int rc = 0;
  if (ident) rc = send_part(sock, ident, strlen(ident), ZMQ_SNDMORE);
  if (!rc) rc = send_part(sock, type, strlen(type), ZMQ_SNDMORE);
  if (!rc) rc = send_part(sock, text ? text : "{}", text ? strlen(text) : 2, 0);
  free(text);
  return rc;
}

int qins_ctl_recv(void *sock, int dontwait, char *ident, char *type, size_t type_n, json_t **body, char *peer) {
  *body = NULL;
  zmq_msg_t parts[4];
  int n = 0, more = 1;
  while (more) {
    zmq_msg_t *m = &parts[n < 4 ? n : 3];
    if (n >= 4) zmq_msg_close(m);
    zmq_msg_init(m);
    int r = zmq_msg_recv(m, sock, (n == 0 && dontwait) ? ZMQ_DONTWAIT : 0);
    if (r < 0) {
      int e = errno;
      zmq_msg_close(m);
      for (int i = 0; i < n && i < 4; i++) zmq_msg_close(&parts[i]);
      if (n == 0 && e == EAGAIN) return 0;
      if (e == EINTR && n == 0) return 0;
      return qins_error_set(QINS_EIPC, "control receive: %s", zmq_strerror(e));
    }
    if (peer && n == (ident ? 1 : 0)) {
      const char *pa = zmq_msg_gets(m, "Peer-Address");
      snprintf(peer, 64, "%s", pa ? pa : "");
    }
    more = zmq_msg_more(m);
    if (n < 4) n++;
  }
  int base = ident ? 1 : 0;
  int rc = 1;
  if (n < base + 2) {
    rc = 0; /* malformed: drop */
  } else {
    if (ident) {
      size_t k = zmq_msg_size(&parts[0]);
      if (k > 127) k = 127;
      memcpy(ident, zmq_msg_data(&parts[0]), k);
      ident[k] = 0;
    }
    size_t k = zmq_msg_size(&parts[base]);
    if (k >= type_n) k = type_n - 1;
    memcpy(type, zmq_msg_data(&parts[base]), k);
    type[k] = 0;
    json_error_t je;
    *body = json_loadb(zmq_msg_data(&parts[base + 1]), zmq_msg_size(&parts[base + 1]), 0, &je);
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&parts[i]);
  return rc;
}
