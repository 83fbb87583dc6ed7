/* Channels: memfd arena (never in /dev/shm), credits and back-pressure, inline fallback, stale
 * epochs, and a producer/consumer pair in two processes checking every byte and the order. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "core/error.h"
#include "core/ipc.h"
#include "tests/test_util.h"

static int count_dev_shm(void) {
  DIR *d = opendir("/dev/shm");
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void fill(uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((seed * 2654435761u + i * 40503u) >> 7);
}

static int check(const uint8_t *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)((seed * 2654435761u + i * 40503u) >> 7)) return 0;
  return 1;
}

typedef struct pair {
  void *ctx, *push_data, *pull_data, *push_credit, *pull_credit;
  qins_shm shm;
  qins_chan_tx tx;
  qins_chan_rx rx;
} pair;

static void pair_open(pair *p, int slots, size_t slot_bytes) {
  memset(p, 0, sizeof *p);
  assert_int_equal(qins_shm_create((size_t)slots * slot_bytes, &p->shm), 0);
  p->ctx = zmq_ctx_new();
  p->pull_data = zmq_socket(p->ctx, ZMQ_PULL);
  p->push_data = zmq_socket(p->ctx, ZMQ_PUSH);
  p->pull_credit = zmq_socket(p->ctx, ZMQ_PULL);
  p->push_credit = zmq_socket(p->ctx, ZMQ_PUSH);
  assert_int_equal(zmq_bind(p->pull_data, "inproc://d"), 0);
  assert_int_equal(zmq_bind(p->pull_credit, "inproc://c"), 0);
  assert_int_equal(zmq_connect(p->push_data, "inproc://d"), 0);
  assert_int_equal(zmq_connect(p->push_credit, "inproc://c"), 0);
  assert_int_equal(qins_chan_tx_init(&p->tx, 3, slots, slot_bytes, p->shm.base, 0, p->push_data), 0);
  qins_chan_rx_init(&p->rx, 3, slots, p->shm.base, p->shm.size, p->push_credit);
}

static void pair_close(pair *p) {
  qins_chan_tx_fini(&p->tx);
  void *s[4] = {p->push_data, p->pull_data, p->push_credit, p->pull_credit};
  for (int i = 0; i < 4; i++) {
    int z = 0;
    zmq_setsockopt(s[i], ZMQ_LINGER, &z, sizeof z);
    zmq_close(s[i]);
  }
  zmq_ctx_term(p->ctx);
  qins_shm_close(&p->shm);
}

static qins_msg make_msg(void *data, size_t n, uint64_t req) {
  qins_msg m;
  memset(&m, 0, sizeof m);
  m.req = req;
  m.dtype = QINS_DT_U8;
  m.ndim = 1;
  m.shape[0] = (int64_t)n;
  m.data = data;
  m.nbytes = n;
  return m;
}

static void drain_credits(pair *p) {
  qins_wire_hdr h;
  qins_wire_frame f;
  while (qins_wire_recv(p->pull_credit, 1, &h, &f) == 1) {
    qins_wire_release(&f);
    qins_chan_tx_credit(&p->tx, &h);
  }
}

static void test_credits_and_backpressure(void **state) {
  (void)state;
  int before = count_dev_shm();
  pair p;
  int slots = 2 + (int)(test_rand_u64() % 4);
  size_t sb = 4096;
  pair_open(&p, slots, sb);
  assert_int_equal(count_dev_shm(), before); /* memfd: not a file anywhere */
  uint8_t buf[4096];
  for (int i = 0; i < slots; i++) {
    fill(buf, sizeof buf, (uint64_t)i);
    qins_msg m = make_msg(buf, sizeof buf, (uint64_t)i);
    assert_int_equal(qins_chan_send(&p.tx, &m), 0);
  }
  /* ring full: no credit, and a send is refused rather than overwriting a slot in use */
  assert_int_equal(qins_chan_tx_credits(&p.tx), 0);
  qins_msg m = make_msg(buf, sizeof buf, 99);
  assert_int_equal(qins_chan_send(&p.tx, &m), QINS_EINTERNAL);
  /* consume one: exactly one credit comes back */
  qins_wire_hdr h;
  qins_wire_frame f;
  assert_int_equal(qins_wire_recv(p.pull_data, 0, &h, &f), 1);
  qins_msg got;
  assert_int_equal(qins_wire_to_msg(&h, &f, &p.rx, &got), 0);
  assert_int_equal(got.req, 0);
  assert_int_equal(h.inl, 0);
  assert_true(check(got.data, got.nbytes, 0));
  assert_int_equal(qins_chan_rx_done(&p.rx, &h), 0);
  qins_wire_release(&f);
  while (qins_chan_tx_credits(&p.tx) == 0) drain_credits(&p);
  assert_int_equal(qins_chan_tx_credits(&p.tx), 1);
  assert_int_equal(qins_chan_send(&p.tx, &m), 0);
  /* the rest arrive in order with intact payloads */
  for (int i = 1; i <= slots; i++) {
    assert_int_equal(qins_wire_recv(p.pull_data, 0, &h, &f), 1);
    assert_int_equal(qins_wire_to_msg(&h, &f, &p.rx, &got), 0);
    uint64_t want = i < slots ? (uint64_t)i : 99;
    assert_int_equal(got.req, want);
    assert_int_equal(h.seq, (uint64_t)i);
    if (i < slots) assert_true(check(got.data, got.nbytes, (uint64_t)i));
    qins_chan_rx_done(&p.rx, &h);
    qins_wire_release(&f);
  }
  pair_close(&p);
}

static void test_inline_and_epochs(void **state) {
  (void)state;
  pair p;
  pair_open(&p, 2, 1024);
  size_t big = 5000 + test_rand_u64() % 3000;
  uint8_t *buf = malloc(big);
  fill(buf, big, 7);
  qins_msg m = make_msg(buf, big, 1);
  assert_int_equal(qins_chan_send(&p.tx, &m), 0); /* larger than a slot: goes inline */
  qins_wire_hdr h;
  qins_wire_frame f;
  assert_int_equal(qins_wire_recv(p.pull_data, 0, &h, &f), 1);
  assert_int_equal(h.inl, 1);
  qins_msg got;
  assert_int_equal(qins_wire_to_msg(&h, &f, &p.rx, &got), 0);
  assert_int_equal(got.nbytes, big);
  assert_true(check(got.data, big, 7));
  /* the consumer is replaced: new epoch, all slots free; the old credit must not count twice */
  qins_chan_tx_reset(&p.tx, 1);
  assert_int_equal(qins_chan_tx_credits(&p.tx), 2);
  qins_chan_rx_done(&p.rx, &h); /* stale epoch 0 credit */
  qins_wire_release(&f);
  m.nbytes = 16;
  assert_int_equal(qins_chan_send(&p.tx, &m), 0);
  usleep(10000);
  drain_credits(&p);
  assert_int_equal(qins_chan_tx_credits(&p.tx), 1);
  /* a descriptor pointing outside the arena is rejected, not dereferenced */
  qins_wire_hdr bad = h;
  bad.inl = 0;
  bad.offset = p.shm.size - 8;
  bad.nbytes = 64;
  assert_int_equal(qins_wire_to_msg(&bad, &f, &p.rx, &got), QINS_EIPC);
  free(buf);
  pair_close(&p);
}

/* Two processes over ipc://, shm ring of 4 slots, 300 messages of random sizes up to 3 slots'
 * worth (some inline): the child checks order and every byte; the parent must wait for credits. */
static void test_two_processes(void **state) {
  (void)state;
  int before = count_dev_shm();
  const int slots = 4, n = 300;
  const size_t sb = 64 * 1024;
  qins_shm shm;
  assert_int_equal(qins_shm_create(slots * sb, &shm), 0);
  char ep_d[128], ep_c[128];
  snprintf(ep_d, sizeof ep_d, "ipc://@qins-test-ipc-%d-d", (int)getpid());
  snprintf(ep_c, sizeof ep_c, "ipc://@qins-test-ipc-%d-c", (int)getpid());
  uint64_t seed = test_rand_u64();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    void *ctx = zmq_ctx_new();
    void *in = zmq_socket(ctx, ZMQ_PULL), *cr = zmq_socket(ctx, ZMQ_PUSH);
    if (zmq_bind(in, ep_d) || zmq_connect(cr, ep_c)) _exit(10);
    qins_chan_rx rx;
    qins_chan_rx_init(&rx, 0, slots, shm.base, shm.size, cr);
    for (int i = 0; i < n; i++) {
      qins_wire_hdr h;
      qins_wire_frame f;
      qins_msg m;
      if (qins_wire_recv(in, 0, &h, &f) != 1) _exit(11);
      if (qins_wire_to_msg(&h, &f, &rx, &m) || m.req != (uint64_t)i || h.seq != (uint64_t)i) _exit(12);
      if (!check(m.data, m.nbytes, seed + (uint64_t)i)) _exit(13);
      if (i % 7 == 0) usleep(200); /* a slow consumer: the producer must block, not drop */
      qins_chan_rx_done(&rx, &h);
      qins_wire_release(&f);
    }
    int z = 0;
    zmq_setsockopt(cr, ZMQ_LINGER, &z, sizeof z);
    usleep(20000);
    zmq_close(in);
    zmq_close(cr);
    zmq_ctx_term(ctx);
    _exit(0);
  }
  void *ctx = zmq_ctx_new();
  void *out = zmq_socket(ctx, ZMQ_PUSH), *cr = zmq_socket(ctx, ZMQ_PULL);
  assert_int_equal(zmq_bind(cr, ep_c), 0);
  assert_int_equal(zmq_connect(out, ep_d), 0);
  qins_chan_tx tx;
  assert_int_equal(qins_chan_tx_init(&tx, 0, slots, sb, shm.base, 0, out), 0);
  uint8_t *buf = malloc(3 * sb);
  int waits = 0, inl = 0;
  for (int i = 0; i < n; i++) {
    size_t len = 1 + test_rand_u64() % (i % 10 == 9 ? 3 * sb : sb);
    fill(buf, len, seed + (uint64_t)i);
    while (qins_chan_tx_credits(&tx) == 0) {
      waits++;
      qins_wire_hdr h;
      qins_wire_frame f;
      assert_int_equal(qins_wire_recv(cr, 0, &h, &f), 1); /* blocks: back-pressure */
      qins_wire_release(&f);
      qins_chan_tx_credit(&tx, &h);
    }
    assert_true(tx.slots - tx.n_free <= slots);
    qins_msg m = make_msg(buf, len, (uint64_t)i);
    assert_int_equal(qins_chan_send(&tx, &m), 0);
    if (len > sb) inl++;
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(waits > 0);
  assert_true(inl > 0);
  assert_int_equal(tx.inline_sent, (uint64_t)inl);
  free(buf);
  qins_chan_tx_fini(&tx);
  int z = 0;
  zmq_setsockopt(out, ZMQ_LINGER, &z, sizeof z);
  zmq_setsockopt(cr, ZMQ_LINGER, &z, sizeof z);
  zmq_close(out);
  zmq_close(cr);
  zmq_ctx_term(ctx);
  qins_shm_close(&shm);
  assert_int_equal(count_dev_shm(), before);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_credits_and_backpressure),
      cmocka_unit_test(test_inline_and_epochs),
      cmocka_unit_test(test_two_processes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
