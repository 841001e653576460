"""Build, re-sample, write and describe datasets: JSONL records plus a manifest beside each file.

Records use the reference code's field names (`input`, `output`) so its data and ours are interchangeable.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from . import __version__
from .tasks import METHODS, RECURSIVE_METHODS, TASKS, check_method, get_task

DISTRIBUTIONS = ("paper", "scaled", "efficiency")


def parse_sizes(text: str, name: str = "sizes") -> tuple[int, int]:
    """'A-B' (or 'A') -> (A, B) with 1 <= A <= B."""
    parts = str(text).split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None:
        raise ValueError(f"{name} must look like A-B (e.g. 1-8) or A; got {text!r}")
    if lo < 1:
        raise ValueError(f"{name}: sizes start at 1; got {text!r}")
    if lo > hi:
        raise ValueError(f"{name}: the range is empty or in the wrong order (A must be <= B); got {text!r}")
    return lo, hi


def problems(task, distribution: str, sizes=(1, 8), n: int = 100, seed: int = 0, method: str = "retuning"):
    """The problems of a distribution, in a fixed order for a given seed."""
    rng = random.Random(seed)
    if distribution == "paper":
        yield from task.paper_problems(method, rng)
        return
    for size in range(sizes[0], sizes[1] + 1):
        if distribution == "scaled":
            yield from (task.sample(size, rng) for _ in range(n))
        else:  # efficiency: n distinct problems per size (all of them where fewer exist)
            distinct = {}
            for _ in range(100 * n):
                if len(distinct) == n:
                    break
                problem = task.sample(size, rng)
                distinct.setdefault(repr(problem), problem)
            yield from distinct.values()


def build(task: str, method: str, distribution: str = "scaled", sizes=(1, 8), n: int = 100, seed: int = 0,
          variant: int = 0, progress: bool = True) -> list[dict]:
    """Training records of one task x method x distribution."""
    check_args(task, method, distribution, sizes, n)
    spec = get_task(task, variant)
    paper = distribution == "paper"
    seen = set() if paper and method in RECURSIVE_METHODS else None  # the reference de-duplicates by prompt
    weights = random.Random(seed + 1)  # a stream of its own, so re-sampling never shifts the problems
    records = []
    for problem in tqdm(problems(spec, distribution, sizes, n, seed, method), desc=f"{task}/{method}",
                        unit=" problems", disable=not progress, mininterval=1):
        for ex in spec.examples(problem, method, seen):
            repeats = spec.paper_repeats(ex, method, weights) if paper else 1
            record = {"input": ex.input, "output": ex.output, "task": task, "method": method, "size": ex.size}
            if method in RECURSIVE_METHODS:
                record.update(depth=ex.depth, kind=ex.kind)
            if variant:
                record["variant"] = variant
            records += [record] * repeats
    return records


def check_args(task, method, distribution, sizes, n) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    check_method(method)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    lo, hi = sizes
    if lo < 1 or lo > hi:
        raise ValueError(f"sizes must satisfy 1 <= A <= B; got {lo}-{hi}")
    if n < 1:
        raise ValueError(f"n (problems per size) must be at least 1; got {n}")


def write(records: list[dict], out: str | Path, parameters: dict) -> dict:
    """Write records as JSONL atomically (a temporary file renamed into place) and a manifest beside them."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                line = json.dumps(record, ensure_ascii=False) + "\n"
                digest.update(line.encode("utf-8"))
                f.write(line)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest = describe(records) | {"file": out.name, "sha256": digest.hexdigest(), "parameters": parameters,
                                    "versions": {"retune": __version__, "python": platform.python_version()}}
    write_json(manifest_path(out), manifest)
    return manifest


def describe(records: list[dict]) -> dict:
    """Counts per size and kind, and character / token counts (character tokenizer: one token a character,
    plus EOS after each target)."""
    tokens = [len(r["input"]) + len(r["output"]) + 1 for r in records]
    return {
        "records": len(records),
        "by_size": dict(sorted(Counter(r["size"] for r in records).items())),
        "by_kind": dict(sorted(Counter(r.get("kind", "full") for r in records).items())),
        "characters": {"input": sum(len(r["input"]) for r in records),
                       "output": sum(len(r["output"]) for r in records)},
        "char_tokens": {"total": sum(tokens), "mean": round(sum(tokens) / max(len(tokens), 1), 2),
                        "max": max(tokens, default=0)},
    }


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".manifest.json")


def read(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist (build it with `retune data`)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_manifest(path: str | Path) -> dict:
    return json.loads(manifest_path(path).read_text())


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def make(task: str, method: str, out: str | Path, distribution: str = "scaled", sizes=(1, 8), n: int = 100,
         seed: int = 0, variant: int = 0, progress: bool = True) -> dict:
    """Build and write one dataset; returns its manifest (with the build time)."""
    start = time.perf_counter()
    records = build(task, method, distribution, sizes, n, seed, variant, progress)
    parameters = {"task": task, "method": method, "distribution": distribution, "seed": seed, "variant": variant}
    if distribution != "paper":
        parameters |= {"sizes": f"{sizes[0]}-{sizes[1]}", "n": n}
    manifest = write(records, out, parameters)
    manifest["build_seconds"] = round(time.perf_counter() - start, 2)
    write_json(manifest_path(out), manifest)
    return manifest


def add_cli(sub) -> None:
    p = sub.add_parser("data", help="build a training dataset (JSONL + manifest)",
                       description="Build a training dataset of one task and method as JSONL records "
                                   "(input, output, task, method, size; depth and kind for recursive "
                                   "methods) with a manifest beside it (FILE.manifest.json).")
    p.add_argument("--task", required=True, choices=list(TASKS), help="the task")
    p.add_argument("--method", required=True, choices=list(METHODS),
                   help="baseline, scratchpad, retuning, or an ablation: inline (no isolation), "
                        "no_carryover (no Return line)")
    p.add_argument("--distribution", default="scaled", choices=list(DISTRIBUTIONS),
                   help="paper: the reference training distribution and re-sampling (ignores --sizes/--n); "
                        "scaled: N random problems per size; efficiency: N distinct problems per size "
                        "(default: scaled)")
    p.add_argument("--sizes", default="1-8", help="problem sizes A-B: digits, list length or bits (default 1-8)")
    p.add_argument("--n", type=int, default=100, help="problems per size (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--variant", type=int, default=0, help="prompt phrasing, 0 = the paper's (tasks have 0-3)")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_cli)


def run_cli(args) -> None:
    manifest = make(args.task, args.method, args.out, args.distribution, parse_sizes(args.sizes), args.n,
                    args.seed, args.variant, progress=not args.quiet)
    print(json.dumps({"out": str(args.out), "records": manifest["records"], "sha256": manifest["sha256"],
                      "build_seconds": manifest["build_seconds"]}))
