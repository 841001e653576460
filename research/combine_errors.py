"""Which part of addition's combine step fails beyond the trained lengths (the OOD issue)?

The combine step reads `a + b`, its call and `Return: Carry c, Output D`, and writes `Carry c', Output dD`: one
computed digit d and carry c' (from the operands' leading digits and c), then a copy of the returned digits D.
Teacher-forced on validation problems (never the reported ones), each answer is split into those two parts:

    python research/combine_errors.py RUN_DIR [RUN_DIR ...] [--sizes 6 8 10 12] [--n 40]

One JSON line per run and size into research/logs/combine_errors.jsonl: the share with the computed part right,
the copy right, both; and, of the wrong computed digits, how many equal the sum without the returned carry.
"""
import argparse
import re
from pathlib import Path

import jsonlog
from retune.evaluation import pipeline
from retune.analysis.probe import step_contexts
from retune.config.profiles import load_profile
from retune.tasks import get_task

LOG = jsonlog.LOGS / "combine_errors.jsonl"
ANSWER = re.compile(r"Carry (\d), Output (\d)(\d*)$")


def parts(context: str, answer: str) -> dict:
    """The computed part (carry and first digit) and the copied digits of one answer, each right or not."""
    a, b = re.match(r"(\d+) \+ (\d+)", context).groups()
    carry_in = int(re.search(r"Return: Carry (\d)", context).group(1))
    returned = re.search(r"Output (\d*)\nAnswer: $", context).group(1)
    total = int(a[0]) + int(b[0]) + carry_in
    m = ANSWER.match(answer)
    if not m:
        return {"computed": False, "copy": False, "no_carry_in": False, "malformed": True}
    got = 10 * int(m.group(1)) + int(m.group(2))
    return {"computed": got == total, "copy": m.group(3) == returned, "malformed": False,
            "no_carry_in": got != total and got == total - carry_in}


def measure(run: Path, size: int, n: int, generator) -> dict:
    task = get_task("addition", 0)
    problems = pipeline.eval_problems("addition", (size, size), n, 0, 0, pipeline.trained_contexts(run), "valid")
    steps = [s for p in problems for s in step_contexts(task, p) if s[2] == "combine"]
    answers = generator.generate([c for c, _, _ in steps], [2 * len(t) + 8 for _, t, _ in steps])
    scored = [parts(c, answer.text) for (c, _, _), answer in zip(steps, answers)]
    share = lambda key: round(sum(s[key] for s in scored) / len(scored), 2)  # noqa: E731
    return {"run": run.name, "size": size, "n": len(scored), "computed": share("computed"), "copy": share("copy"),
            "both": round(sum(s["computed"] and s["copy"] for s in scored) / len(scored), 2),
            "no_carry_in": share("no_carry_in"), "malformed": share("malformed")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--sizes", nargs="+", type=int, default=[6, 8, 10, 12])
    ap.add_argument("--n", type=int, default=40, help="validation problems per size")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    profile = load_profile("cpu")
    for run in args.runs:
        generator = pipeline.hf_generator(profile, run)
        for size in args.sizes:
            jsonlog.append(LOG, measure(run, size, args.n, generator))
        generator.close()


if __name__ == "__main__":
    main()
