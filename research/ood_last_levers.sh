#!/bin/bash
# Issue 28, addition: the two levers of the issue's list not yet measured, from the long base, full fine-tuning
# 3000 steps as in addition+generic-pretrain+retuning-914318fe…: 40 % rehearsal instead of 15 %, and a learning
# rate of 3e-4 instead of 1e-3 (fine-tuning that moves the base less). Resumable like the others.
cd "$(dirname "$0")/.."
T="${1:-2}"
P=".venv/bin/python research/ood_probe.py --threads $T --task addition --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20"
$P --mix 0.4
$P --lr 3e-4
