"""Does the cpu profile's fine-tuning budget limit Re-Tuning on addition? Fine-tune from the same cached generic
base with more steps (everything else as profiles/cpu.yaml) and evaluate exactly as notebook 03 does.

    python research/budget_probe.py --steps 6000 [--task addition] [--method retuning] [--seed 0]

Prints one JSON line: steps, train seconds, accuracy in and beyond the trained range."""
import argparse
import json

from retune.evaluation import pipeline
from retune.training import runs
from retune.config.profiles import load_profile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--task", default="addition")
    ap.add_argument("--method", default="retuning")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    profile = load_profile("cpu", {"train": {"max_steps": args.steps}})
    run = runs.trained(profile, runs.spec_for(profile, args.task, args.method, args.seed))
    traces = pipeline.evaluate_run(profile, run, args.task, args.method, args.seed)
    top = profile.train.sizes[args.task]
    split = {"id": [t for t in traces if t.size <= top], "ood": [t for t in traces if top < t.size <= 2 * top]}
    seconds = json.loads((run / "measurements.json").read_text())["train_seconds"]
    print(json.dumps({"task": args.task, "method": args.method, "steps": args.steps, "train_seconds": seconds,
                      **{k: round(sum(t.correct for t in v) / len(v), 3) for k, v in split.items()},
                      "n": {k: len(v) for k, v in split.items()}, "run": str(run)}))


if __name__ == "__main__":
    main()
