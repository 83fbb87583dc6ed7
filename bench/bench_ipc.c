/* qins-bench-ipc: throughput and latency of a qins channel between two processes (shm ring +
 * ZeroMQ descriptors, and tcp loopback with inline payloads) against memcpy on this machine. */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "core/error.h"
#include "core/ipc.h"
#include "bench/bench_util.h"


static volatile uint64_t sink_word;

/* The consumer reads every word of the payload: delivery means the bytes reached its cache. */
static void consume(const void *p, size_t n) {
  const uint64_t *w = p;
  uint64_t x = 0;
  for (size_t i = 0; i < n / 8; i++) x ^= w[i];
  sink_word ^= x;
}

static void *sock(void *ctx, int type) {
  void *s = zmq_socket(ctx, type);
  int z = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &z, sizeof z);
  zmq_setsockopt(s, ZMQ_SNDHWM, &z, sizeof z);
  zmq_setsockopt(s, ZMQ_RCVHWM, &z, sizeof z);
  return s;
}

typedef struct ends {
  char data[128], credit[128], back_data[128], back_credit[128];
} ends;

/* Child: receive `count` messages, read them, return credits; for ping-pong, echo each back. */
static int child(ends *e, qins_shm *shm, size_t slot_bytes, int slots, int count, int pingpong) {
  void *ctx = zmq_ctx_new();
  void *in = sock(ctx, ZMQ_PULL), *cr = sock(ctx, ZMQ_PUSH);
  if (zmq_bind(in, e->data) || zmq_connect(cr, e->credit)) return 10;
  void *bout = NULL, *bcr = NULL;
  qins_chan_tx back;
  if (pingpong) {
    bout = sock(ctx, ZMQ_PUSH);
    bcr = sock(ctx, ZMQ_PULL);
    if (zmq_connect(bout, e->back_data) || zmq_bind(bcr, e->back_credit)) return 11;
    qins_chan_tx_init(&back, 1, slots, slot_bytes, shm ? shm->base + (size_t)slots * slot_bytes : NULL,
                      (size_t)slots * slot_bytes, bout);
  }
  qins_chan_rx rx;
  qins_chan_rx_init(&rx, 0, slots, shm ? shm->base : NULL, shm ? shm->size : 0, cr);
  for (int i = 0; i < count; i++) {
    qins_wire_hdr h;
    qins_wire_frame f;
    qins_msg m;
    if (qins_wire_recv(in, 0, &h, &f) != 1 || qins_wire_to_msg(&h, &f, &rx, &m)) return 12;
    consume(m.data, m.nbytes);
    if (pingpong) {
      while (qins_chan_tx_credits(&back) == 0) {
        qins_wire_hdr c;
        qins_wire_frame cf;
        if (qins_wire_recv(bcr, 0, &c, &cf) != 1) return 13;
        qins_wire_release(&cf);
        qins_chan_tx_credit(&back, &c);
      }
      if (qins_chan_send(&back, &m)) return 14;
    }
    qins_chan_rx_done(&rx, &h);
    qins_wire_release(&f);
  }
  usleep(20000);
  zmq_close(in);
  zmq_close(cr);
  if (pingpong) {
    qins_chan_tx_fini(&back);
    zmq_close(bout);
    zmq_close(bcr);
  }
  zmq_ctx_term(ctx);
  return 0;
}

typedef struct result {
  double gbps, us;
} result;

/* zerocopy: the producer writes the tensor straight into a reserved slot (as a stage writing its
 * output in place would) instead of copying it from a private buffer. */
static int run_pair(int tcp, size_t size, int count, int pingpong, int zerocopy, result *res) {
  int slots = size >= (16u << 20) ? 2 : 4;
  qins_shm shm = {.fd = -1};
  if (!tcp && qins_shm_create((size_t)slots * size * 2, &shm)) return -1;
  ends e;
  static int port_base = 0;
  if (tcp) {
    int p = 20000 + (int)(getpid() % 20000) + 4 * (port_base++ % 1000);
    snprintf(e.data, sizeof e.data, "tcp://127.0.0.1:%d", p);
    snprintf(e.credit, sizeof e.credit, "tcp://127.0.0.1:%d", p + 1);
    snprintf(e.back_data, sizeof e.back_data, "tcp://127.0.0.1:%d", p + 2);
    snprintf(e.back_credit, sizeof e.back_credit, "tcp://127.0.0.1:%d", p + 3);
  } else {
    snprintf(e.data, sizeof e.data, "ipc://@qins-bench-%d-d", (int)getpid());
    snprintf(e.credit, sizeof e.credit, "ipc://@qins-bench-%d-c", (int)getpid());
    snprintf(e.back_data, sizeof e.back_data, "ipc://@qins-bench-%d-bd", (int)getpid());
    snprintf(e.back_credit, sizeof e.back_credit, "ipc://@qins-bench-%d-bc", (int)getpid());
  }
  void *ctx = zmq_ctx_new();
  void *out = sock(ctx, ZMQ_PUSH), *cr = sock(ctx, ZMQ_PULL), *bin = NULL, *bcr = NULL;
  if (zmq_bind(cr, e.credit)) return -1;
  if (pingpong) {
    bin = sock(ctx, ZMQ_PULL);
    bcr = sock(ctx, ZMQ_PUSH);
    if (zmq_bind(bin, e.back_data)) return -1;
  }
  pid_t pid = fork();
  if (pid == 0) _exit(child(&e, tcp ? NULL : &shm, size, slots, count + 1, pingpong));
  zmq_connect(out, e.data);
  if (pingpong) zmq_connect(bcr, e.back_credit);
  qins_chan_tx tx;
  qins_chan_tx_init(&tx, 0, slots, size, tcp ? NULL : shm.base, 0, out);
  qins_chan_rx brx;
  qins_chan_rx_init(&brx, 1, slots, tcp ? NULL : shm.base, tcp ? 0 : shm.size, bcr);
  uint8_t *buf = aligned_alloc(64, (size + 63) & ~(size_t)63);
  memset(buf, 0x5a, size);
  qins_msg m;
  memset(&m, 0, sizeof m);
  m.dtype = QINS_DT_U8;
  m.ndim = 1;
  m.shape[0] = (int64_t)size;
  m.data = buf;
  m.nbytes = size;
  double t0 = 0;
  for (int i = 0; i <= count; i++) {
    if (i == 1) t0 = bench_now_s(); /* the first message pays for connections and page faults */
    while (qins_chan_tx_credits(&tx) == 0) {
      qins_wire_hdr h;
      qins_wire_frame f;
      if (qins_wire_recv(cr, 0, &h, &f) != 1) return -1;
      qins_wire_release(&f);
      qins_chan_tx_credit(&tx, &h);
    }
    m.req = (uint64_t)i;
    if (zerocopy && !tcp) {
      int slot;
      void *dst = qins_chan_tx_reserve(&tx, size, &slot);
      if (!dst) return -1;
      memset(dst, (int)(i & 0xff), size);
      if (qins_chan_send_slot(&tx, slot, &m)) return -1;
    } else if (qins_chan_send(&tx, &m)) {
      return -1;
    }
    if (pingpong) {
      qins_wire_hdr h;
      qins_wire_frame f;
      qins_msg r;
      if (qins_wire_recv(bin, 0, &h, &f) != 1 || qins_wire_to_msg(&h, &f, &brx, &r)) return -1;
      consume(r.data, r.nbytes);
      qins_chan_rx_done(&brx, &h);
      qins_wire_release(&f);
    }
  }
  /* wait until every slot is back: all messages consumed */
  while (qins_chan_tx_credits(&tx) < slots) {
    qins_wire_hdr h;
    qins_wire_frame f;
    if (qins_wire_recv(cr, 0, &h, &f) != 1) return -1;
    qins_wire_release(&f);
    qins_chan_tx_credit(&tx, &h);
  }
  double dt = bench_now_s() - t0;
  int st;
  waitpid(pid, &st, 0);
  res->gbps = (double)size * count / dt / 1e9;
  res->us = dt / count * 1e6 / (pingpong ? 2 : 1);
  free(buf);
  qins_chan_tx_fini(&tx);
  zmq_close(out);
  zmq_close(cr);
  if (bin) zmq_close(bin);
  if (bcr) zmq_close(bcr);
  zmq_ctx_term(ctx);
  if (!tcp) qins_shm_close(&shm);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* memcpy at the same tensor size, averaged over count copies: the yardstick for one IPC row
 * (bench_memcpy_gbps measures best-of bandwidth on buffers far larger than the caches). */
static double ipc_memcpy_gbps(size_t size, int count) {
  uint8_t *a = aligned_alloc(64, (size + 63) & ~(size_t)63), *b = aligned_alloc(64, (size + 63) & ~(size_t)63);
  memset(a, 1, size);
  memset(b, 2, size);
  double t0 = bench_now_s();
  for (int i = 0; i < count; i++) {
    a[i % size] = (uint8_t)i;
    memcpy(b, a, size);
    consume(b, 64);
  }
  double dt = bench_now_s() - t0;
  free(a);
  free(b);
  return (double)size * count / dt / 1e9;
}

static int iters(size_t size, double budget_bytes) {
  double n = budget_bytes / (double)size;
  if (n < 8) n = 8;
  if (n > 20000) n = 20000;
  return (int)n;
}

int main(int argc, char **argv) {
  const char *json_path = NULL;
  size_t max_size = 64u << 20;
  int quick = 0, no_tcp = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc)
      json_path = argv[++i];
    else if (!strcmp(argv[i], "--max-mib") && i + 1 < argc)
      max_size = (size_t)atoi(argv[++i]) << 20;
    else if (!strcmp(argv[i], "--quick"))
      quick = 1;
    else if (!strcmp(argv[i], "--no-tcp"))
      no_tcp = 1;
    else {
      printf("usage: qins-bench-ipc [--json FILE] [--max-mib N] [--quick] [--no-tcp]\n"
             "Channel throughput (GB/s, consumer reads every byte) and one-way latency (ping-pong / 2)\n"
             "for 4 KiB..64 MiB tensors between two processes, vs memcpy in one process.\n");
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  double budget = quick ? 64e6 : 512e6;
  json_t *rows = json_array();
  printf("%-9s %11s %11s %8s %11s %8s %11s %11s %11s\n", "size", "memcpy GB/s", "shm GB/s", "shm/mem", "shm-zc GB/s",
         "zc/mem", "shm lat us", "tcp GB/s", "tcp lat us");
  for (size_t size = 4096; size <= max_size; size *= 4) {
    int n = iters(size, budget);
    double mc = ipc_memcpy_gbps(size, n);
    result thr, zc, lat, tthr = {0, 0}, tlat = {0, 0};
    if (run_pair(0, size, n, 0, 0, &thr) || run_pair(0, size, n, 0, 1, &zc) ||
        run_pair(0, size, n < 2000 ? n : 2000, 1, 0, &lat)) {
      fprintf(stderr, "qins-bench-ipc: shm run failed at %zu bytes: %s\n", size, qins_error_msg());
      return 1;
    }
    int tcp_ok = !no_tcp && size <= (16u << 20);
    if (tcp_ok && (run_pair(1, size, n / 4 > 8 ? n / 4 : 8, 0, 0, &tthr) || run_pair(1, size, n < 500 ? n : 500, 1, 0, &tlat))) {
      fprintf(stderr, "qins-bench-ipc: tcp run failed at %zu bytes\n", size);
      tcp_ok = 0;
    }
    char sz[32];
    if (size >= (1u << 20))
      snprintf(sz, sizeof sz, "%zu MiB", size >> 20);
    else
      snprintf(sz, sizeof sz, "%zu KiB", size >> 10);
    printf("%-9s %11.2f %11.2f %7.0f%% %11.2f %7.0f%% %11.1f", sz, mc, thr.gbps, 100 * thr.gbps / mc, zc.gbps,
           100 * zc.gbps / mc, lat.us);
    if (tcp_ok)
      printf(" %11.2f %11.1f\n", tthr.gbps, tlat.us);
    else
      printf(" %11s %11s\n", "-", "-");
    fflush(stdout);
    json_t *row = json_pack("{s:I,s:f,s:f,s:f,s:f}", "bytes", (json_int_t)size, "memcpy_gbps", mc, "shm_gbps", thr.gbps,
                            "shm_ratio", thr.gbps / mc, "shm_latency_us", lat.us);
    json_object_set_new(row, "shm_zerocopy_gbps", json_real(zc.gbps));
    json_object_set_new(row, "shm_zerocopy_ratio", json_real(zc.gbps / mc));
    if (tcp_ok) {
      json_object_set_new(row, "tcp_gbps", json_real(tthr.gbps));
      json_object_set_new(row, "tcp_latency_us", json_real(tlat.us));
    }
    json_array_append_new(rows, row);
  }
  if (json_path) {
    char host[256] = "";
    gethostname(host, sizeof host);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    json_t *root = json_pack("{s:s,s:s,s:i,s:o}", "bench", "ipc", "host", host, "cpus", (int)cpus, "rows", rows);
    if (json_dump_file(root, json_path, JSON_INDENT(2))) {
      fprintf(stderr, "qins-bench-ipc: cannot write %s\n", json_path);
      json_decref(root);
      return 1;
    }
    json_decref(root);
  } else {
    json_decref(rows);
  }
  return 0;
}
