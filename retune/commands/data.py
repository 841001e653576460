"""`retune data`: one training dataset (JSONL + manifest) of a task and method (retune.data.datasets)."""
from __future__ import annotations

import json
import sys

from .. import files
from ..data.datasets import DISTRIBUTIONS, MANIFEST_SUFFIX, MAX_N, MAX_PROBLEMS, make, parse_sizes
from ..tasks import METHODS, TASKS


def add_cli(sub) -> None:
    p = sub.add_parser("data", help="build a training dataset (JSONL + manifest)",
                       description="Build a training dataset of one task and method as JSONL records "
                                   "(input, output, task, method, size; depth and kind for recursive "
                                   "methods) with a manifest beside it (FILE.manifest.json).")
    p.add_argument("--task", required=True, choices=list(TASKS), help="the task")
    p.add_argument("--method", required=True, choices=list(METHODS),
                   help=", ".join(m.name + (f" (an ablation of {m.ablates})" if m.ablates else "")
                                  for m in METHODS.values()))
    p.add_argument("--distribution", default="scaled", choices=list(DISTRIBUTIONS),
                   help="paper: the reference training distribution and re-sampling (its sizes and counts are "
                        "fixed, so --sizes and --n are refused with it); "
                        "scaled: N random problems per size, every step of each; distinct: the same problems "
                        "with a recursive method's steps de-duplicated by prompt; efficiency: N distinct "
                        "problems per size (default: scaled)")
    limits = ", ".join(f"{name} {cls.max_size}" for name, cls in TASKS.items())
    p.add_argument("--sizes", help=f"problem sizes A-B: digits, list length or bits (default 1-8; at most: {limits})")
    p.add_argument("--n", type=int, help=f"problems per size (default 100; at most {MAX_N}, and at most "
                                         f"{MAX_PROBLEMS} problems in all); records are streamed to disk and a "
                                         f"dataset larger than the free disk space is refused before it starts")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--variant", type=int, default=0, help="prompt phrasing, 0 = the paper's (tasks have 0-3)")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_cli)


def run_cli(args) -> None:
    if args.distribution == "paper" and (args.sizes is not None or args.n is not None):
        raise ValueError("--distribution paper has fixed sizes and counts; drop --sizes and --n "
                         "(or use --distribution scaled / distinct / efficiency)")
    files.check_output_file(args.out, "--out", companions=(MANIFEST_SUFFIX,))
    sizes = parse_sizes("1-8" if args.sizes is None else args.sizes)
    n = 100 if args.n is None else args.n
    manifest = make(args.task, args.method, args.out, args.distribution, sizes, n, args.seed, args.variant,
                    progress=not args.quiet, announce=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"out": str(args.out), "records": manifest["records"], "sha256": manifest["sha256"],
                      "build_seconds": manifest["build_seconds"]}))
