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
from pathlib import Path

from . import data, train
from .decode import HFGenerator, decode, load_traces, save_traces
from .tasks import get_task

ROOT = Path(__file__).resolve().parent.parent


def where(profile: dict, key: str) -> Path:
    """A profile's directory for `key` (data_dir, runs_dir, results_dir, figures_dir), relative to the repo."""
    path = Path(profile[key])
    return path if path.is_absolute() else ROOT / path


def dataset(profile: dict, task: str, method: str, seed: int, distribution: str = "scaled", n: int | None = None,
            variant: int = 0, progress: bool = False) -> Path:
    """The training set of one task x method (built once; the same parameters give the same bytes)."""
    n = n or profile["train_problems_per_size"]
    sizes = (1, profile["train_sizes"][task])
    name = f"{task}-{method}-{distribution}-1to{sizes[1]}-n{n}-v{variant}-s{seed}.jsonl"
    path = where(profile, "data_dir") / name
    if not path.exists() or not data.manifest_path(path).exists():
        data.make(task, method, path, distribution, sizes, n, seed, variant, progress=progress)
    return path


def base_model(profile: dict, seed: int) -> str:
    """What fine-tuning starts from: 'tiny' (random init), a pretrained model, or our own generic-pretrained
    tiny base (profile key `pretrain`; one per seed, so seeds vary the whole pipeline)."""
    if profile.get("pretrain"):
        from .pretrain import pretrained_base

        return str(pretrained_base(profile["pretrain"], profile.get("tiny_model"), seed, where(profile, "data_dir"),
                                   where(profile, "runs_dir")))
    from .presets import fetch, is_preset

    if is_preset(profile["model"]):  # a named preset (smollm2-135m): fetched and converted once, then local
        return str(fetch(profile["model"]))
    return profile["model"]


def train_config(profile: dict, seed: int, task: str | None = None) -> dict:
    """The profile's `train` settings, then its `train_by_task[task]` (every method of a task gets the same
    budget), then the seed."""
    per_task = (profile.get("train_by_task") or {}).get(task) or {}
    config = dict(profile.get("train") or {}, **per_task, seed=seed)
    if profile.get("lora") is not None:
        config["lora"] = profile["lora"]
    return config


def trained(profile: dict, task: str, method: str, seed: int, distribution: str = "scaled",
            n: int | None = None, variant: int = 0) -> Path:
    """A fine-tuned model's run directory (trained once, then cached by train.train)."""
    paths = [dataset(profile, task, method, seed, distribution, n, variant)]
    base = base_model(profile, seed)
    mix = (profile.get("pretrain") or {}).get("mix", 0)
    if mix:  # rehearse the generic skills while fine-tuning, so they are not forgotten
        from .pretrain import rehearsal

        paths.append(rehearsal(profile["pretrain"], paths[0], seed, where(profile, "data_dir")))
    model_config = profile.get("tiny_model") if base == "tiny" else None
    return train.train(base, paths, train_config(profile, seed, task), where(profile, "runs_dir"), model_config)


def eval_problems(task: str, sizes: tuple[int, int], n: int, seed: int, variant: int = 0,
                  exclude: set[str] = frozenset()) -> list:
    """n fresh random problems per size, seeded apart from training data (training uses the profile seed, we
    use a stream derived from the task, size and seed), and never one whose top context was trained on
    (where the space of problems is too small for n fresh ones, fewer are returned)."""
    spec = get_task(task, variant)
    out = []
    for size in range(sizes[0], sizes[1] + 1):
        rng = random.Random(f"eval/{task}/{size}/{seed}")
        chosen = {}
        for _ in range(50 * n):
            if len(chosen) == n:
                break
            problem = spec.sample(size, rng)
            key = repr(problem)
            if key not in chosen and spec.top_context(problem, "retuning") not in exclude \
                    and spec.top_context(problem, "baseline") not in exclude:
                chosen[key] = problem
        out += chosen.values()
    return out


def trained_contexts(run_dir: Path) -> set[str]:
    """The top contexts a run was trained on (to keep evaluation problems out of the training set)."""
    run = json.loads((Path(run_dir) / "run.json").read_text())
    return {r["input"] for d in run["data"] for r in data.read(d["path"]) if r.get("depth", 0) == 0}


def evaluate_run(profile: dict, run_dir: Path, task: str, method: str, seed: int, variant: int = 0,
                 sizes: tuple[int, int] | None = None, n: int | None = None, progress: bool = True) -> list:
    """Decode fresh problems with a trained model; the traces are cached beside the run."""
    sizes = tuple(sizes or profile["eval_sizes"][task])
    n = n or profile["eval_problems_per_size"]
    params = {"task": task, "method": method, "seed": seed, "variant": variant, "sizes": list(sizes), "n": n,
              "limits": profile.get("limits") or {}}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(run_dir) / "evals" / f"{task}-{method}-v{variant}-{key}.jsonl"
    if cache.exists():
        return load_traces(cache)
    from .decode import Limits

    problems = eval_problems(task, sizes, n, seed, variant, exclude=trained_contexts(run_dir))
    limits = Limits(**(profile.get("limits") or {}))
    # Decoded in chunks, each saved as it finishes, so an interrupted evaluation resumes where it stopped.
    chunk = profile.get("eval_chunk", 256)
    parts = cache.with_name(f"{cache.name}.parts{chunk}")  # chunk in the name: parts of another size never mix
    parts.mkdir(parents=True, exist_ok=True)
    generator, traces = None, []
    for start in range(0, len(problems), chunk):
        part = parts / f"{start:07d}.jsonl"
        if part.exists():
            traces += load_traces(part)
            continue
        if generator is None:
            generator = hf_generator(run_dir, profile.get("eval_batch_size", 64), profile.get("device", "auto"),
                                     profile.get("dtype", "float32"))
        new = decode(get_task(task, variant), problems[start:start + chunk], method, generator, limits,
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


def hf_generator(run_dir: Path, batch_size: int = 64, device: str = "cpu", dtype: str = "float32") -> HFGenerator:
    """A trained run's model (LoRA merged) behind the batched generator interface, on `device` ("auto": cuda
    when available) in `dtype` (the profile's evaluation dtype, e.g. bfloat16 on a GPU)."""
    import torch

    from .model import torch_dtype

    model, tok = train.load_trained(run_dir, merge=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return HFGenerator(model.to(device=device, dtype=torch_dtype(dtype)), tok, batch_size=batch_size)


def decode_with(run_dir: Path, task: str, method: str, problems: list, variant: int = 0, limits=None,
                batch_size: int = 64, progress: bool = False) -> list:
    """Greedy recursive decoding of `problems` with a trained model."""
    generator = hf_generator(run_dir, batch_size)
    return decode(get_task(task, variant), problems, method, generator, limits, progress=progress)


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


def dataset_table(profile: dict):
    """One row per main training set: examples, tokens per example (mean, max), by kind."""
    import pandas as pd

    out = []
    for task in profile["tasks"]:
        for method in profile["methods"]:
            m = data.read_manifest(dataset(profile, task, method, profile["seeds"][0]))
            out.append({"task": task, "method": method, "examples": m["records"],
                        "tokens_per_example_mean": m["char_tokens"]["mean"],
                        "tokens_per_example_max": m["char_tokens"]["max"], "tokens": m["char_tokens"]["total"],
                        **{f"kind_{k}": v for k, v in m["by_kind"].items()}})
    return pd.DataFrame(out).fillna(0)


def dataset_sizes(profile: dict):
    """Examples per size (rows) for each task x method (columns) of the main training sets."""
    import pandas as pd

    columns = {}
    for task in profile["tasks"]:
        for method in profile["methods"]:
            m = data.read_manifest(dataset(profile, task, method, profile["seeds"][0]))
            columns[(task, method)] = {int(k): v for k, v in m["by_size"].items()}
    return pd.DataFrame(columns).sort_index().fillna(0).astype(int)


# --- the grids the notebooks show -------------------------------------------------------------------------
def main_runs(profile: dict) -> list[dict]:
    """Every task x method x seed of the main comparison."""
    return [{"task": t, "method": m, "seed": s} for t in profile["tasks"] for m in profile["methods"]
            for s in profile["seeds"]]


def efficiency_runs(profile: dict) -> list[dict]:
    """Sample efficiency: n distinct training problems per size (the paper's limited-data sets)."""
    tasks = profile.get("efficiency_tasks") or profile["tasks"]
    methods = profile.get("efficiency_methods") or profile["methods"]
    return [{"task": t, "method": m, "seed": s, "distribution": "efficiency", "n": n}
            for t in tasks for m in methods for n in profile["efficiency_n"] for s in profile["seeds"]]


def variant_runs(profile: dict) -> list[dict]:
    """Robustness to prompt phrasings: each phrasing trained and evaluated on its own."""
    tasks = profile.get("variant_tasks") or profile["tasks"]
    methods = profile.get("variant_methods") or ["retuning"]
    return [{"task": t, "method": m, "seed": s, "variant": v}
            for t in tasks for m in methods for v in profile["variants"] for s in profile["seeds"]]


def ablation_runs(profile: dict) -> list[dict]:
    """No isolation (inline) and no carry-over against full Re-Tuning."""
    tasks = profile.get("ablation_tasks") or profile["tasks"]
    return [{"task": t, "method": m, "seed": s} for t in tasks for m in profile["ablations"]
            for s in profile["seeds"]]


def run_all(profile: dict, runs: list[dict], progress: bool = True):
    """Train (cached) and evaluate (cached) every run; one tidy DataFrame row per evaluated problem."""
    import pandas as pd
    from tqdm.auto import tqdm

    threads = profile.get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = []
    bar = tqdm(runs, desc=f"{profile['profile']}: train + evaluate", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in run.items()))
        spec = {"distribution": "scaled", "n": None, "variant": 0} | run
        run_dir = trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                          spec["variant"])
        traces = evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"],
                              progress=False)
        labels = {"model": model_label(profile), "seed": spec["seed"], "n_train": spec["n"]
                  or profile["train_problems_per_size"], "run": Path(run_dir).name}
        out += rows(traces, **labels)
    return pd.DataFrame(out)


def model_label(profile: dict) -> str:
    if profile.get("pretrain"):
        return "tiny+pretrain"
    return "tiny" if profile["model"] == "tiny" else Path(str(profile["model"])).name


def traces_of(profile: dict, runs: list[dict]) -> list:
    """The cached traces of finished runs (for the inspector and the error analysis)."""
    out = []
    for run in runs:
        spec = {"distribution": "scaled", "n": None, "variant": 0} | run
        run_dir = trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                          spec["variant"])
        out += evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"],
                            progress=False)
    return out


def training_measurements(profile: dict, runs: list[dict] | None = None):
    """measurements.json of each main run as a table (tokens per example, throughput, padding)."""
    import pandas as pd

    out = []
    for run in runs or main_runs(profile):
        run_dir = trained(profile, run["task"], run["method"], run["seed"])
        m = json.loads((run_dir / "measurements.json").read_text())
        out.append({"task": run["task"], "method": run["method"], "seed": run["seed"],
                    "examples": m["examples"], "tokens_per_example_mean": m["tokens_per_example"]["mean"],
                    "tokens_per_example_max": m["tokens_per_example"]["max"],
                    "tokens_per_s": m["tokens_per_s"], "padding_fraction": m["padding_fraction"],
                    "train_seconds": m["train_seconds"]})
    return pd.DataFrame(out)


def training_memory(profile: dict, task: str, method: str, seed: int = 0, batch_size: int | None = None) -> dict:
    """Peak memory of one training step on the longest examples of a dataset, measured in a fresh process so
    nothing else counts: on GPU the allocator's peak, on CPU the growth of resident memory over the step."""
    import subprocess
    import sys

    path = dataset(profile, task, method, seed)
    base = profile["model"] if not profile.get("pretrain") else "tiny"
    job = {"data": str(path), "model": base, "tiny_model": profile.get("tiny_model"),
           "batch_size": batch_size or profile["train"].get("batch_size", 32)}
    done = subprocess.run([sys.executable, "-m", "retune.memory", json.dumps(job)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"task": task, "method": method}
