"""Evaluation: accuracy with Wilson intervals, exact teacher-forced evaluation, and error analysis of traces.

- `evaluate(...)` samples problems per size and seed, decodes them (retune.decode), and summarises accuracy per
  size, in distribution (size <= the trained maximum) and out of distribution, with 95 % Wilson intervals.
- `teacher_forced(...)` checks every unique context of the oracle trees in batched forward passes.
- `first_departure(...)` names where a failed problem first leaves its oracle call tree.
- `add_cli(subparsers)` registers `retune eval`.
"""
from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from .decode import (LIMIT_KINDS, MALFORMED_KINDS, HFGenerator, Limits, OracleGenerator, Trace, TraceNode, decode,
                     oracle_targets, save_traces)
from .tasks import METHODS, RECURSIVE_METHODS, TASKS, Node, Task, check_method, get_task

BACKENDS = ("oracle", "hf")
# The largest training size of the paper's distributions (SPEC §2-4): the in/out-of-distribution boundary.
PAPER_TRAINED_MAX = {"addition": 15, "dp": 5, "parity": 21}
DEPARTURE_KINDS = ("wrong_call", "wrong_base", "wrong_combination", "malformed", "limit")


# --- intervals -----------------------------------------------------------------------------------------------
def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; (0, 1) when there is no data. Sound near 0 and 1, where
    out-of-distribution accuracies live (the normal approximation would give intervals outside [0, 1])."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(correct: int, n: int) -> dict:
    lo, hi = wilson(correct, n)
    return {"accuracy": correct / n if n else None, "ci95": [round(lo, 4), round(hi, 4)], "correct": correct, "n": n}


# --- problems ------------------------------------------------------------------------------------------------
def sample_problems(task: Task, sizes: Sequence[int], n: int, seed: int) -> list[Any]:
    """n problems per size; each size has its own stream, so adding a size never changes the others."""
    out = []
    for size in sizes:
        rng = random.Random(f"eval-{task.name}-{size}-{seed}")
        out += [task.sample(size, rng) for _ in range(n)]
    return out


def oracle_tree(task: Task, problem: Any, method: str) -> Node:
    """The call tree the method's decoding should produce: the task's tree for recursive methods, a single
    context (its top context and its one target) otherwise."""
    if method in RECURSIVE_METHODS:
        return task.tree(problem)
    example = task.examples(problem, method)[0]
    return Node(example.input, [example.output])


# --- error analysis --------------------------------------------------------------------------------------------
@dataclass
class Departure:
    """Where a decoded tree first leaves the oracle tree, in decoding order (a depth-first walk)."""

    kind: str  # one of DEPARTURE_KINDS
    depth: int
    error: str | None  # the decoder's error kind when the departure ended decoding
    expected: str | None  # the oracle's turn there (None if there is none)
    got: str


def first_departure(trace: Trace, oracle: Node) -> Departure | None:
    """The first turn where `trace` departs from `oracle` (None: it never does).

    A turn ending decoding with a limit error is `limit`, with a malformed-output error `malformed` (even when
    the turn agrees with the oracle, e.g. a right call past a too-small depth limit). Otherwise a turn that
    differs is classified by what the oracle wanted there: a call (`wrong_call`), a base case (`wrong_base`;
    single-context methods answer in one base-case-like turn) or a combination (`wrong_combination`).
    """
    return _depart(trace.root, oracle)


def _depart(node: TraceNode, oracle: Node) -> Departure | None:
    for i, turn in enumerate(node.turns):
        expected = oracle.turns[i] if i < len(oracle.turns) else None
        if i == len(node.turns) - 1 and node.error:
            kind = "limit" if node.error in LIMIT_KINDS else "malformed"
            return Departure(kind, node.depth, node.error, expected, turn)
        if turn != expected:
            wanted = "call" if i < len(oracle.children) else oracle.kind_of_last
            kind = {"call": "wrong_call", "base": "wrong_base", "combine": "wrong_combination"}[wanted]
            return Departure(kind, node.depth, None, expected, turn)
        if i < len(node.children) and i < len(oracle.children):
            found = _depart(node.children[i], oracle.children[i])
            if found:
                return found
    return None


# --- teacher forcing -----------------------------------------------------------------------------------------
def teacher_forced(task: Task, problems: Sequence[Any], method: str, generator) -> dict:
    """Exact evaluation in one pass: every unique context of the problems' oracle trees, teacher-forced.

    A context is right when every greedy (argmax) token equals its target token, EOS included; a problem is
    *trace-exact* when all contexts of its oracle tree are right.

    Relation to free decoding: under greedy decoding a trace-exact problem is always solved correctly. By
    induction over the decoding order: the first context is the oracle's top context; if a context equals the
    oracle's, the greedy generation equals its target (that is what exactness checked, EOS included, so the
    turn also stops where the target stops), hence the next context — the child's fresh context after a call,
    or the caller's context with the oracle's return appended — is again the oracle's. So free decoding writes
    the oracle tree turn for turn and ends with the oracle's answer. (This assumes the forward pass agrees in
    its argmax with the KV-cached generation, true up to floating-point ties; the converse does not hold: a
    wrong step can still lead to a right answer.) The limits never interfere, as they are sized to the oracle.

    Returns {"trace_exact": [bool per problem], "steps": {(depth, kind): [right, total]}} over unique contexts.
    `generator` needs an `exact(contexts, targets)` method (HFGenerator, OracleGenerator).
    """
    check_method(method)
    per_problem, unique = [], {}
    for problem in problems:
        tree = oracle_tree(task, problem, method)
        rows = []
        for node, depth in tree.walk():
            contexts = node.contexts(method) if method in RECURSIVE_METHODS else [(node.prompt, node.turns[0], "full")]
            for context, target, kind in contexts:
                unique.setdefault(context, (target, depth, kind))
                rows.append(context)
        per_problem.append(rows)
    contexts = list(unique)
    right = dict(zip(contexts, generator.exact(contexts, [unique[c][0] for c in contexts])))
    steps: dict = defaultdict(lambda: [0, 0])
    for context, (_, depth, kind) in unique.items():
        steps[(depth, kind)][0] += int(right[context])
        steps[(depth, kind)][1] += 1
    return {"trace_exact": [all(right[c] for c in rows) for rows in per_problem], "steps": dict(steps),
            "contexts": len(contexts)}


# --- summaries -----------------------------------------------------------------------------------------------
def summarize(traces: Sequence[Trace], trained_max: int | None = None, oracles: Sequence[Node] | None = None) -> dict:
    """Accuracy overall, per size and in/out of distribution (Wilson 95 %), error kinds and, given the oracle
    trees, the first departure of every failed problem (kind and depth)."""
    by_size: dict = defaultdict(lambda: [0, 0])
    for t in traces:
        by_size[t.size][0] += int(t.correct)
        by_size[t.size][1] += 1
    out = {"accuracy": sum(t.correct for t in traces) / len(traces) if traces else None}
    out["overall"] = rate(sum(t.correct for t in traces), len(traces))
    out["by_size"] = {str(s): k / n for s, (k, n) in sorted(by_size.items())}
    out["by_size_ci"] = {str(s): rate(k, n) for s, (k, n) in sorted(by_size.items())}
    if trained_max is not None:
        for name, keep in (("in_distribution", lambda s: s <= trained_max), ("out_of_distribution", lambda s: s > trained_max)):
            k = sum(v[0] for s, v in by_size.items() if keep(s))
            n = sum(v[1] for s, v in by_size.items() if keep(s))
            out[name] = rate(k, n)
    out["errors"] = dict(Counter(t.error for t in traces if t.error))
    out["outcomes"] = dict(Counter(t.outcome for t in traces))
    if oracles is not None:
        kinds, depths = Counter(), defaultdict(Counter)
        for t, o in zip(traces, oracles):
            if t.correct:
                continue
            d = first_departure(t, o)
            kind = d.kind if d else "none"
            kinds[kind] += 1
            depths[kind][d.depth if d else -1] += 1
        out["departures"] = dict(kinds)
        out["departure_depths"] = {k: {str(d): c for d, c in sorted(v.items())} for k, v in depths.items()}
    out["contexts"] = sum(t.contexts for t in traces)
    out["tokens_in"] = sum(t.tokens_in for t in traces)
    out["tokens_out"] = sum(t.tokens_out for t in traces)
    return out


def summarize_teacher_forced(result: dict, sizes: Sequence[int]) -> dict:
    exact = result["trace_exact"]
    by_size: dict = defaultdict(lambda: [0, 0])
    for s, e in zip(sizes, exact):
        by_size[s][0] += int(e)
        by_size[s][1] += 1
    steps: dict = defaultdict(dict)
    for (depth, kind), (k, n) in sorted(result["steps"].items()):
        steps[str(depth)][kind] = rate(k, n)
    return {"trace_exact": sum(exact) / len(exact) if exact else None,
            "by_size": {str(s): k / n for s, (k, n) in sorted(by_size.items())},
            "steps": dict(steps), "contexts": result["contexts"]}


# --- the whole evaluation ------------------------------------------------------------------------------------
def evaluate(task: Task, method: str, sizes: Sequence[int], n: int, generator, seeds: Sequence[int] = (0,),
             limits: Limits | None = None, trained_max: int | None = None, exact: bool = False,
             progress: bool | None = None) -> tuple[dict, dict[int, list[Trace]]]:
    """Decode n problems per size for every seed. Returns (summary, {seed: traces}); the summary pools all
    seeds (intervals over all problems) and keeps each seed's accuracy beside it."""
    check_method(method)
    all_traces, all_oracles, per_seed, traces_by_seed = [], [], {}, {}
    tf_results = []
    started = time.perf_counter()
    for seed in seeds:
        problems = sample_problems(task, sizes, n, seed)
        traces = decode(task, problems, method, generator, limits, progress)
        oracles = [oracle_tree(task, p, method) for p in problems]
        traces_by_seed[seed] = traces
        all_traces += traces
        all_oracles += oracles
        s = summarize(traces, trained_max)
        per_seed[str(seed)] = {"accuracy": s["accuracy"], "by_size": s["by_size"]}
        if exact:
            tf = teacher_forced(task, problems, method, generator)
            tf_results.append((tf, [task.size_of(p) for p in problems]))
    summary = summarize(all_traces, trained_max, all_oracles)
    accs = [v["accuracy"] for v in per_seed.values()]
    summary["per_seed"] = per_seed
    summary["seed_mean"] = sum(accs) / len(accs)
    summary["seed_std"] = statistics_std(accs)
    if exact:
        merged = {"trace_exact": [], "steps": defaultdict(lambda: [0, 0]), "contexts": 0}
        all_sizes = []
        for tf, sz in tf_results:
            merged["trace_exact"] += tf["trace_exact"]
            merged["contexts"] += tf["contexts"]
            for key, (k, m) in tf["steps"].items():
                merged["steps"][key][0] += k
                merged["steps"][key][1] += m
            all_sizes += sz
        summary["teacher_forced"] = summarize_teacher_forced(merged, all_sizes)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary, traces_by_seed


def statistics_std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "tokenizers", "peft", "retune"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def write_results(out_dir, config: dict, summary: dict, traces_by_seed: dict[int, list[Trace]]) -> Path:
    """summary.json (config, versions and summary), by_size.csv (per seed and pooled), traces_seed{S}.jsonl."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"config": config, "versions": versions(), "summary": summary},
                                                 indent=1) + "\n")
    with open(out / "by_size.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seed", "size", "correct", "n", "accuracy", "ci95_low", "ci95_high", "in_distribution"])
        tm = config.get("trained_max")
        rows = [(str(seed), ts) for seed, ts in traces_by_seed.items()] + [("all", [t for ts in traces_by_seed.values() for t in ts])]
        for seed, traces in rows:
            counts: dict = defaultdict(lambda: [0, 0])
            for t in traces:
                counts[t.size][0] += int(t.correct)
                counts[t.size][1] += 1
            for size, (k, n) in sorted(counts.items()):
                lo, hi = wilson(k, n)
                w.writerow([seed, size, k, n, round(k / n, 4), round(lo, 4), round(hi, 4),
                            "" if tm is None else size <= tm])
    for seed, traces in traces_by_seed.items():
        save_traces(out / f"traces_seed{seed}.jsonl", traces)
    return out


# --- models ----------------------------------------------------------------------------------------------
def load_generator(backend: str, task: Task, method: str, sizes: Sequence[int], n: int, seeds: Sequence[int],
                   model_dir: str | None = None, batch_size: int = 128):
    """The generator a backend name stands for. The oracle knows the oracle trees of exactly the problems
    this evaluation samples."""
    if backend == "oracle":
        targets = {}
        for seed in seeds:
            targets.update(oracle_targets(task, sample_problems(task, sizes, n, seed), method))
        return OracleGenerator(targets)
    if backend == "hf":
        if not model_dir:
            raise ValueError("--model is required with --backend hf (a run directory or a local model directory)")
        from .presets import is_preset, require

        if is_preset(model_dir):  # a named preset (e.g. smollm2-135m): its converted directory, fetched before
            model_dir = str(require(model_dir))
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"--model: no such directory: {model_dir!r}")
        if (path / "run.json").is_file():
            from .train import load_trained

            model, tok = load_trained(path, merge=True)
        else:
            from .model import load_pretrained

            model, tok = load_pretrained(str(path))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return HFGenerator(model, tok, batch_size=batch_size)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


# --- CLI -------------------------------------------------------------------------------------------------
def parse_sizes(text: str) -> list[int]:
    """'A-B' or 'A' -> [A..B] (also 'A,B,C')."""
    if "," in str(text):
        try:
            sizes = sorted({int(p) for p in str(text).split(",")})
        except ValueError:
            raise ValueError(f"--sizes must look like A-B, A or A,B,C; got {text!r}") from None
        if sizes[0] < 1:
            raise ValueError(f"--sizes: sizes start at 1; got {text!r}")
        return sizes
    from .data import parse_sizes as parse_range

    lo, hi = parse_range(text, "--sizes")
    return list(range(lo, hi + 1))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"--seed must be an integer or a comma-separated list of integers; got {text!r}") from None
    if not seeds:
        raise ValueError(f"--seed must name at least one seed; got {text!r}")
    return seeds


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model (or the oracle) on a task",
                              description="Decode n problems per size with a method, print a JSON summary "
                                          "(accuracy, by_size, errors, departures) and write results.")
    p.add_argument("--backend", default="oracle", help=f"one of {', '.join(BACKENDS)}")
    p.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}")
    p.add_argument("--sizes", required=True, help="A-B (inclusive), A, or A,B,C")
    p.add_argument("--n", type=int, default=20, help="problems per size and seed")
    p.add_argument("--method", default="retuning", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--seed", default="0", help="a seed or a comma-separated list (aggregated)")
    p.add_argument("--model", help="run directory, local model directory or model preset (backend hf; presets: "
                                   "smollm2-135m, fetched once with `make smollm2`)")
    p.add_argument("--variant", type=int, default=0, help="prompt phrasing (0: the paper's)")
    p.add_argument("--trained-max", type=int, help="largest training size (in/out-of-distribution split); "
                                                     "default: the paper's (addition 15, dp 5, parity 21)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--depth-limit", type=int, help="default: the task's (addition/parity 2 x size, dp 35)")
    p.add_argument("--call-limit", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, help="default: 2 x the longest oracle turn + 16")
    p.add_argument("--teacher-forced", action="store_true", help="also run the exact teacher-forced evaluation")
    p.add_argument("--out", default="results/eval", help="results go to OUT/<task>_<method>_<backend>_...")
    p.set_defaults(func=run_cli)


def check_args(args) -> None:
    if args.backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}; got {args.backend!r}")
    if args.task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}; got {args.task!r}")
    if args.method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}; got {args.method!r}")
    for name in ("n", "batch_size", "call_limit"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    for name in ("depth_limit", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")


def run_cli(args) -> dict:
    check_args(args)
    task = get_task(args.task, args.variant)
    sizes, seeds = parse_sizes(args.sizes), parse_seeds(args.seed)
    trained_max = args.trained_max if args.trained_max is not None else PAPER_TRAINED_MAX[task.name]
    generator = load_generator(args.backend, task, args.method, sizes, args.n, seeds, args.model, args.batch_size)
    limits = Limits(depth=args.depth_limit, calls=args.call_limit, new_tokens=args.max_new_tokens)
    summary, traces = evaluate(task, args.method, sizes, args.n, generator, seeds, limits, trained_max,
                               exact=args.teacher_forced)
    config = {"task": task.name, "variant": task.variant, "method": args.method, "backend": args.backend,
              "model": args.model, "sizes": sizes, "n": args.n, "seeds": seeds, "trained_max": trained_max,
              "limits": asdict(limits), "batch_size": args.batch_size}
    name = f"{task.name}_{args.method}_{args.backend}_{sizes[0]}-{sizes[-1]}_n{args.n}_seed{'-'.join(map(str, seeds))}"
    out = write_results(Path(args.out) / name, config, summary, traces)
    summary["results"] = str(out)
    print(json.dumps(summary))
    return summary
