"""SmolLM2-135M's learning curve on Re-Tuning addition (trained 1-8 digits), for sizing the `smol` profile.

One LoRA run (the paper's adapter: r 64, q/k/v/o) at a constant learning rate after warm-up, so the curve does
not depend on where the budget ends. Every `--every` steps a Trainer callback runs the teacher-forced step probe
(retune.analysis.probe.step_accuracy: call / combine / base accuracy by size, validation problems, in distribution and
beyond) on the weights of that moment and appends one JSON line per step to research/logs/smol_curve.jsonl.
Other recipe candidates (`--candidate NAME` with full fine-tuning, frozen lower layers, another schedule, another
trained range) log to research/logs/smol_recipes.jsonl, one name per candidate (research/recipe_table.py prints them).
Checkpoints every `--every` steps: a killed run resumes (steps already logged are not probed again).

    python research/smol_curve.py --steps 1500 --every 100 [--threads 1]
    python research/smol_curve.py --method baseline --schedule linear --steps 1050   # a comparison run, unprobed
    python research/smol_curve.py --full --frozen 20 --lr 3e-4 --schedule linear --top 6 --steps 1200 \
        --sizes 2 4 6 8 10 12 --every 200 --candidate full-top10-lr3e-4-linear-1to6
"""
import argparse
import json
import time
from pathlib import Path

from transformers import TrainerCallback

import jsonlog
from retune.training import runs
from retune.models import presets
from retune.training import fine_tune as train
from retune.decoding.generators import HFGenerator
from retune.analysis.probe import step_accuracy
from retune.config.profiles import load_profile

CURVE = "lora-r64-constant"  # the first curve (notebook 12 reads its log); other candidates log apart


def log_of(candidate: str) -> Path:
    return jsonlog.LOGS / ("smol_curve.jsonl" if candidate == CURVE else "smol_recipes.jsonl")


def logged_steps(candidate: str) -> set[int]:
    """Steps of this candidate already probed (the first curve's lines carry no candidate name)."""
    log = log_of(candidate)
    if not log.is_file():
        return set()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return {d["step"] for d in lines if d.get("candidate", CURVE) == candidate}


class StepProbe(TrainerCallback):
    """Probe the model being trained at every checkpoint (on_save), then return it to training mode."""

    def __init__(self, tokenizer, sizes, n, seed, exclude, meta):
        self.tokenizer, self.sizes, self.n, self.seed, self.exclude, self.meta = tokenizer, sizes, n, seed, exclude, meta
        self.done = logged_steps(meta["candidate"])
        self.start = time.time()

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.done:
            return
        t = time.time()
        rows = step_accuracy("addition", HFGenerator(model, self.tokenizer), self.sizes, self.n, self.seed,
                             self.exclude, stream="valid")
        model.train()
        loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        line = dict(self.meta, step=state.global_step, loss=loss, probe_seconds=round(time.time() - t),
                    wall_seconds=round(time.time() - self.start), rows=rows)
        jsonlog.append(log_of(self.meta["candidate"]), line, echo=False)
        summary = {k: [round(r["accuracy"], 2) for r in rows if r["kind"] == k] for k in ("call", "combine", "base")}
        print(f"step {state.global_step} loss {loss}: {summary}", flush=True)


def curve_data(top: int, seed: int, method: str = "retuning"):
    """The curve's training set: addition 1..top digits written for `method` (Re-Tuning), the cpu profile's
    problems per size, scaled."""
    profile = load_profile("cpu", {"paths": {"data": "runs/probe-data"}, "pretrain": None,
                                   "train": {"sizes": {"addition": top}, "distribution": "scaled"}})
    return runs.dataset(profile, "addition", method, seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--top", type=int, default=8, help="largest trained size (digits)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 16])
    ap.add_argument("--n", type=int, default=10, help="validation problems per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--method", default="retuning",
                    help="retuning: the curve; another method (baseline) trains alone, unprobed, for comparison")
    ap.add_argument("--schedule", default="constant_with_warmup", help="the Trainer's lr_scheduler_type")
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of the LoRA adapter")
    ap.add_argument("--frozen", type=int, default=0,
                    help="with --full: keep the embeddings and the lowest N layers (the backward pass stops there)")
    ap.add_argument("--candidate", default=CURVE, help="the name its log lines carry")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    data = curve_data(args.top, args.seed, args.method)
    source = str(presets.fetch("smollm2-135m"))
    config = train.make_config({"lr": args.lr, "max_steps": args.steps, "batch_size": args.batch,
                                "warmup_steps": args.warmup, "lr_schedule": args.schedule,
                                "save_steps": args.every, "lora": not args.full, "frozen_layers": args.frozen,
                                "seed": args.seed, "threads": args.threads})
    if args.method != "retuning":  # no call or combine step to probe: trained (resumable), then decoded apart
        print(train.train(source, [data], config, "runs"))
        return
    from retune.models.causal_lm import load_pretrained

    model, tokenizer = load_pretrained(source)
    del model  # only its tokenizer: the run loads its own
    exclude = {json.loads(line)["input"] for line in Path(data).read_text().splitlines()}
    meta = {"model": "SmolLM2-135M", "candidate": args.candidate, "full": args.full, "frozen": args.frozen,
            "schedule": args.schedule, "steps": args.steps, "lr": args.lr, "batch": args.batch, "top": args.top, "seed": args.seed,
            "threads": args.threads, "n": args.n}
    run = train.train(source, [data], config, "runs", callbacks=[StepProbe(tokenizer, args.sizes, args.n, args.seed,
                                                                          exclude, meta)])
    print(run)


if __name__ == "__main__":
    main()
