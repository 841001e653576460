"""The plan of a reproduction: every piece of work the notebooks need, and how one piece is done.

A profile yields pieces: the generic base of each seed (when the profile pre-trains), the step probe's
pretrained fine-tune, and every run of the grids (retune.training.runs.all_runs: trained, then evaluated). Each piece is
keyed by its inputs through the caches (datasets, runs, evaluations), so any executor may run it in any process:
a finished piece is found, a piece asked for twice is made once (the second asker waits on the cache's lock),
and `finished` tells from the caches alone which pieces are done. The notebooks then only read the caches.
Executors: retune.reproduce.executors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..data import datasets as data
from ..config.profiles import Profile, base_task
from ..training.runs import RunSpec, all_runs, base_model, dataset, main_runs, train_config


@dataclass(frozen=True)
class Piece:
    """One piece of work: kind "base" (a seed's generic base: the shared one, or `task`'s own), "step probe" or
    "run" (train, then evaluate)."""

    kind: str
    seed: int
    run: RunSpec | None = None
    task: str | None = None

    def __str__(self) -> str:
        if self.run is None:
            return f"{self.kind}{f' {self.task}' if self.task else ''} seed {self.seed}"
        r = self.run
        extra = "".join(f" {k} {v}" for k, v in (("distribution", r.distribution), ("n", r.n), ("variant", r.variant))
                        if v not in ("scaled", None, 0))
        return f"{r.task}/{r.method} seed {r.seed}{extra}"


def expected_cost(profile: Profile, spec: RunSpec) -> float:
    """Training tokens of a run (steps x batch x mean example length), to start the longest first. Builds the
    run's dataset (seconds), so workers never build one at the same time."""
    path = dataset(profile, spec.task, spec.method, spec.seed, spec.distribution, spec.n, spec.variant)
    config = train_config(profile, spec.seed, spec.task, spec.method)
    return config.max_steps * config.batch_size * data.read_manifest(path)["char_tokens"]["mean"]


def plan(profile: Profile) -> tuple[list[Piece], list[Piece]]:
    """(first, runs): the pieces with no prerequisite (each seed's bases, the step probe), then the runs, the
    main comparison's first (an interrupted preparation has its table's runs), the longest first. When the
    profile pre-trains, a run needs its seed's base, or its task's own (`needs`)."""
    main = set(main_runs(profile))
    order = sorted(all_runs(profile), key=lambda spec: (spec not in main, -expected_cost(profile, spec)))
    runs = [Piece("run", spec.seed, spec) for spec in order]
    first = list(dict.fromkeys(needs(profile, p) for p in runs)) if profile.pretrain else []
    if profile.step_probe.model:  # the longest single piece: beside the first base, not after all of them
        first.insert(1, Piece("step probe", profile.seeds[0]))
    return first, runs


def needs(profile: Profile, piece: Piece) -> Piece | None:
    """The piece that must be finished before `piece` starts (a run's base), or None."""
    if piece.kind != "run" or not profile.pretrain:
        return None
    return Piece("base", piece.seed, task=base_task(profile, piece.run.task))


def finished(profile: Profile, piece: Piece) -> bool:
    """Whether `piece` is done, read from the caches without building, training or loading anything (an executor
    starts only the others: a re-run after an interruption picks up where it stopped). A step probe counts as not
    done; doing it again when it is costs a cache lookup."""
    from ..evaluation.pipeline import evaluation_cache
    from ..training.runs import finished_run

    if piece.kind == "base":
        return base_model(profile, piece.seed, progress=False, build=False, task=piece.task) is not None
    if piece.kind != "run":
        return False
    spec = piece.run
    run_dir = finished_run(profile, spec)
    return run_dir is not None and evaluation_cache(profile, run_dir, spec.task, spec.method, spec.seed,
                                                    spec.variant).is_file()


def do(profile: Profile, piece: Piece) -> dict:
    """Do one piece in this process (cached: a finished piece returns at once); seconds per stage."""
    from ..evaluation.pipeline import evaluate_run
    from ..training.runs import trained

    started = time.perf_counter()
    if piece.kind == "base":
        base_model(profile, piece.seed, progress=False, task=piece.task)  # the executor's bar and one line per piece suffice
        return {"trained": round(time.perf_counter() - started)}
    if piece.kind == "step probe":
        from ..analysis.probe import pretrained_run

        pretrained_run(profile, piece.seed, log=lambda *_: None)
        return {"trained": round(time.perf_counter() - started)}
    spec = piece.run
    run_dir = trained(profile, spec, progress=False)
    trained_at = time.perf_counter()
    evaluate_run(profile, run_dir, spec.task, spec.method, spec.seed, spec.variant, progress=False)
    return {"trained": round(trained_at - started), "evaluated": round(time.perf_counter() - trained_at)}
