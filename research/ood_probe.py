"""Does the fine-tuned tiny model reuse its generic base's skills beyond the trained lengths? (the OOD issue)

One candidate: a generic base (retune.training.pretrain, with the given surfaces and multi-line share), Re-Tuning
fine-tuned on the cpu profile's training set for one task, then the teacher-forced step probe (retune.analysis.probe: call
/ combine / base accuracy by size, in distribution and beyond to twice the trained maximum) on *validation*
problems, never the reported ones. Appends one JSON line to research/logs/ood_probe.jsonl.

    python research/ood_probe.py --task addition --surfaces many --multiline 0.4 [--lora 32] [--steps 1500]
"""
import argparse
import json
import time
from pathlib import Path

import jsonlog
from retune.evaluation import pipeline
from retune.training import runs
from retune.analysis.probe import step_accuracy
from retune.config.profiles import load_profile
from retune.tasks import METHODS

LOG = jsonlog.LOGS / "ood_probe.jsonl"


def overrides(args) -> dict:
    pretrain = {"surfaces": args.surfaces, "multiline": args.multiline, "mix": args.mix,
                "train": {"max_steps": args.pretrain_steps}, **({"heads": args.heads} if args.heads else {})}
    if args.pretrain_examples:
        pretrain["examples"] = args.pretrain_examples
    lora = {"r": args.lora, "lora_alpha": args.lora, "target_modules": "all-linear"} if args.lora else False
    task_over = {"max_steps": args.steps, args.method: {"lora": lora}, **({"lr": args.lr} if args.lr else {})}
    if args.loss_mean:
        task_over[args.method]["loss_mean"] = args.loss_mean
    if args.frozen:
        task_over[args.method]["frozen_layers"] = args.frozen
    return {"paths": {"data": "runs/probe-data"}, "pretrain": pretrain,
            "train": {"by_task": {args.task: task_over}}}


def decoded_accuracy(profile, run, task, method, sizes, n, seed) -> dict:
    """End-to-end accuracy per size of free recursive decoding on validation problems (the reported metric's
    stand-in: the reported problems are never looked at); the model is loaded once for every size."""
    exclude = pipeline.trained_contexts(run)
    problems = [p for size in sizes  # small parity and DP sizes are all in training: nothing fresh, size skipped
                for p in pipeline.eval_problems(task, (size, size), n, seed, 0, exclude, stream="valid")]
    by_size = {}
    for t in pipeline.decode_with(profile, run, task, method, problems):
        by_size.setdefault(t.size, []).append(t.correct)
    return {size: round(sum(c) / len(c), 2) for size, c in sorted(by_size.items())}


def skills_of_base(profile, seed):
    """The base's skill table (every operation x kind x length), saved beside the probe log; its copy rows printed."""
    from retune.analysis.skills import base_skills

    df = base_skills(profile, seed)
    out = LOG.parent / f"base_skills_{Path(runs.base_model(profile, seed)).name}.csv"
    df.to_csv(out, index=False)
    items = df[(df["score"] == "items") & (df["operation"] == "copy")]
    print(out, items.pivot_table(index="kind", columns="length", values="accuracy").round(2).to_string(), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="addition")
    ap.add_argument("--method", default="retuning")
    ap.add_argument("--surfaces", default="many", help="one or many (retune.training.pretrain)")
    ap.add_argument("--multiline", type=float, default=0.0, help="share of multi-line recall examples")
    ap.add_argument("--heads", type=float, default=0.0,
                    help="share of multi-line first-items requests (retune.training.pretrain.heads)")
    ap.add_argument("--mix", type=float, default=0.15, help="rehearsal share in fine-tuning")
    ap.add_argument("--pretrain-steps", type=int, default=3000)
    ap.add_argument("--pretrain-examples", type=int, default=0, help="generic examples (0: the cpu profile's)")
    ap.add_argument("--skills", action="store_true",
                    help="probe the base's skills first (retune.analysis.skills), into research/logs/base_skills_<base>.csv")
    ap.add_argument("--steps", type=int, default=1500, help="fine-tuning steps")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on every linear layer (0: full fine-tuning)")
    ap.add_argument("--lr", type=float, default=0.0, help="fine-tuning learning rate (0: the cpu profile's)")
    ap.add_argument("--frozen", type=int, default=0,
                    help="full fine-tuning with the embeddings and the lowest N decoder layers frozen")
    ap.add_argument("--loss-mean", default=None)
    ap.add_argument("--n", type=int, default=20, help="validation problems per size")
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decode-n", type=int, default=0,
                    help="validation problems per size also decoded end to end (0: the step probe only)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    profile = load_profile("cpu", overrides(args))
    top = profile.train.sizes[args.task]
    start = time.time()
    if args.skills:
        skills_of_base(profile, args.seed)
    run = runs.trained(profile, runs.spec_for(profile, args.task, args.method, args.seed))
    generator = pipeline.hf_generator(profile, run)
    sizes = list(range(2, 2 * top + 1, args.every))
    rows = step_accuracy(args.task, generator, sizes, args.n, args.seed, pipeline.trained_contexts(run),
                         method=args.method, stream="valid") if METHODS[args.method].recursive else []
    table = {kind: {r["size"]: round(r["accuracy"], 2) for r in rows if r["kind"] == kind}
             for kind in ("call", "combine", "base")}  # baseline and scratchpad: no steps, decoded only
    if args.decode_n:
        table["decoded"] = decoded_accuracy(profile, run, args.task, args.method, sizes, args.decode_n, args.seed)
    m = json.loads((run / "measurements.json").read_text())
    out = {k: v for k, v in vars(args).items() if k != "threads"} | {
        "top": top, "train_seconds": round(m["train_seconds"]), "wall_seconds": round(time.time() - start),
        "final_loss": (m.get("losses") or [[None, None]])[-1][1], "steps_by_size": table, "run": run.name}
    jsonlog.append(LOG, out)


if __name__ == "__main__":
    main()
