#!/bin/bash
# Issue 28, parity from the long base: the other seeds of Re-Tuning (each seed pre-trains its own base) and the
# baseline and scratchpad under the same base and budget. Resumable: rerun and finished runs come from the cache.
# usage: research/ood_parity_seeds.sh A|B   (two queues, one thread each)
cd "$(dirname "$0")/.."
P=".venv/bin/python research/ood_probe.py --threads 1 --task parity --surfaces many --multiline 0.4"
LONG="--pretrain-steps 6000 --pretrain-examples 192000 --steps 4500 --decode-n 20"
case "$1" in
  A) $P $LONG --loss-mean example --seed 1 --skills
     $P $LONG --loss-mean example --seed 2 --skills ;;
  B) $P $LONG --method baseline --seed 0
     $P $LONG --method scratchpad --seed 0 ;;
esac
