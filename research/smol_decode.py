"""End-to-end accuracy of a SmolLM2 run of the learning curve (or of one of its side runs): free recursive decoding
of Re-Tuning addition on *validation* problems (never the reported ones), in and beyond the trained sizes.

The teacher-forced step probe scores each step alone; this decodes whole problems, as the evaluation does, so
one wrong step anywhere in a problem's tree of calls makes it wrong. Appends one JSON line per run to
research/logs/smol_decode.jsonl (accuracy and the first error's kind by size) and prints it.

    python research/smol_decode.py runs/<run> [--sizes 2 4 ... 16] [--n 10] [--method retuning]
"""
import argparse
import time
from collections import Counter
from pathlib import Path

import jsonlog
from retune.evaluation import pipeline
from retune.config.profiles import load_profile

LOG = jsonlog.LOGS / "smol_decode.jsonl"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--method", default="retuning")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 14, 16])
    ap.add_argument("--n", type=int, default=10, help="validation problems per size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    # The smol profile's decoding, on this machine's CPU in float32 (its eval section targets a GPU in bf16).
    profile = load_profile("smol", {"eval": {"device": "cpu", "dtype": "float32", "batch_size": 32}})
    exclude = pipeline.trained_contexts(args.run)
    problems = [p for size in args.sizes
                for p in pipeline.eval_problems("addition", (size, size), args.n, args.seed, 0, exclude, stream="valid")]
    start = time.time()
    traces = pipeline.decode_with(profile, args.run, "addition", args.method, problems, progress=True)
    by_size, errors = {}, {}
    for row in pipeline.rows(traces):
        by_size.setdefault(row["size"], []).append(row["correct"])
        if not row["correct"]:
            errors.setdefault(row["size"], Counter())[row["first_error_kind"] or row["error"] or "wrong answer"] += 1
    line = {"run": args.run.name, "method": args.method, "seed": args.seed, "n": args.n,
            "accuracy": {s: round(sum(c) / len(c), 2) for s, c in sorted(by_size.items())},
            "right": {s: sum(c) for s, c in sorted(by_size.items())}, "total": {s: len(c) for s, c in sorted(by_size.items())},
            "first_errors": {s: dict(c) for s, c in sorted(errors.items())}, "decode_seconds": round(time.time() - start)}
    jsonlog.append(LOG, line)


if __name__ == "__main__":
    main()
