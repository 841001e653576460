"""Training throughput of the tiny model: one process with two torch threads against two one-thread processes
side by side (what the `cpu` profile's `workers: 2` does), measured in one run on the same data.

    .venv/bin/python benchmarks/workers.py [--steps 150] [--threads 2]
    .venv/bin/python benchmarks/workers.py --quick     # 2 steps a run on a few problems: checks it runs

Each run is a real `retune.training.fine_tune.train` (Trainer, cache off: a fresh runs directory) on Re-Tuning addition 1-6
digits; tokens/s is the run's own measurement. The last printed line is JSON with `ratio`: the two processes'
summed tokens/s over the one process's."""
import argparse
import json
import multiprocessing
import tempfile
from pathlib import Path

from retune.data import datasets as data
from retune.training.fine_tune import TrainConfig, train


def one_run(job: tuple) -> float:
    dataset, runs, steps, threads, seed = job
    import torch

    torch.set_num_threads(threads)
    config = TrainConfig(max_steps=steps, batch_size=32, lr=1e-3, warmup_steps=min(10, steps // 10), seed=seed,
                         progress=False, save_steps=10 ** 6)
    run_dir = train("tiny", [dataset], config, runs)
    return json.loads((run_dir / "measurements.json").read_text())["tokens_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 steps a run on 24 problems: checks the script")
    args = ap.parse_args()
    per_size = 200
    if args.quick:
        args.steps, per_size = 2, 4
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "addition-retuning.jsonl"
        data.make("addition", "retuning", dataset, "scaled", (1, 6), per_size, 0, progress=False)
        one = one_run((dataset, Path(tmp) / "one", args.steps, args.threads, 0))
        with multiprocessing.get_context("spawn").Pool(args.threads) as pool:
            side = pool.map(one_run, [(dataset, Path(tmp) / f"side{i}", args.steps, 1, i)
                                      for i in range(args.threads)])
    result = {"quick": args.quick, "steps": args.steps, "one_process_threads": args.threads,
              "one_process_tokens_per_s": round(one),
              "side_by_side_tokens_per_s": [round(t) for t in side], "ratio": round(sum(side) / one, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
