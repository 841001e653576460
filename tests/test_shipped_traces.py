"""The traces that ship with the results: written once by the main job, opened by the viewers (inspector, tour,
error analysis), which never train, build data or write anything."""
from dataclasses import replace

import pytest

from retune import data, experiments as ex, train
from retune.profiles import load_profile


def snapshot(root):
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("shipped")
    dirs = {"paths": {k: str(root / f"{k}_dir") for k in ("data", "runs", "results", "figures")}}
    profile = load_profile("smoke", dirs, {"tasks": ["parity"], "methods": ["baseline", "retuning"]})
    runs = ex.main_runs(profile)
    path = ex.export_traces(profile, runs)
    return profile, runs, path, root


def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a viewer trained or built something")

    for module, name in ((train, "train"), (data, "make"), (ex, "trained"), (ex, "dataset"), (ex, "evaluate_run")):
        monkeypatch.setattr(module, name, refuse)


def test_export_writes_every_trace_with_its_metadata_byte_for_byte_again(shipped):
    profile, runs, path, _ = shipped
    meta = ex.traces_meta_path(path)
    assert path.name == "traces.jsonl.gz" and meta.name == "traces.meta.json"
    first = path.read_bytes()
    ex.export_traces(profile, runs)
    assert path.read_bytes() == first  # a re-run leaves git clean
    doc = __import__("json").loads(meta.read_text())
    assert doc["profile"] == "smoke" and doc["seeds"] == [0] and len(doc["runs"]) == 2
    evaluated = [t for r in runs for t in ex.evaluate_run(profile, ex.trained(profile, r["task"], r["method"], 0),
                                                            r["task"], r["method"], 0, progress=False)]
    assert sum(r["problems"] for r in doc["runs"]) == len(evaluated)


def test_viewers_open_the_shipped_file_without_training_or_writing(shipped, monkeypatch, capsys):
    profile, runs, path, root = shipped
    expected = [t.to_dict() for t in ex.shipped_traces(profile)[ex._run_id(profile, ex.run_spec(runs[0]))][1]]
    no_training(monkeypatch)
    before = snapshot(root)
    traces = ex.cached_traces(profile, runs)
    assert [t.to_dict() for t in traces[:len(expected)]] == expected and len(traces) > len(expected)
    rows = ex.cached_rows(profile, runs)
    assert len(rows) == len(traces) and set(rows["run"]) == {p.name for p in (root / "runs_dir").iterdir()
                                                            if p.name.startswith("parity-")}
    assert snapshot(root) == before and capsys.readouterr().out == ""


def test_without_the_file_the_cached_evaluations_are_found_without_training(shipped, monkeypatch, tmp_path):
    profile, runs, path, root = shipped
    from_file = [t.to_dict() for t in ex.cached_traces(profile, runs)]
    elsewhere = replace(profile, paths=replace(profile.paths, results=str(tmp_path / "no-results")))
    no_training(monkeypatch)
    assert [t.to_dict() for t in ex.cached_traces(elsewhere, runs)] == from_file
    # another training budget is another run: its evaluation is not this one's
    other = replace(elsewhere, train=replace(profile.train, max_steps=21))
    assert ex.cached_traces(other, runs, say=lambda line: None) == []


def test_nothing_on_disk_says_in_one_line_which_command_writes_it(shipped, monkeypatch, tmp_path, capsys):
    profile, runs, _, _ = shipped
    empty = replace(profile, paths=replace(profile.paths, results=str(tmp_path / "r"), runs=str(tmp_path / "runs")))
    no_training(monkeypatch)
    assert ex.cached_traces(empty, runs) == []
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "make reproduce PROFILE=smoke" in out and "traces.jsonl.gz" in out
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_a_file_of_another_profile_is_not_read(shipped, tmp_path):
    profile, runs, path, _ = shipped
    assert ex.shipped_traces(profile)
    assert ex.shipped_traces(replace(profile, profile="cpu")) == {}


def test_a_run_is_found_by_its_dataset_and_settings_whatever_its_directory_name(tmp_path):
    """Runs with rehearsal data are named by every task of their data, e.g. generic+parity-<key>."""
    import json
    from dataclasses import asdict

    from retune.decode import save_traces

    profile = load_profile("smoke", {"paths": {k: str(tmp_path / f"{k}_dir") for k in ("data", "runs", "results")}})
    spec = ex.run_spec({"task": "parity", "method": "retuning", "seed": 0})
    config = asdict(ex.train_config(profile, 0, "parity"))
    run_dir = tmp_path / "runs_dir" / "generic+parity-generic+retuning-0123456789abcdef"
    (run_dir / "evals").mkdir(parents=True)
    name = ex.dataset_name(profile, "parity", "retuning", 0)
    (run_dir / "run.json").write_text(json.dumps({"data": [{"path": f"/x/{name}"}, {"path": "/x/g.jsonl"}],
                                                  "config": config}))
    assert ex.finished_run(profile, spec) is None  # not finished yet
    (run_dir / "measurements.json").write_text("{}")
    assert ex.finished_run(profile, spec) == run_dir
    from _planted import planted

    traces = planted("parity", "retuning", [[0, 1], [1, 1, 0]])
    key = ex.eval_key(profile, "parity", "retuning", 0)
    save_traces(run_dir / "evals" / f"parity-retuning-v0-{key}.jsonl", traces)
    labels, found = ex.cached_evaluation(profile, spec)
    assert labels["run"] == run_dir.name and [t.to_dict() for t in found] == [t.to_dict() for t in traces]
