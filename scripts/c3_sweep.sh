#!/bin/sh
# C3 learning-rate sweep: FP/AdamW's lr and QINS-AdamW's lr scale, each scored on a VALIDATION split
# that is neither the pilot's training data nor its held-out test data (docs/training.md, "C3 sweep").
#
# The pilot holds out the last 10% of the corpus as its test split. The sweep runs the same config
# with data.holdout=0.2: it trains on the first 80% and scores on held-out windows that start at 80%
# (eval_windows x seq tokens, well inside 80%..90%), so the test split is never seen while tuning.
#
# Usage: scripts/c3_sweep.sh [CONFIG]      (default pipelines/train/pilot.yaml)
#   QINS=build/tools/qins   the binary          OUT=runs/sweep   where runs and the table go
#   JOBS=1                  runs at a time      THREADS=         QINS_THREADS per run (default: all)
# The defaults are the sweep in docs/training.md (run there as JOBS=2 THREADS=1: about 45 minutes on
# the shared 2-core VM).
#   FP_LRS="1.5e-3 3e-3 6e-3"                   AdamW peak learning rates (empty: none)
#   QINS_LRS="3e-3"                             QINS-AdamW base lr (embeddings, q/k, norms use it as is)
#   QINS_SCALES="0.75 1.5 3 6"                  optim.qins_lr_scale values (lr of covered tensors = lr x scale)
#   STORAGE=qins8                               optim.qins_storage of the QINS runs
#   SETS="--set run.eval_every=100"             extra --set arguments for every run
# Writes OUT/<run>/train_log.jsonl, OUT/sweep.md (table) and OUT/sweep.json; prints the table.
set -e
CONFIG=${1:-pipelines/train/pilot.yaml}
Q=${QINS:-build/tools/qins}
OUT=${OUT:-runs/sweep}
JOBS=${JOBS:-1}
FP_LRS=${FP_LRS-"1.5e-3 3e-3 6e-3"}
QINS_LRS=${QINS_LRS-"3e-3"}
QINS_SCALES=${QINS_SCALES-"0.75 1.5 3 6"}
STORAGE=${STORAGE:-qins8}
SETS=${SETS-"--set run.eval_every=100"}
mkdir -p "$OUT" runs
[ -n "$THREADS" ] && export QINS_THREADS="$THREADS"

# one serial step first: builds the token shard once (concurrent runs would all try to build it)
"$Q" train "$CONFIG" --quiet $SETS --set run.steps=1 --set run.out_dir="$OUT/_shard" --set data.holdout=0.2 >/dev/null
rm -rf "$OUT/_shard"

list="$OUT/runs.txt"
: > "$list"
for lr in $FP_LRS; do echo "fp-lr$lr --set optim.kind=adamw --set optim.lr=$lr" >> "$list"; done
for lr in $QINS_LRS; do
  for s in $QINS_SCALES; do
    echo "$STORAGE-lr$lr-x$s --set optim.kind=qins-adamw --set optim.qins_storage=$STORAGE --set optim.lr=$lr --set optim.qins_lr_scale=$s" >> "$list"
  done
done

run_one() { # NAME ARGS...
  name=$1
  shift
  if [ -s "$OUT/$name/done.json" ]; then return 0; fi # finished earlier: keep (delete the folder to redo)
  rm -rf "$OUT/$name"
  # shellcheck disable=SC2086
  nice -n 10 "$Q" train "$CONFIG" --quiet $SETS "$@" --set data.holdout=0.2 --set run.out_dir="$OUT/$name" \
    > "$OUT/$name.result.tmp" 2> "$OUT/$name.err" || { echo "run $name failed: $(tail -1 "$OUT/$name.err")" >&2; return 1; }
  mv "$OUT/$name.result.tmp" "$OUT/$name/done.json"
}

# JOBS at a time: a simple slot pool of background shells
n=0
while read -r name args; do
  # shellcheck disable=SC2086
  run_one "$name" $args &
  n=$((n + 1))
  if [ "$n" -ge "$JOBS" ]; then wait; n=0; fi
done < "$list"
wait

python3 - "$OUT" "$list" <<'EOF'
import json, math, os, sys
out, lst = sys.argv[1], sys.argv[2]
rows = []
for line in open(lst):
    name, *args = line.split()
    sets = dict(a.split("=", 1) for a in args if a != "--set")
    log = os.path.join(out, name, "train_log.jsonl")
    if not os.path.exists(log):
        continue
    loss, ev, tps = {}, {}, 0.0
    for l in open(log):
        j = json.loads(l)
        if "loss" in j:
            loss[j["step"]] = j["loss"]
            tps = j.get("tokens_per_s", tps)
        elif "eval_loss" in j:
            ev[j["step"]] = j["eval_loss"]
    if not ev:
        continue
    steps = sorted(loss)
    last = steps[-1]
    tail = [loss[s] for s in steps[-20:]]
    es = sorted(ev)
    # flattening: validation loss change over the last ~100 steps (eval points at or after last-100)
    e100 = [s for s in es if s >= last - 100]
    drop100 = ev[es[-1]] - ev[e100[0]] if len(e100) > 1 else float("nan")
    rows.append(dict(run=name, kind=sets.get("optim.kind"), lr=float(sets.get("optim.lr")),
                     scale=float(sets.get("optim.qins_lr_scale", "1")) if sets.get("optim.kind") != "adamw" else None,
                     steps=last, train_loss=sum(tail) / len(tail), val_loss=ev[es[-1]],
                     val_ppl=math.exp(ev[es[-1]]), val_drop_last100=drop100, tokens_per_s=tps,
                     finite=all(math.isfinite(v) for v in loss.values())))
best = {}
for r in rows:
    k = r["kind"]
    if r["finite"] and (k not in best or r["val_loss"] < best[k]["val_loss"]):
        best[k] = r
for r in rows:
    r["best"] = best.get(r["kind"]) is r
json.dump({"runs": rows, "split": "train = first 80% of the tokens, validation = held-out windows from 80%"},
          open(os.path.join(out, "sweep.json"), "w"), indent=1)
lines = ["| run | optimizer | lr | QINS lr scale | train loss (last 20) | val loss | val ppl | val change, last 100 steps | tokens/s |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    b = "**" if r["best"] else ""
    lines.append("| %s%s%s | %s | %g | %s | %.4f | %.4f | %s%.3f%s | %+.4f | %.0f |" % (
        b, r["run"], b, r["kind"], r["lr"], "-" if r["scale"] is None else "%g" % r["scale"], r["train_loss"],
        r["val_loss"], b, r["val_ppl"], b, r["val_drop_last100"], r["tokens_per_s"]))
open(os.path.join(out, "sweep.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
for k, r in best.items():
    print("best %s: %s (val ppl %.3f)" % (k, r["run"], r["val_ppl"]))
EOF
