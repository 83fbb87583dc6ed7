/* `qins generate`: prompt (text or ids) -> sampled continuation, streamed to stdout; speed to stderr. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/llm/generate.h"
#include "core/llm/llm.h"
#include "core/llm/policy.h"
#include "core/llm/sampler.h"
#include "core/model/model.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/gen_tokenizer.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qins generate --model PATH [--tokenizer PATH] (--prompt TEXT | --ids 1,2,3) [options]\n"
          "  --steps N            new tokens to generate at most (default 128)\n"
          "  --temperature T      0 = greedy (default 0)\n"
          "  --top-k K            keep the K most likely tokens (0 = off)\n"
          "  --top-p P            nucleus: smallest set with probability mass >= P (1 = off)\n"
          "  --min-p P            keep tokens with p >= P * p_max (0 = off)\n"
          "  --repeat-penalty R   penalise tokens already in the context (1 = off)\n"
          "  --seed S             RNG seed (default 0): same seed and logits give the same tokens\n"
          "  --stop STR           stop once the generated text contains STR (needs a tokenizer)\n"
          "  --backend B          cpu, cpu:T, vk, vk:N, auto (default auto)\n"
          "  --max-seq N          KV cache length (default: the model's context)\n"
          "  --policy P           coverage policy (docs/gates.md): a YAML file (its `policy:` map, or the whole\n"
          "                       file) or inline YAML, e.g. '{paths: [v_cache]}' for a qins8 V cache only\n"
          "  --json               print only {\"prompt_ids\": [...], \"ids\": [...], \"text\": \"...\"}\n"
          "Without --tokenizer: tokenizer.bin / tok*.bin beside a llama2.c .bin, tokenizer.json (or GPT-2's\n"
          "encoder.json + vocab.bpe, or a llama2.c tokenizer.bin as `qins train` writes) in an HF folder.\n"
          "Without a tokenizer --prompt is an error and --ids prints ids. llama2.c models get BOS before the\n"
          "prompt text and stop on EOS or BOS; other models stop on EOS.\n");
}

typedef struct gen_ctx {
  gen_tok *tok;
  int json;
  int32_t prev;
  char *text;  /* accumulated decoded text (for --stop and --json) */
  size_t len, cap;
  const char *stop;
} gen_ctx;

static int append(gen_ctx *g, const char *s, size_t n) {
  if (g->len + n + 1 > g->cap) {
    size_t cap = (g->cap + n + 1) * 2;
    char *t = realloc(g->text, cap);
    if (!t) return qins_error_set(QINS_ENOMEM, "out of memory for generated text");
    g->text = t;
    g->cap = cap;
  }
  memcpy(g->text + g->len, s, n);
  g->len += n;
  g->text[g->len] = 0;
  return 0;
}

static int on_token(void *user, int32_t id) {
  gen_ctx *g = user;
  if (!g->tok) {
    if (!g->json) {
      printf("%d ", id);
      fflush(stdout);
    }
    g->prev = id;
    return 0;
  }
  size_t before = g->len;
  char piece[512];
  int n = gen_tok_piece(g->tok, g->prev, id, piece, sizeof piece);
  g->prev = id;
  if (n < 0) return n;
  int rc = append(g, piece, (size_t)n);
  if (rc) return rc;
  if (!g->json) {
    fwrite(piece, 1, (size_t)n, stdout);
    fflush(stdout);
  }
  if (g->stop && *g->stop) {
    /* look only where the new piece could complete a match */
    size_t sl = strlen(g->stop);
    size_t from = before >= sl ? before - sl + 1 : 0;
    if (strstr(g->text + from, g->stop)) return 1;
  }
  return 0;
}

/* JSON needs valid UTF-8: a byte-fallback token can leave a partial sequence, shown as U+FFFD. */
static json_t *json_text(const char *s, size_t n) {
  json_t *j = json_stringn(s, n);
  if (j) return j;
  char *t = malloc(n * 3 + 1);
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    int ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] >> 6) == 2;
    if (ok) { /* overlong forms and surrogates are invalid too: let jansson judge the sequence */
      json_t *one = json_stringn(s + i, len);
      ok = one != NULL;
      json_decref(one);
    }
    if (ok) {
      memcpy(t + o, s + i, len);
      o += len;
      i += len;
    } else {
      memcpy(t + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i += 1;
    }
  }
  j = json_stringn(t, o);
  free(t);
  return j ? j : json_string("");
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The default tokenizer beside a model: tokenizer.json in an HF folder; tokenizer.bin or the
 * first tok*.bin (sorted) beside a llama2.c .bin. Returns 1 and fills out when found. */
static int find_tokenizer(const char *model_path, char *out, size_t n) {
  struct stat st;
  if (stat(model_path, &st) == 0 && S_ISDIR(st.st_mode)) {
    /* the tokenizer opener takes the folder: tokenizer.json, else GPT-2's encoder.json + vocab.bpe,
     * else tokenizer.bin (a folder written by `qins train` carries its llama2.c tokenizer.bin) */
    char probe[1200];
    snprintf(probe, sizeof probe, "%s/tokenizer.json", model_path);
    int have = file_exists(probe);
    snprintf(probe, sizeof probe, "%s/encoder.json", model_path);
    have |= file_exists(probe);
    snprintf(probe, sizeof probe, "%s/tokenizer.bin", model_path);
    have |= file_exists(probe);
    snprintf(out, n, "%s", model_path);
    return have;
  }
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", model_path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  snprintf(out, n, "%s/tokenizer.bin", dir);
  if (file_exists(out)) return 1;
  struct dirent **list = NULL;
  int count = scandir(dir, &list, NULL, alphasort);
  int found = 0;
  for (int i = 0; i < count; i++) {
    const char *name = list[i]->d_name;
    size_t l = strlen(name);
    if (!found && strncmp(name, "tok", 3) == 0 && l > 4 && strcmp(name + l - 4, ".bin") == 0) {
      snprintf(out, n, "%s/%s", dir, name);
      found = file_exists(out);
    }
    free(list[i]);
  }
  free(list);
  return found;
}

static int bad_usage(const char *msg, const char *arg) {
  fprintf(stderr, "qins generate: %s%s\n", msg, arg ? arg : "");
  usage(stderr);
  return 2;
}

int cmd_generate(int argc, char **argv) {
  const char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *ids_text = NULL, *backend = "auto", *stop = NULL;
  const char *policy_arg = NULL;
  qins_cfg *pcfg = NULL;
  qins_policy_state *pst = NULL;
  long steps = 128, max_seq = 0;
  int json = 0;
  qins_sampler_params sp = qins_sampler_defaults();
  sp.temperature = 0.0f;
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    }
    if (!strcmp(a, "--json")) {
      json = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0) return bad_usage("unexpected argument ", a);
    if (i + 1 >= argc) return bad_usage("missing value for ", a);
    const char *v = argv[++i];
    double d;
    long x;
    if (!strcmp(a, "--model")) model_path = v;
    else if (!strcmp(a, "--tokenizer")) tok_path = v;
    else if (!strcmp(a, "--prompt")) prompt = v;
    else if (!strcmp(a, "--ids")) ids_text = v;
    else if (!strcmp(a, "--backend")) backend = v;
    else if (!strcmp(a, "--policy")) policy_arg = v;
    else if (!strcmp(a, "--stop")) stop = v;
    else if (!strcmp(a, "--steps")) rc = cli_parse_int(a, v, 0, 1 << 24, &steps);
    else if (!strcmp(a, "--max-seq")) rc = cli_parse_int(a, v, 1, 1 << 24, &max_seq);
    else if (!strcmp(a, "--temperature")) {
      if (!(rc = cli_parse_float(a, v, 0, 100, &d))) sp.temperature = (float)d;
    } else if (!strcmp(a, "--top-k")) {
      if (!(rc = cli_parse_int(a, v, 0, 1 << 30, &x))) sp.top_k = (int)x;
    } else if (!strcmp(a, "--top-p")) {
      if (!(rc = cli_parse_float(a, v, 1e-9, 1, &d))) sp.top_p = (float)d;
    } else if (!strcmp(a, "--min-p")) {
      if (!(rc = cli_parse_float(a, v, 0, 1, &d))) sp.min_p = (float)d;
    } else if (!strcmp(a, "--repeat-penalty")) {
      if (!(rc = cli_parse_float(a, v, 1e-6, 1e6, &d))) sp.repeat_penalty = (float)d;
    } else if (!strcmp(a, "--seed")) {
      char *end;
      unsigned long long s = strtoull(v, &end, 10);
      if (end == v || *end) rc = qins_error_set(QINS_EINVAL, "--seed '%s': expected an unsigned integer", v);
      sp.seed = s;
    } else return bad_usage("unknown option ", a);
    if (rc) return qins_cli_fail(rc);
  }
  if (!model_path) return bad_usage("--model is required", NULL);
  if (!prompt == !ids_text) return bad_usage("give exactly one of --prompt and --ids", NULL);

  qins_model *m = NULL;
  qins_backend *be = NULL;
  qins_llm *l = NULL;
  qins_sampler *s = NULL;
  int32_t *prompt_ids = NULL, *out = NULL;
  int n_prompt = 0;
  gen_ctx g = {0};
  g.json = json;
  g.stop = stop;
  char found[1200];

  if (ids_text && (rc = cli_parse_ids(ids_text, &prompt_ids, &n_prompt))) goto done;
  if ((rc = qins_model_open(model_path, &m))) goto done;
  int auto_tok = 0;
  if (!tok_path && find_tokenizer(model_path, found, sizeof found)) {
    tok_path = found;
    auto_tok = 1;
  }
  if (tok_path && (rc = gen_tok_open(tok_path, m, &g.tok))) {
    if (!auto_tok || prompt || stop) goto done;
    /* ids work without text: a tokenizer found by guessing that fails to open is only a warning */
    fprintf(stderr, "qins generate: warning: %s; printing ids\n", qins_error_msg());
    rc = 0;
  }
  if (prompt && !g.tok) {
    rc = qins_error_set(QINS_EINPUT, "--prompt needs a tokenizer: none beside %s; pass --tokenizer or use --ids",
                        model_path);
    goto done;
  }
  if (stop && !g.tok) {
    rc = qins_error_set(QINS_EINPUT, "--stop needs a tokenizer (pass --tokenizer)");
    goto done;
  }
  int is_llama2c = strcmp(m->format, "llama2c") == 0;
  if (prompt) {
    /* post-processor specials: BOS for llama2.c (as run.c) and Llama/Phi-3 tokenizers, none for GPT-2 */
    if ((rc = gen_tok_encode(g.tok, prompt, 1, &prompt_ids, &n_prompt))) goto done;
  }
  if (n_prompt < 1) {
    rc = qins_error_set(QINS_EINPUT, "the prompt encodes to no tokens");
    goto done;
  }
  g.prev = prompt_ids[n_prompt - 1];
  if ((rc = qins_backend_create(backend, &be))) goto done;
  qins_llm_options opt = {(int)max_seq, 0};
  if ((rc = qins_llm_create(m, be, &opt, &l))) goto done;
  if (policy_arg) {
    /* the same parser and re-encoding as the pipeline's `policy:` key (stages/model_shared.c) */
    struct stat sb;
    rc = stat(policy_arg, &sb) == 0 ? qins_cfg_load_file(policy_arg, &pcfg)
                                    : qins_cfg_load_string(policy_arg, strlen(policy_arg), "--policy", &pcfg);
    if (rc) goto done;
    const qins_cfg *pn = qins_cfg_get(pcfg, "policy") ? qins_cfg_get(pcfg, "policy") : pcfg;
    qins_policy pol;
    if ((rc = qins_policy_parse(pn, m->cfg.n_layers, &pol))) goto done;
    /* weights stay quantized on every backend: cpu and vk both have fused quantized matmuls */
    if ((rc = qins_policy_apply(l, be, &pol, 0, &pst))) goto done;
  }
  for (int i = 0; i < n_prompt; i++)
    if (prompt_ids[i] >= qins_llm_vocab(l)) {
      rc = qins_error_set(QINS_EINPUT, "prompt id %d outside the vocabulary of %d", prompt_ids[i], qins_llm_vocab(l));
      goto done;
    }
  int greedy = !(sp.temperature > 0.0f) && sp.repeat_penalty == 1.0f;
  if (!greedy && (rc = qins_sampler_create(&sp, qins_llm_vocab(l), &s))) goto done;
  int room = qins_llm_max_seq(l) - n_prompt + 1;
  if (steps > room) steps = room > 0 ? room : 0;
  out = malloc((size_t)(steps + 1) * sizeof(int32_t));
  if (!out) {
    rc = qins_error_set(QINS_ENOMEM, "out of memory");
    goto done;
  }
  /* llama2.c's run.c ends a story at BOS (=1) as well as EOS */
  int32_t stops[2];
  int n_stop = 0;
  if (m->cfg.eos_id >= 0) stops[n_stop++] = m->cfg.eos_id;
  if (is_llama2c && m->cfg.bos_id >= 0 && m->cfg.bos_id != m->cfg.eos_id) stops[n_stop++] = m->cfg.bos_id;
  if (!json && g.tok && prompt) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  qins_gen_stats st;
  rc = qins_llm_generate(l, s, prompt_ids, n_prompt, (int)steps, stops, n_stop, on_token, &g, out, &st);
  if (rc) goto done;
  if (json) {
    json_t *o = json_object(), *pa = json_array(), *ia = json_array();
    for (int i = 0; i < n_prompt; i++) json_array_append_new(pa, json_integer(prompt_ids[i]));
    for (int i = 0; i < st.n_generated; i++) json_array_append_new(ia, json_integer(out[i]));
    json_object_set_new(o, "prompt_ids", pa);
    json_object_set_new(o, "ids", ia);
    json_object_set_new(o, "text", json_text(g.text ? g.text : "", g.len));
    char *dump = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    printf("%s\n", dump ? dump : "{}");
    free(dump);
    json_decref(o);
  } else {
    printf("\n");
  }
  fflush(stdout);
  int dec = st.n_generated > 1 ? st.n_generated - 1 : 0;
  fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s (%.1f tok/s) on %s\n",
          st.n_prompt, st.prefill_s, st.prefill_s > 0 ? st.n_prompt / st.prefill_s : 0.0, dec, st.decode_s,
          st.decode_s > 0 ? dec / st.decode_s : 0.0, be->device_name);
done:
  free(g.text);
  free(out);
  free(prompt_ids);
  qins_sampler_destroy(s);
  qins_llm_destroy(l);
  qins_policy_state_free(pst);
  qins_cfg_free(pcfg);
  if (be) qins_backend_destroy(be);
  if (g.tok) gen_tok_close(g.tok);
  if (m) qins_model_close(m);
  return rc ? qins_cli_fail(rc) : 0;
}
