"""The traces that ship with the results: written once by the main job, opened by the viewers (inspector, tour,
error analysis), which never train, build data or write anything."""
from dataclasses import replace

import pytest

from retune.data import datasets as data
from retune.evaluation import pipeline, traces
from retune.training import runs, fine_tune as train
from retune.config.profiles import load_profile


pytestmark = pytest.mark.slow  # every test shares a fixture that trains the smoke runs


def snapshot(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    dirs = {"paths": {k: str(root / f"{k}_dir") for k in ("data", "runs", "results", "figures")}}
    profile = load_profile("smoke", dirs, {"tasks": ["parity"], "methods": ["baseline", "retuning"]})
    grid = runs.main_runs(profile)
    path = traces.export_traces(profile, grid)
    return profile, grid, path, root


def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a viewer trained or built something")

    for module, name in ((train, "train"), (data, "make"), (runs, "trained"), (pipeline, "evaluate_run")):
        monkeypatch.setattr(module, name, refuse)


def test_export_writes_every_trace_with_its_metadata_byte_for_byte_again(shipped):
    profile, grid, path, _ = shipped
    meta = traces.traces_meta_path(path)
    assert path.name == "traces.jsonl.gz" and meta.name == "traces.meta.json"
    first = path.read_bytes()
    traces.export_traces(profile, grid)
    assert path.read_bytes() == first  # a re-run leaves git clean
    doc = __import__("json").loads(meta.read_text())
    assert doc["profile"] == "smoke" and doc["seeds"] == [0] and len(doc["runs"]) == 2
    evaluated = [t for r in grid for t in pipeline.evaluated(profile, r)[1]]
    assert sum(r["problems"] for r in doc["runs"]) == len(evaluated)


def test_viewers_open_the_shipped_file_without_training_or_writing(shipped, monkeypatch, capsys):
    profile, grid, path, root = shipped
    expected = [t.to_dict() for t in traces.shipped_traces(profile)[traces.run_id(profile, grid[0])][1]]
    no_training(monkeypatch)
    before = snapshot(root)
    found = traces.cached_traces(profile, grid)
    assert [t.to_dict() for t in found[:len(expected)]] == expected and len(found) > len(expected)
    table = traces.cached_rows(profile, grid)
    assert len(table) == len(found) and set(table["run"]) == {p.name for p in (root / "runs_dir").iterdir()
                                                            if p.name.startswith("parity-")}
    assert snapshot(root) == before and capsys.readouterr().out == ""


def test_without_the_file_the_cached_evaluations_are_found_without_training(shipped, monkeypatch, tmp_path):
    profile, grid, path, root = shipped
    from_file = [t.to_dict() for t in traces.cached_traces(profile, grid)]
    elsewhere = replace(profile, paths=replace(profile.paths, results=str(tmp_path / "no-results")))
    no_training(monkeypatch)
    assert [t.to_dict() for t in traces.cached_traces(elsewhere, grid)] == from_file
    # another training budget is another run: its evaluation is not this one's
    other = replace(elsewhere, train=replace(profile.train, max_steps=21))
    assert traces.cached_traces(other, grid, say=lambda line: None) == []


def test_nothing_on_disk_says_in_one_line_which_command_writes_it(shipped, monkeypatch, tmp_path, capsys):
    profile, grid, _, _ = shipped
    empty = replace(profile, paths=replace(profile.paths, results=str(tmp_path / "r"), runs=str(tmp_path / "runs")))
    no_training(monkeypatch)
    assert traces.cached_traces(empty, grid) == []
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "make reproduce PROFILE=smoke" in out and "traces.jsonl.gz" in out
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_a_file_of_another_profile_is_not_read(shipped, tmp_path):
    profile, grid, path, _ = shipped
    assert traces.shipped_traces(profile)
    assert traces.shipped_traces(replace(profile, profile="cpu")) == {}


def test_a_run_is_found_by_its_key_without_training_and_another_base_is_another_run(tmp_path, monkeypatch):
    """finished_run compares what trained compares (base, datasets, recipe, seed): the base model included."""
    from dataclasses import replace as with_

    from retune.decoding.recursive import save_traces
    from retune.files import seal

    profile = load_profile("smoke", {"paths": {k: str(tmp_path / f"{k}_dir") for k in ("data", "runs", "results")}})
    spec = runs.spec_for(profile, "parity", "retuning", 0)
    assert runs.finished_run(profile, spec) is None  # nothing on disk: nothing built to find out
    assert not (tmp_path / "data_dir").exists()
    run_dir = runs.trained(profile, spec, progress=False)
    no_training(monkeypatch)
    assert runs.finished_run(profile, spec) == run_dir
    wider = with_(profile, model=with_(profile.model, tiny=with_(profile.model.tiny, hidden_size=48)))
    assert runs.finished_run(wider, spec) is None  # same data and recipe, another base: not this run
    from _planted import planted

    planted_traces = planted("parity", "retuning", [[0, 1], [1, 1, 0]])
    key = pipeline.eval_key(profile, "parity", "retuning", 0)
    (run_dir / "evals").mkdir()
    cache = run_dir / "evals" / f"parity-retuning-v0-{key}.jsonl"
    save_traces(cache, planted_traces)
    seal(cache, traces=len(planted_traces))  # as the pipeline does last: an unsealed cache reads as absent
    labels, found = traces.cached_evaluation(profile, spec)
    assert labels["run"] == run_dir.name and [t.to_dict() for t in found] == [t.to_dict() for t in planted_traces]
