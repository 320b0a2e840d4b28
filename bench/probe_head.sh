#!/bin/bash
# Issue 50 part 2: the default student (minilm-l6) with its head started as a probe of its own features
# (`--head probe`, learning rate 1e-4) against the random head it had (`--head random`, 3e-4), paired: the same
# label store, pool, test texts and seed for both, in the frontier's small-pool protocol (600 pool / 200 test
# texts) and, for the built-in two-class case 20ng-hardware, bench/twoclass.sh's 800/300. Seeds in the outer loop,
# so a cut-off study still holds whole seeds. Resumes (finished cells are kept; labels persist per set).
# Then head and rate apart, seeds 0-1: the probe head at the random head's 3e-4 (probe3) and the random head at the
# probe's 1e-4 (random1, seed 0 only: it answered the rate question there), on the same stores and seeds (probe3
# first); seed 2 of the main pair and of probe3 last.
#     bash bench/probe_head.sh; .venv/bin/python -m bench.probe_head_report
# (bench/auto_teacher.sh runs `bash bench/probe_head.sh random 2 SET` for its seed-2 baseline)
cd "$(dirname "$0")/.."
W=runs/probe_head
mkdir -p $W
run() {  # dataset variant seed
  local ds=$1 variant=$2 seed=$3 out=$W/$1-$2-s$3 size="--limit 600 --eval-limit 200"
  [ -f $out/metrics.json ] && return
  [ $ds = 20ng-hardware ] && size="--limit 800 --eval-limit 300"
  case $variant in
    probe) extra="--head probe --learning-rate 1e-4";;
    random) extra="--head random --learning-rate 3e-4";;
    probe3) extra="--head probe --learning-rate 3e-4";;
    random1) extra="--head random --learning-rate 1e-4";;
  esac
  .venv/bin/llkd-edge distill $ds $size --seed $seed --store $W/labels-$ds.sqlite --learning-curve off $extra \
    --out $out --resume > $out.log 2>&1 || echo "failed: $out (see $out.log)"
}
SETS="20newsgroups bbc-news 20ng-hardware reuters-r8 election-tweets slo-sentiment"
# one variant and seed, on every set or the one named: `probe_head.sh random 2 [bbc-news]`
if [ $# -ge 2 ]; then for ds in ${3:-$SETS}; do run $ds $1 $2; done; exit; fi
for seed in 0 1; do for ds in $SETS; do for variant in random probe; do run $ds $variant $seed; done; done; done
for seed in 0 1; do for ds in $SETS; do run $ds probe3 $seed; done; done
for ds in $SETS; do run $ds random1 0; done
for ds in $SETS; do for variant in random probe3 probe; do run $ds $variant 2; done; done
