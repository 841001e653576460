#!/bin/bash
# Issue 28 candidates, one after another on one thread; resumable (rerun: finished runs come from the cache and
# are only probed again). research/RESULTS.md has each one's numbers.
cd "$(dirname "$0")/.."
P=".venv/bin/python research/ood_probe.py --threads 1"
$P --task addition --surfaces many --multiline 0.4 --steps 1500
$P --task addition --surfaces many --multiline 0.4 --steps 1500 --lora 32
$P --task addition --surfaces many --multiline 0.4 --steps 3000 --decode-n 20
$P --task parity --surfaces many --multiline 0.4 --steps 4500 --loss-mean example --decode-n 20
$P --task addition --surfaces many --multiline 0 --steps 3000 --decode-n 20
$P --task addition --surfaces one --multiline 0 --steps 3000 --decode-n 20
# A base trained until its skills hold across its range: 6000 steps on 192,000 examples (2x the steps, one epoch)
$P --task parity --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --skills --steps 4500 --loss-mean example --decode-n 20
$P --task addition --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20
# Addition from the long base with fine-tuning that cannot rewrite the base as freely: LoRA r=32 on every linear
# layer; then full fine-tuning with more rehearsal (40 % generic examples in every fine-tuning set)
$P --task addition --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20 --lora 32
$P --task addition --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20 --mix 0.4
