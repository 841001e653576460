"""Which step of DP Re-Tuning fails? Teacher-forced step accuracy of trained runs on validation problems.

Every unique context of the oracle trees of validation problems (sizes 3-5), grouped by sub-problem (the
dp-array recursion, the chosen-indices recursion, the top level), kind of turn and list length; then, for the
chosen-indices calls, which part of the call was wrong (the sum array, the item array, the can-use flag).

    python research/dp_steps.py RUN [RUN ...]     # run directory names under runs/
"""
import argparse
import collections
import re
from pathlib import Path

from retune.evaluation import pipeline
from retune.evaluation.scoring import oracle_tree
from retune.config.profiles import load_profile
from retune.tasks import get_task

CALL = re.compile(r"sum array \[(.*?)\], item array \[(.*?)\], can use item (\w+)")


def group(context: str, kind: str) -> tuple:
    """(sub-problem, kind, list length) of a context."""
    head = context.split("\n")[0]
    if head.startswith("Create dp array"):
        return "dp", kind, head.count(",") + 1
    if head.startswith("Create chosen"):
        return "chosen", kind, head.split("item array")[1].split("]")[0].count(",") + 1
    return "top", kind, 0


def contexts(n: int, seed: int) -> dict:
    task = get_task("dp")
    out = {}
    for problem in pipeline.eval_problems("dp", (3, 5), n, seed, stream="valid"):
        for node, _ in oracle_tree(task, problem, "retuning").walk():
            for context, target, kind in node.contexts("retuning"):
                out[context] = (target, group(context, kind))
    return out


def call_parts(generator, calls: dict) -> collections.Counter:
    """For chosen-indices calls: which of sum array / item array / flag the greedy generation got wrong."""
    verdicts = collections.Counter()
    texts = [g.text for g in generator.generate(list(calls), [300] * len(calls))]
    for (context, target), text in zip(calls.items(), texts):
        got = CALL.search(text)
        if not got:
            verdicts["malformed"] += 1
            continue
        wrong = [name for name, a, b in zip(("sum", "item", "flag"), CALL.search(target).groups(), got.groups())
                 if a != b]
        verdicts["+".join(wrong) or "right"] += 1
    return verdicts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=60, help="validation problems per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one leaves a core to a running job)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    profile = load_profile("cpu")
    unique = contexts(args.n, args.seed)
    for name in args.runs:
        generator = pipeline.hf_generator(profile, Path("runs") / name)
        keys = list(unique)
        right = generator.exact(keys, [unique[c][0] for c in keys])
        tally = collections.defaultdict(lambda: [0, 0])
        for context, ok in zip(keys, right):
            tally[unique[context][1]][0] += ok
            tally[unique[context][1]][1] += 1
        print(name)
        for (sub, kind, length), (a, b) in sorted(tally.items()):
            print(f"  {sub:7s} {kind:8s} length {length}: {a / b:.2f} ({b})")
        calls = {c: t for c, (t, (sub, kind, _)) in unique.items() if sub == "chosen" and kind == "call"}
        print("  chosen-indices calls, parts wrong:", dict(call_parts(generator, calls).most_common()))


if __name__ == "__main__":
    main()
