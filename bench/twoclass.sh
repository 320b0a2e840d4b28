#!/bin/bash
# Issue 50's two-class case (now the built-in 20ng-hardware): 20newsgroups' IBM PC vs Mac hardware posts,
# 800 pool / 300 eval texts, the default teacher; the default student (minilm-l6, LLKD, relabelled) against
# soft targets, the static student and no relabelling, seeds 0-2. Resumes; ~3 min a cell after labelling.
cd "$(dirname "$0")/.."
W=runs/hardware
mkdir -p $W
[ -f $W/test.csv ] || .venv/bin/python - <<'PY'
import pandas as pd
from llkd_edge.data import load_builtin
pair = ("comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware")
for split in ("train", "test"):
    d = load_builtin(f"20newsgroups:{split}")
    rows = [(t, g) for t, g in zip(d.texts, d.gold) if g in pair]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(f"runs/hardware/{split}.csv", index=False)
PY
L="comp.sys.ibm.pc.hardware=pc hardware,comp.sys.mac.hardware=mac hardware"
for seed in 0 1 2; do
  for variant in default soft static none; do
    out=$W/$variant-s$seed
    [ -f $out/metrics.json ] && continue
    extra=""
    [ $variant = soft ] && extra="--soft-labels"
    [ $variant = static ] && extra="--student static"
    [ $variant = none ] && extra="--relabel none"
    .venv/bin/llkd-edge distill $W/train.csv --eval $W/test.csv --labels "$L" \
      --task "Classify the newsgroup post by topic" --limit 800 --eval-limit 300 --seed $seed \
      --store $W/labels.sqlite --learning-curve off $extra --out $out --resume > $out.log 2>&1
  done
done
