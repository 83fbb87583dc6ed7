#!/bin/sh
# C2: convert stories260K to QINS compute (qins8 on v/o/MLP) and finetune it on text the FP teacher
# samples; report KL to the teacher, greedy agreement and loss before and after (reports/C2.*), on the
# teacher's samples and on the corpus (reports/*-corpus.*); distil on the samples and on the corpus.
# Usage: scripts/c2.sh [--set key=value ...]   (QINS=path/to/qins, C2_SAMPLES=N teacher samples,
#        C2_SKIP_FINETUNE=1 / C2_SKIP_DISTILL=1 to run one half)
set -e
Q=${QINS:-build/tools/qins}
M=../shared/models/stories260K/stories260K.bin
TOK=../shared/models/stories260K/tok512.bin
N=${C2_SAMPLES:-300}
CORPUS=../shared/data/tinyshakespeare.txt          # the project corpus: text the teacher did not write
CORPUS_SHARD=runs/tinyshakespeare.tok512.shard
mkdir -p data runs reports
if [ ! -s data/teacher_stories.txt ]; then
  echo "sampling $N stories from the teacher (temperature 1) into data/teacher_stories.txt" >&2
  : > data/teacher_stories.txt.tmp
  for s in $(seq 1 "$N"); do
    "$Q" generate --model "$M" --prompt "Once upon a time" --temperature 1 --steps 256 --seed "$s" --backend cpu \
      2>/dev/null >> data/teacher_stories.txt.tmp
    printf '\n\n' >> data/teacher_stories.txt.tmp
  done
  mv data/teacher_stories.txt.tmp data/teacher_stories.txt
fi
if [ "${C2_SKIP_FINETUNE:-0}" != 1 ]; then
"$Q" train pipelines/train/finetune.yaml "$@" > runs/finetune.result.json
cat runs/finetune.result.json
LAST=$(sed -n 's/.*"checkpoint": "\([^"]*\)".*/\1/p' runs/finetune.result.json)
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/finetune/ckpt-000000" \
  --student "qins8 finetuned (after)=$LAST" --tokenizer "$TOK" --shard runs/teacher_stories.tok512.shard \
  --seq 128 --windows 64 --out reports/C2 --title "C2: stories260K in QINS compute, before/after finetuning"
# the same students on the corpus (held-out 10% of tinyshakespeare): text the teacher did not write
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/finetune/ckpt-000000" \
  --student "qins8 finetuned (after)=$LAST" --tokenizer "$TOK" --text "$CORPUS" --shard "$CORPUS_SHARD" \
  --seq 128 --windows 64 --out reports/C2-corpus --title "C2 on the corpus (tinyshakespeare held-out): before/after finetuning"
fi

# Distillation: the same student trained on KL(teacher || student) (+ ce * CE), pipelines/train/distill.yaml
[ "${C2_SKIP_DISTILL:-0}" = 1 ] && exit 0
"$Q" train pipelines/train/distill.yaml "$@" > runs/distill.result.json
cat runs/distill.result.json
LAST=$(sed -n 's/.*"checkpoint": "\([^"]*\)".*/\1/p' runs/distill.result.json)
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/distill/ckpt-000000" \
  --student "qins8 distilled (after)=$LAST" --tokenizer "$TOK" --shard runs/teacher_stories.tok512.shard \
  --seq 128 --windows 64 --out reports/distill --title "Distillation: FP stories260K into its qins8 QINS student"
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/distill/ckpt-000000" \
  --student "qins8 distilled (after)=$LAST" --tokenizer "$TOK" --text "$CORPUS" --shard "$CORPUS_SHARD" \
  --seq 128 --windows 64 --out reports/distill-corpus --title "Distillation, scored on the corpus (tinyshakespeare held-out)"

# Distillation on the corpus: the same student distilled on tinyshakespeare's training split instead of
# the teacher's samples, scored on both held-out sets
"$Q" train pipelines/train/distill.yaml "$@" --set run.out_dir=runs/distill-corpus --set data.text="$CORPUS" \
  --set data.shard="$CORPUS_SHARD" > runs/distill-corpus.result.json
cat runs/distill-corpus.result.json
LAST=$(sed -n 's/.*"checkpoint": "\([^"]*\)".*/\1/p' runs/distill-corpus.result.json)
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/distill-corpus/ckpt-000000" \
  --student "qins8 distilled on the corpus (after)=$LAST" --tokenizer "$TOK" --text "$CORPUS" --shard "$CORPUS_SHARD" \
  --seq 128 --windows 64 --out reports/distill-on-corpus --title "Distilled on the corpus, scored on the corpus (tinyshakespeare held-out)"
"$Q" train-compare --teacher "$M" --student "qins8 conversion (before)=runs/distill-corpus/ckpt-000000" \
  --student "qins8 distilled on the corpus (after)=$LAST" --tokenizer "$TOK" --shard runs/teacher_stories.tok512.shard \
  --seq 128 --windows 64 --out reports/distill-on-corpus-samples --title "Distilled on the corpus, scored on teacher samples"
