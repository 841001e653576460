"""Training throughput of the tiny model with and without `torch.compile` (the Trainer's `torch_compile`), one run
each on the same data, one after the other in one process tree.

    .venv/bin/python benchmarks/compile.py [--steps 1500] [--threads 1]

Each run is a real `retune.train.train` (cache off: a fresh runs directory) on Re-Tuning addition 1-6 digits, the
`cpu` profile's fine-tuning batch (32, grouped by length). The compiled run's time includes compiling (and any
recompiles for new sequence lengths): that is what a piece of the main job would pay. The last printed line is
JSON with `ratio`: compiled tokens/s over eager tokens/s, and each run's final training loss."""
import argparse
import json
import tempfile
from pathlib import Path

from retune import data
from retune import train as T


EAGER_ARGUMENTS = T.training_arguments


def compiled_arguments(config, output_dir, cuda):
    args = EAGER_ARGUMENTS(config, output_dir, cuda)
    args.torch_compile, args.torch_compile_backend = True, "inductor"  # set after __post_init__: name the backend
    return args


def one_run(dataset: Path, runs: Path, steps: int, compiled: bool) -> dict:
    T.training_arguments = compiled_arguments if compiled else EAGER_ARGUMENTS
    config = T.TrainConfig(max_steps=steps, batch_size=32, lr=1e-3, warmup_steps=50, seed=0, progress=False,
                           save_steps=10 ** 6)
    measured = json.loads((T.train("tiny", [dataset], config, runs) / "measurements.json").read_text())
    return {"tokens_per_s": round(measured["tokens_per_s"]), "train_loss": round(measured["train_loss"], 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "addition-retuning.jsonl"
        data.make("addition", "retuning", dataset, "scaled", (1, 6), 200, 0, progress=False)
        eager = one_run(dataset, Path(tmp) / "eager", args.steps, compiled=False)
        compiled = one_run(dataset, Path(tmp) / "compiled", args.steps, compiled=True)
    print(json.dumps({"steps": args.steps, "threads": args.threads, "eager": eager, "compiled": compiled,
                      "ratio": round(compiled["tokens_per_s"] / eager["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
