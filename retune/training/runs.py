"""Runs: what a trained model is, built from a profile, and where it is found.

A run is named by a `RunSpec` (task, method, seed, training distribution, training problems per size, prompt
variant): the grids below list the specs a reproduction needs. `describe` turns a spec and its profile into
the one description of a run (base model, datasets, recipe, seed) from which the cache key, the directory name
and the labels derive (retune.training.fine_tune.run_key / run_name); `trained` trains it once (cached), `finished_run`
finds it without training, by the same key. `retune train`, `retune eval`, the notebooks and every executor
build runs through these functions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..data import datasets as data
from . import fine_tune as train
from ..config.profiles import Profile, pretrain_for, split_methods, where
from .checks import read_run


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: every field spelled out (n None: the profile's train.problems_per_size)."""

    task: str
    method: str
    seed: int
    distribution: str = "scaled"
    n: int | None = None
    variant: int = 0

    @classmethod
    def of(cls, run) -> "RunSpec":
        """A RunSpec from a RunSpec or a mapping of its fields (the grids' and the command lines' form)."""
        return run if isinstance(run, cls) else cls(**run)

    def labels(self, profile: Profile, run_name: str) -> dict:
        """The labels every result row of this run carries."""
        return {"model": model_label(profile), "seed": self.seed,
                "n_train": self.n or profile.train.problems_per_size, "run": run_name}


@dataclass(frozen=True)
class RunDescription:
    """What determines a trained model: the base it starts from, its datasets, its recipe (with the seed)."""

    base: str
    datasets: tuple[Path, ...]
    config: train.TrainConfig
    model_config: dict | None

    def directory(self, runs_dir: Path) -> Path:
        """Where this run lives (its name carries its cache key)."""
        return train.run_directory(train.identify(self.base, self.datasets, self.config, self.model_config), runs_dir)


def dataset(profile: Profile, task: str, method: str, seed: int, distribution: str | None = None,
            n: int | None = None, variant: int = 0, progress: bool = False, build: bool = True) -> Path | None:
    """The training set of one task x method (built once; the same parameters give the same bytes); the
    distribution defaults to the profile's `train.distribution`. With build False: None unless it is on disk."""
    distribution = distribution or distribution_of(profile, task)
    n = n or profile.train.problems_per_size
    sizes = (1, profile.train.sizes[task])
    path = where(profile, "data") / dataset_name(profile, task, method, seed, distribution, n, variant)
    if data.verified(path) is None:  # missing, or a manifest that does not vouch for the file (killed build)
        if not build:
            return None
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


def pretrain_spec(profile: Profile, task: str | None = None) -> dict:
    """The generic pre-training of `task`'s base (profiles.pretrain_for) as retune.training.pretrain takes it."""
    section = pretrain_for(profile, task)
    return {k: v for k, v in asdict(section).items() if k != "by_task"} | {"train": train.recipe_of(section.train)}


def base_model(profile: Profile, seed: int, progress: bool = True, build: bool = True,
               task: str | None = None) -> str | None:
    """What fine-tuning starts from: 'tiny' (random init), a pretrained model, or our own generic-pretrained
    tiny base (profile key `pretrain`; one per seed, so seeds vary the whole pipeline, and `task`'s own when
    `pretrain.by_task` has an entry for it). With build False: None when that base is not on disk yet (nothing
    is trained or fetched)."""
    if profile.pretrain:
        from .pretrain import pretrained_base

        base = pretrained_base(pretrain_spec(profile, task), asdict(profile.model.tiny), seed, where(profile, "data"),
                               where(profile, "runs"), progress, build)
        return str(base) if base else None
    from ..models.presets import fetch, is_fetched, is_preset

    if is_preset(profile.model.source):  # a named preset (smollm2-135m): fetched and converted once, then local
        return str(fetch(profile.model.source)) if build or is_fetched(profile.model.source) else None
    return profile.model.source


def train_config(profile: Profile, seed: int, task: str | None = None, method: str | None = None) -> train.TrainConfig:
    """The profile's `train` recipe, then its `train.by_task[task]` (every method of a task gets the same
    budget), then that entry's overrides for `method`, then the seed."""
    per_task, per_method = split_methods(profile.train.by_task.get(task) or {})
    return train.make_config(train.recipe_of(profile.train) | per_task | (per_method.get(method) or {}) | {"seed": seed})


def spec_for(profile: Profile, task: str, method: str, seed: int | None = None, variant: int = 0) -> RunSpec:
    """The profile's run of a task x method (the main grid's: its training distribution), at `seed` (default: the
    profile's first)."""
    return RunSpec(task, method, profile.seeds[0] if seed is None else seed, distribution_of(profile, task),
                   variant=variant)


def describe(profile: Profile, run, build: bool = True) -> RunDescription | None:
    """The description of a run: its base, datasets (the task's, then generic rehearsal when the profile mixes
    it in), recipe and seed. With build False nothing is built, trained or fetched: None when a piece is missing
    (then the run cannot be finished either)."""
    spec = RunSpec.of(run)
    task_data = dataset(profile, spec.task, spec.method, spec.seed, spec.distribution, spec.n, spec.variant,
                        build=build)
    base = base_model(profile, spec.seed, build=build, task=spec.task)
    if task_data is None or base is None:
        return None
    paths = [task_data]
    if profile.pretrain and profile.pretrain.mix:  # rehearse the generic skills while fine-tuning
        from .pretrain import rehearsal

        mixed = rehearsal(pretrain_spec(profile, spec.task), task_data, spec.seed, where(profile, "data"), build)
        if mixed is None:
            return None
        paths.append(mixed)
    model_config = asdict(profile.model.tiny) if base == "tiny" else None
    return RunDescription(base, tuple(paths), train_config(profile, spec.seed, spec.task, spec.method), model_config)


def trained(profile: Profile, run, progress: bool = True) -> Path:
    """A fine-tuned model's run directory (trained once, then cached by train.train)."""
    d = describe(profile, run)
    return train.train(d.base, list(d.datasets), replace(d.config, progress=progress), where(profile, "runs"),
                       d.model_config)


def finished_run(profile: Profile, run) -> Path | None:
    """The run directory `trained` would return, when that run is finished; found by the same key, without
    building, training, fetching or loading anything."""
    d = describe(profile, run, build=False)
    if d is None:
        return None
    run_dir = d.directory(where(profile, "runs"))
    return run_dir if (run_dir / "measurements.json").is_file() else None


# --- the grids the notebooks show -------------------------------------------------------------------------
def main_runs(profile: Profile) -> list[RunSpec]:
    """Every task x method x seed of the main comparison."""
    return [RunSpec(t, m, s, distribution_of(profile, t))
            for t in profile.tasks for m in profile.methods for s in profile.seeds]


def efficiency_runs(profile: Profile) -> list[RunSpec]:
    """Sample efficiency: n distinct training problems per size (the paper's limited-data sets)."""
    tasks = profile.studies.efficiency_tasks or profile.tasks
    methods = profile.studies.efficiency_methods or profile.methods
    return [RunSpec(t, m, s, "efficiency", n)
            for t in tasks for m in methods for n in profile.studies.efficiency_n for s in study_seeds(profile)]


def variant_runs(profile: Profile) -> list[RunSpec]:
    """Robustness to prompt phrasings: each phrasing trained and evaluated on its own."""
    tasks = profile.studies.variant_tasks or profile.tasks
    return [RunSpec(t, m, s, distribution_of(profile, t), variant=v)
            for t in tasks for m in profile.studies.variant_methods for v in profile.studies.variants
            for s in study_seeds(profile)]


def ablation_runs(profile: Profile) -> list[RunSpec]:
    """No isolation (inline) and no carry-over against full Re-Tuning."""
    tasks = profile.studies.ablation_tasks or profile.tasks
    return [RunSpec(t, m, s, distribution_of(profile, t))
            for t in tasks for m in profile.studies.ablations for s in study_seeds(profile)]


def study_seeds(profile: Profile) -> list[int]:
    """The seeds of the studies (06-08): `studies.seeds`, else the profile's."""
    return profile.studies.seeds or profile.seeds


def all_runs(profile: Profile) -> list[RunSpec]:
    """Every run a reproduction trains and evaluates, each once."""
    grids = main_runs(profile) + efficiency_runs(profile) + variant_runs(profile) + ablation_runs(profile)
    return list(dict.fromkeys(grids))


def use_threads(profile: Profile) -> None:
    if profile.threads:
        import torch

        torch.set_num_threads(profile.threads)


def model_label(profile: Profile) -> str:
    if profile.pretrain:
        return "tiny+pretrain"
    return "tiny" if profile.model.source == "tiny" else Path(profile.model.source).name


def run_identity(run_dir: Path) -> RunSpec:
    """The spec (task, method, seed, variant) of a finished run, from its run.json and its task dataset's
    manifest (the first dataset; a rehearsal set mixed in comes after it)."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"--run {str(run_dir)!r} is not a run directory (no run.json)")
    run = read_run(run_dir)  # a run record, or one line naming the file
    first = run["data"][0]
    manifest = data.manifest_path(first["path"])
    params = json.loads(manifest.read_text()).get("parameters", {}) if manifest.is_file() else {}
    return RunSpec(first.get("task"), first.get("method"), run["config"].get("seed", 0),
                   variant=params.get("variant", 0))
