#!/bin/bash
# A second queue (one thread): the two addition candidates from the long base (the last lines of
# research/ood_queue.sh), then parity's baseline and scratchpad at seeds 1 and 2. Resumable like the others.
cd "$(dirname "$0")/.."
P=".venv/bin/python research/ood_probe.py --threads 1 --surfaces many --multiline 0.4 --pretrain-steps 6000 --pretrain-examples 192000 --decode-n 20"
$P --task addition --steps 3000 --lora 32
$P --task addition --steps 3000 --mix 0.4
for seed in 1 2; do
  $P --task parity --steps 4500 --method baseline --seed $seed
  $P --task parity --steps 4500 --method scratchpad --seed $seed
done
