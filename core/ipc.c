/* Channels: memfd arena, slot rings with credits, and the descriptor wire format over ZeroMQ. */
#include "core/ipc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zmq.h>

#include "core/error.h"

_Static_assert(sizeof(zmq_msg_t) <= 64, "qins_wire_frame storage too small");

int qins_shm_create(size_t size, qins_shm *out) {
  memset(out, 0, sizeof *out);
  out->fd = -1;
  if (size == 0) size = 4096;
  int fd = memfd_create("qins-arena", MFD_CLOEXEC);
  if (fd < 0) return qins_error_set(QINS_EIPC, "shared memory: memfd_create: %s", strerror(errno));
  if (ftruncate(fd, (off_t)size) != 0) {
    int e = errno;
    close(fd);
    return qins_error_set(QINS_EIPC, "shared memory: cannot size the arena to %zu bytes: %s", size, strerror(e));
  }
  int rc = qins_shm_attach(fd, size, out);
  if (rc) close(fd);
  return rc;
}

int qins_shm_attach(int fd, size_t size, qins_shm *out) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return qins_error_set(QINS_EIPC, "shared memory: mmap of %zu bytes: %s", size, strerror(errno));
  out->fd = fd;
  out->base = p;
  out->size = size;
  return 0;
}

void qins_shm_close(qins_shm *s) {
  if (s->base) munmap(s->base, s->size);
  if (s->fd >= 0) close(s->fd);
  s->base = NULL;
  s->fd = -1;
}

int qins_chan_tx_init(qins_chan_tx *tx, int id, int slots, size_t slot_bytes, uint8_t *ring, size_t ring_offset,
                      void *sock) {
  memset(tx, 0, sizeof *tx);
  tx->id = id;
  tx->slots = slots;
  tx->slot_bytes = slot_bytes;
  tx->ring = ring;
  tx->ring_offset = ring_offset;
  tx->sock = sock;
  tx->free_slots = malloc(sizeof(int) * (size_t)slots);
  if (!tx->free_slots) return qins_error_set(QINS_ENOMEM, "channel %d: out of memory", id);
  qins_chan_tx_reset(tx, 0);
  return 0;
}

void qins_chan_tx_fini(qins_chan_tx *tx) {
  free(tx->free_slots);
  tx->free_slots = NULL;
}

void qins_chan_tx_reset(qins_chan_tx *tx, uint32_t epoch) {
  tx->epoch = epoch;
  tx->n_free = tx->slots;
  /* hand out low slots first: a lightly used ring touches few pages */
  for (int i = 0; i < tx->slots; i++) tx->free_slots[i] = tx->slots - 1 - i;
}

void qins_chan_tx_credit(qins_chan_tx *tx, const qins_wire_hdr *h) {
  if (h->epoch != tx->epoch || (int)h->slot >= tx->slots || tx->n_free >= tx->slots) return;
  for (int i = 0; i < tx->n_free; i++)
    if (tx->free_slots[i] == (int)h->slot) return; /* duplicate credit: ignore */
  tx->free_slots[tx->n_free++] = (int)h->slot;
}

static void fill_hdr(qins_wire_hdr *h, const qins_chan_tx *tx, int slot, const qins_msg *m) {
  memset(h, 0, sizeof *h);
  h->magic = QINS_WIRE_MAGIC;
  h->kind = QINS_WIRE_DATA;
  h->chan = (uint32_t)tx->id;
  h->epoch = tx->epoch;
  h->slot = (uint32_t)slot;
  h->seq = tx->seq;
  h->req = m->req;
  h->attempt = m->attempt;
  h->route = m->route;
  h->step = m->step;
  h->flags = m->flags;
  h->pos = m->pos;
  h->last_id = m->last_id;
  h->dtype = (int32_t)m->dtype;
  h->ndim = m->ndim;
  for (int i = 0; i < m->ndim && i < 4; i++) h->shape[i] = m->shape[i];
  h->nbytes = m->nbytes;
}

static int send_frames(qins_chan_tx *tx, const qins_wire_hdr *h, const void *payload, size_t n) {
  for (;;) {
    int rc = zmq_send(tx->sock, h, sizeof *h, payload ? ZMQ_SNDMORE : 0);
    if (rc >= 0) break;
    if (errno == EINTR) continue;
    return qins_error_set(QINS_EIPC, "channel %d: send: %s", tx->id, zmq_strerror(errno));
  }
  if (payload) {
    for (;;) {
      int rc = zmq_send(tx->sock, payload, n, 0);
      if (rc >= 0) break;
      if (errno == EINTR) continue;
      return qins_error_set(QINS_EIPC, "channel %d: send payload: %s", tx->id, zmq_strerror(errno));
    }
  }
  return 0;
}

void *qins_chan_tx_reserve(qins_chan_tx *tx, size_t bytes, int *slot) {
  if (!tx->ring || bytes > tx->slot_bytes || tx->n_free == 0) return NULL;
  *slot = tx->free_slots[tx->n_free - 1];
  return tx->ring + (size_t)*slot * tx->slot_bytes;
}

int qins_chan_send_slot(qins_chan_tx *tx, int slot, const qins_msg *m) {
  if (tx->n_free == 0 || tx->free_slots[tx->n_free - 1] != slot)
    return qins_error_set(QINS_EINTERNAL, "channel %d: slot %d was not reserved", tx->id, slot);
  qins_wire_hdr h;
  fill_hdr(&h, tx, slot, m);
  h.offset = tx->ring_offset + (size_t)slot * tx->slot_bytes;
  int rc = send_frames(tx, &h, NULL, 0);
  if (rc) return rc;
  tx->n_free--;
  tx->seq++;
  tx->sent++;
  tx->sent_bytes += m->nbytes;
  return 0;
}

int qins_chan_send(qins_chan_tx *tx, const qins_msg *m) {
  if (tx->n_free == 0) return qins_error_set(QINS_EINTERNAL, "channel %d: send without a credit", tx->id);
  int slot = tx->free_slots[tx->n_free - 1];
  qins_wire_hdr h;
  fill_hdr(&h, tx, slot, m);
  int rc;
  if (tx->ring && m->nbytes <= tx->slot_bytes) {
    h.offset = tx->ring_offset + (size_t)slot * tx->slot_bytes;
    if (m->nbytes) memcpy(tx->ring + (size_t)slot * tx->slot_bytes, m->data, m->nbytes);
    rc = send_frames(tx, &h, NULL, 0);
  } else {
    h.inl = 1;
    h.offset = QINS_WIRE_INLINE;
    rc = send_frames(tx, &h, m->data ? m->data : "", m->nbytes);
    tx->inline_sent++;
  }
  if (rc) return rc;
  tx->n_free--;
  tx->seq++;
  tx->sent++;
  tx->sent_bytes += m->nbytes;
  return 0;
}

void qins_chan_rx_init(qins_chan_rx *rx, int id, int slots, uint8_t *arena, size_t arena_size, void *credit_sock) {
  memset(rx, 0, sizeof *rx);
  rx->id = id;
  rx->slots = slots;
  rx->arena = arena;
  rx->arena_size = arena_size;
  rx->credit_sock = credit_sock;
}

int qins_chan_rx_done(qins_chan_rx *rx, const qins_wire_hdr *h) {
  qins_wire_hdr c;
  memset(&c, 0, sizeof c);
  c.magic = QINS_WIRE_MAGIC;
  c.kind = QINS_WIRE_CREDIT;
  c.chan = h->chan;
  c.epoch = h->epoch;
  c.slot = h->slot;
  c.seq = h->seq;
  rx->received++;
  for (;;) {
    int rc = zmq_send(rx->credit_sock, &c, sizeof c, 0);
    if (rc >= 0) return 0;
    if (errno == EINTR) continue;
    return qins_error_set(QINS_EIPC, "channel %d: returning a credit: %s", rx->id, zmq_strerror(errno));
  }
}

int qins_wire_recv(void *sock, int dontwait, qins_wire_hdr *h, qins_wire_frame *frame) {
  frame->used = 0;
  frame->aligned = NULL;
  zmq_msg_t *fm = (zmq_msg_t *)(void *)frame->storage;
  for (;;) {
    int n = zmq_recv(sock, h, sizeof *h, dontwait ? ZMQ_DONTWAIT : 0);
    if (n < 0) {
      if (errno == EAGAIN) return 0;
      if (errno == EINTR) continue;
      return qins_error_set(QINS_EIPC, "channel receive: %s", zmq_strerror(errno));
    }
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    if (more) {
      zmq_msg_init(fm);
      while (zmq_msg_recv(fm, sock, 0) < 0) {
        if (errno != EINTR) {
          zmq_msg_close(fm);
          return qins_error_set(QINS_EIPC, "channel receive payload: %s", zmq_strerror(errno));
        }
      }
      frame->used = 1;
      /* drain any unexpected extra frames */
      zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
      while (more) {
        char junk[16];
        if (zmq_recv(sock, junk, sizeof junk, 0) < 0 && errno != EINTR) break;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
      }
    }
    if (n != (int)sizeof *h || h->magic != QINS_WIRE_MAGIC) {
      qins_wire_release(frame);
      continue; /* not ours (or truncated): ignore it rather than crash */
    }
    return 1;
  }
}

void qins_wire_release(qins_wire_frame *frame) {
  if (frame->used) zmq_msg_close((zmq_msg_t *)(void *)frame->storage);
  frame->used = 0;
  free(frame->aligned);
  frame->aligned = NULL;
}

int qins_wire_to_msg(const qins_wire_hdr *h, qins_wire_frame *frame, const qins_chan_rx *rx, qins_msg *m) {
  memset(m, 0, sizeof *m);
  m->req = h->req;
  m->attempt = h->attempt;
  m->route = h->route;
  m->step = h->step;
  m->flags = h->flags;
  m->pos = h->pos;
  m->last_id = h->last_id;
  if (h->dtype < 0 || h->dtype >= QINS_DT_COUNT || h->ndim < 0 || h->ndim > 4)
    return qins_error_set(QINS_EIPC, "channel %u: bad descriptor (dtype %d, rank %d)", h->chan, h->dtype, h->ndim);
  m->dtype = (qins_dtype)h->dtype;
  m->ndim = h->ndim;
  for (int i = 0; i < h->ndim; i++) m->shape[i] = h->shape[i];
  m->nbytes = (size_t)h->nbytes;
  if (h->inl) {
    zmq_msg_t *fm = (zmq_msg_t *)(void *)frame->storage;
    if (!frame->used || zmq_msg_size(fm) != h->nbytes)
      return qins_error_set(QINS_EIPC, "channel %u: inline payload of %zu bytes, descriptor says %llu", h->chan,
                            frame->used ? zmq_msg_size(fm) : 0, (unsigned long long)h->nbytes);
    m->data = zmq_msg_data(fm);
    if (((uintptr_t)m->data & 15) != 0 && h->nbytes > 0) {
      free(frame->aligned);
      frame->aligned = aligned_alloc(16, (h->nbytes + 15) & ~(size_t)15);
      if (!frame->aligned) return qins_error_set(QINS_ENOMEM, "channel %u: out of memory", h->chan);
      memcpy(frame->aligned, m->data, h->nbytes);
      m->data = frame->aligned;
    }
  } else {
    if (!rx->arena || h->offset > rx->arena_size || h->nbytes > rx->arena_size - h->offset)
      return qins_error_set(QINS_EIPC, "channel %u: descriptor points outside the shared arena", h->chan);
    m->data = rx->arena + h->offset;
  }
  return 0;
}
