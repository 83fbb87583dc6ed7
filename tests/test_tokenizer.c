/* Tokenizers: exact ids against the Hugging Face and llama2.c fixtures, decode round trips,
 * a run.c reference encoder on random text, bad files, and the tokenize/detokenize CLI. */
#include <dirent.h>
#include <pthread.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/error.h"
#include "core/tokenizer/tokenizer.h"
#include "tests/test_util.h"

static qins_tokenizer *open_tok(const char *rel) {
  qins_tokenizer *t = NULL;
  int rc = qins_tokenizer_open(test_shared_path(rel), &t);
  if (rc) print_error("open %s: %s\n", rel, qins_error_msg());
  assert_int_equal(rc, 0);
  return t;
}

static json_t *load_fixture(const char *rel) {
  json_error_t err;
  json_t *j = json_load_file(test_shared_path(rel), 0, &err);
  if (!j) print_error("%s: %s\n", rel, err.text);
  assert_non_null(j);
  return j;
}

static void print_ids(const char *what, const int32_t *ids, size_t n) {
  print_error("%s:", what);
  for (size_t i = 0; i < n; i++) print_error(" %d", (int)ids[i]);
  print_error("\n");
}

/* Assert encode(text, flags) == want (a JSON array), printing both on mismatch. */
static void expect_ids(qins_tokenizer *t, const char *name, const char *text, int flags, json_t *want) {
  int32_t *ids;
  size_t n;
  int rc = qins_tokenizer_encode(t, text, flags, &ids, &n);
  if (rc) print_error("%s: encode \"%s\": %s\n", name, text, qins_error_msg());
  assert_int_equal(rc, 0);
  int same = n == json_array_size(want);
  for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(want, i));
  if (!same) {
    print_error("%s: text \"%s\" flags %d\n", name, text, flags);
    print_ids("  got ", ids, n);
    int32_t w[4096];
    size_t wn = json_array_size(want);
    for (size_t i = 0; i < wn && i < 4096; i++) w[i] = (int32_t)json_integer_value(json_array_get(want, i));
    print_ids("  want", w, wn);
  }
  assert_true(same);
  free(ids);
}

static void expect_decode(qins_tokenizer *t, const char *name, json_t *ids_json, const char *want) {
  size_t n = json_array_size(ids_json);
  int32_t *ids = malloc((n + 1) * sizeof *ids);
  for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(ids_json, i));
  char *text;
  int rc = qins_tokenizer_decode(t, ids, n, &text);
  assert_int_equal(rc, 0);
  if (strcmp(text, want) != 0) print_error("%s: decode gave \"%s\", want \"%s\"\n", name, text, want);
  assert_string_equal(text, want);
  free(text);
  free(ids);
}

/* Every fixture string: ids without and with special tokens, and the decoded text. */
static void check_hf_fixture(const char *tok_rel, const char *fix_rel) {
  qins_tokenizer *t = open_tok(tok_rel);
  json_t *cases = load_fixture(fix_rel);
  assert_true(json_array_size(cases) >= 20);
  size_t i;
  json_t *c;
  json_array_foreach(cases, i, c) {
    const char *text = json_string_value(json_object_get(c, "text"));
    const char *dec = json_string_value(json_object_get(c, "decoded"));
    expect_ids(t, tok_rel, text, 0, json_object_get(c, "ids_plain"));
    expect_ids(t, tok_rel, text, QINS_TOK_ADD_SPECIAL, json_object_get(c, "ids_special"));
    expect_ids(t, tok_rel, text, QINS_TOK_ADD_SPECIAL | QINS_TOK_PARSE_SPECIAL, json_object_get(c, "ids_special"));
    expect_decode(t, tok_rel, json_object_get(c, "ids_plain"), dec);
    expect_decode(t, tok_rel, json_object_get(c, "ids_special"), dec);
    /* Streaming: pieces decoded one by one after their predecessor add up to the text. */
    json_t *ids = json_object_get(c, "ids_special");
    char acc[2048] = "", piece[256];
    for (size_t k = 0; k < json_array_size(ids); k++) {
      int32_t prev = k ? (int32_t)json_integer_value(json_array_get(ids, k - 1)) : -1;
      int r = qins_tokenizer_decode_piece(t, prev, (int32_t)json_integer_value(json_array_get(ids, k)), piece, sizeof piece);
      assert_true(r >= 0);
      strcat(acc, piece);
    }
    assert_string_equal(acc, dec);
  }
  json_decref(cases);
  qins_tokenizer_close(t);
}

static void test_llama2_fixture(void **state) {
  (void)state;
  check_hf_fixture("tokenizers/llama2/tokenizer.json", "fixtures/tokenizers/llama2.json");
}

static void test_llama3_fixture(void **state) {
  (void)state;
  check_hf_fixture("tokenizers/llama3/tokenizer.json", "fixtures/tokenizers/llama3.json");
}

static void test_gpt2_fixture(void **state) {
  (void)state;
  check_hf_fixture("tokenizers/gpt2/tokenizer.json", "fixtures/tokenizers/gpt2.json");
  check_hf_fixture("tokenizers/gpt2/encoder.json", "fixtures/tokenizers/gpt2.json");
  check_hf_fixture("tokenizers/gpt2/vocab.bpe", "fixtures/tokenizers/gpt2.json");
  check_hf_fixture("tokenizers/gpt2", "fixtures/tokenizers/gpt2.json"); /* folder: tokenizer.json wins */
}

static void test_special_tokens_and_ids(void **state) {
  (void)state;
  qins_tokenizer *t = open_tok("tokenizers/llama3/tokenizer.json");
  assert_int_equal(qins_tokenizer_get_kind(t), QINS_TOK_HF);
  assert_int_equal(qins_tokenizer_vocab_size(t), 128256);
  assert_int_equal(qins_tokenizer_bos_id(t), 128000);
  assert_int_equal(qins_tokenizer_eos_id(t), 128001);
  assert_int_equal(qins_tokenizer_token_id(t, "<|begin_of_text|>"), 128000);
  assert_string_equal(qins_tokenizer_token_text(t, 1917), "\xc4\xa0world"); /* "Ġworld" */
  assert_null(qins_tokenizer_token_text(t, 128256));
  /* A special token in the text is one id only when asked for (--special). */
  int32_t *ids;
  size_t n;
  assert_int_equal(qins_tokenizer_encode(t, "<|begin_of_text|>Hello", QINS_TOK_PARSE_SPECIAL, &ids, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(ids[0], 128000);
  assert_int_equal(ids[1], 9906);
  char *text;
  size_t len;
  assert_int_equal(qins_tokenizer_decode(t, ids, n, &text), 0);
  assert_string_equal(text, "Hello");
  free(text);
  assert_int_equal(qins_tokenizer_decode_ex(t, ids, n, QINS_TOK_KEEP_SPECIAL, &text, &len), 0);
  assert_string_equal(text, "<|begin_of_text|>Hello");
  assert_int_equal(len, strlen(text));
  free(text);
  free(ids);
  /* ignore_merges: a pre-token that is a vocab entry is emitted whole, even where the merges
   * would build it from 3 pieces (found by running BPE over the vocab). */
  assert_int_equal(qins_tokenizer_encode(t, "ektedir", 0, &ids, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 101673);
  free(ids);
  assert_int_equal(qins_tokenizer_encode(t, "<|begin_of_text|>Hello", 0, &ids, &n), 0);
  assert_true(n > 2);
  free(ids);
  int32_t bad = 500000;
  assert_int_equal(qins_tokenizer_decode(t, &bad, 1, &text), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "500000"));
  qins_tokenizer_close(t);

  t = open_tok("tokenizers/llama2/tokenizer.json");
  assert_int_equal(qins_tokenizer_bos_id(t), 1);
  assert_int_equal(qins_tokenizer_eos_id(t), 2);
  assert_int_equal(qins_tokenizer_encode(t, "<s>Hi</s>", QINS_TOK_PARSE_SPECIAL, &ids, &n), 0);
  assert_true(n >= 3);
  assert_int_equal(ids[0], 1);
  assert_int_equal(ids[n - 1], 2);
  free(ids);
  qins_tokenizer_close(t);

  t = open_tok("tokenizers/gpt2/encoder.json");
  assert_int_equal(qins_tokenizer_get_kind(t), QINS_TOK_GPT2);
  assert_int_equal(qins_tokenizer_vocab_size(t), 50257);
  assert_int_equal(qins_tokenizer_eos_id(t), 50256);
  qins_tokenizer_close(t);
}

/* ------------------------------------------------------------------ llama2.c */

static void test_llama2c_fixture(void **state) {
  (void)state;
  qins_tokenizer *t = open_tok("models/stories260K/tok512.bin");
  assert_int_equal(qins_tokenizer_get_kind(t), QINS_TOK_LLAMA2C);
  assert_int_equal(qins_tokenizer_vocab_size(t), 512);
  assert_int_equal(qins_tokenizer_bos_id(t), 1);
  assert_int_equal(qins_tokenizer_eos_id(t), 2);
  json_t *fix = load_fixture("fixtures/stories260K_greedy.json");
  json_t *cases = json_object_get(fix, "cases"), *c;
  assert_true(json_array_size(cases) >= 5);
  size_t i;
  json_array_foreach(cases, i, c) {
    const char *prompt = json_string_value(json_object_get(c, "prompt"));
    json_t *want = json_object_get(c, "prompt_ids");
    expect_ids(t, "tok512", prompt, QINS_TOK_ADD_SPECIAL, want);
    expect_decode(t, "tok512", want, prompt);
    /* Streaming pieces after BOS concatenate to the same text. */
    char acc[1024] = "", piece[256];
    for (size_t k = 1; k < json_array_size(want); k++) {
      int r = qins_tokenizer_decode_piece(t, (int32_t)json_integer_value(json_array_get(want, k - 1)),
                                          (int32_t)json_integer_value(json_array_get(want, k)), piece, sizeof piece);
      assert_true(r >= 0);
      strcat(acc, piece);
    }
    assert_string_equal(acc, prompt);
  }
  json_decref(fix);
  /* The explicit-vocab-size entry point reads the same file. */
  qins_tokenizer *t2;
  assert_int_equal(qins_tokenizer_open_llama2c(test_shared_path("models/stories260K/tok512.bin"), 512, &t2), 0);
  assert_int_equal(qins_tokenizer_vocab_size(t2), 512);
  qins_tokenizer_close(t2);
  qins_tokenizer_close(t);
}

/* run.c's encode, written the way run.c does it (string concatenation, linear scan for the best
 * pair), to check the heap engine on random text. */
static size_t runc_encode(const qins_tokenizer *t, const char *text, int32_t *out) {
  size_t n = 0;
  char buf[64];
  if (text[0]) out[n++] = qins_tokenizer_token_id(t, " ");
  size_t sl = 0;
  for (const char *c = text; *c; c++) {
    if ((*c & 0xC0) != 0x80) sl = 0;
    buf[sl++] = *c;
    buf[sl] = 0;
    if ((*(c + 1) & 0xC0) == 0x80 && sl < 4) continue;
    int32_t id = qins_tokenizer_token_id(t, buf);
    if (id >= 0) out[n++] = id;
    else
      for (size_t i = 0; i < sl; i++) out[n++] = (unsigned char)buf[i] + 3;
    sl = 0;
  }
  /* scores are not public: rank merges by re-reading them from the file */
  static float scores[512];
  static int loaded;
  if (!loaded) {
    FILE *f = fopen(test_shared_path("models/stories260K/tok512.bin"), "rb");
    assert_non_null(f);
    int32_t maxlen, len;
    assert_int_equal(fread(&maxlen, 4, 1, f), 1);
    for (int i = 0; i < 512; i++) {
      assert_int_equal(fread(&scores[i], 4, 1, f), 1);
      assert_int_equal(fread(&len, 4, 1, f), 1);
      fseek(f, len, SEEK_CUR);
    }
    fclose(f);
    loaded = 1;
  }
  for (;;) {
    float best = -1e10f;
    int best_id = -1;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < n; i++) {
      char cat[256];
      snprintf(cat, sizeof cat, "%s%s", qins_tokenizer_token_text(t, out[i]), qins_tokenizer_token_text(t, out[i + 1]));
      int32_t id = qins_tokenizer_token_id(t, cat);
      if (id >= 0 && scores[id] > best) {
        best = scores[id];
        best_id = id;
        best_i = i;
      }
    }
    if (best_id < 0) break;
    out[best_i] = best_id;
    memmove(out + best_i + 1, out + best_i + 2, (n - best_i - 2) * sizeof *out);
    n--;
  }
  return n;
}

static void random_ascii_words(char *buf, size_t len) {
  static const char *words[] = {"the", " cat", " Lily", " and", " ", "  ", "ing", "ed", ".", ",", "\n", "Once", " upon",
                                "x", "q", "!", "'s", " time", "7", "42", "é", "日本", "🙂", "aaaa", "eeee", "lll", "   "};
  size_t n = 0;
  while (n + 8 < len) {
    const char *w = words[test_rand_u64() % (sizeof words / sizeof words[0])];
    size_t wl = strlen(w);
    memcpy(buf + n, w, wl);
    n += wl;
    if (test_rand_u64() % 8 == 0) break;
  }
  buf[n] = 0;
}

static void test_llama2c_matches_runc_reference(void **state) {
  (void)state;
  qins_tokenizer *t = open_tok("models/stories260K/tok512.bin");
  for (int iter = 0; iter < 300; iter++) {
    char text[200];
    random_ascii_words(text, sizeof text);
    int32_t want[1024], *ids;
    size_t wn = runc_encode(t, text, want), n;
    assert_int_equal(qins_tokenizer_encode(t, text, 0, &ids, &n), 0);
    int same = n == wn && memcmp(ids, want, n * sizeof *ids) == 0;
    if (!same) {
      print_error("text \"%s\"\n", text);
      print_ids("  got ", ids, n);
      print_ids("  want", want, wn);
    }
    assert_true(same);
    free(ids);
  }
  qins_tokenizer_close(t);
}

/* ------------------------------------------------------------------ round trips */

/* Random valid UTF-8 (1- to 4-byte characters) or, when raw, random bytes (no NUL for C-string
 * tokenizers). U+2581 "▁" is left out: sentencepiece-style tokenizers turn it into a space. */
static size_t random_text(char *buf, size_t cap, int raw, int allow_nul) {
  size_t n = 0, want = test_rand_u64() % (cap / 5);
  while (n < want) {
    if (raw) {
      unsigned char b = (unsigned char)(test_rand_u64() & 0xFF);
      if (!b && !allow_nul) continue;
      buf[n++] = (char)b;
      continue;
    }
    uint32_t cp;
    switch (test_rand_u64() % 4) {
    case 0: cp = 0x20 + test_rand_u64() % 0x5F; break;
    case 1: cp = 0x80 + test_rand_u64() % 0x780; break;
    case 2: cp = 0x800 + test_rand_u64() % 0xF800; break;
    default: cp = 0x10000 + test_rand_u64() % 0x100000; break;
    }
    if ((cp >= 0xD800 && cp < 0xE000) || cp == 0x2581) continue;
    if (test_rand_u64() % 3 == 0) cp = " \n\t"[test_rand_u64() % 3];
    if (cp < 0x80) buf[n++] = (char)cp;
    else if (cp < 0x800) {
      buf[n++] = (char)(0xC0 | (cp >> 6));
      buf[n++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      buf[n++] = (char)(0xE0 | (cp >> 12));
      buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      buf[n++] = (char)(0x80 | (cp & 0x3F));
    } else {
      buf[n++] = (char)(0xF0 | (cp >> 18));
      buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
      buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
      buf[n++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  buf[n] = 0;
  return n;
}

static int contains(const char *s, size_t n, const char *needle) {
  size_t k = strlen(needle);
  for (size_t i = 0; i + k <= n; i++)
    if (memcmp(s + i, needle, k) == 0) return 1;
  return 0;
}

static void round_trip(qins_tokenizer *t, const char *name, const char *text, size_t len, int flags) {
  int32_t *ids;
  size_t n, dl;
  char *dec;
  assert_int_equal(qins_tokenizer_encode_n(t, text, len, flags, &ids, &n), 0);
  assert_int_equal(qins_tokenizer_decode_ex(t, ids, n, 0, &dec, &dl), 0);
  int same = dl == len && memcmp(dec, text, len) == 0;
  if (!same) {
    print_error("%s: round trip failed for %zu bytes:", name, len);
    for (size_t i = 0; i < len; i++) print_error(" %02x", (unsigned char)text[i]);
    print_error("\n  decoded %zu bytes:", dl);
    for (size_t i = 0; i < dl; i++) print_error(" %02x", (unsigned char)dec[i]);
    print_error("\n");
  }
  assert_true(same);
  free(dec);
  free(ids);
}

/* Byte-level (GPT-2, Llama-3) and byte-fallback (Llama-2, llama2.c) tokenizers give back the exact
 * bytes for any input: fixture strings, random UTF-8 and random bytes. */
static void test_round_trips(void **state) {
  (void)state;
  static const char *toks[] = {"tokenizers/llama2/tokenizer.json", "tokenizers/llama3/tokenizer.json",
                               "tokenizers/gpt2/tokenizer.json", "tokenizers/gpt2/vocab.bpe",
                               "models/stories260K/tok512.bin"};
  static const char *fixtures[] = {"fixtures/tokenizers/llama2.json", "fixtures/tokenizers/llama3.json",
                                   "fixtures/tokenizers/gpt2.json", "fixtures/tokenizers/gpt2.json",
                                   "fixtures/tokenizers/llama2.json"};
  for (int k = 0; k < 5; k++) {
    qins_tokenizer *t = open_tok(toks[k]);
    int is_l2c = qins_tokenizer_get_kind(t) == QINS_TOK_LLAMA2C;
    json_t *cases = load_fixture(fixtures[k]), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
      const char *s = json_string_value(json_object_get(c, "text"));
      round_trip(t, toks[k], s, strlen(s), 0);
      round_trip(t, toks[k], s, strlen(s), QINS_TOK_ADD_SPECIAL);
    }
    json_decref(cases);
    for (int iter = 0; iter < 200; iter++) {
      char buf[400];
      int raw = iter % 2;
      size_t len = random_text(buf, sizeof buf, raw, !is_l2c);
      /* Special-token spellings and "▁" built from random bytes are not plain text. */
      if (contains(buf, len, "\xe2\x96\x81") || (is_l2c && contains(buf, len, "<"))) continue;
      round_trip(t, toks[k], buf, len, 0);
    }
    qins_tokenizer_close(t);
  }
}

/* Several threads encoding and decoding with one tokenizer get the single-threaded answers. */
typedef struct thread_job {
  qins_tokenizer *t;
  json_t *cases;
  int failures;
} thread_job;

static void *thread_main(void *arg) {
  thread_job *j = arg;
  for (int rep = 0; rep < 5; rep++) {
    size_t i;
    json_t *c;
    json_array_foreach(j->cases, i, c) {
      const char *text = json_string_value(json_object_get(c, "text"));
      json_t *want = json_object_get(c, "ids_plain");
      int32_t *ids;
      size_t n;
      char *dec;
      if (qins_tokenizer_encode(j->t, text, 0, &ids, &n)) {
        j->failures++;
        continue;
      }
      int same = n == json_array_size(want);
      for (size_t k = 0; same && k < n; k++) same = ids[k] == json_integer_value(json_array_get(want, k));
      if (!same) j->failures++;
      if (qins_tokenizer_decode(j->t, ids, n, &dec) == 0) {
        if (strcmp(dec, text) != 0) j->failures++;
        free(dec);
      } else {
        j->failures++;
      }
      free(ids);
    }
  }
  return NULL;
}

static void test_threads_share_a_tokenizer(void **state) {
  (void)state;
  qins_tokenizer *t = open_tok("tokenizers/llama3/tokenizer.json");
  json_t *cases = load_fixture("fixtures/tokenizers/llama3.json");
  pthread_t th[4];
  thread_job jobs[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (thread_job){t, cases, 0};
    assert_int_equal(pthread_create(&th[i], NULL, thread_main, &jobs[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(jobs[i].failures, 0);
  }
  json_decref(cases);
  qins_tokenizer_close(t);
}

/* ------------------------------------------------------------------ bad files */

static char tmpdir[64];

static const char *tmp_write(const char *name, const void *data, size_t n) {
  static char path[4][256];
  static int slot;
  char *p = path[slot++ % 4];
  snprintf(p, 256, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  fclose(f);
  return p;
}

static void expect_open_fails(const char *path, int code, const char *needle) {
  qins_tokenizer *t = (qins_tokenizer *)1;
  int rc = qins_tokenizer_open(path, &t);
  if (rc != code || !strstr(qins_error_msg(), needle) || !strstr(qins_error_msg(), path))
    print_error("open %s: rc %d, message \"%s\" (want %d and \"%s\")\n", path, rc, qins_error_msg(), code, needle);
  assert_int_equal(rc, code);
  assert_null(t);
  assert_non_null(strstr(qins_error_msg(), path));
  assert_non_null(strstr(qins_error_msg(), needle));
}

static void test_bad_files(void **state) {
  (void)state;
  FILE *f = fopen(test_shared_path("models/stories260K/tok512.bin"), "rb");
  assert_non_null(f);
  static unsigned char bin[8192];
  size_t n = fread(bin, 1, sizeof bin, f);
  fclose(f);
  assert_true(n > 1000);
  expect_open_fails(tmp_write("cut.bin", bin, n - 3), QINS_EINPUT, "truncated");
  expect_open_fails(tmp_write("tiny.bin", bin, 2), QINS_EINPUT, "truncated");
  qins_tokenizer *t;
  assert_int_equal(qins_tokenizer_open_llama2c(tmp_write("short.bin", bin, n / 2), 512, &t), QINS_EINPUT);
  assert_non_null(strstr(qins_error_msg(), "short.bin"));

  const char *syntax = "{\n  \"model\": {\n    \"vocab\": {\"a\": 0,, \"b\": 1}\n  }\n}\n";
  expect_open_fails(tmp_write("syntax.json", syntax, strlen(syntax)), QINS_EINPUT, ":3:");
  const char *novocab = "{\"model\": {\"type\": \"BPE\", \"merges\": []}}";
  expect_open_fails(tmp_write("novocab.json", novocab, strlen(novocab)), QINS_EINPUT, "model.vocab");
  const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
  expect_open_fails(tmp_write("wordpiece.json", wp, strlen(wp)), QINS_EINPUT, "WordPiece");
  const char *badmerge = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}";
  expect_open_fails(tmp_write("badmerge.json", badmerge, strlen(badmerge)), QINS_EINPUT, "merges[0]");
  const char *nomodel = "{\"version\": \"1.0\"}";
  expect_open_fails(tmp_write("nomodel.json", nomodel, strlen(nomodel)), QINS_EINPUT, "model");
  const char *norm = "{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
  expect_open_fails(tmp_write("norm.json", norm, strlen(norm)), QINS_EUNSUPPORTED, "Lowercase");
  const char *regex = "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, \"behavior\": \"Isolated\"},"
                      " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}";
  expect_open_fails(tmp_write("regex.json", regex, strlen(regex)), QINS_EINPUT, "regex");
  expect_open_fails("/nonexistent/tokenizer.json", QINS_EINPUT, "no such");

  /* A minimal valid file with both merge forms works. */
  const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"abab\": 3},"
                   " \"merges\": [\"a b\", [\"ab\", \"ab\"]]}}";
  assert_int_equal(qins_tokenizer_open(tmp_write("ok.json", ok, strlen(ok)), &t), 0);
  int32_t *ids;
  assert_int_equal(qins_tokenizer_encode(t, "ababa", 0, &ids, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(ids[0], 3);
  assert_int_equal(ids[1], 0);
  free(ids);
  qins_tokenizer_close(t);
}

/* Pre-tokenizer semantics on a tiny handmade tokenizer: with ignore_merges and no merges, a piece
 * that is a vocab entry comes out as one id and anything else as one id per character, so the
 * ids show where the pieces were cut. */
static void expect_pieces(const char *pre, const char *dec, const char *text, const int32_t *want, size_t wn,
                          const char *decoded) {
  char json[2048];
  snprintf(json, sizeof json,
           "{\"pre_tokenizer\": %s, \"decoder\": %s, \"model\": {\"type\": \"BPE\", \"ignore_merges\": true,"
           " \"vocab\": {\"a\": 0, \"b\": 1, \" \": 2, \"a \": 3, \"b \": 4, \" a\": 5, \" b\": 6,"
           " \"\u2581a\": 7, \"\u2581b\": 8, \"\u2581\": 9, \"ab\": 10, \"  \": 11, \"1\": 12, \"12\": 13}, \"merges\": []}}",
           pre, dec);
  qins_tokenizer *t;
  const char *path = tmp_write("pieces.json", json, strlen(json));
  int rc = qins_tokenizer_open(path, &t);
  if (rc) print_error("%s\n", qins_error_msg());
  assert_int_equal(rc, 0);
  int32_t *ids;
  size_t n;
  assert_int_equal(qins_tokenizer_encode(t, text, 0, &ids, &n), 0);
  int same = n == wn && memcmp(ids, want, n * sizeof *ids) == 0;
  if (!same) {
    print_error("pre_tokenizer %s on \"%s\"\n", pre, text);
    print_ids("  got ", ids, n);
    print_ids("  want", want, wn);
  }
  assert_true(same);
  if (decoded) {
    char *out;
    assert_int_equal(qins_tokenizer_decode(t, ids, n, &out), 0);
    assert_string_equal(out, decoded);
    free(out);
  }
  free(ids);
  qins_tokenizer_close(t);
}

#define SPLIT(b) "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"" b "\", \"invert\": false}"

static void test_pretokenizer_behaviors(void **state) {
  (void)state;
  expect_pieces(SPLIT("Isolated"), "null", "a b", (int32_t[]){0, 2, 1}, 3, "a   b"); /* no decoder: HF joins with spaces */
  expect_pieces(SPLIT("Removed"), "null", "a b", (int32_t[]){0, 1}, 2, NULL);
  expect_pieces(SPLIT("MergedWithPrevious"), "null", "a b", (int32_t[]){3, 1}, 2, NULL);
  expect_pieces(SPLIT("MergedWithNext"), "null", "a b", (int32_t[]){0, 6}, 2, NULL);
  expect_pieces(SPLIT("Contiguous"), "null", "a  b", (int32_t[]){0, 11, 1}, 3, NULL);
  expect_pieces(SPLIT("Isolated"), "null", "a  b", (int32_t[]){0, 2, 2, 1}, 4, NULL);
  const char *ms_dec = "{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"always\", \"split\": true}";
  expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"always\", \"split\": true}",
                ms_dec, "a b", (int32_t[]){7, 8}, 2, "a b");
  /* spaces are replaced before the prefix check: " a b" is "▁a▁b", not "▁▁a▁b" */
  expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"always\", \"split\": true}",
                ms_dec, " a b", (int32_t[]){7, 8}, 2, "a b");
  expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"always\", \"split\": false}",
                ms_dec, "a b", (int32_t[]){9, 0, 9, 1}, 4, "a b");
  expect_pieces("{\"type\": \"Metaspace\", \"replacement\": \"\u2581\", \"prepend_scheme\": \"never\", \"split\": true}",
                ms_dec, "a b", (int32_t[]){0, 8}, 2, "a b");
  expect_pieces("{\"type\": \"WhitespaceSplit\"}", "null", "a  b ", (int32_t[]){0, 1}, 2, NULL);
  expect_pieces("{\"type\": \"Whitespace\"}", "null", " ab  b", (int32_t[]){10, 1}, 2, NULL);
  /* "2" is not in the vocab and there is no unk: it is dropped, as HF does. */
  expect_pieces("{\"type\": \"Digits\", \"individual_digits\": true}", "null", "a12", (int32_t[]){0, 12}, 2, NULL);
  expect_pieces("{\"type\": \"Digits\", \"individual_digits\": false}", "null", "a12", (int32_t[]){0, 13}, 2, NULL);
  /* A Sequence of one step behaves like the step. */
  expect_pieces("{\"type\": \"Sequence\", \"pretokenizers\": [" SPLIT("Removed") "]}", "null", "b a", (int32_t[]){1, 0}, 2, NULL);
}

/* Corrupted files never crash the loaders: every truncation and random byte flips of a llama2.c
 * file and of a small but complete tokenizer.json either load or fail with a message. */
static void test_corrupt_files_fuzz(void **state) {
  (void)state;
  FILE *f = fopen(test_shared_path("models/stories260K/tok512.bin"), "rb");
  assert_non_null(f);
  static unsigned char bin[8192], mut[8192];
  size_t n = fread(bin, 1, sizeof bin, f);
  fclose(f);
  const char *json =
      "{\"added_tokens\": [{\"id\": 5, \"content\": \"<s>\", \"special\": true, \"lstrip\": true}],"
      " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"_\"},"
      " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"_\"}]},"
      " \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{L}+\"}, \"behavior\": \"Isolated\"},"
      " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\"}},"
      " {\"Sequence\": {\"id\": \"A\"}}], \"special_tokens\": {\"<s>\": {\"ids\": [5]}}},"
      " \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"_\"},"
      " \"content\": \" \"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
      " \"model\": {\"type\": \"BPE\", \"unk_token\": \"?\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"_\": 3, \"?\": 4},"
      " \"merges\": [\"a b\"]}}";
  size_t jn = strlen(json);
  qins_tokenizer *t;
  /* The intact file works: "<s>" prefix from the template, unk for unknown characters. */
  assert_int_equal(qins_tokenizer_open(tmp_write("fuzz.json", json, jn), &t), 0);
  int32_t *ids;
  size_t cnt;
  assert_int_equal(qins_tokenizer_encode(t, "ab ba!", QINS_TOK_ADD_SPECIAL, &ids, &cnt), 0);
  int32_t want[] = {5, 3, 2, 3, 1, 0, 4};
  assert_int_equal(cnt, 7);
  assert_memory_equal(ids, want, sizeof want);
  free(ids);
  qins_tokenizer_close(t);
  int loaded = 0, failed = 0;
  for (int iter = 0; iter < 400; iter++) {
    int is_json = iter % 2;
    const unsigned char *src = is_json ? (const unsigned char *)json : bin;
    size_t len = is_json ? jn : n;
    memcpy(mut, src, len);
    if (test_rand_u64() % 2) len = test_rand_u64() % len;
    int flips = (int)(test_rand_u64() % 4);
    for (int k = 0; k < flips && len; k++) mut[test_rand_u64() % len] = (unsigned char)test_rand_u64();
    const char *path = tmp_write(is_json ? "fuzz.json" : "fuzz.bin", mut, len);
    int rc = qins_tokenizer_open(path, &t);
    if (rc == 0) {
      loaded++;
      /* A llama2.c file cut at a record boundary is a valid smaller vocabulary, too small for
       * byte fallback: encoding may refuse, with a message, but must not crash. */
      rc = qins_tokenizer_encode(t, "ab ba <s> x", QINS_TOK_ADD_SPECIAL | QINS_TOK_PARSE_SPECIAL, &ids, &cnt);
      if (rc == 0) {
        char *text;
        assert_int_equal(qins_tokenizer_decode(t, ids, cnt, &text), 0);
        free(text);
        free(ids);
      } else {
        assert_true(rc < 0 && qins_error_msg()[0]);
      }
      qins_tokenizer_close(t);
    } else {
      failed++;
      assert_true(rc < 0);
      assert_non_null(strstr(qins_error_msg(), path));
    }
  }
  print_message("corrupted files: %d loaded, %d refused\n", loaded, failed);
  assert_true(failed > 0);
}

/* NFC / NFD normalizers: a byte-level tokenizer with one token per byte and no merges gives back
 * exactly the normalized bytes. Expected values from Python's unicodedata (Unicode 14). */
static void test_unicode_normalizers(void **state) {
  (void)state;
  static const char *cases[][3] = {
      {"\x65\xcc\x81", "\xc3\xa9", "\x65\xcc\x81"},
      {"\xe2\x84\xab", "\xc3\x85", "\x41\xcc\x8a"},
      {"\xe1\x84\x80\xe1\x85\xa1", "\xea\xb0\x80", "\xe1\x84\x80\xe1\x85\xa1"},
      {"\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xea\xb0\x81", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"},
      {"\xea\xb0\x80\xe1\x86\xa8", "\xea\xb0\x81", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8"},
      {"\x61\xcc\xa3\xcc\x87", "\xe1\xba\xa1\xcc\x87", "\x61\xcc\xa3\xcc\x87"},
      {"\x61\xcc\x87\xcc\xa3", "\xe1\xba\xa1\xcc\x87", "\x61\xcc\xa3\xcc\x87"},
      {"\xe1\xb8\x8b\xcc\xa3", "\xe1\xb8\x8d\xcc\x87", "\x64\xcc\xa3\xcc\x87"},
      {"\x71\xcc\x87\xcc\xa3", "\x71\xcc\xa3\xcc\x87", "\x71\xcc\xa3\xcc\x87"},
      {"\xcd\x84", "\xcc\x88\xcc\x81", "\xcc\x88\xcc\x81"},
      {"\xe0\xa5\x98", "\xe0\xa4\x95\xe0\xa4\xbc", "\xe0\xa4\x95\xe0\xa4\xbc"},
      {"\xc3\xa9", "\xc3\xa9", "\x65\xcc\x81"},
      {"\x63\x61\x66\xc3\xa9\x20\x6e\x61\xc4\xb1\xcc\x88\x76\x65", "\x63\x61\x66\xc3\xa9\x20\x6e\x61\xc4\xb1\xcc\x88\x76\x65", "\x63\x61\x66\x65\xcc\x81\x20\x6e\x61\xc4\xb1\xcc\x88\x76\x65"},
      {"\xe2\x84\xa6", "\xce\xa9", "\xce\xa9"},
      {"\x41\xcc\x8a\xcc\x81", "\xc7\xba", "\x41\xcc\x8a\xcc\x81"},
      {"\xd7\x90\xd6\xb8\xd6\xb7", "\xd7\x90\xd6\xb7\xd6\xb8", "\xd7\x90\xd6\xb7\xd6\xb8"},
      {"\xcc\x81\x61", "\xcc\x81\x61", "\xcc\x81\x61"},
      {"\xf0\x9d\x85\x9e", "\xf0\x9d\x85\x97\xf0\x9d\x85\xa5", "\xf0\x9d\x85\x97\xf0\x9d\x85\xa5"},
      {"\xe0\xbd\xb3", "\xe0\xbd\xb1\xe0\xbd\xb2", "\xe0\xbd\xb1\xe0\xbd\xb2"},
      {"\xc7\x85", "\xc7\x85", "\xc7\x85"},
      {"\xc3\x85\xcc\xa7", "\xc3\x85\xcc\xa7", "\x41\xcc\xa7\xcc\x8a"},
      {"\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab\xe1\x84\x80\xe1\x85\xae\xe1\x86\xa8\xe1\x84\x8b\xe1\x85\xa5"},
      {"\x6f\xcc\xa8\xcc\x84", "\xc7\xad", "\x6f\xcc\xa8\xcc\x84"},
      {"\xe1\xba\x9b\xcc\xa3", "\xe1\xba\x9b\xcc\xa3", "\xc5\xbf\xcc\xa3\xcc\x87"},
  };
  for (int form = 0; form < 2; form++) {
    /* vocab: the GPT-2 byte-level character of every byte, id = byte value */
    static char json[16384];
    size_t n = (size_t)snprintf(json, sizeof json,
                                "{\"normalizer\": {\"type\": \"%s\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\","
                                " \"add_prefix_space\": false, \"use_regex\": false}, \"decoder\": {\"type\": \"ByteLevel\"},"
                                " \"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {",
                                form ? "NFD" : "NFC");
    int extra = 0;
    for (int b = 0; b < 256; b++) {
      int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      int cp = printable ? b : 256 + extra++;
      n += (size_t)snprintf(json + n, sizeof json - n, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    n += (size_t)snprintf(json + n, sizeof json - n, "}}}");
    qins_tokenizer *t;
    int rc = qins_tokenizer_open(tmp_write("nfc.json", json, n), &t);
    if (rc) print_error("%s\n", qins_error_msg());
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      int32_t *ids;
      size_t cnt;
      char *out;
      assert_int_equal(qins_tokenizer_encode(t, cases[i][0], 0, &ids, &cnt), 0);
      assert_int_equal(qins_tokenizer_decode(t, ids, cnt, &out), 0);
      if (strcmp(out, cases[i][1 + form]) != 0) print_error("%s of case %zu is wrong\n", form ? "NFD" : "NFC", i);
      assert_string_equal(out, cases[i][1 + form]);
      free(out);
      free(ids);
    }
    qins_tokenizer_close(t);
  }
}

/* ------------------------------------------------------------------ CLI */

/* Run the built `qins` with a shell command line, capture stdout, return the exit status. */
static int run_cli(const char *args, char *out, size_t cap) {
  const char *exe = getenv("QINS_EXE");
  if (!exe) {
    print_error("QINS_EXE is not set (meson test sets it)\n");
    fail();
  }
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", exe, args);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
  (void)state;
  char out[4096], args[2048];
  const char *tok512 = test_shared_path("models/stories260K/tok512.bin");
  snprintf(args, sizeof args, "tokenize --tokenizer '%s' --text 'Once upon a time' --special", tok512);
  assert_int_equal(run_cli(args, out, sizeof out), 0);
  assert_string_equal(out, "1 403 407 261 378\n");
  snprintf(args, sizeof args, "tokenize --tokenizer '%s' --text 'Hello world' --json",
           test_shared_path("tokenizers/gpt2/tokenizer.json"));
  assert_int_equal(run_cli(args, out, sizeof out), 0);
  assert_string_equal(out, "{\"ids\":[15496,995],\"tokens\":[\"Hello\",\"\\u0120world\"]}\n");
  snprintf(args, sizeof args, "detokenize --tokenizer '%s' --ids 1,403,407,261,378", tok512);
  assert_int_equal(run_cli(args, out, sizeof out), 0);
  assert_string_equal(out, "Once upon a time\n");
  snprintf(args, sizeof args, "detokenize --tokenizer '%s' --ids 1,x", tok512);
  assert_int_equal(run_cli(args, out, sizeof out), 2);
  snprintf(args, sizeof args, "detokenize --tokenizer '%s' --ids 99999", tok512);
  assert_int_equal(run_cli(args, out, sizeof out), 2);
  snprintf(args, sizeof args, "tokenize --tokenizer /nonexistent/tok.bin --text hi");
  assert_int_equal(run_cli(args, out, sizeof out), 2);
  snprintf(args, sizeof args, "tokenize --text hi");
  assert_int_equal(run_cli(args, out, sizeof out), 2);
  snprintf(args, sizeof args, "tokenize --help");
  assert_int_equal(run_cli(args, out, sizeof out), 0);
  assert_non_null(strstr(out, "--tokenizer"));
}

/* One scratch folder for the files the tests write, removed afterwards. */
static int make_tmpdir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/qins_tok_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
  (void)state;
  DIR *d = opendir(tmpdir);
  if (!d) return 0;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
      unlink(p);
    }
  closedir(d);
  rmdir(tmpdir);
  return 0;
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_llama2c_fixture),
      cmocka_unit_test(test_llama2c_matches_runc_reference),
      cmocka_unit_test(test_llama2_fixture),
      cmocka_unit_test(test_llama3_fixture),
      cmocka_unit_test(test_gpt2_fixture),
      cmocka_unit_test(test_special_tokens_and_ids),
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_threads_share_a_tokenizer),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_pretokenizer_behaviors),
      cmocka_unit_test(test_corrupt_files_fuzz),
      cmocka_unit_test(test_unicode_normalizers),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests_name("tokenizer", tests, make_tmpdir, remove_tmpdir);
}
