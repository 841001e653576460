"""Experiments: a profile -> datasets -> trained models -> decoded traces -> tidy result rows.

Every step is cached on disk under a key of its inputs, so a notebook re-run (or `make reproduce` after an
interruption) re-uses what is finished: datasets by their parameters, models by `train.train`'s run key,
evaluations by the run key plus the evaluation's parameters. Notebooks call these functions and show results;
the logic lives here, where tests reach it.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from . import data, train
from .decode import HFGenerator, Limits, OracleGenerator, decode, load_traces, save_traces
from .files import atomic_write_text, check_output_dir, locked
from .model import DTYPES
from .profiles import Profile, split_methods
from .tasks import METHODS, TASKS, get_task
from .tasks.methods import MAIN_METHODS

ROOT = Path(__file__).resolve().parent.parent


def where(profile: Profile, key: str) -> Path:
    """A profile's directory for `key` (data, runs, results, figures: its `paths` section), relative to the repo."""
    path = Path(getattr(profile.paths, key))
    return path if path.is_absolute() else ROOT / path


def dataset(profile: Profile, task: str, method: str, seed: int, distribution: str | None = None,
            n: int | None = None, variant: int = 0, progress: bool = False) -> Path:
    """The training set of one task x method (built once; the same parameters give the same bytes); the
    distribution defaults to the profile's `train.distribution`."""
    distribution = distribution or distribution_of(profile, task)
    n = n or profile.train.problems_per_size
    sizes = (1, profile.train.sizes[task])
    path = where(profile, "data") / dataset_name(profile, task, method, seed, distribution, n, variant)
    if data.verified(path) is None:  # missing, or a manifest that does not vouch for the file (killed build)
        data.make(task, method, path, distribution, sizes, n, seed, variant, progress=progress)
    return path


def distribution_of(profile: Profile, task: str) -> str:
    """The profile's training distribution for `task` (`train.distribution`: one for all tasks, or per task)."""
    chosen = profile.train.distribution
    return chosen if isinstance(chosen, str) else chosen.get(task, "scaled")


def dataset_name(profile: Profile, task: str, method: str, seed: int, distribution: str | None = None,
                 n: int | None = None, variant: int = 0) -> str:
    """The file name of a training set: its parameters, readable."""
    distribution = distribution or distribution_of(profile, task)
    n = n or profile.train.problems_per_size
    if distribution == "distinct":  # the floor is a constant of the code: a new one must not reuse old files
        distribution += f"{data.SIZE_FLOOR * 100:g}"
    return f"{task}-{method}-{distribution}-1to{profile.train.sizes[task]}-n{n}-v{variant}-s{seed}.jsonl"


def base_model(profile: Profile, seed: int, progress: bool = True) -> str:
    """What fine-tuning starts from: 'tiny' (random init), a pretrained model, or our own generic-pretrained
    tiny base (profile key `pretrain`; one per seed, so seeds vary the whole pipeline)."""
    if profile.pretrain:
        from .pretrain import pretrained_base

        spec = asdict(profile.pretrain) | {"train": train.recipe_of(profile.pretrain.train)}
        return str(pretrained_base(spec, asdict(profile.model.tiny), seed, where(profile, "data"),
                                   where(profile, "runs"), progress))
    from .presets import fetch, is_preset

    if is_preset(profile.model.source):  # a named preset (smollm2-135m): fetched and converted once, then local
        return str(fetch(profile.model.source))
    return profile.model.source


def train_config(profile: Profile, seed: int, task: str | None = None, method: str | None = None) -> train.TrainConfig:
    """The profile's `train` recipe, then its `train.by_task[task]` (every method of a task gets the same
    budget), then that entry's overrides for `method`, then the seed."""
    per_task, per_method = split_methods(profile.train.by_task.get(task) or {})
    return train.make_config(train.recipe_of(profile.train) | per_task | (per_method.get(method) or {}) | {"seed": seed})


def trained(profile: Profile, task: str, method: str, seed: int, distribution: str | None = None,
            n: int | None = None, variant: int = 0, progress: bool = True) -> Path:
    """A fine-tuned model's run directory (trained once, then cached by train.train)."""
    paths = [dataset(profile, task, method, seed, distribution, n, variant)]
    base = base_model(profile, seed)
    if profile.pretrain and profile.pretrain.mix:  # rehearse the generic skills while fine-tuning
        from .pretrain import rehearsal

        paths.append(rehearsal(asdict(profile.pretrain), paths[0], seed, where(profile, "data")))
    model_config = asdict(profile.model.tiny) if base == "tiny" else None
    config = train_config(profile, seed, task, method)
    config.progress = progress
    return train.train(base, paths, config, where(profile, "runs"), model_config)


def eval_problems(task: str, sizes: tuple[int, int], n: int, seed: int, variant: int = 0,
                  exclude: set[str] = frozenset(), stream: str = "eval") -> list:
    """n fresh random problems per size, seeded apart from training data (training uses the profile seed, we
    use a stream derived from the task, size and seed), and never one whose top context was trained on
    (where the space of problems is too small for n fresh ones, fewer are returned).

    `stream` "valid" draws a validation set apart from the reported "eval" problems: recipes are chosen on it,
    so no reported number was used to choose the recipe behind it."""
    if stream not in ("eval", "valid"):
        raise ValueError(f"stream: expected 'eval' or 'valid', got {stream!r}")
    spec = get_task(task, variant)
    for size in (sizes[0], sizes[1]):
        spec.check_size(size)  # a ValueError naming the task's range, before a huge range is walked
    out = []
    for size in range(sizes[0], sizes[1] + 1):
        rng = random.Random(f"{stream}/{task}/{size}/{seed}")
        chosen = {}
        for _ in range(50 * n):
            if len(chosen) == n:
                break
            problem = spec.sample(size, rng)
            key = repr(problem)
            # every method's top context: a run's training set is one method's, whichever it is
            if key not in chosen and all(spec.top_context(problem, m) not in exclude for m in MAIN_METHODS):
                chosen[key] = problem
        out += chosen.values()
    return out


def trained_contexts(run_dir: Path) -> set[str]:
    """The top contexts a run was trained on (to keep evaluation problems out of the training set)."""
    run = json.loads((Path(run_dir) / "run.json").read_text())
    return {r["input"] for d in run["data"] for r in data.read(d["path"]) if r.get("depth", 0) == 0}


def evaluation_params(profile: Profile, task: str, method: str, seed: int, variant: int, sizes, n: int) -> dict:
    """What decides an evaluation's traces (its cache key). Device and dtype enter only when they are not the
    CPU in float32, so the key of a plain CPU evaluation is what it always was (caches stay valid)."""
    params = {"task": task, "method": method, "seed": seed, "variant": variant, "sizes": list(sizes), "n": n,
              "limits": {k: v for k, v in asdict(profile.limits).items() if v != getattr(Limits(), k)}}
    device = train.resolve_device(profile.eval.device)
    if device != "cpu" or profile.eval.dtype not in ("float32", "fp32"):
        params |= {"device": device, "dtype": DTYPES[profile.eval.dtype]}
    return params


def evaluate_run(profile: Profile, run_dir: Path, task: str, method: str, seed: int, variant: int = 0,
                 sizes: tuple[int, int] | None = None, n: int | None = None, progress: bool = True) -> list:
    """Decode fresh problems with a trained model, on the profile's eval device in its eval dtype; the traces are
    cached beside the run."""
    sizes = tuple(sizes or profile.eval.sizes[task])
    n = n or profile.eval.problems_per_size
    cache = evaluation_cache(profile, run_dir, task, method, seed, variant, sizes, n)
    if cache.exists():
        return load_traces(cache)
    with locked(cache):  # a second process asking for this evaluation waits, then reads it
        if cache.exists():
            return load_traces(cache)
        return _evaluate(profile, run_dir, task, method, seed, variant, sizes, n, cache, progress)


def _evaluate(profile: Profile, run_dir: Path, task: str, method: str, seed: int, variant: int, sizes, n: int,
              cache: Path, progress: bool) -> list:
    problems = eval_problems(task, sizes, n, seed, variant, exclude=trained_contexts(run_dir))
    # Decoded in chunks, each saved as it finishes, so an interrupted evaluation resumes where it stopped.
    chunk = profile.eval.chunk
    parts = cache.with_name(f"{cache.name}.parts{chunk}")  # chunk in the name: parts of another size never mix
    parts.mkdir(parents=True, exist_ok=True)
    generator, traces = None, []
    for start in range(0, len(problems), chunk):
        part = parts / f"{start:07d}.jsonl"
        if part.exists():
            traces += load_traces(part)
            continue
        if generator is None:
            generator = hf_generator(profile, run_dir)
            data.write_json(placement_path(cache), train.placement(generator.model))
        new = decode(get_task(task, variant), problems[start:start + chunk], method, generator, profile.limits,
                     progress=progress)
        tmp = part.with_name(part.name + ".tmp")
        save_traces(tmp, new)
        tmp.replace(part)
        traces += new
    tmp = cache.with_name(cache.name + ".tmp")
    save_traces(tmp, traces)
    tmp.replace(cache)
    shutil.rmtree(parts)
    return traces


def placement_path(cache: Path) -> Path:
    """Beside an evaluation's traces: the device and dtype its model actually ran in."""
    return cache.with_name(cache.name.removesuffix(".jsonl") + ".placement.json")


def eval_key(profile: Profile, task: str, method: str, seed: int, variant: int = 0, sizes=None,
             n: int | None = None) -> str:
    """A hash of what decides an evaluation's problems and decoding (the cache key of evaluate_run)."""
    params = evaluation_params(profile, task, method, seed, variant, sizes or profile.eval.sizes[task],
                               n or profile.eval.problems_per_size)
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def evaluation_cache(profile: Profile, run_dir: Path, task: str, method: str, seed: int, variant: int = 0,
                     sizes=None, n: int | None = None) -> Path:
    """The traces file of an evaluation (evaluate_run's cache), named by a hash of what decides it."""
    key = eval_key(profile, task, method, seed, variant, sizes, n)
    return Path(run_dir) / "evals" / f"{task}-{method}-v{variant}-{key}.jsonl"


def hf_generator(profile: Profile, run_dir: Path) -> HFGenerator:
    """A trained run's model (LoRA merged) on the profile's eval device and dtype, behind the batched generator
    interface."""
    model, tok = train.load_trained(run_dir, merge=True, device=profile.eval.device, dtype=profile.eval.dtype)
    return HFGenerator(model, tok, batch_size=profile.eval.batch_size)


def decode_with(profile: Profile, run_dir: Path, task: str, method: str, problems: list, variant: int = 0,
                progress: bool = False) -> list:
    """Greedy recursive decoding of `problems` with a trained model (as evaluate_run decodes, uncached)."""
    generator = hf_generator(profile, run_dir)
    return decode(get_task(task, variant), problems, method, generator, profile.limits, progress=progress)


def rows(traces: list, **labels) -> list[dict]:
    """One tidy row per problem: the verdict, the error kind and where the trace first left the oracle tree."""
    from .evaluate import first_departure, oracle_tree

    out = []
    for t in traces:
        oracle = oracle_tree(get_task(t.task, t.variant), t.problem, t.method)
        departure = first_departure(t, oracle)
        out.append(dict(labels, task=t.task, method=t.method, size=t.size, variant=t.variant, correct=t.correct,
                        error=t.error or "", first_error_kind=departure.kind if departure else "",
                        first_error_depth=departure.depth if departure else -1, contexts=t.contexts,
                        tokens_in=t.tokens_in, tokens_out=t.tokens_out))
    return out


def dataset_table(profile: Profile):
    """One row per main training set: examples, tokens per example (mean, max), by kind."""
    import pandas as pd

    out = []
    for task in profile.tasks:
        for method in profile.methods:
            m = data.read_manifest(dataset(profile, task, method, profile.seeds[0]))
            out.append({"task": task, "method": method, "examples": m["records"],
                        "tokens_per_example_mean": m["char_tokens"]["mean"],
                        "tokens_per_example_max": m["char_tokens"]["max"], "tokens": m["char_tokens"]["total"],
                        **{f"kind_{k}": v for k, v in m["by_kind"].items()}})
    return pd.DataFrame(out).fillna(0)


def dataset_sizes(profile: Profile):
    """Examples per size (rows) for each task x method (columns) of the main training sets."""
    import pandas as pd

    columns = {}
    for task in profile.tasks:
        for method in profile.methods:
            m = data.read_manifest(dataset(profile, task, method, profile.seeds[0]))
            columns[(task, method)] = {int(k): v for k, v in m["by_size"].items()}
    return pd.DataFrame(columns).sort_index().fillna(0).astype(int)


# --- the grids the notebooks show -------------------------------------------------------------------------
def main_runs(profile: Profile) -> list[dict]:
    """Every task x method x seed of the main comparison."""
    return [{"task": t, "method": m, "seed": s, "distribution": distribution_of(profile, t)}
            for t in profile.tasks for m in profile.methods for s in profile.seeds]


def efficiency_runs(profile: Profile) -> list[dict]:
    """Sample efficiency: n distinct training problems per size (the paper's limited-data sets)."""
    tasks = profile.studies.efficiency_tasks or profile.tasks
    methods = profile.studies.efficiency_methods or profile.methods
    return [{"task": t, "method": m, "seed": s, "distribution": "efficiency", "n": n}
            for t in tasks for m in methods for n in profile.studies.efficiency_n for s in study_seeds(profile)]


def variant_runs(profile: Profile) -> list[dict]:
    """Robustness to prompt phrasings: each phrasing trained and evaluated on its own."""
    tasks = profile.studies.variant_tasks or profile.tasks
    methods = profile.studies.variant_methods
    return [{"task": t, "method": m, "seed": s, "variant": v, "distribution": distribution_of(profile, t)}
            for t in tasks for m in methods for v in profile.studies.variants for s in study_seeds(profile)]


def ablation_runs(profile: Profile) -> list[dict]:
    """No isolation (inline) and no carry-over against full Re-Tuning."""
    tasks = profile.studies.ablation_tasks or profile.tasks
    return [{"task": t, "method": m, "seed": s, "distribution": distribution_of(profile, t)}
            for t in tasks for m in profile.studies.ablations for s in study_seeds(profile)]


def study_seeds(profile: Profile) -> list[int]:
    """The seeds of the studies (06-08): `studies.seeds`, else the profile's."""
    return profile.studies.seeds or profile.seeds


def all_runs(profile: Profile) -> list[dict]:
    """Every run a reproduction trains and evaluates, each once, in full form."""
    out = []
    for run in main_runs(profile) + efficiency_runs(profile) + variant_runs(profile) + ablation_runs(profile):
        spec = run_spec(run)
        if spec not in out:
            out.append(spec)
    return out


def use_threads(profile: Profile) -> None:
    if profile.threads:
        import torch

        torch.set_num_threads(profile.threads)


def run_all(profile: Profile, runs: list[dict], progress: bool = True):
    """Train (cached) and evaluate (cached) every run; one tidy DataFrame row per evaluated problem."""
    import pandas as pd
    from tqdm.auto import tqdm

    use_threads(profile)
    out = []
    bar = tqdm(runs, desc=f"{profile.profile}: train + evaluate", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in run.items()))
        spec = run_spec(run)
        run_dir = trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                          spec["variant"])
        traces = evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"],
                              progress=False)
        labels = {"model": model_label(profile), "seed": spec["seed"], "n_train": spec["n"]
                  or profile.train.problems_per_size, "run": Path(run_dir).name}
        out += rows(traces, **labels)
    return pd.DataFrame(out)


def model_label(profile: Profile) -> str:
    if profile.pretrain:
        return "tiny+pretrain"
    return "tiny" if profile.model.source == "tiny" else Path(profile.model.source).name


def traces_of(profile: Profile, runs: list[dict]) -> list:
    """The cached traces of finished runs (for the inspector and the error analysis)."""
    out = []
    for run in runs:
        spec = run_spec(run)
        run_dir = trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                          spec["variant"])
        out += evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"],
                            progress=False)
    return out


def training_measurements(profile: Profile, runs: list[dict] | None = None):
    """measurements.json of each main run as a table (tokens per example, throughput, padding)."""
    import pandas as pd

    out = []
    for run in runs or main_runs(profile):
        run_dir = trained(profile, run["task"], run["method"], run["seed"], run_spec(run)["distribution"])
        m = json.loads((run_dir / "measurements.json").read_text())
        out.append({"task": run["task"], "method": run["method"], "seed": run["seed"],
                    "examples": m["examples"], "tokens_per_example_mean": m["tokens_per_example"]["mean"],
                    "tokens_per_example_max": m["tokens_per_example"]["max"],
                    "tokens_per_s": m["tokens_per_s"], "padding_fraction": m["padding_fraction"],
                    "train_seconds": m["train_seconds"]})
    return pd.DataFrame(out)


def training_memory(profile: Profile, task: str, method: str, seed: int = 0, batch_size: int | None = None) -> dict:
    """Peak memory of one training step on the longest examples of a dataset, measured in a fresh process so
    nothing else counts: on GPU the allocator's peak, on CPU the growth of resident memory over the step."""
    from .memory import measure_in_child

    path = dataset(profile, task, method, seed)
    base = profile.model.source if not profile.pretrain else "tiny"
    job = {"data": str(path), "model": base, "tiny_model": asdict(profile.model.tiny),
           "batch_size": batch_size or profile.train.batch_size}
    return measure_in_child(job) | {"task": task, "method": method}


# --- `retune eval`: one run, evaluated exactly as the notebooks evaluate it -----------------------------------
def run_identity(run_dir: Path) -> dict:
    """task, method, seed and prompt variant of a finished run, from its run.json and its task dataset's manifest
    (the first dataset; a rehearsal set mixed in comes after it)."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"--run {str(run_dir)!r} is not a run directory (no run.json)")
    run = json.loads((run_dir / "run.json").read_text())
    first = run["data"][0]
    manifest = data.manifest_path(first["path"])
    variant = json.loads(manifest.read_text()).get("parameters", {}).get("variant", 0) if manifest.is_file() else 0
    return {"task": first["task"], "method": first["method"], "seed": run["config"]["seed"], "variant": variant}


def evaluation_summary(profile: Profile, traces: list) -> dict:
    """Per-size and per-split (id / ood / ood>2x ...) accuracy with Wilson intervals: the tables of notebooks 03
    and 04 for one run."""
    import pandas as pd

    from . import report

    df = pd.DataFrame(rows(traces))
    by_size = report.accuracy_by(df, ["size"])
    splits = report.main_table(df, profile.train.sizes)
    keep = ["split", "size_range", "correct", "n", "accuracy", "ci_low", "ci_high"]
    return {"by_size": by_size[["size", "correct", "n", "accuracy", "ci_low", "ci_high"]].to_dict("records"),
            "splits": splits[keep].to_dict("records"),
            "errors": {k: int(v) for k, v in df.loc[df["error"] != "", "error"].value_counts().items()}}


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
    if model is not None:
        from .model import resolve_model

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
        ident = run_identity(run_dir)
    else:
        ident = {"task": task, "method": method, "seed": profile.seeds[0] if seed is None else seed,
                 "variant": variant or 0}
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
        run_dir = run_dir if run_dir is not None else trained(profile, **ident)
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
    where_run = json.loads(placed.read_text()) if placed.is_file() else \
        train.placement(hf_generator(profile, run_dir).model)  # evaluated before placements were recorded
    return traces, where_run


def pretrained_generator(profile: Profile, name: str) -> HFGenerator:
    """A base model (local directory or preset, through retune.model) on the profile's eval device and dtype."""
    from .model import load_pretrained

    model, tok = load_pretrained(name, dtype=profile.eval.dtype)
    model = model.to(train.resolve_device(profile.eval.device))
    return HFGenerator(model, tok, batch_size=profile.eval.batch_size)


def pretrained_evaluation(profile: Profile, name: str, task: str, method: str, seed: int, variant: int):
    """A base model's traces on the fresh problem stream (no training set, so nothing excluded; uncached)."""
    problems = eval_problems(task, tuple(profile.eval.sizes[task]), profile.eval.problems_per_size, seed, variant)
    generator = pretrained_generator(profile, name)
    traces = decode(get_task(task, variant), problems, method, generator, profile.limits)
    return traces, train.placement(generator.model)


def oracle_evaluation(profile: Profile, run_dir: Path | None, task: str, method: str, seed: int,
                      variant: int) -> list:
    """The oracle decoded over the problems a model would get (a run's training problems excluded, when a run is
    given): a check of the whole pipeline that needs no model, so every problem must come out correct."""
    spec = get_task(task, variant)
    exclude = trained_contexts(run_dir) if run_dir is not None else frozenset()
    problems = eval_problems(task, tuple(profile.eval.sizes[task]), profile.eval.problems_per_size, seed, variant,
                             exclude=exclude)
    return decode(spec, problems, method, OracleGenerator.for_problems(spec, problems, method), profile.limits)


def versions() -> dict:
    import importlib.metadata as md
    import sys

    out = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "tokenizers", "peft", "retune"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


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
    p.add_argument("--profile", default="cpu", help="profile name (profiles/) or YAML path, as for `retune reproduce`")
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
        task = args.task or (run_identity(args.run)["task"] if args.run else None)
        if not task:
            raise ValueError("--sizes sets eval.sizes.<task>: give --task (or --run)")
        keys["sizes"] = {task: list(data.parse_sizes(args.sizes, "--sizes"))}
    return {"eval": keys} if keys else {}


def run_cli(args) -> dict:
    from .profiles import load_profile, merge, parse_sets

    profile = load_profile(args.profile, merge(parse_sets(args.set), shorthand_overrides(args)))
    out = evaluate_command(profile, Path(args.run) if args.run else None, args.task, args.method, args.seed,
                           args.variant, args.backend, args.model, args.out)
    print(json.dumps(out))
    return out


# --- traces that ship with the results: what the viewers open (they never train, build or write) ----------------
TRACES_FILE = "traces.jsonl.gz"  # in results_dir, with traces.meta.json beside it


def run_spec(run: dict) -> dict:
    """A run of a grid with every field spelled out (the grids leave the defaults implicit)."""
    return {"distribution": "scaled", "n": None, "variant": 0} | run


def run_labels(profile: Profile, spec: dict, run_name: str) -> dict:
    """The labels run_all gives each row of a run."""
    return {"model": model_label(profile), "seed": spec["seed"],
            "n_train": spec["n"] or profile.train.problems_per_size, "run": run_name}


def _run_id(profile: Profile, spec: dict) -> str:
    """What identifies a run's evaluation in the shipped file: the run's grid fields and the evaluation key."""
    return json.dumps([spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                       spec["variant"], eval_key(profile, spec["task"], spec["method"], spec["seed"],
                                                 spec["variant"])])


def export_traces(profile: Profile, runs: list[dict], path: Path | str | None = None) -> Path:
    """Write every trace of `runs` (trained and evaluated, normally cached by run_all before) into one gzipped
    JSONL file, default results_dir/traces.jsonl.gz, with traces.meta.json beside it (see write_traces)."""
    groups = []
    for run in runs:
        spec = run_spec(run)
        run_dir = trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                          spec["variant"])
        traces = evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"],
                              progress=False)
        groups.append((spec, run_labels(profile, spec, Path(run_dir).name), traces))
    return write_traces(profile, groups, path)


def write_traces(profile: Profile, groups: list[tuple[dict, dict, list]], path: Path | str | None = None) -> Path:
    """The traces file of a profile's results from (run spec, row labels, traces) per run: one line per trace,
    {"run": <run id>, "labels": ..., "trace": <Trace dict>}, gzipped without a time stamp (the same traces give
    the same bytes, so a re-run leaves git clean); the .meta.json beside it names the profile, seeds,
    evaluation settings and each run with its counts."""
    import gzip

    path = Path(path) if path else where(profile, "results") / TRACES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    counts = []
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for spec, labels, traces in groups:
            spec = run_spec(spec)
            ident = _run_id(profile, spec)
            for t in traces:
                line = {"run": ident, "labels": labels, "trace": t.to_dict()}
                f.write((json.dumps(line, ensure_ascii=True) + "\n").encode())
            counts.append(dict(spec, run=labels.get("run"), problems=len(traces),
                               failures=sum(not t.correct for t in traces)))
    tmp.replace(path)
    meta = {"profile": profile.profile, "seeds": profile.seeds, "eval_sizes": profile.eval.sizes,
            "eval_problems_per_size": profile.eval.problems_per_size, "limits": asdict(profile.limits),
            "runs": counts, "written_by": "retune.experiments.write_traces", "versions": train.versions()}
    traces_meta_path(path).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def traces_meta_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name.split(".")[0] + ".meta.json")


def shipped_traces(profile: Profile, path: Path | str | None = None) -> dict[str, tuple[dict, list]]:
    """The traces file of the profile's results ({run id: (labels, traces)}); empty when there is none or it
    was written under another profile."""
    import gzip

    from .decode import Trace

    path = Path(path) if path else where(profile, "results") / TRACES_FILE
    meta_path = traces_meta_path(path)
    if not (path.is_file() and meta_path.is_file()):
        return {}
    if json.loads(meta_path.read_text()).get("profile") != profile.profile:
        return {}
    out: dict[str, tuple[dict, list]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for text in f:
            if text.strip():
                line = json.loads(text)
                out.setdefault(line["run"], (line["labels"], []))[1].append(Trace.from_dict(line["trace"]))
    return out


def finished_run(profile: Profile, spec: dict) -> Path | None:
    """The finished run directory that `trained` would return for `spec`, found without training, building a
    dataset or loading a model: a run in runs_dir trained on the same dataset file with the same settings (the
    newest, if several)."""
    name = dataset_name(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                        spec["variant"])
    wanted = train.key_config(asdict(train_config(profile, spec["seed"], spec["task"], spec["method"])))
    found = []
    for run_json in where(profile, "runs").glob("*/run.json"):  # named by tasks: "generic+parity-..." too
        if not (run_json.parent / "measurements.json").is_file():
            continue  # unfinished
        run = json.loads(run_json.read_text())
        if run["data"] and Path(run["data"][0]["path"]).name == name and train.key_config(run["config"]) == wanted:
            found.append(run_json.parent)
    return max(found, key=lambda p: (p / "measurements.json").stat().st_mtime) if found else None


def cached_evaluation(profile: Profile, spec: dict) -> tuple[dict, list] | None:
    """(labels, traces) of a run's cached evaluation, or None when the run or its evaluation is not on disk."""
    run_dir = finished_run(profile, spec)
    if run_dir is None:
        return None
    cache = evaluation_cache(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"])
    return (run_labels(profile, spec, run_dir.name), load_traces(cache)) if cache.is_file() else None


def cached(profile: Profile, runs: list[dict], say=print) -> list[tuple[dict, list]]:
    """(labels, traces) per run that exists: from the shipped traces file of the results, else from a cached
    evaluation under runs_dir. Never trains, builds or writes anything. Runs found nowhere are named in one
    line, with the command that produces them."""
    shipped = shipped_traces(profile)
    out, missing = [], []
    for run in runs:
        spec = run_spec(run)
        found = shipped.get(_run_id(profile, spec)) or cached_evaluation(profile, spec)
        if found:
            out.append(found)
        else:
            missing.append(spec)
    if missing:
        results = where(profile, "results")
        shown = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
        say(f"no traces for {len(missing)} of {len(runs)} runs of profile {profile.profile!r} "
            f"(first: {missing[0]['task']} {missing[0]['method']} seed {missing[0]['seed']}); "
            f"`make reproduce PROFILE={profile.profile}` writes them to {shown / TRACES_FILE}")
    return out


def cached_traces(profile: Profile, runs: list[dict], say=print) -> list:
    """Every existing trace of `runs` (see `cached`): what the inspector and the tour open."""
    return [t for _, traces in cached(profile, runs, say) for t in traces]


def cached_rows(profile: Profile, runs: list[dict], say=print):
    """run_all's table from the existing traces of `runs` alone (see `cached`): what the error analysis reads."""
    import pandas as pd

    return pd.DataFrame([row for labels, traces in cached(profile, runs, say) for row in rows(traces, **labels)])
