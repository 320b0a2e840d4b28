#!/bin/bash
# election-tweets: the default student with the probe (new default: the signal test lets it run) vs without it
# (the old default there: answer information under 0.10 skipped it); the frontier's store and settings.
cd "$(dirname "$0")/.."
for seed in 0 1 2; do
  for relabel in probe none; do
    out=runs/signal_students/election-tweets-$relabel-s$seed
    [ -f $out/metrics.json ] && continue
    .venv/bin/llkd-edge distill election-tweets --limit 600 --eval-limit 200 --seed $seed --relabel $relabel \
      --store runs/frontier/election-tweets/labels.sqlite --out $out --resume > $out.log 2>&1
  done
done
