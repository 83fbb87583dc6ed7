/* Multi-process runs of the synthetic echo pipeline: results equal an in-process reference, a
 * replica pool answers 200 requests exactly once, SIGKILL/SIGSTOP of a worker with restart loses
 * and duplicates nothing, without restart the run stops with a clear message, nothing is left in
 * /dev/shm (also after kill -9 of the coordinator), and a tcp worker gives the same results. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/metrics.h"
#include "core/pipeline.h"
#include "stages/stage.h"
#include "tests/test_util.h"
#include "workers/run.h"

static const char *ECHO =
    "name: echo\n"
    "workers:\n"
    "  - name: front\n"
    "    stages: [tok, embed, sample, detok, sink]\n"
    "  - name: back\n"
    "    stages: [mix1, mix2]\n"
    "stages:\n"
    "  - {name: tok, type: test_bytes}\n"
    "  - {name: embed, type: test_embed, options: {dim: 16}}\n"
    "  - {name: mix1, type: test_affine, options: {dim: 16, scale: 1.5, bias: 0.25}}\n"
    "  - {name: mix2, type: test_affine, options: {dim: 16, scale: 0.5}}\n"
    "  - {name: sample, type: test_sample, options: {max_tokens: 5}}\n"
    "  - {name: detok, type: test_detok}\n"
    "  - {name: sink, type: sink}\n"
    "edges:\n"
    "  - {from: sample, to: embed, loop: true}\n"
    "heartbeat_ms: 100\n";

static char tmpdir[256];

static int group_setup(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins-test-workers-XXXXXX");
  if (!mkdtemp(tmpdir)) return -1;
  if (!getenv("QINS_BIN")) {
    fprintf(stderr, "QINS_BIN (path of the qins binary) is not set\n");
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

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

/* ---- in-process reference: the same stage vtables, called directly along the edges ---- */

typedef struct blk {
  struct blk *next;
  max_align_t data[];
} blk;
static blk *blocks;
static void *ref_alloc(qins_msg *m, size_t n) {
  (void)m;
  blk *b = malloc(sizeof *b + n + 1);
  b->next = blocks;
  blocks = b;
  return b->data;
}
static void ref_free(void) {
  while (blocks) {
    blk *b = blocks;
    blocks = b->next;
    free(b);
  }
}

/* Returns the sink's record text for one prompt (malloc'd). */
static char *ref_run(const qins_pipeline *pl, const char *prompt) {
  qins_stage st[16];
  memset(st, 0, sizeof st);
  for (int s = 0; s < pl->n_stages; s++) {
    st[s].type = pl->stages[s].type;
    st[s].ctx.stage_name = pl->stages[s].name;
    st[s].ctx.options = pl->stages[s].options;
    if (st[s].type->init) assert_int_equal(st[s].type->init(&st[s], &st[s].ctx), 0);
  }
  qins_msg q[64];
  int qs[64], head = 0, tail = 0;
  memset(&q[0], 0, sizeof q[0]);
  q[0].dtype = QINS_DT_U8;
  q[0].ndim = 1;
  q[0].shape[0] = (int64_t)strlen(prompt);
  q[0].nbytes = strlen(prompt);
  q[0].data = (void *)prompt;
  qs[0] = pl->entry;
  tail = 1;
  char *result = NULL;
  while (head != tail) {
    qins_msg in = q[head % 64];
    int s = qs[head % 64];
    head++;
    qins_msg out;
    memset(&out, 0, sizeof out);
    out.alloc = ref_alloc;
    out.req = in.req;
    out.step = in.step;
    out.flags = in.flags;
    int rc = st[s].type->forward(&st[s], &in, &out);
    assert_true(rc >= 0);
    if (rc == 0) continue;
    if (s == pl->exit_stage) result = strndup(out.data, out.nbytes);
    for (int e = 0; e < pl->n_edges; e++) {
      if (pl->edges[e].from != s || (pl->edges[e].loop && (out.flags & QINS_MSG_END))) continue;
      q[tail % 64] = out;
      qs[tail % 64] = pl->edges[e].to;
      tail++;
    }
  }
  for (int s = 0; s < pl->n_stages; s++)
    if (st[s].type->fini) st[s].type->fini(&st[s]);
  ref_free();
  return result;
}

/* ---- helpers ---- */

static char *write_prompts(int n, char ***prompts_out) {
  static char path[512];
  snprintf(path, sizeof path, "%s/prompts.jsonl", tmpdir);
  FILE *f = fopen(path, "w");
  char **pr = calloc((size_t)n, sizeof(char *));
  for (int i = 0; i < n; i++) {
    char p[64];
    int len = 1 + (int)(test_rand_u64() % 20);
    for (int k = 0; k < len; k++) p[k] = (char)('a' + test_rand_u64() % 26);
    p[len] = 0;
    pr[i] = strdup(p);
    fprintf(f, "{\"id\": \"r%d\", \"prompt\": \"%s\"}\n", i, p);
  }
  fclose(f);
  *prompts_out = pr;
  return path;
}

static qins_pipeline *load(const char *text, const char **sets, int n_sets) {
  qins_pipeline *pl = NULL;
  int rc = qins_pipeline_load_string(text, strlen(text), "echo-test.yaml", sets, n_sets, &pl);
  if (rc) fail_msg("%s", qins_error_msg());
  return pl;
}

/* Read outputs: count per id "rK", check each text against the reference. Returns lines read. */
static int check_outputs(const char *path, const qins_pipeline *pl, char **prompts, int n, int *seen, int exact) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char *line = NULL;
  size_t cap = 0;
  int lines = 0;
  memset(seen, 0, sizeof(int) * (size_t)n);
  while (getline(&line, &cap, f) > 0) {
    lines++;
    json_t *o = json_loads(line, 0, NULL);
    if (!o) fail_msg("output line %d is not JSON: %s", lines, line);
    const char *id = json_string_value(json_object_get(o, "id"));
    assert_non_null(id);
    int k = atoi(id + 1);
    assert_true(k >= 0 && k < n);
    seen[k]++;
    char *want = ref_run(pl, prompts[k]);
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (strcmp(json_string_value(json_object_get(o, "text")), json_string_value(json_object_get(w, "text"))) != 0)
      fail_msg("request %s: got %s, reference %s", id, line, want);
    json_decref(w);
    free(want);
    json_decref(o);
  }
  free(line);
  fclose(f);
  if (exact)
    for (int k = 0; k < n; k++)
      if (seen[k] != 1) fail_msg("request r%d answered %d times", k, seen[k]);
  return lines;
}

/* check_outputs on tmpdir/NAME against the echo pipeline's reference. */
static int check_tmp_outputs(const char *name, char **prompts, int n, int *seen, int exact) {
  qins_pipeline *pl = load(ECHO, NULL, 0);
  char out[600];
  snprintf(out, sizeof out, "%s/%s", tmpdir, name);
  int lines = check_outputs(out, pl, prompts, n, seen, exact);
  qins_pipeline_free(pl);
  return lines;
}

static void free_prompts(char **pr, int n) {
  for (int i = 0; i < n; i++) free(pr[i]);
  free(pr);
}

/* The --set overrides that read tmpdir/prompts.jsonl and write tmpdir/OUTNAME. */
static void io_sets(char *set_in, char *set_out, size_t cap, const char *outname) {
  snprintf(set_in, cap, "inputs={file: %s/prompts.jsonl}", tmpdir);
  snprintf(set_out, cap, "outputs={jsonl: %s/%s}", tmpdir, outname);
}

/* Poll (10 ms steps, at most `tries`) until the records file has `want` lines. */
static void wait_for_lines(const char *path, int want, int tries) {
  for (int i = 0; i < tries; i++) {
    FILE *f = fopen(path, "r");
    int lines = 0, c;
    if (f) {
      while ((c = fgetc(f)) != EOF) lines += c == '\n';
      fclose(f);
    }
    if (lines >= want) return;
    usleep(10000);
  }
}

typedef struct fault {
  const char *victim;
  int sig;
  int after;
  int done;
  int restarts_seen;
} fault;

static void on_event(qins_run *run, int final, void *user) {
  fault *f = user;
  if (!f) return;
  if (final) {
    char *s = qins_run_state_json(run);
    json_t *o = json_loads(s, 0, NULL);
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(o, "instances"), i, in) f->restarts_seen += (int)json_integer_value(json_object_get(in, "restarts"));
    json_decref(o);
    free(s);
    return;
  }
  if (f->done || !f->victim || qins_run_done_count(run) < f->after) return;
  for (int i = 0; i < qins_run_instance_count(run); i++)
    if (strcmp(qins_run_instance_name(run, i), f->victim) == 0 && qins_run_instance_pid(run, i) > 0) {
      kill(qins_run_instance_pid(run, i), f->sig);
      f->done = 1;
    }
}

static int run_echo(const char **sets, int n_sets, fault *fl, const qins_pipeline **plout) {
  qins_pipeline *pl = load(ECHO, sets, n_sets);
  qins_run_opts o = {0};
  o.quiet = 1;
  o.on_event = on_event;
  o.user = fl;
  o.event_every_result = 1;
  int rc = qins_run_pipeline(pl, &o);
  if (plout)
    *plout = pl;
  else
    qins_pipeline_free(pl);
  return rc;
}

/* ---- tests ---- */

static void test_split_matches_reference(void **state) {
  (void)state;
  int shm_before = count_dev_shm();
  char **pr;
  int n = 20;
  char *in = write_prompts(n, &pr);
  char set_in[600], set_out[600];
  snprintf(set_in, sizeof set_in, "inputs={file: %s}", in);
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s/split.jsonl}", tmpdir);
  const char *sets[] = {set_in, set_out};
  const qins_pipeline *pl;
  assert_int_equal(run_echo(sets, 2, NULL, &pl), 0);
  int seen[64];
  snprintf(set_out, sizeof set_out, "%s/split.jsonl", tmpdir);
  assert_int_equal(check_outputs(set_out, pl, pr, n, seen, 1), n);
  qins_pipeline_free((qins_pipeline *)pl);
  /* the same pipeline on one worker gives the same records */
  const char *one =
      "workers=[{name: all, stages: [tok, embed, mix1, mix2, sample, detok, sink]}]";
  char set_out2[600];
  snprintf(set_out2, sizeof set_out2, "outputs={jsonl: %s/one.jsonl}", tmpdir);
  const char *sets2[] = {set_in, set_out2, one};
  assert_int_equal(run_echo(sets2, 3, NULL, &pl), 0);
  snprintf(set_out2, sizeof set_out2, "%s/one.jsonl", tmpdir);
  assert_int_equal(check_outputs(set_out2, pl, pr, n, seen, 1), n);
  qins_pipeline_free((qins_pipeline *)pl);
  free_prompts(pr, n);
  assert_int_equal(count_dev_shm(), shm_before);
}

static void test_pool_200(void **state) {
  (void)state;
  char **pr;
  int n = 200;
  char *in = write_prompts(n, &pr);
  char set_in[600], set_out[600];
  snprintf(set_in, sizeof set_in, "inputs={file: %s}", in);
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s/pool.jsonl}", tmpdir);
  const char *sets[] = {set_in, set_out, "workers=[{name: pool, replicas: 4, stages: [tok, embed, mix1, mix2, sample, detok, sink]}]",
                        "channels={slots: 4}"};
  const qins_pipeline *pl;
  assert_int_equal(run_echo(sets, 4, NULL, &pl), 0);
  int *seen = calloc((size_t)n, sizeof(int));
  snprintf(set_out, sizeof set_out, "%s/pool.jsonl", tmpdir);
  assert_int_equal(check_outputs(set_out, pl, pr, n, seen, 1), n);
  free(seen);
  qins_pipeline_free((qins_pipeline *)pl);
  free_prompts(pr, n);
}

static void fault_run(const char *victim, int sig, int restart, int *rc_out, fault *fl, char **pr, int n,
                      const char *outname, const char *extra_set) {
  char set_in[600], set_out[600];
  io_sets(set_in, set_out, sizeof set_in, outname);
  const char *sets[] = {set_in, set_out, restart ? "restart={policy: restart, max_attempts: 2}" : "restart=stop",
                        "stages.mix1.options.delay_us=300", extra_set ? extra_set : "heartbeat_ms=100"};
  memset(fl, 0, sizeof *fl);
  fl->victim = victim;
  fl->sig = sig;
  fl->after = n / 4;
  *rc_out = run_echo(sets, 5, fl, NULL);
  (void)pr;
}

static void test_sigkill_restart(void **state) {
  (void)state;
  int shm_before = count_dev_shm();
  char **pr;
  int n = 60;
  write_prompts(n, &pr);
  const char *victims[] = {"back", "front"};
  for (int v = 0; v < 2; v++) {
    fault fl;
    int rc;
    fault_run(victims[v], SIGKILL, 1, &rc, &fl, pr, n, "kill.jsonl", NULL);
    if (rc) fail_msg("run failed: %s", qins_error_msg());
    assert_true(fl.done);
    assert_int_equal(fl.restarts_seen, 1);
      int seen[64];
    assert_int_equal(check_tmp_outputs("kill.jsonl", pr, n, seen, 1), n);
  }
  free_prompts(pr, n);
  assert_int_equal(count_dev_shm(), shm_before);
}

static void test_sigkill_stop(void **state) {
  (void)state;
  char **pr;
  int n = 60;
  write_prompts(n, &pr);
  fault fl;
  int rc;
  fault_run("back", SIGKILL, 0, &rc, &fl, pr, n, "stop.jsonl", NULL);
  assert_true(fl.done);
  assert_int_equal(rc, QINS_EIPC);
  const char *msg = qins_error_msg();
  if (!strstr(msg, "worker 'back'") || !strstr(msg, "mix1, mix2") || !strstr(msg, "killed by signal 9") ||
      !strstr(msg, "stopping"))
    fail_msg("unclear message: %s", msg);
  assert_int_not_equal(qins_error_exit_code(rc), 0);
  /* what was written before the stop is intact: whole lines, correct, none twice */
  int seen[64];
  int lines = check_tmp_outputs("stop.jsonl", pr, n, seen, 0);
  assert_true(lines >= n / 4 && lines < n);
  for (int k = 0; k < n; k++) assert_true(seen[k] <= 1);
  free_prompts(pr, n);
}

static void test_sigstop_hang(void **state) {
  (void)state;
  char **pr;
  int n = 40;
  write_prompts(n, &pr);
  fault fl;
  int rc;
  /* restart: the hung worker is killed after 5 heartbeats and replaced */
  fault_run("back", SIGSTOP, 1, &rc, &fl, pr, n, "hang.jsonl", NULL);
  if (rc) fail_msg("run failed: %s", qins_error_msg());
  assert_true(fl.done);
  assert_int_equal(fl.restarts_seen, 1);
  int seen[64];
  assert_int_equal(check_tmp_outputs("hang.jsonl", pr, n, seen, 1), n);
  /* stop: the message says it stopped heartbeating */
  fault_run("front", SIGSTOP, 0, &rc, &fl, pr, n, "hang2.jsonl", NULL);
  assert_int_equal(rc, QINS_EIPC);
  if (!strstr(qins_error_msg(), "worker 'front'") || !strstr(qins_error_msg(), "no heartbeat"))
    fail_msg("unclear message: %s", qins_error_msg());
  free_prompts(pr, n);
}

static void test_stage_error_stops(void **state) {
  (void)state;
  const char *sets[] = {"inputs={prompts: [ok, '']}", "restart=restart"};
  int rc = run_echo(sets, 2, NULL, NULL);
  assert_int_equal(rc, QINS_EINPUT); /* bad input data: exit status 2 */
  if (!strstr(qins_error_msg(), "worker 'front'") || !strstr(qins_error_msg(), "stage 'tok'") ||
      !strstr(qins_error_msg(), "empty prompt"))
    fail_msg("unclear message: %s", qins_error_msg());
}

static int count_procs_with(const char *needle) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char p[300], buf[4096];
    snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
    int fd = open(p, O_RDONLY);
    if (fd < 0) continue;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) continue;
    for (ssize_t i = 0; i < k; i++)
      if (!buf[i]) buf[i] = ' ';
    buf[k] = 0;
    if (strstr(buf, needle)) n++;
  }
  closedir(d);
  return n;
}

static void test_kill9_coordinator(void **state) {
  (void)state;
  int shm_before = count_dev_shm();
  char **pr;
  int n = 40;
  write_prompts(n, &pr);
  char out[600];
  snprintf(out, sizeof out, "%s/k9.jsonl", tmpdir);
  unlink(out);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    char set_in[700], set_out[700];
    snprintf(set_in, sizeof set_in, "inputs={file: %s/prompts.jsonl}", tmpdir);
    snprintf(set_out, sizeof set_out, "outputs={jsonl: %s}", out);
    const char *sets[] = {set_in, set_out, "stages.mix1.options.delay_us=2000"};
    _exit(run_echo(sets, 3, NULL, NULL) == 0 ? 0 : 1);
  }
  /* wait for the first records, then kill -9 the coordinator mid-run */
  wait_for_lines(out, 2, 500);
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  char needle[64];
  snprintf(needle, sizeof needle, "ipc://@qins-%d-", (int)child);
  int left = 1;
  for (int i = 0; i < 300 && left; i++) {
    left = count_procs_with(needle);
    if (left) usleep(10000);
  }
  assert_int_equal(left, 0); /* workers die with their coordinator */
  assert_int_equal(count_dev_shm(), shm_before);
  free_prompts(pr, n);
}

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, (struct sockaddr *)&a, sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, (struct sockaddr *)&a, &len);
  close(s);
  return ntohs(a.sin_port);
}

static pid_t spawn_remote(int port);

static void test_tcp_worker(void **state) {
  (void)state;
  char **pr;
  int n = 20;
  write_prompts(n, &pr);
  int port = free_port();
  char host[128], set_in[600], set_out[600];
  snprintf(host, sizeof host, "workers.back.host=tcp://127.0.0.1:%d", port);
  io_sets(set_in, set_out, sizeof set_in, "tcp.jsonl");
  pid_t w = spawn_remote(port);
  assert_true(w >= 0);
  const char *sets[] = {set_in, set_out, host};
  int rc = run_echo(sets, 3, NULL, NULL);
  int st;
  if (rc) kill(w, SIGKILL);
  waitpid(w, &st, 0);
  if (rc) fail_msg("tcp run failed: %s", qins_error_msg());
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  int seen[64];
  assert_int_equal(check_tmp_outputs("tcp.jsonl", pr, n, seen, 1), n);
  free_prompts(pr, n);
}


/* ---- model pipelines: split over workers == one worker == the fixtures' greedy ids ---- */

static const char *MODEL_TMPL =
    "name: model-test\n"
    "model: %s\n"
    "%s"
    "backend: cpu\n"
    "max_seq: %d\n"
    "workers:\n"
    "%s"
    "stages:\n"
    "  - {name: tok, type: %s}\n"
    "  - {name: embed, type: embed}\n"
    "  - {name: b0, type: qins_block, options: {layers: \"0:%d\"}}\n"
    "  - {name: b1, type: qins_block, options: {layers: \"%d:%d\"}}\n"
    "  - {name: head, type: head}\n"
    "  - {name: sample, type: sample, options: {max_tokens: %d, stop: %s}}\n"
    "  - {name: detok, type: %s}\n"
    "  - {name: sink, type: sink}\n"
    "edges:\n"
    "  - {from: sample, to: embed, loop: true}\n";

/* Run the model pipeline (split or not) on prompts; texts[i] gets request i's text. */
static void run_model_fault(const char *model, const char *tokenizer, int max_seq, int layers, int split, int text_io,
                            int max_tokens, int stop, char **prompts, int n, char **texts, fault *fl) {
  char yaml[4096], tokline[600] = "", workers[512];
  if (tokenizer) snprintf(tokline, sizeof tokline, "tokenizer: %s\n", tokenizer);
  int cut = layers > 1 ? layers / 2 : 1;
  if (split)
    snprintf(workers, sizeof workers,
             "  - {name: front, stages: [tok, embed, b0, detok, sink]}\n"
             "  - {name: back, stages: [b1, head, sample]}\n");
  else
    snprintf(workers, sizeof workers, "  - {name: all, stages: [tok, embed, b0, b1, head, sample, detok, sink]}\n");
  assert_true(layers >= 2);
  snprintf(yaml, sizeof yaml, MODEL_TMPL, model, tokline, max_seq, workers, text_io ? "tokenize" : "parse_ids", cut, cut,
           layers, max_tokens, stop ? "true" : "false", text_io ? "detokenize" : "format_ids");
  char out[600], set_out[700];
  snprintf(out, sizeof out, "%s/model.jsonl", tmpdir);
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s}", out);
  json_t *pr = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(pr, json_string(prompts[i]));
  char *prs = json_dumps(pr, JSON_COMPACT);
  json_decref(pr);
  char *set_in = malloc(strlen(prs) + 32);
  sprintf(set_in, "inputs={prompts: %s}", prs);
  free(prs);
  const char *sets[] = {set_out, set_in, "restart={policy: restart, max_attempts: 2}"};
  qins_pipeline *pl = NULL;
  int rc = qins_pipeline_load_string(yaml, strlen(yaml), "model-test.yaml", sets, 3, &pl);
  free(set_in);
  if (rc) fail_msg("%s", qins_error_msg());
  qins_run_opts o = {0};
  o.quiet = 1;
  o.on_event = on_event;
  o.user = fl;
  o.event_every_result = 1;
  rc = qins_run_pipeline(pl, &o);
  qins_pipeline_free(pl);
  if (rc) fail_msg("model run failed: %s", qins_error_msg());
  FILE *f = fopen(out, "r");
  assert_non_null(f);
  char *line = NULL;
  size_t cap = 0;
  int lines = 0;
  for (int i = 0; i < n; i++) texts[i] = NULL;
  while (getline(&line, &cap, f) > 0) {
    json_t *r = json_loads(line, 0, NULL);
    assert_non_null(r);
    int id = (int)json_integer_value(json_object_get(r, "id"));
    assert_true(id >= 0 && id < n);
    assert_null(texts[id]);
    texts[id] = strdup(json_string_value(json_object_get(r, "text")));
    json_decref(r);
    lines++;
  }
  free(line);
  fclose(f);
  assert_int_equal(lines, n);
}

static void run_model(const char *model, const char *tokenizer, int max_seq, int layers, int split, int text_io,
                      int max_tokens, int stop, char **prompts, int n, char **texts) {
  run_model_fault(model, tokenizer, max_seq, layers, split, text_io, max_tokens, stop, prompts, n, texts, NULL);
}

static void test_stories_split_equals_one_worker(void **state) {
  (void)state;
  char model[600], tok[600];
  snprintf(model, sizeof model, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok, sizeof tok, "%s", test_shared_path("models/stories260K/tok512.bin"));
  if (access(model, R_OK) != 0) skip();
  /* ids: the fixture's greedy continuation of "Once upon a time" */
  json_t *fx = json_load_file(test_shared_path("fixtures/stories260K_greedy.json"), 0, NULL);
  assert_non_null(fx);
  json_t *c0 = json_array_get(json_object_get(fx, "cases"), 0);
  const char *prompt = json_string_value(json_object_get(c0, "prompt"));
  json_t *want = json_object_get(c0, "greedy_ids");
  int steps = 40;
  char expect[4096] = "";
  size_t len = 0;
  for (int i = 0; i < steps && i < (int)json_array_size(want); i++) {
    int id = (int)json_integer_value(json_array_get(want, (size_t)i));
    if (id == 1 || id == 2) break; /* stop ids end the request */
    len += (size_t)snprintf(expect + len, sizeof expect - len, "%s%d", len ? " " : "", id);
  }
  /* prompts as text through the tokenizer, ids out (format_ids after a tokenizer-driven prompt
   * is not wired here: compare texts across placements, ids against the fixture below) */
  char *prompts[3] = {(char *)prompt, "The little dog", "Lily"};
  char *one[3], *two[3];
  run_model(model, tok, 512, 5, 0, 1, steps, 1, prompts, 3, one);
  run_model(model, tok, 512, 5, 1, 1, steps, 1, prompts, 3, two);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(one[i], two[i]);
    assert_true(strlen(one[i]) > 20);
    free(one[i]);
    free(two[i]);
  }
  /* ids: the prompt's ids in, ids out, against the fixture */
  json_t *pids = json_object_get(c0, "prompt_ids");
  char idprompt[512] = "";
  size_t pl = 0;
  for (size_t i = 0; i < json_array_size(pids); i++)
    pl += (size_t)snprintf(idprompt + pl, sizeof idprompt - pl, "%s%lld", i ? " " : "",
                           (long long)json_integer_value(json_array_get(pids, i)));
  char *ip[1] = {idprompt};
  run_model(model, NULL, 512, 5, 1, 0, steps, 1, ip, 1, two);
  assert_string_equal(two[0], expect);
  free(two[0]);
  json_decref(fx);
  /* SIGKILL of the back worker (layers 2:5, head, sample) mid-run: restarted, in-flight requests
   * replayed from their prompts; every answer equals the undisturbed run's */
  enum { NP = 16 };
  char *many[NP], *ref[NP], *got[NP];
  const char *words[] = {"Once upon a time", "The little dog", "Lily", "Tom and his mom"};
  for (int i = 0; i < NP; i++) many[i] = (char *)words[i % 4];
  run_model(model, tok, 512, 5, 1, 1, 60, 1, many, NP, ref);
  fault fl = {"back", SIGKILL, NP / 4, 0, 0};
  run_model_fault(model, tok, 512, 5, 1, 1, 60, 1, many, NP, got, &fl);
  assert_true(fl.done);
  assert_int_equal(fl.restarts_seen, 1);
  for (int i = 0; i < NP; i++) {
    assert_string_equal(ref[i], got[i]);
    free(ref[i]);
    free(got[i]);
  }
}

static void test_hf_fixtures_split(void **state) {
  (void)state;
  const char *names[] = {"llama_gqa", "phi3_longrope", "gpt2"};
  for (int k = 0; k < 3; k++) {
    char dir[600], cases[700];
    snprintf(dir, sizeof dir, "%s", test_shared_path("fixtures/hf"));
    snprintf(cases, sizeof cases, "%s/%s/cases.json", dir, names[k]);
    json_t *fx = json_load_file(cases, 0, NULL);
    if (!fx) skip();
    char model[700];
    snprintf(model, sizeof model, "%s/%s", dir, names[k]);
    json_t *c0 = json_array_get(json_object_get(fx, "cases"), 0);
    json_t *gp = json_object_get(c0, "greedy_prompt"), *gi = json_object_get(c0, "greedy_ids");
    char prompt[1024] = "", expect[2048] = "";
    size_t a = 0, b = 0;
    for (size_t i = 0; i < json_array_size(gp); i++)
      a += (size_t)snprintf(prompt + a, sizeof prompt - a, "%s%lld", i ? " " : "", (long long)json_integer_value(json_array_get(gp, i)));
    for (size_t i = 0; i < json_array_size(gi); i++)
      b += (size_t)snprintf(expect + b, sizeof expect - b, "%s%lld", i ? " " : "", (long long)json_integer_value(json_array_get(gi, i)));
    int steps = (int)json_array_size(gi);
    char *pr[1] = {prompt}, *one[1], *two[1];
    int max_seq = (int)json_array_size(gp) + steps + 8;
    run_model(model, NULL, max_seq, 2, 0, 0, steps, 0, pr, 1, one);
    run_model(model, NULL, max_seq, 2, 1, 0, steps, 0, pr, 1, two);
    if (strcmp(one[0], two[0]) != 0) fail_msg("%s: split '%s' != one worker '%s'", names[k], two[0], one[0]);
    if (strcmp(one[0], expect) != 0) fail_msg("%s: pipeline '%s' != fixture greedy ids '%s'", names[k], one[0], expect);
    free(one[0]);
    free(two[0]);
    json_decref(fx);
  }
}


/* A remote worker outlives nothing: kill -9 of its coordinator makes it leave by itself. */
static void test_tcp_worker_leaves_dead_coordinator(void **state) {
  (void)state;
  char **pr;
  int n = 40;
  write_prompts(n, &pr);
  int port = free_port();
  char out[600];
  snprintf(out, sizeof out, "%s/tcp9.jsonl", tmpdir);
  unlink(out);
  pid_t w = spawn_remote(port);
  assert_true(w >= 0);
  pid_t coord = fork();
  assert_true(coord >= 0);
  if (coord == 0) {
    char host[128], set_in[700], set_out[700];
    snprintf(host, sizeof host, "workers.back.host=tcp://127.0.0.1:%d", port);
    snprintf(set_in, sizeof set_in, "inputs={file: %s/prompts.jsonl}", tmpdir);
    snprintf(set_out, sizeof set_out, "outputs={jsonl: %s}", out);
    const char *sets[] = {set_in, set_out, host, "stages.mix1.options.delay_us=3000"};
    _exit(run_echo(sets, 4, NULL, NULL) == 0 ? 0 : 1);
  }
  wait_for_lines(out, 1, 1000); /* until the run is under way */
  kill(coord, SIGKILL);
  int st;
  waitpid(coord, &st, 0);
  pid_t got = 0;
  for (int i = 0; i < 1000 && got == 0; i++) { /* the worker notices within ~3 s */
    got = waitpid(w, &st, WNOHANG);
    if (!got) usleep(10000);
  }
  if (got != w) {
    kill(w, SIGKILL);
    waitpid(w, &st, 0);
    fail_msg("the remote worker did not leave after its coordinator died");
  }
  free_prompts(pr, n);
}


static pid_t spawn_remote(int port) {
  pid_t w = fork();
  if (w == 0) {
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    execl(getenv("QINS_BIN"), "qins", "worker", "--connect", ep, (char *)NULL);
    _exit(127);
  }
  return w;
}

typedef struct rejoin {
  pid_t worker;
  int port, after, done, restarts_seen;
} rejoin;

static void on_event_rejoin(qins_run *run, int final, void *user) {
  rejoin *j = user;
  if (final) {
    char *s = qins_run_state_json(run);
    json_t *o = json_loads(s, 0, NULL);
    size_t i;
    json_t *in;
    json_array_foreach(json_object_get(o, "instances"), i, in) j->restarts_seen += (int)json_integer_value(json_object_get(in, "restarts"));
    json_decref(o);
    free(s);
    return;
  }
  if (j->done || qins_run_done_count(run) < j->after) return;
  j->done = 1;
  int st;
  kill(j->worker, SIGKILL);
  waitpid(j->worker, &st, 0);
  j->worker = spawn_remote(j->port); /* a new worker takes the dead one's place */
}

/* A remote worker killed mid-run with restart: a new `qins worker --connect` joins, in-flight
 * requests are replayed, every request is answered once, as the local run answers it. */
static void test_tcp_worker_rejoin(void **state) {
  (void)state;
  char **pr;
  int n = 40;
  write_prompts(n, &pr);
  int port = free_port();
  char host[128], set_in[700], set_out[700];
  snprintf(host, sizeof host, "workers.back.host=tcp://127.0.0.1:%d", port);
  io_sets(set_in, set_out, sizeof set_in, "rejoin.jsonl");
  const char *sets[] = {set_in, set_out, host, "restart={policy: restart, max_attempts: 2}",
                        "stages.mix1.options.delay_us=300"};
  rejoin j = {spawn_remote(port), port, n / 4, 0, 0};
  qins_pipeline *pl = load(ECHO, sets, 5);
  qins_run_opts o = {0};
  o.quiet = 1;
  o.on_event = on_event_rejoin;
  o.user = &j;
  o.event_every_result = 1;
  int rc = qins_run_pipeline(pl, &o);
  qins_pipeline_free(pl);
  int st;
  if (rc) kill(j.worker, SIGKILL);
  waitpid(j.worker, &st, 0);
  if (rc) fail_msg("run failed: %s", qins_error_msg());
  assert_true(j.done);
  assert_int_equal(j.restarts_seen, 1);
  int seen[64];
  assert_int_equal(check_tmp_outputs("rejoin.jsonl", pr, n, seen, 1), n);
  free_prompts(pr, n);
}

/* The CLI: exit 2 and a located message for a bad pipeline, 0 and records for a good one. */
static void test_cli(void **state) {
  (void)state;
  char bad[600], cmd[2048], errf[600];
  snprintf(bad, sizeof bad, "%s/bad.yaml", tmpdir);
  snprintf(errf, sizeof errf, "%s/err.txt", tmpdir);
  FILE *f = fopen(bad, "w");
  fprintf(f, "%s", ECHO);
  fprintf(f, "bogus_key: 1\n");
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' run '%s' 2>'%s' >/dev/null", getenv("QINS_BIN"), bad, errf);
  int st = system(cmd);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 2);
  f = fopen(errf, "r");
  char msg[1024] = "";
  size_t k = fread(msg, 1, sizeof msg - 1, f);
  msg[k] = 0;
  fclose(f);
  char want[700];
  snprintf(want, sizeof want, "%s:18:1: pipeline: unknown key 'bogus_key'", bad);
  if (!strstr(msg, want)) fail_msg("stderr '%s' lacks '%s'", msg, want);
  char good[600], outf[600];
  snprintf(good, sizeof good, "%s/good.yaml", tmpdir);
  snprintf(outf, sizeof outf, "%s/cli.jsonl", tmpdir);
  f = fopen(good, "w");
  fprintf(f, "%sinputs: {prompts: [abc, de]}\n", ECHO);
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' run '%s' --quiet --set stages.sample.options.max_tokens=3 >'%s'", getenv("QINS_BIN"),
           good, outf);
  st = system(cmd);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  f = fopen(outf, "r");
  char line[256];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    lines++;
    assert_non_null(strstr(line, "\"tokens\":3"));
  }
  fclose(f);
  assert_int_equal(lines, 2);
}

/* Run a shell command, return its stdout (malloc'd) and exit status. */
static char *capture(const char *cmd, int *status) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t k;
  while ((k = fread(buf + len, 1, cap - 1 - len, p)) > 0) len += k;
  buf[len] = 0;
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return buf;
}

/* qins run of pipelines/generate.yaml's shape with sample options `sets` -> the one record's
 * text and token count; qins generate with the matching flags -> its text and ids. */
static void sample_vs_generate(const char *model, const char *tok, const char *prompt, const char *sets,
                               const char *gen_flags, char **run_text, char **gen_text, int *run_tokens, int *gen_ids) {
  char yaml[600], cmd[4096];
  snprintf(yaml, sizeof yaml, "%s/sample_opts.yaml", tmpdir);
  FILE *f = fopen(yaml, "w");
  assert_non_null(f);
  fprintf(f,
          "name: sample_opts\nmodel: %s\ntokenizer: %s\nbackend: cpu\n"
          "workers:\n  - {name: main, stages: [tokenize, embed, blocks, head, sample, detokenize, sink]}\n"
          "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n"
          "  - {name: blocks, type: qins_block, options: {layers: all}}\n  - {name: head, type: head}\n"
          "  - {name: sample, type: sample, options: {max_tokens: 40}}\n  - {name: detokenize, type: detokenize}\n"
          "  - {name: sink, type: sink}\nedges:\n  - {from: sample, to: embed, loop: true}\n"
          "inputs: {prompts: ['%s']}\n",
          model, tok, prompt);
  fclose(f);
  int st;
  snprintf(cmd, sizeof cmd, "'%s' run '%s' --quiet %s", getenv("QINS_BIN"), yaml, sets);
  char *out = capture(cmd, &st);
  assert_int_equal(st, 0);
  json_t *r = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  if (!r) fail_msg("qins run printed '%s'", out);
  *run_text = strdup(json_string_value(json_object_get(r, "text")));
  *run_tokens = (int)json_integer_value(json_object_get(r, "tokens"));
  json_decref(r);
  free(out);
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --tokenizer '%s' --prompt '%s' --steps 40 --json %s 2>/dev/null",
           getenv("QINS_BIN"), model, tok, prompt, gen_flags);
  out = capture(cmd, &st);
  assert_int_equal(st, 0);
  r = json_loads(out, JSON_DISABLE_EOF_CHECK, NULL);
  if (!r) fail_msg("qins generate printed '%s'", out);
  *gen_text = strdup(json_string_value(json_object_get(r, "text")));
  *gen_ids = (int)json_array_size(json_object_get(r, "ids"));
  json_decref(r);
  free(out);
}

/* The sample stage's sampler options and stop string give what qins generate gives. */
static void test_sample_options_match_generate(void **state) {
  (void)state;
  char model[600], tok[600];
  snprintf(model, sizeof model, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok, sizeof tok, "%s", test_shared_path("models/stories260K/tok512.bin"));
  if (access(model, R_OK) != 0) skip();
  char *a, *b, *g0 = NULL;
  int na, nb;
  /* sampled, with every option: same text and length as qins generate */
  sample_vs_generate(model, tok, "Once upon a time",
                     "--set stages.sample.options.temperature=0.9 --set stages.sample.options.top_k=40 "
                     "--set stages.sample.options.top_p=0.95 --set stages.sample.options.min_p=0.01 "
                     "--set stages.sample.options.repeat_penalty=1.3 --set stages.sample.options.seed=7",
                     "--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.01 --repeat-penalty 1.3 --seed 7", &a, &b, &na,
                     &nb);
  assert_string_equal(a, b);
  assert_int_equal(na, nb);
  assert_true(strlen(a) > 20);
  g0 = a;
  free(b);
  /* another seed gives another text (the options reach the sampler) */
  sample_vs_generate(model, tok, "Once upon a time",
                     "--set stages.sample.options.temperature=0.9 --set stages.sample.options.seed=8",
                     "--temperature 0.9 --seed 8", &a, &b, &na, &nb);
  assert_string_equal(a, b);
  assert_string_not_equal(a, g0);
  free(a);
  free(b);
  free(g0);
  /* greedy with a repetition penalty only (the sampler at temperature 0) */
  sample_vs_generate(model, tok, "Lily", "--set stages.sample.options.repeat_penalty=1.5", "--repeat-penalty 1.5", &a,
                     &b, &na, &nb);
  assert_string_equal(a, b);
  free(b);
  /* a stop string taken from the middle of the greedy text ends the request right there */
  char *full = a, stop[16];
  size_t fl = strlen(full);
  assert_true(fl > 30);
  /* 5 letters/spaces (nothing a shell or YAML would need quoted) from the middle on */
  size_t at = fl / 2;
  for (; at + 5 < fl; at++) {
    int ok = 1;
    for (int i = 0; i < 5; i++) ok &= full[at + i] == ' ' || (full[at + i] >= 'a' && full[at + i] <= 'z');
    if (ok) break;
  }
  assert_true(at + 5 < fl);
  memcpy(stop, full + at, 5);
  stop[5] = 0;
  char sets[200], flags[200];
  snprintf(sets, sizeof sets, "--set stages.sample.options.repeat_penalty=1.5 --set 'stages.sample.options.stop_string=\"%s\"'", stop);
  snprintf(flags, sizeof flags, "--repeat-penalty 1.5 --stop '%s'", stop);
  sample_vs_generate(model, tok, "Lily", sets, flags, &a, &b, &na, &nb);
  assert_string_equal(a, b);
  assert_int_equal(na, nb);
  char *hit = strstr(a, stop);
  assert_non_null(hit);
  assert_true(strlen(a) < fl);
  assert_memory_equal(a, full, strlen(a));
  /* it ended at the token completing the first match: at most that token's piece follows it */
  assert_true(strlen(hit + strlen(stop)) < 16);
  free(a);
  free(b);
  free(full);
}

static void grab_metrics(qins_run *run, int final, void *user) {
  if (!final) return;
  char **out = user;
  *out = qins_run_metrics_json(run);
}

/* Sum of a metric's values over the series whose labels contain all of want (NULL: any);
 * *series: how many matched. */
static double metric_sum(json_t *ms, const char *name, const char *k1, const char *v1, const char *k2, const char *v2,
                         int *series) {
  double sum = 0;
  size_t i;
  json_t *m;
  *series = 0;
  json_array_foreach(ms, i, m) {
    if (strcmp(json_string_value(json_object_get(m, "name")), name) != 0) continue;
    json_t *l = json_object_get(m, "labels");
    if (k1 && strcmp(json_string_value(json_object_get(l, k1)) ? json_string_value(json_object_get(l, k1)) : "", v1) != 0) continue;
    if (k2 && strcmp(json_string_value(json_object_get(l, k2)) ? json_string_value(json_object_get(l, k2)) : "", v2) != 0) continue;
    (*series)++;
    sum += json_number_value(json_object_get(m, "value"));
  }
  return sum;
}

/* qins_tokens_total from the sample stage, and per-replica edge metrics (worker label). */
static void test_token_and_edge_metrics(void **state) {
  (void)state;
  char model[600], tok[600], yaml[2048];
  snprintf(model, sizeof model, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok, sizeof tok, "%s", test_shared_path("models/stories260K/tok512.bin"));
  if (access(model, R_OK) != 0) skip();
  snprintf(yaml, sizeof yaml,
           "name: metrics\nmodel: %s\ntokenizer: %s\nbackend: cpu\nheartbeat_ms: 50\n"
           "workers:\n  - {name: front, replicas: 2, stages: [tokenize, embed, detokenize, sink]}\n"
           "  - {name: back, replicas: 2, stages: [blocks, head, sample]}\n"
           "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n"
           "  - {name: blocks, type: qins_block, options: {layers: all}}\n  - {name: head, type: head}\n"
           "  - {name: sample, type: sample, options: {max_tokens: 12}}\n  - {name: detokenize, type: detokenize}\n"
           "  - {name: sink, type: sink}\nedges:\n  - {from: sample, to: embed, loop: true}\n"
           "inputs: {prompts: [Once upon a time, The little dog, Lily, Tom, Sue, A cat]}\n",
           model, tok);
  char set_out[700], out[600];
  snprintf(out, sizeof out, "%s/metrics.jsonl", tmpdir);
  snprintf(set_out, sizeof set_out, "outputs={jsonl: %s}", out);
  const char *sets[] = {set_out};
  qins_pipeline *pl = NULL;
  if (qins_pipeline_load_string(yaml, strlen(yaml), "metrics-test.yaml", sets, 1, &pl)) fail_msg("%s", qins_error_msg());
  char *mj = NULL;
  qins_run_opts o = {0};
  o.quiet = 1;
  o.on_event = grab_metrics;
  o.user = &mj;
  int rc = qins_run_pipeline(pl, &o);
  qins_pipeline_free(pl);
  if (rc) fail_msg("run failed: %s", qins_error_msg());
  /* tokens in the records */
  FILE *f = fopen(out, "r");
  assert_non_null(f);
  char line[4096];
  int tokens = 0, records = 0;
  while (fgets(line, sizeof line, f)) {
    json_t *r = json_loads(line, 0, NULL);
    assert_non_null(r);
    tokens += (int)json_integer_value(json_object_get(r, "tokens"));
    records++;
    json_decref(r);
  }
  fclose(f);
  assert_int_equal(records, 6);
  assert_true(tokens > 6);
  assert_non_null(mj);
  json_t *doc = json_loads(mj, 0, NULL);
  assert_non_null(doc);
  json_t *ms = json_object_get(doc, "metrics");
  int n0, n1, n;
  /* one series per sample replica, together every token of every record */
  double t0 = metric_sum(ms, "qins_tokens_total", "stage", "sample", "worker", "back#0", &n0);
  double t1 = metric_sum(ms, "qins_tokens_total", "stage", "sample", "worker", "back#1", &n1);
  assert_int_equal(n0, 1);
  assert_int_equal(n1, 1);
  assert_true(t0 > 0 && t1 > 0); /* least-loaded routing gave both entry replicas (and so both back replicas) requests */
  assert_int_equal((int)(t0 + t1), tokens);
  /* the sample -> detokenize edge: each replica its own series, together what detokenize took */
  double e0 = metric_sum(ms, "qins_edge_items_total", "from", "sample", "worker", "back#0", &n0);
  double e1 = metric_sum(ms, "qins_edge_items_total", "from", "sample", "worker", "back#1", &n1);
  assert_int_equal(n0, 2); /* to detokenize and to embed (loop) */
  assert_int_equal(n1, 2);
  double e0d = metric_sum(ms, "qins_edge_items_total", "to", "detokenize", "worker", "back#0", &n0);
  double e1d = metric_sum(ms, "qins_edge_items_total", "to", "detokenize", "worker", "back#1", &n1);
  double detok = metric_sum(ms, "qins_stage_items_total", "stage", "detokenize", NULL, NULL, &n);
  assert_true(e0d > 0 && e1d > 0 && e0 > e0d && e1 > e1d);
  assert_int_equal((int)(e0d + e1d), (int)detok);
  assert_true(e0d + e1d >= tokens); /* a token per message, plus messages ending on a stop id */
  json_decref(doc);
  free(mj);
}

/* Run a stories260K pipeline with `kv` stages spliced between embed and blocks (may be "") and
 * extra top-level text; returns stdout (records) and sets *status; stderr to errf. */
static char *run_kv(const char *model, const char *tok, const char *kv_stage, const char *top, const char *errf,
                    int *status) {
  char yaml[600], cmd[2048];
  snprintf(yaml, sizeof yaml, "%s/kv.yaml", tmpdir);
  FILE *f = fopen(yaml, "w");
  assert_non_null(f);
  fprintf(f,
          "name: kv\nmodel: %s\ntokenizer: %s\nbackend: cpu\n%s"
          "workers:\n  - {name: main, stages: [tokenize, embed, %sblocks, head, sample, detokenize, sink]}\n"
          "stages:\n  - {name: tokenize, type: tokenize}\n  - {name: embed, type: embed}\n%s%s"
          "  - {name: blocks, type: qins_block, options: {layers: all}}\n  - {name: head, type: head}\n"
          "  - {name: sample, type: sample, options: {max_tokens: 40}}\n  - {name: detokenize, type: detokenize}\n"
          "  - {name: sink, type: sink}\nedges:\n  - {from: sample, to: embed, loop: true}\n"
          "inputs: {prompts: [Once upon a time]}\n",
          model, tok, top, *kv_stage ? "kv, " : "", *kv_stage ? kv_stage : "", *kv_stage ? "\n" : "");
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' run '%s' --quiet 2>'%s'", getenv("QINS_BIN"), yaml, errf);
  return capture(cmd, status);
}

/* kv_store: its max_seq sizes the worker's caches (same as the pipeline max_seq key), pool 0
 * frees caches at request end, qins8 V is refused with the option's location. */
static void test_kv_store(void **state) {
  (void)state;
  char model[600], tok[600], errf[600];
  snprintf(model, sizeof model, "%s", test_shared_path("models/stories260K/stories260K.bin"));
  snprintf(tok, sizeof tok, "%s", test_shared_path("models/stories260K/tok512.bin"));
  snprintf(errf, sizeof errf, "%s/kv.err", tmpdir);
  if (access(model, R_OK) != 0) skip();
  int st;
  char *full = run_kv(model, tok, "", "", errf, &st);
  assert_int_equal(st, 0);
  char *key = run_kv(model, tok, "", "max_seq: 16\n", errf, &st);
  assert_int_equal(st, 0);
  char *kv = run_kv(model, tok, "  - {name: kv, type: kv_store, options: {max_seq: 16, pool: 0}}", "", errf, &st);
  assert_int_equal(st, 0);
  json_t *a = json_loads(full, JSON_DISABLE_EOF_CHECK, NULL), *b = json_loads(key, JSON_DISABLE_EOF_CHECK, NULL),
         *c = json_loads(kv, JSON_DISABLE_EOF_CHECK, NULL);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  /* with the 16-row cache the request ends when the context is full, like max_seq: 16 */
  assert_string_equal(json_string_value(json_object_get(b, "text")), json_string_value(json_object_get(c, "text")));
  int nk = (int)json_integer_value(json_object_get(c, "tokens")), nf = (int)json_integer_value(json_object_get(a, "tokens"));
  assert_true(nk > 0 && nk < 16);
  assert_true(nf > nk);
  const char *tf = json_string_value(json_object_get(a, "text")), *tk = json_string_value(json_object_get(c, "text"));
  assert_memory_equal(tf, tk, strlen(tk)); /* same greedy tokens, cut short */
  json_decref(a);
  json_decref(b);
  json_decref(c);
  free(full);
  free(key);
  free(kv);
  char *bad = run_kv(model, tok, "  - {name: kv, type: kv_store, options: {v_format: qins8}}", "", errf, &st);
  free(bad);
  assert_true(st != 0);
  FILE *f = fopen(errf, "r");
  char msg[2048] = "";
  size_t k = fread(msg, 1, sizeof msg - 1, f);
  msg[k] = 0;
  fclose(f);
  if (!strstr(msg, "kv.yaml:10:") || !strstr(msg, "v_format qins8 is not available"))
    fail_msg("stderr '%s' lacks the located v_format message", msg);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_matches_reference), cmocka_unit_test(test_pool_200),
      cmocka_unit_test(test_sigkill_restart),         cmocka_unit_test(test_sigkill_stop),
      cmocka_unit_test(test_sigstop_hang),            cmocka_unit_test(test_stage_error_stops),
      cmocka_unit_test(test_kill9_coordinator),       cmocka_unit_test(test_tcp_worker),
      cmocka_unit_test(test_tcp_worker_leaves_dead_coordinator),
      cmocka_unit_test(test_tcp_worker_rejoin),
      cmocka_unit_test(test_cli),
      cmocka_unit_test(test_stories_split_equals_one_worker),
      cmocka_unit_test(test_hf_fixtures_split),
      cmocka_unit_test(test_sample_options_match_generate),
      cmocka_unit_test(test_token_and_edge_metrics),
      cmocka_unit_test(test_kv_store),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
