"""Which fine-tuning recipe lets the tiny model learn each task in distribution within the cpu budget?

One run: a task x method fine-tuned from scratch (no generic pre-training) with the given settings, then free
greedy recursive decoding of fresh problems at the in-distribution sizes only (the recipe is chosen on these and
on nothing out of distribution). Appends one JSON line to research/logs/recipe.jsonl.

    python research/recipe_probe.py --task addition --method retuning --lr 3e-3 --steps 1500 [--top 8] [--threads 1]
"""
import argparse
import json
import time

import jsonlog
from retune.evaluation import pipeline
from retune.training import runs
from retune.config.profiles import load_profile

LOG = jsonlog.LOGS / "recipe.jsonl"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="addition")
    ap.add_argument("--method", default="retuning")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--schedule", default="linear", help="transformers schedule name, e.g. linear, cosine")
    ap.add_argument("--top", type=int, default=None, help="largest training size (default: the cpu profile's)")
    ap.add_argument("--per-size", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--eval-n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distribution", default="scaled", help="scaled or distinct (retune.data.datasets.DISTRIBUTIONS)")
    ap.add_argument("--pretrain", action="store_true", help="start from the cpu profile's generic base")
    ap.add_argument("--loss-mean", default="token", help="token or example (retune.config.profiles.Recipe.loss_mean)")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="generic pre-training steps (default: the profile's)")
    ap.add_argument("--pretrain-warmup", type=int, default=None, help="its warm-up steps (default: the profile's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    over = {"paths": {"data": "runs/probe-data"},  # probe datasets stay out of data/
            "model": {"tiny": {"hidden_size": args.hidden, "num_hidden_layers": args.layers,
                               "num_attention_heads": args.heads,
                               "intermediate_size": 4 * args.hidden}},
            "train": {"lr": args.lr, "max_steps": args.steps, "batch_size": args.batch, "warmup_steps": args.warmup,
                      "problems_per_size": args.per_size, "lr_schedule": args.schedule,
                      "by_task": {args.task: {"max_steps": args.steps, "batch_size": args.batch, "lr": args.lr}}}}
    if args.loss_mean != "token":
        over["train"]["by_task"][args.task][args.method] = {"loss_mean": args.loss_mean}
    if not args.pretrain:
        over["pretrain"] = None
    else:  # a deeper base needs a longer pre-training to learn copying
        base = {k: v for k, v in (("max_steps", args.pretrain_steps), ("warmup_steps", args.pretrain_warmup)) if v}
        over["pretrain"] = {"train": base} if base else {}
    if args.top:
        over["train"]["sizes"] = {args.task: args.top}
    profile = load_profile("cpu", over)
    top = profile.train.sizes[args.task]
    start = time.time()
    run = runs.trained(profile, runs.RunSpec(args.task, args.method, args.seed, args.distribution))
    # validation problems (stream "valid"), never the reported evaluation problems
    problems = pipeline.eval_problems(args.task, (2, top), args.eval_n, args.seed, exclude=pipeline.trained_contexts(run),
                                stream="valid")
    traces = pipeline.decode_with(profile, run, args.task, args.method, problems)
    m = json.loads((run / "measurements.json").read_text())
    by_size = {}
    for t in traces:
        by_size.setdefault(t.size, []).append(t.correct)
    out = {"task": args.task, "method": args.method, "lr": args.lr, "steps": args.steps, "batch": args.batch,
           "warmup": args.warmup, "schedule": args.schedule, "top": top, "per_size": args.per_size, "hidden": args.hidden,
           "layers": args.layers, "heads": args.heads, "pretrain": args.pretrain, "distribution": args.distribution, "loss_mean": args.loss_mean,
           "pretrain_steps": profile.pretrain.train.max_steps if profile.pretrain else None,
           "pretrain_warmup": profile.pretrain.train.warmup_steps if profile.pretrain else None, "seed": args.seed, "threads": args.threads,
           "train_seconds": round(m["train_seconds"]), "wall_seconds": round(time.time() - start),
           "final_loss": (m.get("losses") or [[None, None]])[-1][1],
           "id_exact": round(sum(t.correct for t in traces) / max(len(traces), 1), 3), "n": len(traces),
           "by_size": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_size.items())}, "run": run.name}
    jsonlog.append(LOG, out)


if __name__ == "__main__":
    main()
