"""`retune eval`: one model evaluated exactly as the notebooks evaluate it, summarised as JSON.

What is evaluated: a finished run (`--run`), the profile's run for a task x method x seed (trained from the
profile through retune.training.runs, cached, as the notebooks' runs), a base model we did not train (`--model`), or the
oracle over the same problem stream (`--backend oracle`). Everything that can be refused is refused before
anything is trained, loaded or decoded.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..data import datasets as data
from ..training import fine_tune as train
from ..decoding.recursive import decode, save_traces
from ..decoding.generators import HFGenerator, OracleGenerator
from ..files import DEFAULT_PROFILE, atomic_write_text, check_output_dir, versions
from ..evaluation.pipeline import (eval_problems, evaluate_run, evaluation_cache, generator_for, hf_generator, rows,
                                   placement_path, read_placement, trained_contexts)
from ..config.profiles import Profile, load_profile, merge, parse_sets
from ..training.runs import run_identity, spec_for, trained, use_threads
from ..settings import check_seed
from ..tasks import METHODS, TASKS, get_task

# Upper bounds of one `retune eval` (also in its --help): every trace is held in memory until it is summarised.
MAX_EVAL_N = 10_000  # eval.problems_per_size
MAX_EVAL_PROBLEMS = 100_000  # problems in all (sizes x problems per size)
BACKENDS = ("hf", "oracle")


def check_workload(profile: Profile, task: str, method: str, variant: int = 0) -> None:
    """A ValueError, before anything is trained or decoded, for eval sizes beyond what the task supports, too many
    problems, or traces estimated not to fit in the available memory."""
    spec = get_task(task, variant)
    lo, hi = profile.eval.sizes[task]
    for size in (lo, hi):
        try:
            spec.check_size(size)
        except ValueError as err:
            raise ValueError(f"eval.sizes.{task} (--sizes): {err}") from None
    n = profile.eval.problems_per_size
    if not 1 <= n <= MAX_EVAL_N:
        raise ValueError(f"eval.problems_per_size (--n) must be in 1..{MAX_EVAL_N}; got {n}")
    problems = n * (hi - lo + 1)
    if problems > MAX_EVAL_PROBLEMS:
        raise ValueError(f"sizes {lo}-{hi} x {n} per size asks for {problems} problems; at most {MAX_EVAL_PROBLEMS}")
    # a trace keeps every context whole, about three times the oracle's training records of the problem
    need = 3 * data.estimated_bytes(task, method, "scaled", (hi, hi), problems, variant)
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(f"the traces would take about {need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB of "
                         f"memory available; use fewer or smaller sizes (--sizes) or fewer problems (--n)")


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_request(backend: str, run_dir, model, task, method, seed, variant) -> None:
    """The combination of what to evaluate, checked before anything is loaded (one-line ValueErrors)."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if run_dir is not None:
        if model is not None:
            raise ValueError("--run evaluates a trained run, --model a base model: give one of them")
        if task or method or seed is not None or variant is not None:
            raise ValueError("--run names the run already; leave out --task/--method/--seed/--variant "
                             "(or leave out --run)")
        return
    if model is not None and backend != "hf":
        raise ValueError(f"--model is evaluated with --backend hf; got --backend {backend}")
    if not (task and method):
        raise ValueError("give --run RUN_DIR, or --task and --method (with --backend hf and no --model the run is "
                         "trained from the profile, cached)")
    if task not in TASKS or method not in METHODS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)} and --method one of {', '.join(METHODS)}; "
                         f"got {task!r}, {method!r}")
    get_task(task, variant or 0)  # a variant the task does not have: ValueError naming the range
    if seed is not None:
        check_seed(seed, "--seed")
    if model is not None:
        from ..models.causal_lm import resolve_model

        if (Path(str(model)).expanduser() / "run.json").is_file():
            raise ValueError(f"--model {model!r} is one of our trained runs: evaluate it with --run")
        resolve_model(model)  # a typo or an empty directory fails now, not after the problems are sampled


def evaluate_command(profile: Profile, run_dir: Path | None = None, task: str | None = None,
                     method: str | None = None, seed: int | None = None, variant: int | None = None,
                     backend: str = "hf", model: str | None = None, out=None) -> dict:
    """Evaluate one model on the profile's eval sizes and summarise it, as notebooks 03/04 do.

    What is evaluated: a trained run (`run_dir`; with neither it nor `model`, the task x method run is trained from
    the profile like the notebooks' runs, cached), a base model we did not train (`model`: a local directory or a
    preset; nothing is excluded, there is no training set), or with backend 'oracle' the oracle over the same
    problem stream (no model). Everything that can be refused (the request, the workload's bounds, the output
    directory `out`) is refused before anything is trained, loaded or decoded. With `out`, the traces and then a
    summary.json are written there."""
    check_request(backend, run_dir, model, task, method, seed, variant)
    out_dir = check_output_dir(out, "--out") if out is not None else None
    if run_dir is not None:
        spec = run_identity(run_dir)
    else:
        spec = spec_for(profile, task, method, seed, variant or 0)
    ident = {"task": spec.task, "method": spec.method, "seed": spec.seed, "variant": spec.variant}
    if ident["task"] not in profile.eval.sizes:
        raise ValueError(f"the profile has no eval.sizes for task {ident['task']!r} (give --sizes A-B)")
    check_workload(profile, ident["task"], ident["method"], ident["variant"])
    use_threads(profile)
    if backend == "oracle":
        source, traces = ({"run": str(run_dir)} if run_dir else {}), oracle_evaluation(profile, run_dir, **ident)
        placed = {}
    elif model is not None:
        source = {"model": str(model)}
        traces, placed = pretrained_evaluation(profile, model, **ident)
    else:
        run_dir = run_dir if run_dir is not None else trained(profile, spec)
        source = {"run": str(run_dir)}
        traces, placed = run_evaluation(profile, run_dir, **ident)
    result = {**source, **ident, "profile": profile.profile, "backend": backend, **placed,
              "sizes": profile.eval.sizes[ident["task"]], "problems_per_size": profile.eval.problems_per_size,
              "trained_max": profile.train.sizes.get(ident["task"]), **evaluation_summary(profile, traces)}
    if out_dir is not None:
        result["out"] = str(write_evaluation(out_dir, profile, result, traces))
    return result


def run_evaluation(profile: Profile, run_dir: Path, task: str, method: str, seed: int, variant: int):
    """A trained run's traces (evaluate_run: cached beside the run) and where its model ran."""
    traces = evaluate_run(profile, run_dir, task, method, seed, variant, progress=False)
    placed = placement_path(evaluation_cache(profile, run_dir, task, method, seed, variant))
    where_run = read_placement(placed) or \
        train.placement(hf_generator(profile, run_dir).model)  # evaluated before placements were recorded
    return traces, where_run


def pretrained_generator(profile: Profile, name: str) -> HFGenerator:
    """A base model (local directory or preset, through retune.models.causal_lm) on the profile's eval device and dtype."""
    from ..models.causal_lm import load_pretrained

    model, tok = load_pretrained(name, dtype=profile.eval.dtype)
    return generator_for(profile, model.to(train.resolve_device(profile.eval.device)), tok)


def pretrained_evaluation(profile: Profile, name: str, task: str, method: str, seed: int, variant: int):
    """A base model's traces on the fresh problem stream (no training set, so nothing excluded; uncached)."""
    problems = eval_problems(task, tuple(profile.eval.sizes[task]), profile.eval.problems_per_size, seed, variant)
    generator = pretrained_generator(profile, name)
    traces = decode(get_task(task, variant), problems, method, generator, profile.limits,
                    semantics=profile.eval.semantics)
    placed = train.placement(generator.model)
    generator.close()
    return traces, placed


def oracle_evaluation(profile: Profile, run_dir: Path | None, task: str, method: str, seed: int,
                      variant: int) -> list:
    """The oracle decoded over the problems a model would get (a run's training problems excluded, when a run is
    given): a check of the whole pipeline that needs no model, so every problem must come out correct."""
    spec = get_task(task, variant)
    exclude = trained_contexts(run_dir) if run_dir is not None else frozenset()
    problems = eval_problems(task, tuple(profile.eval.sizes[task]), profile.eval.problems_per_size, seed, variant,
                             exclude=exclude)
    return decode(spec, problems, method, OracleGenerator.for_problems(spec, problems, method), profile.limits,
                  semantics=profile.eval.semantics)


def write_evaluation(out_dir: Path, profile: Profile, result: dict, traces: list) -> Path:
    """traces.jsonl, then summary.json (the result, the profile's settings, the seeds, versions), each written
    atomically; the summary last, so a directory with a summary.json holds a whole evaluation. A failed write
    removes the directories it created."""
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").unlink(missing_ok=True)  # an older summary never vouches for new traces
        save_traces(out_dir / "traces.jsonl", traces)
        summary = {**result, "out": str(out_dir), "traces": "traces.jsonl", "seeds": {"eval": result["seed"],
                   "profile": profile.seeds}, "settings": profile.to_dict(), "versions": versions()}
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    return out_dir


def add_cli(subparsers) -> None:
    tasks = ", ".join(TASKS)
    p = subparsers.add_parser(
        "eval", help="evaluate a model (or the oracle) as the notebooks do; print JSON",
        description="Decode fresh problems (never a training problem) of the profile's eval.sizes on eval.device in "
                    "eval.dtype, and print per-size and id/ood accuracy as JSON (the numbers of notebooks 03/04).",
        epilog=f"Bounds, checked before anything is trained or decoded: sizes up to each task's largest "
               f"({', '.join(f'{name} {cls.max_size}' for name, cls in TASKS.items())}); at most {MAX_EVAL_N:,} "
               f"problems per size and {MAX_EVAL_PROBLEMS:,} in all; traces estimated to fit in the available "
               f"memory. --out is checked first too. Errors are one line, exit status 2.")
    p.add_argument("--backend", default="hf", help=f"one of {', '.join(BACKENDS)} (default hf); oracle decodes the "
                   "oracle over the same problem stream (no model: a pipeline check; with --run its training "
                   "problems are excluded, with --task/--method nothing is trained or excluded)")
    p.add_argument("--run", help="a finished run directory (task, method, seed and variant are read from it)")
    p.add_argument("--model", help="a base model we did not train: a local model directory or a preset (no "
                                   "training set, so nothing is excluded); needs --task and --method")
    p.add_argument("--task", help=f"without --run: one of {tasks}; with --backend hf and no --model the run is "
                                  "trained (cached) from the profile, as notebooks do")
    p.add_argument("--method", help=f"without --run: one of {', '.join(METHODS)}")
    p.add_argument("--seed", type=int, help="without --run: the seed (default: the profile's first)")
    p.add_argument("--variant", type=int, help="without --run: the prompt phrasing (default 0, the paper's)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name (profiles/) or YAML path, as for `retune reproduce`")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="override a profile key (repeatable), dotted into a section: --set limits.depth=60")
    p.add_argument("--sizes", help="A-B or A: shorthand for --set eval.sizes.<task>=[A,B]")
    p.add_argument("--n", type=int, help=f"shorthand for --set eval.problems_per_size=N (at most {MAX_EVAL_N})")
    p.add_argument("--device", help="shorthand for --set eval.device=... (auto, cpu, cuda, cuda:N)")
    p.add_argument("--dtype", help="shorthand for --set eval.dtype=... (float32, float16, bfloat16)")
    p.add_argument("--out", help="a directory: traces.jsonl, then summary.json (profile, seeds, versions)")
    p.set_defaults(func=run_cli)


def shorthand_overrides(args) -> dict:
    """The profile keys --sizes, --n, --device and --dtype stand for (--sizes needs the task: --task or the run's)."""
    keys = {k: v for k, v in (("device", args.device), ("dtype", args.dtype), ("problems_per_size", args.n))
            if v is not None}
    if args.sizes is not None:
        task = args.task or (run_identity(args.run).task if args.run else None)
        if not task:
            raise ValueError("--sizes sets eval.sizes.<task>: give --task (or --run)")
        keys["sizes"] = {task: list(data.parse_sizes(args.sizes, "--sizes"))}
    return {"eval": keys} if keys else {}


def run_cli(args) -> dict:

    profile = load_profile(args.profile, merge(parse_sets(args.set), shorthand_overrides(args)))
    out = evaluate_command(profile, Path(args.run) if args.run else None, args.task, args.method, args.seed,
                           args.variant, args.backend, args.model, args.out)
    print(json.dumps(out))
    return out


def evaluation_summary(profile: Profile, traces: list) -> dict:
    """Per-size and per-split (id / ood / ood>2x ...) accuracy with Wilson intervals: the tables of notebooks 03
    and 04 for one run."""
    import pandas as pd

    from ..analysis import report

    df = pd.DataFrame(rows(traces))
    by_size = report.accuracy_by(df, ["size"])
    splits = report.main_table(df, profile.train.sizes)
    keep = ["split", "size_range", "correct", "n", "accuracy", "ci_low", "ci_high"]
    return {"by_size": by_size[["size", "correct", "n", "accuracy", "ci_low", "ci_high"]].to_dict("records"),
            "splits": splits[keep].to_dict("records"),
            "errors": {k: int(v) for k, v in df.loc[df["error"] != "", "error"].value_counts().items()}}


