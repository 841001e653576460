#!/bin/bash
# Issue 28, addition: full fine-tuning from the long base with its embeddings and lowest 2 of 4 decoder layers
# frozen (train.frozen_layers), against the same fine-tune unfrozen (addition+generic-pretrain+retuning-914318fe…)
# and LoRA (…61c1cc6c…): can fine-tuning keep the base's low-level reading while it learns the task above it?
# Resumable: rerun it and finished runs come from the cache.   usage: research/ood_frozen.sh [threads]
cd "$(dirname "$0")/.."
T="${1:-2}"
.venv/bin/python research/ood_probe.py --threads $T --task addition --surfaces many --multiline 0.4 \
  --pretrain-steps 6000 --pretrain-examples 192000 --steps 3000 --decode-n 20 --frozen 2
