/* `qins train-compare`: KL to a teacher, greedy agreement and cross-entropy of student models on
 * held-out windows (the C2 / distillation reports: before and after finetuning). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/train/compare.h"
#include "core/train/data.h"
#include "tools/commands.h"

static void usage(FILE *f) {
  fprintf(f, "usage: qins train-compare --teacher PATH --student LABEL=PATH [--student ...]\n"
             "                          --tokenizer TOK (--text CORPUS --shard OUT | --shard SHARD)\n"
             "                          [--holdout 0.1] [--seq 128] [--windows 32] [--out PREFIX] [--title T]\n"
             "  scores every student against the teacher on the held-out windows of the corpus:\n"
             "  KL(teacher || student) per position, greedy agreement, cross-entropy; writes PREFIX.json/.md\n");
}

#define MAX_STUDENTS 8

int cmd_train_compare(int argc, char **argv) {
  const char *teacher = NULL, *tok = NULL, *text = NULL, *shard = NULL, *out = NULL, *title = "teacher/student";
  const char *students[MAX_STUDENTS];
  int ns = 0, seq = 128, windows = 32;
  double holdout = 0.1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    }
    if (!v) {
      usage(stderr);
      return qins_cli_fail(qins_error_set(QINS_EINVAL, "train-compare: %s needs a value", a));
    }
    i++;
    if (!strcmp(a, "--teacher")) teacher = v;
    else if (!strcmp(a, "--student") && ns < MAX_STUDENTS) students[ns++] = v;
    else if (!strcmp(a, "--tokenizer")) tok = v;
    else if (!strcmp(a, "--text")) text = v;
    else if (!strcmp(a, "--shard")) shard = v;
    else if (!strcmp(a, "--out")) out = v;
    else if (!strcmp(a, "--title")) title = v;
    else if (!strcmp(a, "--holdout")) holdout = atof(v);
    else if (!strcmp(a, "--seq")) seq = atoi(v);
    else if (!strcmp(a, "--windows")) windows = atoi(v);
    else {
      usage(stderr);
      return qins_cli_fail(qins_error_set(QINS_EINVAL, "train-compare: unexpected argument '%s'", a));
    }
  }
  if (!teacher || !ns || !tok || !shard || seq < 1 || windows < 1) {
    usage(stderr);
    return qins_cli_fail(qins_error_set(QINS_EINVAL, "train-compare: --teacher, --student, --tokenizer and --shard are required"));
  }
  int rc = 0;
  if (text && (rc = qins_shard_build(text, tok, shard, NULL))) return qins_cli_fail(rc);
  qins_shard *s = NULL;
  if ((rc = qins_shard_open(shard, tok, &s))) return qins_cli_fail(rc);
  qins_data_split tr, ho;
  if ((rc = qins_data_split_make(s, holdout, seq, &tr, &ho))) {
    qins_shard_close(s);
    return qins_cli_fail(rc);
  }
  json_t *j = json_object(), *arr = json_array();
  json_object_set_new(j, "title", json_string(title));
  json_object_set_new(j, "teacher", json_string(teacher));
  json_object_set_new(j, "data", json_string(shard));
  json_object_set_new(j, "seq", json_integer(seq));
  qins_agreement ag[MAX_STUDENTS];
  char labels[MAX_STUDENTS][64];
  for (int k = 0; k < ns && !rc; k++) {
    const char *eq = strchr(students[k], '=');
    const char *path = eq ? eq + 1 : students[k];
    snprintf(labels[k], sizeof labels[k], "%.*s", eq ? (int)(eq - students[k]) : 63, students[k]);
    if ((rc = qins_train_compare(teacher, path, &ho, seq, windows, &ag[k]))) break;
    json_array_append_new(arr, json_pack("{s:s,s:s,s:f,s:f,s:f,s:f,s:I}", "label", labels[k], "path", path, "kl",
                                         ag[k].kl, "greedy_agreement", ag[k].agree, "teacher_loss", ag[k].teacher_loss,
                                         "student_loss", ag[k].student_loss, "positions", (json_int_t)ag[k].positions));
    fprintf(stderr, "%s: KL %.5f  agreement %.4f  loss %.4f (teacher %.4f)\n", labels[k], ag[k].kl, ag[k].agree,
            ag[k].student_loss, ag[k].teacher_loss);
  }
  qins_shard_close(s);
  json_object_set_new(j, "students", arr);
  if (!rc && out) {
    char p[1024];
    snprintf(p, sizeof p, "%s.json", out);
    if (json_dump_file(j, p, JSON_INDENT(2))) rc = qins_error_set(QINS_EIO, "%s: write failed", p);
    snprintf(p, sizeof p, "%s.md", out);
    FILE *f = rc ? NULL : fopen(p, "w");
    if (!rc && !f) rc = qins_error_set(QINS_EIO, "%s: cannot create", p);
    if (f) {
      fprintf(f, "# %s\n\nTeacher: `%s`. Held-out windows of `%s`, %d positions each.\n\n", title, teacher, shard, seq);
      fprintf(f, "| student | KL(teacher ∥ student) | greedy agreement | student loss | teacher loss |\n|---|---|---|---|---|\n");
      for (int k = 0; k < ns; k++)
        fprintf(f, "| %s | %.5f | %.2f%% | %.4f | %.4f |\n", labels[k], ag[k].kl, 100 * ag[k].agree,
                ag[k].student_loss, ag[k].teacher_loss);
      fclose(f);
    }
  }
  if (!rc) {
    char *d = json_dumps(j, JSON_COMPACT);
    printf("%s\n", d);
    free(d);
  }
  json_decref(j);
  return rc ? qins_cli_fail(rc) : 0;
}
