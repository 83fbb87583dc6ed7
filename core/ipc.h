/* Inter-process channels: an anonymous shared-memory arena (memfd: nothing in /dev/shm, ever)
 * holding bounded rings of slots, and descriptors over ZeroMQ. One channel carries one edge
 * between two processes; the consumer returns a credit per slot; no credit, no send
 * (back-pressure, never a drop). Payloads travel inside the ZeroMQ message (second frame)
 * when the channel has no ring (another host) or the tensor exceeds a slot. */
#ifndef QINS_IPC_H
#define QINS_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "stages/stage.h"

typedef struct qins_shm {
  int fd;
  uint8_t *base;
  size_t size;
} qins_shm;

/* Anonymous shared memory (memfd_create, close-on-exec; clear it to hand to a child). */
int qins_shm_create(size_t size, qins_shm *out);
int qins_shm_attach(int fd, size_t size, qins_shm *out);
void qins_shm_close(qins_shm *s);

#define QINS_WIRE_MAGIC 0x534e4951u /* "QINS" */
enum { QINS_WIRE_DATA = 1, QINS_WIRE_CREDIT = 2 };
#define QINS_WIRE_INLINE 0xffffffffu /* offset value: payload is frame 2 */

/* First frame of every channel message. */
typedef struct qins_wire_hdr {
  uint32_t magic, kind;
  uint32_t chan, epoch;
  uint32_t slot; /* ring slot (credit token, also for inline payloads) */
  uint32_t inl;  /* 1: payload in frame 2 */
  uint64_t seq;
  uint64_t req;
  uint32_t attempt, route;
  int32_t step;
  uint32_t flags;
  int32_t pos, last_id;
  int32_t dtype, ndim;
  int64_t shape[4];
  uint64_t offset; /* byte offset of the payload in the arena (shm) */
  uint64_t nbytes;
} qins_wire_hdr;

/* Producer end. `sock` is a ZeroMQ PUSH connected to the consumer's data inbox. */
typedef struct qins_chan_tx {
  int id;
  uint32_t epoch;
  int slots;
  size_t slot_bytes;
  uint8_t *ring;       /* NULL: every payload inline */
  size_t ring_offset;  /* ring's offset in the arena (what descriptors carry) */
  int n_free;
  int *free_slots;
  uint64_t seq;
  void *sock;
  uint64_t sent, sent_bytes, inline_sent;
} qins_chan_tx;

/* Consumer end. `credit_sock` is a PUSH connected to the producer's credit inbox. */
typedef struct qins_chan_rx {
  int id;
  uint32_t epoch;
  int slots;
  uint8_t *arena; /* base of the arena (NULL when inline only) */
  size_t arena_size;
  void *credit_sock;
  uint64_t received;
} qins_chan_rx;

int qins_chan_tx_init(qins_chan_tx *tx, int id, int slots, size_t slot_bytes, uint8_t *ring, size_t ring_offset,
                      void *sock);
void qins_chan_tx_fini(qins_chan_tx *tx);
/* New epoch: every slot free again (the consumer was replaced). */
void qins_chan_tx_reset(qins_chan_tx *tx, uint32_t epoch);
static inline int qins_chan_tx_credits(const qins_chan_tx *tx) { return tx->n_free; }
/* Send one message; needs a credit (QINS_EINTERNAL without). Copies into a slot, or inline. */
int qins_chan_send(qins_chan_tx *tx, const qins_msg *m);
/* Zero-copy variant: a slot to fill, then qins_chan_send_slot with the described message. */
void *qins_chan_tx_reserve(qins_chan_tx *tx, size_t bytes, int *slot);
int qins_chan_send_slot(qins_chan_tx *tx, int slot, const qins_msg *m);
/* Apply a credit header (stale epochs ignored). */
void qins_chan_tx_credit(qins_chan_tx *tx, const qins_wire_hdr *h);

void qins_chan_rx_init(qins_chan_rx *rx, int id, int slots, uint8_t *arena, size_t arena_size, void *credit_sock);
/* Return the credit for a received message (after its consumer is done with the payload). */
int qins_chan_rx_done(qins_chan_rx *rx, const qins_wire_hdr *h);

/* Receive one wire message from an inbox socket (non-blocking when dontwait). The payload
 * frame (if any) is kept in *frame (zmq_msg_t storage, 64 bytes) until qins_wire_release.
 * Returns 1 received, 0 nothing (dontwait), <0 error. */
typedef struct qins_wire_frame {
  unsigned char storage[64];
  int used;
  void *aligned; /* copy of an inline payload ZeroMQ left misaligned (stages may read floats) */
} qins_wire_frame;
int qins_wire_recv(void *sock, int dontwait, qins_wire_hdr *h, qins_wire_frame *frame);
void qins_wire_release(qins_wire_frame *frame);
/* Fill a message from a received data header: data points into the arena or the frame.
 * Fails (QINS_EIPC) on a descriptor outside the arena. */
int qins_wire_to_msg(const qins_wire_hdr *h, qins_wire_frame *frame, const qins_chan_rx *rx, qins_msg *m);

#endif
