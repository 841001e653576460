"""Training throughput of the tiny model with and without `torch.compile` (the Trainer's `torch_compile`), one run
each on the same data, one after the other in one process tree.

    .venv/bin/python benchmarks/compile.py [--steps 1500] [--threads 1]
    .venv/bin/python benchmarks/compile.py --quick     # 2 steps each, a few problems: checks it runs, no measurement

Each run is a real `retune.training.fine_tune.train` (cache off: a fresh runs directory) on Re-Tuning addition 1-6 digits, the
`cpu` profile's fine-tuning batch (32, grouped by length). The compiled run's time includes compiling (and any
recompiles for new sequence lengths): that is what a piece of the main job would pay. The last printed line is
JSON with `ratio`: compiled tokens/s over eager tokens/s, and each run's final training loss."""
import argparse
import json
import tempfile
from pathlib import Path

from retune.data import datasets as data
from retune.training import fine_tune as T
from retune.training import trainer


EAGER_ARGUMENTS = trainer.training_arguments


def compiled_arguments(backend: str):
    def arguments(config, output_dir, cuda):
        args = EAGER_ARGUMENTS(config, output_dir, cuda)
        args.torch_compile, args.torch_compile_backend = True, backend  # set after __post_init__: name the backend
        return args
    return arguments


def one_run(dataset: Path, runs: Path, steps: int, backend: str | None) -> dict:
    """One training run, compiled with `backend` (None: eager)."""
    trainer.training_arguments = compiled_arguments(backend) if backend else EAGER_ARGUMENTS
    config = T.TrainConfig(max_steps=steps, batch_size=32, lr=1e-3, warmup_steps=min(50, steps // 10), seed=0,
                           progress=False, save_steps=10 ** 6)
    measured = json.loads((T.train("tiny", [dataset], config, runs) / "measurements.json").read_text())
    return {"tokens_per_s": round(measured["tokens_per_s"]), "train_loss": round(measured["train_loss"], 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="inductor", help="torch.compile's backend for the compiled run")
    ap.add_argument("--quick", action="store_true",
                    help="2 steps, 24 problems, the `eager` backend (no C++ compile): checks the script in seconds")
    args = ap.parse_args()
    per_size = 200
    if args.quick:
        args.steps, args.backend, per_size = 2, "eager", 4
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "addition-retuning.jsonl"
        data.make("addition", "retuning", dataset, "scaled", (1, 6), per_size, 0, progress=False)
        eager = one_run(dataset, Path(tmp) / "eager", args.steps, None)
        compiled = one_run(dataset, Path(tmp) / "compiled", args.steps, args.backend)
    print(json.dumps({"quick": args.quick, "steps": args.steps, "threads": args.threads, "backend": args.backend,
                      "eager": eager, "compiled": compiled,
                      "ratio": round(compiled["tokens_per_s"] / eager["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
