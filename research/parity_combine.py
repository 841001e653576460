"""Parity Re-Tuning: is a wrong answer a wrong call or a wrong combination? Read from a run's evaluation traces.

For every context of every evaluated problem: is the call the list without its first bit, and is the answer the
first bit XOR the returned parity (whatever the return was)? Combinations are tallied by (in the trained range,
first bit, return), so a model that ignores one of its two inputs shows up as a case it always gets wrong.

    python research/parity_combine.py RUN [RUN ...]   # run directory names under runs/
"""
import argparse
import collections
import json
import re
from pathlib import Path

from retune.tasks import get_task

LIST = re.compile(r"\[([01, ]*)\]")
PARITY = get_task("parity")  # the task's own prompt is the right call


def tally(trace_file: Path, trained_max: int) -> tuple[dict, dict]:
    calls, combines = collections.defaultdict(lambda: [0, 0]), collections.defaultdict(lambda: [0, 0])
    for line in trace_file.open():
        for node in json.loads(line)["nodes"]:
            found = LIST.search(node["prompt"])
            if not found or not node["calls"]:
                continue
            bits = [int(b) for b in found.group(1).split(",") if b.strip()]
            calls[len(bits)][0] += node["calls"][0].strip() == PARITY.prompt(bits[1:])
            calls[len(bits)][1] += 1
            try:
                returned, answer = int(node["returns"][0]), int(node["answer"])
            except (IndexError, TypeError, ValueError):
                continue  # no return or no answer: a decoding error, counted by the evaluation itself
            key = (len(bits) <= trained_max, bits[0], returned)
            combines[key][0] += answer == bits[0] ^ returned
            combines[key][1] += 1
    return calls, combines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--trained-max", type=int, default=10, help="largest trained list length")
    args = ap.parse_args()
    for name in args.runs:
        for trace_file in sorted((Path("runs") / name / "evals").glob("parity-retuning-v0-*.jsonl")):
            calls, combines = tally(trace_file, args.trained_max)
            print(name, trace_file.name)
            print("  call right, by list length:", {n: f"{a}/{b}" for n, (a, b) in sorted(calls.items())})
            for (inside, first, returned), (a, b) in sorted(combines.items(), reverse=True):
                where = "in range" if inside else "beyond  "
                print(f"  {where} first bit {first}, return {returned}: answer right {a}/{b} ({a / b:.2f})")


if __name__ == "__main__":
    main()
