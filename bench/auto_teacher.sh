#!/bin/bash
# Issue 47: `distill --teacher auto` (labels/teacher_choice.py: the LLM and the encoder teacher label the pool; their
# pool, the encoder weighted 2, where they agree beyond chance, else the LLM) against today's default teacher (the
# LLM alone), the default student otherwise (minilm-l6, LLKD, relabelled, random head at 3e-4), paired: the same
# pool, test texts and seed as bench/probe_head.sh's `random` cells, whose label stores are copied here first (the
# LLM's rows are read back, the encoder's are added: seconds). Seeds in the outer loop; resumes.
# Then `autoprobe`: --teacher auto with the probe head (--head probe --learning-rate 1e-4, probe_head.sh's `probe`),
# seed 0, on the sets where the student stayed far under the pooled teacher or fell.
#     bash bench/auto_teacher.sh; .venv/bin/python -m bench.auto_teacher_report
cd "$(dirname "$0")/.."
W=runs/auto_teacher
mkdir -p $W
SETS="20newsgroups bbc-news 20ng-hardware reuters-r8 election-tweets slo-sentiment"
for ds in $SETS; do [ -f $W/labels-$ds.sqlite ] || cp runs/probe_head/labels-$ds.sqlite $W/labels-$ds.sqlite; done
run() {  # dataset seed [variant]
  local ds=$1 seed=$2 variant=${3:-auto} size="--limit 600 --eval-limit 200" head="--head random --learning-rate 3e-4"
  local out=$W/$1-$variant-s$2
  [ -f $out/metrics.json ] && return
  [ $ds = 20ng-hardware ] && size="--limit 800 --eval-limit 300"
  [ $variant = autoprobe ] && head="--head probe --learning-rate 1e-4"
  .venv/bin/llkd-edge distill $ds $size --seed $seed --store $W/labels-$ds.sqlite --learning-curve off --teacher auto \
    $head --out $out --resume > $out.log 2>&1 || echo "failed: $out (see $out.log)"
}
# seeds 0-1 (slo-sentiment: seed 0 only; auto takes the LLM there, so its labels are its pair's)
for seed in 0 1; do for ds in $SETS; do [ $ds = slo-sentiment ] && [ $seed = 1 ] || run $ds $seed; done; done
for ds in 20newsgroups bbc-news reuters-r8 election-tweets; do run $ds 0 autoprobe; done
for ds in bbc-news 20newsgroups reuters-r8 20ng-hardware election-tweets; do
  bash bench/probe_head.sh random 2 $ds  # the baseline's seed 2 (seeds 0-1 are done there), then auto's
  run $ds 2
done
