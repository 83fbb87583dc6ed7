/* The `qins` command line: finds the subcommand and runs it. Exit codes: 0 ok, 1 failure, 2 bad input. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "tools/commands.h"

static const qins_command commands[] = {
    {"backends", "list compute backends and devices on this machine", cmd_backends},
    {"monitor", "serve the live dashboard (--demo pipeline, or --connect to a running one)", cmd_monitor},
    {"run", "validate and run a pipeline YAML (workers, channels, supervision)", cmd_run},
    {"worker", "join a running pipeline from another host (--connect tcp://HOST:PORT)", cmd_worker},
    {"generate", "generate text from a prompt (greedy or sampled), streaming", cmd_generate},
    {"logits", "write the logits of one forward over given ids (raw f32)", cmd_logits},
    {"inspect", "show a model's format, config and tensors", cmd_inspect},
    {"tokenize", "text to token ids with a tokenizer (tokenizer.json, GPT-2, llama2.c)", cmd_tokenize},
    {"detokenize", "token ids to text", cmd_detokenize},
    {"convert", "encode a model's weights by a coverage policy into a QINS safetensors folder", cmd_convert},
    {"gate", "run a gate of the plan (A1..C1) and write its report (json, md, svg)", cmd_gate},
    {"train", "train a model from a YAML config (AdamW / QINS-AdamW, checkpoints, exact resume)", cmd_train},
    {"train-compare", "KL to a teacher and greedy agreement of student models (C2, distillation)", cmd_train_compare},
    {"codec-report", "A1: every weight through every storage format and back, measured", cmd_codec_report},
};

static void usage(FILE *out) {
  fprintf(out, "usage: qins COMMAND [options]   (qins COMMAND --help for each)\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %-14s %s\n", commands[i].name, commands[i].summary);
  fprintf(out, "\nexit status: 0 ok, 1 failure, 2 bad usage or bad input\n");
}

int qins_cli_fail(int rc) {
  fprintf(stderr, "qins: %s\n", qins_error_msg());
  return qins_error_exit_code(rc);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "qins: unknown command '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
