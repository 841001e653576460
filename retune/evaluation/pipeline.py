"""The evaluation pipeline: a trained run -> fresh problems -> decoded traces (cached beside the run) -> tidy rows.

Evaluation problems are fresh random problems, seeded apart from training and never a trained top context; the
traces of one evaluation are cached under a key of what decides them (evaluation_params), decoded in chunks so an
interrupted evaluation resumes. `run_all` is what the notebooks call: every run of a grid trained (cached, by
retune.training.runs) and evaluated (cached, here), one row per problem.
"""
from __future__ import annotations

import glob
import hashlib
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from ..data import datasets as data
from ..training import fine_tune as train
from ..decoding.recursive import Limits, decode, load_traces, save_traces
from ..decoding.generators import HFGenerator
from ..files import locked, replacing, seal, sealed
from ..models.causal_lm import DTYPES
from ..config.profiles import Profile
from ..training.checks import damaged, read_run
from ..training.runs import RunSpec, dataset, main_runs, train_config, trained, use_threads
from ..tasks import get_task
from ..tasks.methods import MAIN_METHODS


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
    run = read_run(run_dir)
    return {r["input"] for d in run["data"] for r in data.read(d["path"]) if r.get("depth", 0) == 0}


def evaluation_params(profile: Profile, task: str, method: str, seed: int, variant: int, sizes, n: int) -> dict:
    """What decides an evaluation's traces (its cache key). Device and dtype enter only when they are not the
    CPU in float32, and the decoding semantics only when it is not the default (strict), so the key of a plain
    CPU evaluation is what it always was (caches stay valid)."""
    params = {"task": task, "method": method, "seed": seed, "variant": variant, "sizes": list(sizes), "n": n,
              "limits": {k: v for k, v in asdict(profile.limits).items() if v != getattr(Limits(), k)}}
    device = train.resolve_device(profile.eval.device)
    if device != "cpu" or profile.eval.dtype not in ("float32", "fp32"):
        params |= {"device": device, "dtype": DTYPES[profile.eval.dtype]}
    if profile.eval.semantics != "strict":
        params["semantics"] = profile.eval.semantics
    return params


def evaluate_run(profile: Profile, run_dir: Path, task: str, method: str, seed: int, variant: int = 0,
                 sizes: tuple[int, int] | None = None, n: int | None = None, progress: bool = True) -> list:
    """Decode fresh problems with a trained model, on the profile's eval device in its eval dtype; the traces are
    cached beside the run."""
    sizes = tuple(sizes or profile.eval.sizes[task])
    n = n or profile.eval.problems_per_size
    check_run(run_dir)  # a cached evaluation speaks for the weights it was decoded with: they must still be there
    cache = evaluation_cache(profile, run_dir, task, method, seed, variant, sizes, n)
    traces = read_evaluation(cache)
    if traces is not None:
        return traces
    with locked(cache):  # a second process asking for this evaluation waits, then reads it
        traces = read_evaluation(cache)
        if traces is not None:
            return traces
        return _evaluate(profile, run_dir, task, method, seed, variant, sizes, n, cache, progress)


def check_run(run_dir: Path) -> None:
    """A ValueError in one line unless `run_dir` is a finished run whose files are the ones it finished with
    (weights deleted or changed after it finished: its cached evaluations describe weights that are gone)."""
    run_dir = Path(run_dir)
    problem = damaged(run_dir) if (run_dir / "measurements.json").is_file() else "it has no measurements.json"
    if problem:
        raise ValueError(f"run {str(run_dir)!r} is not a whole finished run ({problem}): neither evaluated nor "
                         f"served from its cached evaluations; delete the directory and train it again")


def read_placement(path: Path) -> dict | None:
    """The device and dtype an evaluation's model ran in (None: not recorded), refused in one line naming the
    file when it is not such a record."""
    if not path.is_file():
        return None
    try:
        placed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        placed = err
    if not (isinstance(placed, dict) and all(isinstance(placed.get(k), str) for k in ("device", "dtype"))):
        raise ValueError(f"{path}: not a placement record (a JSON object with device and dtype); delete it and "
                         f"the evaluation reads its model's placement again")
    return placed


def read_evaluation(cache: Path) -> list | None:
    """The traces of a finished evaluation, or None when there are none to trust: no cache, or one that is not
    byte for byte what was sealed when it was written (cut short, emptied, changed, or written before caches were
    sealed), which is then decoded again, never read as a smaller evaluation. Chunk folders that a killed
    clean-up left beside a finished evaluation are removed."""
    if sealed(cache) is None:
        return None
    for leftover in cache.parent.glob(f"{glob.escape(cache.name)}.parts*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return load_traces(cache)


def read_chunk(part: Path, expected: int) -> list | None:
    """A saved chunk of an evaluation when it holds all `expected` traces, else None (decoded again): a chunk cut
    short before a resume would otherwise leave its problems out of the evaluation for good."""
    try:
        traces = load_traces(part)
    except (ValueError, KeyError, TypeError):  # a line cut short or not a trace
        return None
    return traces if len(traces) == expected else None


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
        done = read_chunk(part, len(problems[start:start + chunk])) if part.exists() else None
        if done is not None:
            traces += done
            continue
        if generator is None:
            generator = hf_generator(profile, run_dir)
            data.write_json(placement_path(cache), train.placement(generator.model))
        new = decode(get_task(task, variant), problems[start:start + chunk], method, generator, profile.limits,
                     progress=progress, semantics=profile.eval.semantics)
        with replacing(part) as tmp:
            save_traces(tmp, new)
        traces += new
    if generator is not None:
        generator.close()  # before the next run's model loads
    with replacing(cache) as tmp:
        save_traces(tmp, traces)
    seal(cache, traces=len(traces))  # last: what read_evaluation trusts
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
    return generator_for(profile, model, tok)


def generator_for(profile: Profile, model, tokenizer) -> HFGenerator:
    """A loaded model behind the batched generator interface, as the profile's `eval` section says: rows per
    batch, the KV-cache budget of a batch, the decoder (static KV cache and compiled step on CUDA by default)."""
    return HFGenerator(model, tokenizer, batch_size=profile.eval.batch_size, kv_budget_gib=profile.eval.kv_budget_gib,
                       decoder=profile.eval.decoder)


def decode_with(profile: Profile, run_dir: Path, task: str, method: str, problems: list, variant: int = 0,
                progress: bool = False) -> list:
    """Greedy recursive decoding of `problems` with a trained model (as evaluate_run decodes, uncached)."""
    generator = hf_generator(profile, run_dir)
    traces = decode(get_task(task, variant), problems, method, generator, profile.limits, progress=progress,
                    semantics=profile.eval.semantics)
    generator.close()
    return traces


def rows(traces: list, **labels) -> list[dict]:
    """One tidy row per problem: the verdict, the error kind and where the trace first left the oracle tree."""
    from .scoring import first_departure, oracle_tree

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


def evaluated(profile: Profile, run) -> tuple[Path, list]:
    """(run directory, traces) of one run of a grid: trained and evaluated, each cached."""
    spec = RunSpec.of(run)
    run_dir = trained(profile, spec)
    return run_dir, evaluate_run(profile, run_dir, spec.task, spec.method, spec.seed, spec.variant, progress=False)


def run_all(profile: Profile, runs: list, progress: bool = True):
    """Train (cached) and evaluate (cached) every run; one tidy DataFrame row per evaluated problem."""
    import pandas as pd
    from tqdm.auto import tqdm

    use_threads(profile)
    out = []
    bar = tqdm(runs, desc=f"{profile.profile}: train + evaluate", unit="run", disable=not progress)
    for run in bar:
        spec = RunSpec.of(run)
        bar.set_postfix_str(f"{spec.task} {spec.method} seed {spec.seed}")
        run_dir, traces = evaluated(profile, spec)
        out += rows(traces, **spec.labels(profile, run_dir.name))
    return pd.DataFrame(out)


def traces_of(profile: Profile, runs: list) -> list:
    """The traces of `runs` (trained and evaluated, normally cached): for the inspector and the error analysis."""
    return [t for run in runs for t in evaluated(profile, run)[1]]


def training_measurements(profile: Profile, runs: list | None = None):
    """measurements.json of each main run as a table (tokens per example, throughput, padding)."""
    import pandas as pd

    out = []
    for spec in map(RunSpec.of, runs or main_runs(profile)):
        m = json.loads((trained(profile, spec) / "measurements.json").read_text())
        out.append({"task": spec.task, "method": spec.method, "seed": spec.seed,
                    "examples": m["examples"], "tokens_per_example_mean": m["tokens_per_example"]["mean"],
                    "tokens_per_example_max": m["tokens_per_example"]["max"],
                    "tokens_per_s": m["tokens_per_s"], "padding_fraction": m["padding_fraction"],
                    "train_seconds": m["train_seconds"]})
    return pd.DataFrame(out)


def training_memory(profile: Profile, task: str, method: str, seed: int = 0, batch_size: int | None = None) -> dict:
    """Peak memory of one training step of the recipe the run trains with (its base's architecture in its dtype,
    LoRA or not, bf16 autocast where the trainer turns it on, its batch of the longest examples it keeps, an AdamW
    step), on its training device, measured in a fresh process so nothing else counts: on GPU the allocator's
    peak, on CPU the growth of resident memory over the step. A step that runs out of memory is a row with status
    "OOM" (step_memory_mb empty)."""
    from ..training.memory import measure_in_child
    from ..models.causal_lm import bf16_supported
    from ..training.trainer import on_cuda

    path = dataset(profile, task, method, seed)
    base = profile.model.source if not profile.pretrain else "tiny"  # a pre-trained tiny base: the tiny's shape
    config = train_config(profile, seed, task, method)
    cuda = on_cuda(config.device)
    kind = "tiny" if base == "tiny" else "pretrained"
    job = {"data": str(path), "model": base, "tiny_model": asdict(profile.model.tiny),
           "batch_size": batch_size or config.batch_size, "lora": train.use_lora(config, kind),
           "dtype": config.dtype, "bf16": cuda and bool(bf16_supported() if config.bf16 == "auto" else config.bf16),
           "device": "cuda" if cuda else "cpu", "threads": profile.threads, "max_length": config.max_length}
    return {"status": "ok"} | measure_in_child(job) | {"task": task, "method": method}
