#!/bin/bash
# SmolLM2 learning curve (issue 27 item 5): one thread, resumable (rerun: it resumes from its last checkpoint).
cd "$(dirname "$0")/.."
OMP_NUM_THREADS=1 .venv/bin/python research/smol_curve.py --steps 3000 --every 100 --lr 1e-3 --threads 1
