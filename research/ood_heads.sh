#!/bin/bash
# Issue 28, addition: the combine step fails beyond the trained 6 digits while its copy of the returned digits
# holds (at 10 digits, `Carry 1, Output 5695620731` comes out `Carry 1, Output 3695620731`): the one digit it
# computes reads the operands' leading digits from the problem line above, and that reading is what fine-tuning
# binds to the trained lengths. Candidate: the long base plus multi-line first-items requests (heads 0.2: name
# the first item of each of two sequences on a line above, lengths 2-24), then the same fine-tune as before.
# Resumable: rerun it and finished runs come from the cache.   usage: research/ood_heads.sh [threads]
cd "$(dirname "$0")/.."
T="${1:-2}"
P=".venv/bin/python research/ood_probe.py --threads $T --task addition --surfaces many --multiline 0.4 --heads 0.2"
LONG="--pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20"
$P $LONG
