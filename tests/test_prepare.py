"""Training and evaluating side by side before the notebooks (retune.reproduce.executors.run_local over retune.reproduce.plan), the lock that keeps two
processes from making one result twice, the studies' own seeds and the validation stream of problems."""
import multiprocessing
import time

import pytest

from retune.data import datasets as data
from retune.evaluation import pipeline
from retune.training import runs
from retune import files
from retune.config.profiles import ProfileError, load_profile
from retune.reproduce.executors import run_local as prepare


def smoke(tmp_path, **over):
    paths = {"data": str(tmp_path / "data"), "runs": str(tmp_path / "runs")}
    return load_profile("smoke", {"paths": paths, "tasks": ["addition", "parity"], "studies": {
        "efficiency_tasks": ["addition"], "efficiency_methods": ["retuning"], "efficiency_n": [3],
        "variant_tasks": ["addition"], "ablation_tasks": ["addition"]}} | over)


def test_all_runs_lists_each_run_once_and_studies_follow_their_own_seeds(tmp_path):
    profile = smoke(tmp_path, seeds=[0, 1], studies={"seeds": [0], "ablation_tasks": ["addition"],
                                                      "variant_tasks": ["addition"], "efficiency_n": [3]})
    grid = runs.all_runs(profile)
    assert len(grid) == len(set(grid))
    main = [r for r in grid if r.distribution == "scaled" and r.variant == 0 and r.method in profile.methods]
    assert {r.seed for r in main} == {0, 1} and len(main) == len(profile.tasks) * 3 * 2
    studies = [r for r in grid if r not in main]
    assert studies and {r.seed for r in studies} == {0}
    assert {r.seed for r in runs.ablation_runs(profile)} == {0}
    # without studies.seeds the studies take every seed of the profile
    assert {r.seed for r in runs.ablation_runs(smoke(tmp_path, seeds=[0, 1]))} == {0, 1}


def test_the_profile_distribution_reaches_every_grid_and_dataset(tmp_path):
    profile = smoke(tmp_path, train={"distribution": "distinct"})
    grids = runs.main_runs(profile) + runs.variant_runs(profile) + runs.ablation_runs(profile)
    assert grids and {r.distribution for r in grids} == {"distinct"}
    assert {r.distribution for r in runs.efficiency_runs(profile)} == {"efficiency"}  # its own distribution
    # callers that name no distribution get the profile's; the file name carries the size floor
    assert f"-distinct{data.SIZE_FLOOR * 100:g}-" in runs.dataset_name(profile, "parity", "retuning", 0)
    assert "-scaled-" in runs.dataset_name(smoke(tmp_path), "parity", "retuning", 0)
    # per task: a task the mapping does not name trains on the scaled distribution
    per_task = smoke(tmp_path, train={"distribution": {"parity": "distinct"}})
    assert {(r.task, r.distribution) for r in runs.main_runs(per_task)} == {("addition", "scaled"),
                                                                                ("parity", "distinct")}
    assert "-scaled-" in runs.dataset_name(per_task, "addition", "retuning", 0)
    for bad in ({"parity": "dedup"}, {"chess": "distinct"}, "dedup"):
        with pytest.raises(ProfileError, match="train.distribution"):
            smoke(tmp_path, train={"distribution": bad})


@pytest.mark.slow
def test_prepare_trains_and_evaluates_everything_the_notebooks_then_find_cached(tmp_path):
    profile = smoke(tmp_path, workers=2, seeds=[0, 1], studies={"seeds": [0]},
                    pretrain={"examples": 64, "train": {"max_steps": 2, "batch_size": 8}})
    lines = []
    done = prepare(profile, log=lines.append, progress=False)
    grid = runs.all_runs(profile)
    assert len(done) == len(grid) + 2  # and one generic base per seed
    assert sum("base seed" in line for line in lines) == 2
    assert all(" in " in line for line in lines[1:])
    for spec in grid:  # each finished and evaluated: the notebooks' calls return at once from the caches
        run_dir = runs.finished_run(profile, spec)
        assert run_dir is not None and (run_dir / "measurements.json").is_file()
        cache = pipeline.evaluation_cache(profile, run_dir, spec.task, spec.method, spec.seed, spec.variant,
                                          tuple(profile.eval.sizes[spec.task]), profile.eval.problems_per_size)
        assert cache.is_file()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("measurements.json")}
    prepare(profile, log=lambda *_: None, progress=False)  # a second time: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("measurements.json")} == before


@pytest.mark.slow
def test_a_failing_piece_is_named(tmp_path):
    profile = smoke(tmp_path, workers=2, train={"max_length": 3})  # every example too long: training refuses
    with pytest.raises(RuntimeError, match=r"(addition|parity)/\w+ seed 0 failed: ValueError: no training"):
        prepare(profile, log=lambda *_: None, progress=False)


def _hold(path, seconds, out):
    with files.locked(path):
        out.put(("in", time.time()))
        time.sleep(seconds)
        out.put(("out", time.time()))


def test_locked_lets_one_process_in_at_a_time(tmp_path):
    target = tmp_path / "result.json"
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_hold, args=(target, 0.5, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = sorted((queue.get(timeout=5) for _ in range(4)), key=lambda e: e[1])
    assert [e[0] for e in events] == ["in", "out", "in", "out"]  # never both inside
    assert list(tmp_path.iterdir()) == []  # nothing beside the (not yet existing) result


def test_validation_problems_are_apart_from_the_reported_ones():
    test = pipeline.eval_problems("addition", (4, 6), 20, seed=0)
    valid = pipeline.eval_problems("addition", (4, 6), 20, seed=0, stream="valid")
    assert len(test) == len(valid) == 60
    assert not {repr(p) for p in test} & {repr(p) for p in valid}
    assert pipeline.eval_problems("addition", (4, 6), 20, seed=0) == test  # reproducible
    with pytest.raises(ValueError, match="stream: expected 'eval' or 'valid'"):
        pipeline.eval_problems("addition", (4, 6), 2, seed=0, stream="test")
