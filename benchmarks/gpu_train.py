"""GPU check of the training path: a ~100M-parameter tiny LLaMA (random init from a config, character vocabulary;
nothing downloaded) trained on Re-Tuning addition with full fine-tuning and with the paper's LoRA adapter.

    python3 benchmarks/gpu_train.py [--steps 300] [--batch-size 32] [--out DIR]
    .venv/bin/python benchmarks/gpu_train.py --small      # CPU dry run: hidden 64, 2 layers, 5 steps
    .venv/bin/python benchmarks/gpu_train.py --quick      # --small with 2 steps on 4 problems a size: seconds
    python3 benchmarks/gpu_train.py --profile smol [--runs addition:retuning,...] [--warmup 10] [--steps 40]

Prints one JSON line per run (steps, tokens/s, examples/s, peak CUDA memory from measurements.json, wall time,
whether CUDA and bf16 were used) and a final JSON line with the environment. Results: gpu_train_results.md.

With --profile the runs are a profile's own (e.g. smol: SmolLM2-135M, its LoRA adapter, batch, bf16 autocast, its
training data for each task:method of --runs; `--set KEY=YAML` as for `retune reproduce`): --warmup steps untimed,
then --steps timed (the GPU synchronized at both ends), and a last JSON line states what the profile's whole
training would take at the measured step times (every run of `retune.training.runs.all_runs` at its max_steps)."""
import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a bare checkout (no pip install)

import torch  # noqa: E402

from retune.data import datasets as data  # noqa: E402
from retune.config.bounds import MAX_STEPS  # noqa: E402  (checkpoints: never within a run)
from retune.models.causal_lm import TinyConfig, tiny_llama, with_lora  # noqa: E402
from retune.training.fine_tune import TrainConfig, train  # noqa: E402
from retune.training.trainer import on_cuda, training_arguments  # noqa: E402

# ~103M parameters: 12 x (4 * 768^2 attention + 3 * 768 * 2688 MLP); the 103-token vocabulary adds only 79k.
MODEL_100M = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 2688}
MODEL_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
LORA = {"r": 64, "lora_alpha": 64, "lora_dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def step_timer(warmup: int, last: int):
    """A Trainer callback timing the optimizer steps after `warmup` (synchronized at the first timed step's start
    and the last step's end; the steps between are stamped unsynchronized, for their median)."""
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup or state.global_step == last:
                sync()
            if state.global_step >= warmup:
                self.stamps.append(time.perf_counter())

    return StepTimer()


def profile_runs(args) -> None:
    """Time the profile's own recipe on its model and data (see the module's docstring)."""
    from statistics import median

    from retune.training import runs as R
    from retune.config.profiles import load_profile
    from retune.settings import parse_sets
    from retune.training.fine_tune import make_config

    if args.warmup < 1:
        raise SystemExit("gpu_train: --warmup must be at least 1 (the first step's end starts the clock)")
    profile = load_profile(args.profile, parse_sets(args.set))
    R.use_threads(profile)
    steps = args.steps or 40
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_train_"))
    cuda = torch.cuda.is_available()
    timed = []
    for item in args.runs.split(","):
        task, _, method = item.partition(":")
        description = R.describe(profile, R.spec_for(profile, task, method))  # builds its data, fetches the model
        config = make_config({"max_steps": args.warmup + steps, "save_steps": MAX_STEPS, "progress": False,
                              "logging_steps": max(steps // 4, 1)}, description.config)
        timer = step_timer(args.warmup, args.warmup + steps)
        start = time.perf_counter()
        run_dir = train(description.base, list(description.datasets), config, out / "runs",
                        description.model_config, callbacks=[timer])
        wall = time.perf_counter() - start
        if len(timer.stamps) != steps + 1:
            raise SystemExit(f"gpu_train: {len(timer.stamps)} step stamps for {steps} timed steps (a cached run? "
                             f"give a fresh --out; {run_dir})")
        m = json.loads((run_dir / "measurements.json").read_text())
        step_s = (timer.stamps[-1] - timer.stamps[0]) / steps
        gaps = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]
        row = {"run": item, "model": profile.model.source, "warmup_steps_untimed": args.warmup, "timed_steps": steps,
               "step_s": round(step_s, 4), "step_s_median_unsynced": round(median(gaps), 4),
               "steps_per_s": round(1 / step_s, 2), "batch_size": config.batch_size, "grad_accum": config.grad_accum,
               "lora": config.lora, "bf16": bool(training_arguments(config, out / "x", on_cuda(config.device)).bf16),
               "tokens_per_batch_mean": m["tokens_per_batch"]["mean"], "padding_fraction": m["padding_fraction"],
               "cuda_max_allocated_mb": m.get("cuda_max_allocated_mb"), "rss_peak_mb": m["rss_peak_mb"],
               "train_seconds_all_steps": m["train_seconds"], "wall_seconds": round(wall, 2),
               "first_loss": m["losses"][0][1] if m["losses"] else None,
               "last_loss": m["losses"][-1][1] if m["losses"] else None, "device": m["device"], "cuda": cuda}
        timed.append(row)
        print(json.dumps(row), flush=True)

    stated = load_profile(args.profile)  # the profile as written: its own budgets, not --set's
    budgets = [R.train_config(stated, spec.seed, spec.task, spec.method).max_steps for spec in R.all_runs(stated)]
    fastest, slowest = min(r["step_s"] for r in timed), max(r["step_s"] for r in timed)
    print(json.dumps({"estimate": f"profile {stated.profile}: {len(budgets)} runs, {sum(budgets)} optimizer steps "
                                  f"of training at the measured {fastest:.3f}-{slowest:.3f} s a step "
                                  f"(measured on {args.runs} only; evaluation and notebooks not included)",
                      "runs": len(budgets), "total_steps": sum(budgets),
                      "training_hours_low": round(sum(budgets) * fastest / 3600, 2),
                      "training_hours_high": round(sum(budgets) * slowest / 3600, 2)}), flush=True)
    env = {"python": platform.python_version(), **m["versions"], "cuda_available": cuda}
    if cuda:
        env |= {"gpu": torch.cuda.get_device_name(0), "cuda_runtime": torch.version.cuda}
    print(json.dumps({"env": env}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true", help="CPU dry run: a tiny model and 5 steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--per-size", type=int, default=200, help="addition problems per digit count (1-8)")
    ap.add_argument("--out", default=None, help="where data and runs go (default: a temporary directory)")
    ap.add_argument("--runs", default=None, help="comma-separated: full, lora; with --profile task:method pairs "
                                                 "(default addition:retuning)")
    ap.add_argument("--profile", default=None, help="time this profile's recipe, model and data instead")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="with --profile: override a key")
    ap.add_argument("--warmup", type=int, default=10, help="with --profile: untimed steps first")
    ap.add_argument("--quick", action="store_true", help="--small, 2 steps, 4 problems a size: checks the script")
    args = ap.parse_args()
    if args.quick:
        args.small, args.steps, args.per_size = True, args.steps or 2, 4
    if args.profile:
        args.runs = args.runs or "addition:retuning"
        return profile_runs(args)
    args.runs = args.runs or "full,lora"
    steps = args.steps or (5 if args.small else 300)
    model_config = MODEL_SMALL if args.small else MODEL_100M
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_train_"))
    cuda = torch.cuda.is_available()

    path = out / "addition_retuning.jsonl"
    manifest = data.make("addition", "retuning", path, "scaled", (1, 8), args.per_size, 0, progress=False)
    n_params = sum(p.numel() for p in tiny_llama(TinyConfig(**model_config)).parameters())
    lora_trainable, _ = with_lora(tiny_llama(TinyConfig(**model_config)), dict(LORA)).get_nb_trainable_parameters()
    print(json.dumps({"data": str(path), "records": manifest["records"],
                      "model_config": model_config, "params_M": round(n_params / 1e6, 2),
                      "lora_trainable_M": round(lora_trainable / 1e6, 2)}), flush=True)

    settings = {
        # Full fine-tuning of a from-scratch 100M model: a gentler lr with warm-up.
        "full": dict(lora=False, lr=3e-4, warmup_steps=min(30, steps // 10)),
        # The paper's adapter (r=64, alpha=64, dropout .05 on q/k/v/o); 'tiny' bases default to full FT, so explicit.
        "lora": dict(lora=dict(LORA), lr=1e-3, warmup_steps=min(30, steps // 10)),
    }
    for name in args.runs.split(","):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
        config = TrainConfig(max_steps=steps, batch_size=args.batch_size, save_steps=MAX_STEPS, logging_steps=max(steps // 6, 1),
                             progress=False, bf16="auto", **settings[name])
        start = time.perf_counter()
        run_dir = train("tiny", [path], config, out / "runs", model_config)
        wall = time.perf_counter() - start
        m = json.loads((run_dir / "measurements.json").read_text())
        bf16 = training_arguments(config, out / "x", cuda).bf16
        print(json.dumps({
            "run": name, "steps": m["steps"], "batch_size": args.batch_size,
            "tokens_per_s": m["tokens_per_s"], "examples_per_s": m["examples_per_s"],
            "tokens_per_batch_mean": m["tokens_per_batch"]["mean"], "padding_fraction": m["padding_fraction"],
            "cuda_max_allocated_mb": m.get("cuda_max_allocated_mb"), "cuda_allocated_before_mb": round(before, 1),
            "rss_peak_mb": m["rss_peak_mb"], "train_seconds": m["train_seconds"], "wall_seconds": round(wall, 2),
            "first_loss": m["losses"][0][1] if m["losses"] else None, "train_loss": m["train_loss"],
            "last_loss": m["losses"][-1][1] if m["losses"] else None,
            "device": m["device"], "cuda": cuda, "bf16": bool(bf16),
        }), flush=True)

    env = {"python": platform.python_version(), **m["versions"], "cuda_available": cuda}
    if cuda:
        env |= {"gpu": torch.cuda.get_device_name(0), "cuda_runtime": torch.version.cuda}
    print(json.dumps({"env": env}), flush=True)


if __name__ == "__main__":
    main()
