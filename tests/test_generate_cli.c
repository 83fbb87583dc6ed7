/* `qins generate` and `qins logits` end to end: JSON shape and content, fixture ids, raw logits
 * file, seeded sampling, stop strings and exit codes for bad input. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/test_util.h"

static const char *exe(void) {
  const char *e = getenv("QINS_EXE");
  if (!e) fail_msg("QINS_EXE not set (run through meson test)");
  return e;
}

static const char *stories(void) { return test_shared_path("models/stories260K/stories260K.bin"); }

/* Run a shell command; capture stdout (malloc'd) and return the exit status. */
static int run(const char *cmd, char **out) {
  FILE *p = popen(cmd, "r");
  if (!p) fail_msg("popen %s", cmd);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
    len += got;
    if (cap - len < 2) buf = realloc(buf, cap *= 2);
  }
  buf[len] = 0;
  int st = pclose(p);
  if (out) *out = buf;
  else free(buf);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static json_t *fixture_case0(void) {
  json_error_t err;
  json_t *root = json_load_file(test_shared_path("fixtures/stories260K_greedy.json"), 0, &err);
  assert_non_null(root);
  json_t *c = json_incref(json_array_get(json_object_get(root, "cases"), 0));
  json_decref(root);
  return c;
}

static void test_generate_json_matches_fixture(void **state) {
  (void)state;
  json_t *c = fixture_case0();
  char cmd[2048], *out;
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt '%s' --steps 20 --json --backend cpu 2>/dev/null",
           exe(), stories(), json_string_value(json_object_get(c, "prompt")));
  assert_int_equal(run(cmd, &out), 0);
  json_error_t err;
  json_t *j = json_loads(out, 0, &err);
  if (!j) fail_msg("not JSON: %s", out);
  assert_int_equal(json_object_size(j), 3); /* exactly prompt_ids, ids, text */
  assert_true(json_equal(json_object_get(j, "prompt_ids"), json_object_get(c, "prompt_ids")));
  json_t *ids = json_object_get(j, "ids"), *want = json_object_get(c, "greedy_ids");
  assert_int_equal(json_array_size(ids), 20);
  for (size_t i = 0; i < 20; i++)
    assert_int_equal(json_integer_value(json_array_get(ids, i)), json_integer_value(json_array_get(want, i)));
  const char *text = json_string_value(json_object_get(j, "text"));
  assert_non_null(strstr(text, "Lily"));
  json_decref(j);
  free(out);

  /* --ids gives the same continuation */
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --ids 1,403,407,261,378 --steps 20 --json --backend cpu 2>/dev/null",
           exe(), stories());
  assert_int_equal(run(cmd, &out), 0);
  j = json_loads(out, 0, &err);
  assert_non_null(j);
  assert_int_equal(json_array_size(json_object_get(j, "ids")), 20);
  for (size_t i = 0; i < 20; i++)
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "ids"), i)),
                     json_integer_value(json_array_get(want, i)));
  json_decref(j);
  free(out);

  /* streaming mode prints the prompt then the text; tokens/s go to stderr */
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt 'Once upon a time' --steps 10 --backend cpu 2>&1 >/dev/null",
           exe(), stories());
  assert_int_equal(run(cmd, &out), 0);
  assert_non_null(strstr(out, "prefill:"));
  assert_non_null(strstr(out, "decode:"));
  free(out);
  snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt 'Once upon a time' --steps 10 --backend cpu 2>/dev/null",
           exe(), stories());
  assert_int_equal(run(cmd, &out), 0);
  assert_true(strncmp(out, "Once upon a time, there was", 27) == 0);
  free(out);
  json_decref(c);
}

static void test_seeded_and_stop(void **state) {
  (void)state;
  char cmd[2048], *a, *b;
  snprintf(cmd, sizeof cmd,
           "'%s' generate --model '%s' --prompt 'Tom had' --steps 30 --temperature 1.0 --top-k 50 --top-p 0.95 "
           "--min-p 0.01 --repeat-penalty 1.1 --seed 99 --json --backend cpu 2>/dev/null",
           exe(), stories());
  assert_int_equal(run(cmd, &a), 0);
  assert_int_equal(run(cmd, &b), 0);
  assert_string_equal(a, b);
  free(a);
  free(b);
  snprintf(cmd, sizeof cmd,
           "'%s' generate --model '%s' --prompt 'Once upon a time' --steps 100 --stop 'Lily' --json --backend cpu 2>/dev/null",
           exe(), stories());
  assert_int_equal(run(cmd, &a), 0);
  json_error_t err;
  json_t *j = json_loads(a, 0, &err);
  assert_non_null(j);
  const char *text = json_string_value(json_object_get(j, "text"));
  size_t tl = strlen(text);
  assert_true(tl >= 4 && strcmp(text + tl - 4, "Lily") == 0); /* stopped at the token completing it */
  assert_true(json_array_size(json_object_get(j, "ids")) < 100);
  json_decref(j);
  free(a);
}

static void test_logits_file(void **state) {
  (void)state;
  json_t *c = fixture_case0();
  char path[] = "/tmp/qins_logits_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' logits --model '%s' --ids 1,403,407 --out '%s' --backend cpu", exe(), stories(),
           path);
  assert_int_equal(run(cmd, NULL), 0);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  float buf[3 * 512 + 1];
  size_t n = fread(buf, sizeof(float), 3 * 512 + 1, f);
  fclose(f);
  unlink(path);
  assert_int_equal(n, 3 * 512);
  json_t *l0 = json_object_get(json_object_get(c, "logits"), "0");
  float want[512];
  for (int i = 0; i < 512; i++) want[i] = (float)json_number_value(json_array_get(l0, (size_t)i));
  test_assert_close("qins logits row 0 vs llama2.c", buf, want, 512, 1e-5);
  json_decref(c);
}

static void test_exit_codes(void **state) {
  (void)state;
  char hf[1024], model[1024]; /* test_shared_path returns a static buffer: copy */
  snprintf(hf, sizeof hf, "%s", test_shared_path("fixtures/hf/phi3_longrope"));
  snprintf(model, sizeof model, "%s", stories());
  struct {
    const char *args;
    int want;
  } cases[] = {
      {"generate --ids 1,2", 2},                                    /* no model */
      {"generate --model M", 2},                                    /* neither prompt nor ids */
      {"generate --model M --ids 1,2 --prompt x", 2},               /* both */
      {"generate --model M --ids 1,,2", 2},                         /* malformed ids */
      {"generate --model M --ids 1,2 --bogus 3", 2},                /* unknown option */
      {"generate --model M --ids 1,2 --top-p 0", 2},
      {"generate --model M --ids 1,2 --temperature -1", 2},
      {"generate --model M --ids 1,2 --steps", 2},                  /* missing value */
      {"generate --model M --ids 1,99999 --backend cpu", 2},        /* outside the vocabulary */
      {"generate --model /nonexistent/x.bin --ids 1", 2},
      {"generate --model H --prompt hello --backend cpu", 2},       /* HF folder without a tokenizer */
      {"generate --model H --ids 1,2,3 --steps 3 --backend cpu", 0}, /* ids work without one */
      {"generate --model M --ids 1,2 --backend nosuch", 2},
      {"logits --model M --ids 1,2", 2},                            /* no --out */
      {"logits --model M --ids x --out /dev/null", 2},
      {"generate --help", 0},
      {"logits --help", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char args[1024], cmd[2048];
    snprintf(args, sizeof args, "%s", cases[i].args);
    /* substitute M (stories260K) and H (HF phi3 folder) */
    char expanded[1536] = "";
    for (char *tok = strtok(args, " "); tok; tok = strtok(NULL, " ")) {
      const char *t = !strcmp(tok, "M") ? model : !strcmp(tok, "H") ? hf : tok;
      snprintf(expanded + strlen(expanded), sizeof expanded - strlen(expanded), " '%s'", t);
    }
    snprintf(cmd, sizeof cmd, "'%s'%s >/dev/null 2>&1", exe(), expanded);
    int rc = run(cmd, NULL);
    if (rc != cases[i].want) fail_msg("qins %s: exit %d, expected %d", cases[i].args, rc, cases[i].want);
  }
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_generate_json_matches_fixture),
      cmocka_unit_test(test_seeded_and_stop),
      cmocka_unit_test(test_logits_file),
      cmocka_unit_test(test_exit_codes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
