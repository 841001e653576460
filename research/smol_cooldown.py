"""Is SmolLM2's arithmetic held back by the learning rate? A cool-down from a checkpoint of the learning curve.

research/smol_curve.py trains at a constant rate, where the combine and base steps stayed at 0.1-0.25 through 500
steps. This folds the adapter of one of its checkpoints into SmolLM2, trains a fresh adapter of the same shape
(the paper's: r 64, q/k/v/o) for `--steps` more steps on the same data at `--lr` decaying linearly to 0, and runs
the curve's step probe (validation problems) on the result. One JSON line is appended to
research/logs/smol_curve.jsonl with `cooldown_from` (the checkpoint's step) and `step` (from + steps); the
learning curve (retune.analysis.probe.learning_curve) reads only the lines without `cooldown_from`.

    python research/smol_cooldown.py runs/<curve run>/checkpoints/checkpoint-500 --steps 150 --lr 2e-4
    python research/smol_cooldown.py runs/<a finished side run> --steps 300 --lr 5e-4   # a chain of them
"""
import argparse
import json
import time
from pathlib import Path

import jsonlog
from smol_curve import LOG, curve_data

from retune.models import presets
from retune.training import fine_tune as train
from retune.decoding.generators import HFGenerator
from retune.analysis.probe import step_accuracy


def start_of(start: Path) -> int:
    """The training step `start` stands at: a curve checkpoint's own, or the logged step of a finished side run."""
    if (start / "trainer_state.json").is_file():
        return json.loads((start / "trainer_state.json").read_text())["global_step"]
    steps = [json.loads(line)["step"] for line in LOG.read_text().splitlines() if json.loads(line).get("run") == start.name]
    if not steps:
        raise ValueError(f"{str(start)!r} is neither a curve checkpoint nor a side run logged in {LOG}")
    return steps[-1]


def folded(start: Path, out: Path) -> Path:
    """SmolLM2 with the adapter of `start` (a curve checkpoint, or a finished side run: its base and adapter)
    folded in, saved once as a model directory."""
    if (out / "config.json").is_file():
        return out
    from peft import PeftModel

    from retune.models.causal_lm import load_pretrained

    if (start / "measurements.json").is_file():
        model, tok = train.load_trained(start, merge=True)
    else:
        model, tok = load_pretrained(str(presets.fetch("smollm2-135m")))
        model = PeftModel.from_pretrained(model, start).merge_and_unload()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 16])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    start_step = start_of(args.checkpoint)
    base = folded(args.checkpoint, Path("runs") / f"smol-curve-folded-{start_step}")
    data = curve_data(args.top, args.seed)
    config = train.make_config({"lr": args.lr, "max_steps": args.steps, "batch_size": args.batch, "warmup_steps": 0,
                                "lr_schedule": "linear", "save_steps": 50, "lora": True, "seed": args.seed,
                                "threads": args.threads})
    start = time.time()
    run = train.train(str(base), [data], config, "runs")
    model, tok = train.load_trained(run, merge=True)
    exclude = {json.loads(line)["input"] for line in Path(data).read_text().splitlines()}
    rows = step_accuracy("addition", HFGenerator(model, tok), args.sizes, args.n, args.seed, exclude, stream="valid")
    m = json.loads((run / "measurements.json").read_text())
    line = {"model": "SmolLM2-135M", "cooldown_from": start_step, "lr": args.lr, "schedule": "linear to 0",
            "batch": args.batch, "top": args.top, "seed": args.seed, "threads": args.threads, "n": args.n,
            "step": start_step + args.steps, "loss": (m.get("losses") or [[None, None]])[-1][1],
            "wall_seconds": round(time.time() - start), "run": run.name, "rows": rows}
    jsonlog.append(LOG, line, echo=False)
    print({k: [round(r["accuracy"], 2) for r in rows if r["kind"] == k] for k in ("call", "combine", "base")})


if __name__ == "__main__":
    main()
