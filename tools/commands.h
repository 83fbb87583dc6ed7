/* The `qins` subcommands: each lives in its own tools/cmd_*.c and returns a process exit code. */
#ifndef QINS_TOOLS_COMMANDS_H
#define QINS_TOOLS_COMMANDS_H

typedef struct qins_command {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
} qins_command;

/* Print "qins: <msg>" for the current error and return the exit code for it. */
int qins_cli_fail(int rc);

int cmd_backends(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_worker(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_codec_report(int argc, char **argv);
int cmd_gate(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_train_compare(int argc, char **argv);
/* The C3 pilot (tools/cmd_train.c): three runs of a train config and PREFIX.{json,md,svg};
 * returns 0 or a QINS_E* code (also used by `qins gate C3`). */
int qins_cli_train_pilot(const char *config, const char **sets, int n_sets, const char *prefix, int report_only,
                         int quiet, int transport);
/* The running pilot's training document for the dashboard (monitor provider): {"step", "total_steps",
 * "loss", "lr", "run", "tokens_per_s"} of the running run and "runs": [{"name", "state", "step",
 * "total_steps", "loss", "eval_loss", "tokens_per_s"}] of all three; NULL before a pilot starts. */
char *qins_cli_pilot_training_json(void *ctx);

#endif
