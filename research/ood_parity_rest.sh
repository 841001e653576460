#!/bin/bash
# Issue 28, parity from the long base: what three seeds still need after seeds 0 (all methods) and 1 (Re-Tuning):
# Re-Tuning at seed 2 first (it trains seed 2's base), then the baseline and scratchpad at seeds 1 and 2 under the
# same base and budget. One queue: two training processes side by side are no faster on two cores than one.
# The base skill probe (--skills) is left to a later run. Resumable: rerun it and finished runs come from the
# cache.   usage: research/ood_parity_rest.sh [threads]
cd "$(dirname "$0")/.."
T="${1:-2}"
P=".venv/bin/python research/ood_probe.py --threads $T --task parity --surfaces many --multiline 0.4"
LONG="--pretrain-steps 6000 --pretrain-examples 192000 --steps 4500 --decode-n 20"
$P $LONG --loss-mean example --seed 2
for seed in 1 2; do
  $P $LONG --method baseline --seed $seed
  $P $LONG --method scratchpad --seed $seed
done
