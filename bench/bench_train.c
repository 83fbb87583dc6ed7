/* qins-bench-train: training throughput (tokens/s) and achieved FLOP/s of a GPT-2-124M-shaped model
 * (random weights) at B x T, next to the FLOP/s of a big f32 GEMM on the same backend as the
 * yardstick. Prints a table; --json PATH writes the numbers. Never asserts on time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "core/train/data.h"
#include "core/train/model_grad.h"
#include "core/train/optim.h"
#include "core/train/trainer.h"
#include "core/vk/vk.h"
#include "bench/bench_util.h"


static void usage(FILE *f) {
  fprintf(f, "usage: qins-bench-train [--layers 12] [--dim 768] [--heads 12] [--vocab 50257] [--batch 4] [--seq 64]\n"
             "                        [--steps 2] [--backend cpu[,vk...]] [--quick] [--dir /tmp/qins-bench-train]\n"
             "                        [--json PATH] [--host-norm]\n"
             "  trains a GPT-2-shaped model (default 124M) on random ids with AdamW: tokens/s, FLOP/s, and the\n"
             "  FLOP/s of an f32 GEMM on the backend (the yardstick): [256 x D] x [D x D] on cpu, [2048 x 2048]^2\n"
             "  on a device (vk). One table row per backend of the comma-separated list. On vk parameters,\n"
             "  gradients and AdamW state stay in device memory (the adamw_step op); the gradient norm and\n"
             "  anomaly checks read per-parameter sums of squares (the sumsq op), or with --host-norm every\n"
             "  gradient comes down (the old path; counted in the AdamW column). Submits (each a host wait)\n"
             "  and recorded commands per step are counted on vk.\n"
             "  --quick: a small shape for emulated devices (2 layers, D 256, 4 heads, vocab 4096, 1 step,\n"
             "  GEMM [256 x D] x [D x D] everywhere)\n");
}

static int gemm_peak(qins_backend *be, int M, int K, int N, double *flops, double *cpu_flops);

/* Process CPU time: on a shared machine wall time measures the neighbours too; FLOPs per CPU-second
 * of the step beside those of the yardstick say how well the cycles we got were used. */
static double cpu_now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct bench_row {
  char backend[64], device[256];
  double step_s, fwd_bwd_s, optim_s, tps, achieved, peak;
  double cpu_step_s, cpu_achieved, cpu_peak; /* per CPU-second of the process */
  int64_t nparams;
  /* per step (the last measured one), 0 off vk: submits = host round trips, commands recorded */
  uint64_t submits_fb, cmds_fb, submits_opt, cmds_opt;
} bench_row;

/* One backend: the model from dir trained `steps` steps (after a warm-up step) at B x T. */
static int bench_backend(const char *spec, const char *dir, int L, int D, int V, int B, int T, int steps, int quick,
                         int host_norm, bench_row *row) {
  qins_backend *be = NULL;
  qins_model *m = NULL;
  qins_train_model *tm = NULL;
  qins_optim *o = NULL;
  int32_t *ids = NULL;
  memset(row, 0, sizeof *row);
  snprintf(row->backend, sizeof row->backend, "%s", spec);
  int rc = qins_backend_create(spec, &be);
  if (rc) return rc;
  snprintf(row->device, sizeof row->device, "%s", be->device_name);
  int device = strncmp(be->name, "cpu", 3) != 0;
  if (!quick && device) rc = gemm_peak(be, 2048, 2048, 2048, &row->peak, &row->cpu_peak);
  else rc = gemm_peak(be, 256, D, D, &row->peak, &row->cpu_peak);
  if (!rc) rc = qins_model_open(dir, &m);
  if (!rc) rc = qins_train_model_create(m, be, &tm);
  qins_model_close(m);
  qins_optim_config oc = qins_optim_config_default();
  oc.accum_steps = B;
  if (!rc) rc = qins_optim_create(&oc, &o);
  for (int i = 0; !rc && i < qins_train_model_count(tm); i++) {
    const qins_train_param *p = qins_train_model_param(tm, i);
    const qins_tensor *wt, *gt;
    row->nparams += p->n;
    rc = qins_train_model_param_tensors(tm, i, &wt, &gt);
    /* AdamW through the backend's adamw_step op on every backend, as qins train does (threaded on
     * the cpu, bit for bit the host optimizer's arithmetic) */
    if (!rc) rc = qins_optim_add_device(o, p->name, p->w, p->g, p->n, NULL, wt, gt);
    if (rc > 0) rc = 0;
  }
  if (!rc && !(ids = malloc((size_t)T * sizeof *ids))) rc = QINS_ENOMEM;
  uint64_t st = 99;
  /* FLOPs of one forward over T positions: 2 x (matmul params incl. the tied head) per token,
   * plus causal attention (QK^T and AV over (T+1)/2 positions on average); training = 3x forward */
  double fwd_tok = 2.0 * (12.0 * L * D * (double)D + (double)V * D) + 4.0 * L * D * (T + 1) / 2.0;
  double step_flops = 3.0 * fwd_tok * T * B;
  double best_fb = 1e30, best_opt = 1e30, best_cpu = 1e30;
  for (int s = 0; s <= steps && !rc; s++) { /* step 0: warm-up */
    qins_optim_zero_grad(o);
    uint64_t sub0, cmd0, sub1, cmd1, sub2, cmd2;
    qins_vk_counters(be, &sub0, &cmd0);
    double t0 = bench_now_s(), c0 = cpu_now_s(), loss = 0;
    rc = qins_train_model_zero_grad(tm);
    for (int b = 0; b < B && !rc; b++) {
      for (int t = 0; t < T; t++) ids[t] = (int32_t)(qins_splitmix64(&st) % (uint64_t)V);
      rc = qins_train_model_loss_grad(tm, ids, T, &loss);
      qins_optim_micro_done(o);
    }
    if (!rc) rc = qins_backend_sync(be); /* the forward+backward's work done before t1 */
    double t1 = bench_now_s();
    qins_vk_counters(be, &sub1, &cmd1);
    if (!rc) rc = qins_train_optim_step(tm, o, loss, !host_norm, NULL);
    if (!rc) rc = qins_backend_sync(be);
    double t2 = bench_now_s(), c2 = cpu_now_s();
    qins_vk_counters(be, &sub2, &cmd2);
    row->submits_fb = sub1 - sub0;
    row->cmds_fb = cmd1 - cmd0;
    row->submits_opt = sub2 - sub1;
    row->cmds_opt = cmd2 - cmd1;
    if (s > 0) {
      best_cpu = fmin(best_cpu, c2 - c0);
      best_fb = fmin(best_fb, t1 - t0);
      best_opt = fmin(best_opt, t2 - t1);
    }
    fprintf(stderr, "%s step %d: forward+backward %.3f s (%llu submits, %llu commands), AdamW %.3f s (%llu submits, %llu "
                    "commands), loss %.3f\n",
            spec, s, t1 - t0, (unsigned long long)row->submits_fb, (unsigned long long)row->cmds_fb, t2 - t1,
            (unsigned long long)row->submits_opt, (unsigned long long)row->cmds_opt, loss);
  }
  if (getenv("QINS_BENCH_OPS")) /* per-op time over every step, warm-up included */
    for (int k = 0; k < QINS_OP_COUNT; k++)
      if (be->stats[k].calls)
        fprintf(stderr, "  %s %s: %llu calls, %.3f ms\n", spec, qins_op_name((qins_op_kind)k),
                (unsigned long long)be->stats[k].calls, be->stats[k].ns / 1e6);
  if (!rc) {
    row->fwd_bwd_s = best_fb;
    row->optim_s = best_opt;
    row->step_s = best_fb + best_opt;
    row->tps = (double)B * T / row->step_s;
    row->achieved = step_flops / row->step_s;
    row->cpu_step_s = best_cpu;
    row->cpu_achieved = step_flops / best_cpu;
  }
  free(ids);
  qins_optim_destroy(o);
  qins_train_model_destroy(tm);
  qins_backend_destroy(be);
  return rc;
}

/* A GPT-2 HF folder with N(0, 0.02) weights (unit LayerNorm gains, zero biases). */
static int write_gpt2(const char *dir, int L, int D, int H, int V, int P) {
  char path[1024];
  snprintf(path, sizeof path, "mkdir -p '%s'", dir);
  if (system(path) != 0) return qins_error_set(QINS_EIO, "%s: cannot create", dir);
  snprintf(path, sizeof path, "%s/config.json", dir);
  FILE *f = fopen(path, "w");
  if (!f) return qins_error_set(QINS_EIO, "%s: cannot create", path);
  fprintf(f, "{\"model_type\": \"gpt2\", \"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": %d, \"n_layer\": %d, "
             "\"n_head\": %d, \"n_positions\": %d, \"vocab_size\": %d, \"activation_function\": \"gelu_new\"}\n",
          D, L, H, P, V);
  fclose(f);
  int nt = 2 + 12 * L + 2;
  qins_st_entry *e = calloc((size_t)nt, sizeof *e);
  char (*names)[96] = calloc((size_t)nt, 96);
  int64_t(*shapes)[2] = calloc((size_t)nt, sizeof *shapes);
  float **bufs = calloc((size_t)nt, sizeof *bufs);
  if (!e || !names || !shapes || !bufs) return qins_error_set(QINS_ENOMEM, "no memory");
  int n = 0, rc = 0;
  uint64_t st = 12345;
  /* kind: 0 = normal, 1 = ones, 2 = zeros */
#define ADD(kind, r, c, ...)                                                                          \
  do {                                                                                                \
    snprintf(names[n], 96, __VA_ARGS__);                                                              \
    shapes[n][0] = (r);                                                                               \
    shapes[n][1] = (c);                                                                               \
    int64_t cnt = (int64_t)(r) * ((c) > 0 ? (c) : 1);                                                 \
    bufs[n] = malloc((size_t)cnt * sizeof(float));                                                    \
    if (!bufs[n]) return qins_error_set(QINS_ENOMEM, "no memory");                                    \
    for (int64_t q = 0; q < cnt; q++)                                                                 \
      bufs[n][q] = (kind) == 0 ? 0.02f * (float)((double)(qins_splitmix64(&st) >> 11) / 9007199254740992.0 * 3.4641 - 1.7320) \
                               : (kind) == 1 ? 1.0f : 0.0f;                                           \
    e[n] = (qins_st_entry){names[n], QINS_DT_F32, (c) > 0 ? 2 : 1, shapes[n], bufs[n]};               \
    n++;                                                                                              \
  } while (0)
  ADD(0, V, D, "transformer.wte.weight");
  ADD(0, P, D, "transformer.wpe.weight");
  for (int l = 0; l < L; l++) {
    ADD(1, D, 0, "transformer.h.%d.ln_1.weight", l);
    ADD(2, D, 0, "transformer.h.%d.ln_1.bias", l);
    ADD(0, D, 3 * D, "transformer.h.%d.attn.c_attn.weight", l);
    ADD(2, 3 * D, 0, "transformer.h.%d.attn.c_attn.bias", l);
    ADD(0, D, D, "transformer.h.%d.attn.c_proj.weight", l);
    ADD(2, D, 0, "transformer.h.%d.attn.c_proj.bias", l);
    ADD(1, D, 0, "transformer.h.%d.ln_2.weight", l);
    ADD(2, D, 0, "transformer.h.%d.ln_2.bias", l);
    ADD(0, D, 4 * D, "transformer.h.%d.mlp.c_fc.weight", l);
    ADD(2, 4 * D, 0, "transformer.h.%d.mlp.c_fc.bias", l);
    ADD(0, 4 * D, D, "transformer.h.%d.mlp.c_proj.weight", l);
    ADD(2, D, 0, "transformer.h.%d.mlp.c_proj.bias", l);
  }
  ADD(1, D, 0, "transformer.ln_f.weight");
  ADD(2, D, 0, "transformer.ln_f.bias");
#undef ADD
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  rc = qins_st_write(path, e, n, NULL);
  for (int i = 0; i < n; i++) free(bufs[i]);
  free(bufs);
  free(shapes);
  free(names);
  free(e);
  return rc;
}

/* GEMM yardstick: y[M,N] = x[M,K] w[N,K]^T repeated for >= 1 s; best FLOP/s over the calls. */
static int gemm_peak(qins_backend *be, int M, int K, int N, double *flops, double *cpu_flops) {
  qins_tensor x, w, y;
  int rc = qins_tensor_init(&x, "x", QINS_DT_F32, 2, (int64_t[]){M, K});
  if (!rc) rc = qins_tensor_alloc(be, &x);
  if (!rc) rc = qins_tensor_init(&w, "w", QINS_DT_F32, 2, (int64_t[]){N, K});
  if (!rc) rc = qins_tensor_alloc(be, &w);
  if (!rc) rc = qins_tensor_init(&y, "y", QINS_DT_F32, 2, (int64_t[]){M, N});
  if (!rc) rc = qins_tensor_alloc(be, &y);
  if (rc) return rc;
  int64_t most = (int64_t)K * (M > N ? M : N);
  float *buf = malloc((size_t)most * sizeof(float));
  for (int64_t i = 0; i < most; i++) buf[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
  qins_tensor_write(&x, buf);
  qins_tensor_write(&w, buf);
  free(buf);
  double best = 1e30, t_end = bench_now_s() + 1.0, c_start = cpu_now_s();
  int calls = 0;
  while (!rc && (bench_now_s() < t_end || calls < 3)) {
    double t0 = bench_now_s();
    rc = qins_op_matmul(be, &x, &w, NULL, &y);
    if (!rc) rc = qins_backend_sync(be);
    double dt = bench_now_s() - t0;
    if (dt < best) best = dt;
    calls++;
  }
  *flops = 2.0 * M * (double)K * N / best;
  *cpu_flops = 2.0 * M * (double)K * N * calls / (cpu_now_s() - c_start);
  qins_tensor_free(&x);
  qins_tensor_free(&w);
  qins_tensor_free(&y);
  return rc;
}

int main(int argc, char **argv) {
  int L = 12, D = 768, H = 12, V = 50257, B = 4, T = 64, steps = 2, quick = 0, host_norm = 0;
  const char *backends = "cpu", *dir = "/tmp/qins-bench-train", *json = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--host-norm")) {
      host_norm = 1;
      continue;
    }
    if (!strcmp(a, "--quick")) {
      quick = 1;
      L = 2, D = 256, H = 4, V = 4096, steps = 1;
      continue;
    }
    if (!v) {
      usage(stderr);
      return 2;
    }
    i++;
    if (!strcmp(a, "--layers")) L = atoi(v);
    else if (!strcmp(a, "--dim")) D = atoi(v);
    else if (!strcmp(a, "--heads")) H = atoi(v);
    else if (!strcmp(a, "--vocab")) V = atoi(v);
    else if (!strcmp(a, "--batch")) B = atoi(v);
    else if (!strcmp(a, "--seq")) T = atoi(v);
    else if (!strcmp(a, "--steps")) steps = atoi(v);
    else if (!strcmp(a, "--backend")) backends = v;
    else if (!strcmp(a, "--dir")) dir = v;
    else if (!strcmp(a, "--json")) json = v;
    else {
      usage(stderr);
      return 2;
    }
  }
  if (L < 1 || D < 1 || H < 1 || D % H || V < 2 || B < 1 || T < 2 || steps < 1) {
    usage(stderr);
    return 2;
  }
  int rc = write_gpt2(dir, L, D, H, V, T > 1024 ? T : 1024);
  if (rc) {
    fprintf(stderr, "qins-bench-train: %s\n", qins_error_msg());
    return 1;
  }
  bench_row rows[8];
  int nrows = 0;
  char list[256];
  snprintf(list, sizeof list, "%s", backends);
  for (char *save = NULL, *spec = strtok_r(list, ",", &save); spec && nrows < 8; spec = strtok_r(NULL, ",", &save)) {
    if ((rc = bench_backend(spec, dir, L, D, V, B, T, steps, quick, host_norm, &rows[nrows]))) {
      fprintf(stderr, "qins-bench-train: %s: %s\n", spec, qins_error_msg());
      return 1;
    }
    nrows++;
  }
  printf("| backend | device | model | params | B x T | step s | fwd+bwd s | AdamW s | tokens/s | GFLOP/s | GEMM GFLOP/s "
         "| of GEMM | submits/step | commands/step |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int r = 0; r < nrows; r++) {
    const bench_row *w = &rows[r];
    printf("| %s | %s | gpt2 L%d D%d V%d | %.1fM | %dx%d | %.3f | %.3f | %.3f | %.1f | %.2f | %.2f | %.0f%% | %llu + %llu "
           "| %llu + %llu |\n",
           w->backend, w->device, L, D, V, w->nparams / 1e6, B, T, w->step_s, w->fwd_bwd_s, w->optim_s, w->tps,
           w->achieved / 1e9, w->peak / 1e9, 100 * w->achieved / w->peak, (unsigned long long)w->submits_fb,
           (unsigned long long)w->submits_opt, (unsigned long long)w->cmds_fb, (unsigned long long)w->cmds_opt);
  }
  for (int r = 0; r < nrows; r++) {
    const bench_row *w = &rows[r];
    printf("%s per CPU-second (load-independent): step %.3f cpu-s, %.2f GFLOP/cpu-s against the GEMM's %.2f: %.0f%%\n",
           w->backend, w->cpu_step_s, w->cpu_achieved / 1e9, w->cpu_peak / 1e9, 100 * w->cpu_achieved / w->cpu_peak);
  }
  if (json) {
    FILE *f = fopen(json, "w");
    if (f) {
      /* the first row at the top level (as before), every row under "rows" */
      const bench_row *w = &rows[0];
      fprintf(f, "{\"backend\": \"%s\", \"layers\": %d, \"dim\": %d, \"vocab\": %d, \"params\": %lld, \"batch\": %d, "
                 "\"seq\": %d, \"step_s\": %.6f, \"fwd_bwd_s\": %.6f, \"optim_s\": %.6f, \"tokens_per_s\": %.3f, "
                 "\"achieved_flops\": %.6g, \"gemm_peak_flops\": %.6g, \"rows\": [",
              w->backend, L, D, V, (long long)w->nparams, B, T, w->step_s, w->fwd_bwd_s, w->optim_s, w->tps,
              w->achieved, w->peak);
      for (int r = 0; r < nrows; r++) {
        w = &rows[r];
        fprintf(f, "%s{\"backend\": \"%s\", \"device\": \"%s\", \"step_s\": %.6f, \"fwd_bwd_s\": %.6f, \"optim_s\": %.6f, "
                   "\"tokens_per_s\": %.3f, \"achieved_flops\": %.6g, \"gemm_peak_flops\": %.6g, "
                   "\"submits_fwd_bwd\": %llu, \"commands_fwd_bwd\": %llu, \"submits_optim\": %llu, "
                   "\"commands_optim\": %llu}",
                r ? ", " : "", w->backend, w->device, w->step_s, w->fwd_bwd_s, w->optim_s, w->tps, w->achieved,
                w->peak, (unsigned long long)w->submits_fb, (unsigned long long)w->cmds_fb,
                (unsigned long long)w->submits_opt, (unsigned long long)w->cmds_opt);
      }
      w = &rows[0];
      fprintf(f, "], \"cpu_step_s\": %.6f, \"achieved_flops_per_cpu_s\": %.6g, \"gemm_flops_per_cpu_s\": %.6g}\n",
              w->cpu_step_s, w->cpu_achieved, w->cpu_peak);
      fclose(f);
    }
  }
  return 0;
}
