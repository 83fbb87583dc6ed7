/* Control messages between the coordinator (ROUTER) and workers (DEALER): a type frame and a
 * JSON frame. Worker -> coordinator: HELLO, BOUND, READY, RESET_ACK, ERROR, HB (heartbeat with a
 * metrics snapshot, on its own socket). Coordinator -> worker: CONFIG, PEERS, RESET, FORGET, STOP. */
#ifndef QINS_WORKERS_PROTO_H
#define QINS_WORKERS_PROTO_H

#include <jansson.h>

/* Send [ident?][type][json]; ident NULL for a DEALER. Takes ownership of body (may be NULL). */
int qins_ctl_send(void *sock, const char *ident, const char *type, json_t *body);
/* Receive one control message; ident (ROUTER only; buffer of 128) may be NULL. Returns 1 got,
 * 0 none (dontwait), <0 error. *body is a new reference or NULL. peer (64 bytes, may be NULL)
 * gets the sender's IP for tcp connections. */
int qins_ctl_recv(void *sock, int dontwait, char *ident, char *type, size_t type_n, json_t **body, char *peer);

#endif
