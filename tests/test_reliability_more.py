"""Reliability, continued: numbers that are never silently wrong (non-finite weights and losses, measurements of
resumed runs, digests of the files results come from) and settings bounded before anything is created.

Tiny models on one thread: every training run here takes seconds."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from retune.data import datasets as data
from retune.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

torch.set_num_threads(1)


def run(argv) -> int:
    """The CLI in-process; argparse's own errors (SystemExit) count as their exit code."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.startswith("retune")]
    assert lines and "Traceback" not in err, err
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "d.jsonl"
    data.make("parity", "retuning", path, sizes=(2, 4), n=5, seed=0, progress=False)
    return path


def train_argv(tmp_path, dataset, *sets):
    return ["train", "--data", str(dataset), "--profile", "smoke", "--set", f"paths.runs={tmp_path / 'runs'}",
            "--set", "train.max_steps=3", *[x for s in sets for x in ("--set", s)]]


def finished_runs(tmp_path) -> list[Path]:
    return [p.parent for p in (tmp_path / "runs").rglob("measurements.json")]


# --- numerical faults: never cached, never loaded ---------------------------------------------------------------
def test_a_diverged_run_is_refused_naming_the_learning_rate_and_nothing_is_cached(tmp_path, dataset, capsys):
    assert run(train_argv(tmp_path, dataset, "train.lr=1e30")) == 2
    line = one_line_error(capsys, "diverged", "train.lr=1e+30", "NaN")
    assert "nothing was cached" in line
    runs = tmp_path / "runs"
    assert not runs.exists() or [p for p in runs.rglob("*") if p.is_file()] == [], list(runs.rglob("*"))
    # and the same command with a sane rate trains and caches (the refusal left nothing in its way)
    assert run(train_argv(tmp_path, dataset)) == 0
    assert len(finished_runs(tmp_path)) == 1


def nan_model_dir(tmp_path) -> Path:
    """A pretrained-kind model directory whose weights are whole files but hold NaN values."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_pretrained import write_tiny_pretrained
    from safetensors.torch import load_file, save_file

    path = write_tiny_pretrained(tmp_path / "nan-model")
    weights = load_file(path / "model.safetensors")
    key = sorted(weights)[3]
    weights[key] = weights[key].clone()
    weights[key].view(-1)[:5] = float("nan")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_a_model_directory_with_nan_weights_is_refused_in_one_line(tmp_path, dataset, capsys):
    model = nan_model_dir(tmp_path)
    assert run(["eval", "--model", str(model), "--task", "parity", "--method", "retuning", "--sizes", "2",
                "--n", "1", "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, "non-finite weights", "nan-model")
    assert not (tmp_path / "out").exists()
    assert run(train_argv(tmp_path, dataset) + ["--model", str(model)]) == 2
    one_line_error(capsys, "non-finite weights")
    assert finished_runs(tmp_path) == []


# --- measurements survive resumption ----------------------------------------------------------------------------
KILLED_RUN = """
import os, signal, sys
from transformers import TrainerCallback
from retune.training import fine_tune as T
sys.path.insert(0, {tests!r})
from test_reliability_more import TINY, recipe

class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)

kill = []
if {where!r} == "save":  # after the last checkpoint, before the model is saved beside it
    T.save_model = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
else:  # mid-run, after step 5, whose checkpoint is not written (the last is checkpoint-4)
    kill = [KillAtStep()]
T.train("tiny", [{data!r}], recipe(), {runs!r}, TINY, callbacks=kill)
"""


def recipe():
    from retune.training.fine_tune import TrainConfig

    return TrainConfig(max_steps=6, batch_size=8, grad_accum=2, save_steps=4, threads=1, logging_steps=4,
                       progress=False, lr=3e-3)


@pytest.mark.parametrize("where", ["save", "step"])
def test_a_resumed_runs_measurements_are_the_uninterrupted_runs(tmp_path, where):
    from retune.training import fine_tune as T

    path = tmp_path / "d.jsonl"
    data.make("addition", "baseline", path, sizes=(1, 3), n=20, seed=0, progress=False)
    runs = tmp_path / "runs"
    script = KILLED_RUN.format(tests=str(ROOT / "tests"), data=str(path), runs=str(runs), where=where)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert child.returncode == -9, child.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    assert not (run_dir / "measurements.json").exists()

    resumed_dir = T.train("tiny", [path], recipe(), runs, TINY)
    straight_dir = T.train("tiny", [path], recipe(), tmp_path / "other", TINY)
    resumed, straight = (json.loads((d / "measurements.json").read_text()) for d in (resumed_dir, straight_dir))
    a, b = (T.load_trained(d)[0].state_dict() for d in (resumed_dir, straight_dir))
    for k in a:  # the weights too: no step trained past the end
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert resumed["resumed_from"] == ("checkpoint-6" if where == "save" else "checkpoint-4")
    for key in ("steps", "batches_run", "tokens_per_batch", "padding_fraction", "examples", "losses"):
        assert resumed[key] == straight[key], key
    assert straight["batches_run"] == 12  # 6 steps of 2 batches each
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-5)
    for key in ("examples_per_s", "tokens_per_s"):  # timings: the same within what a busy machine varies
        assert straight[key] / 3 < resumed[key] < straight[key] * 3, (key, resumed[key], straight[key])


# --- digests: the shipped traces, their metadata, the caches beside a run --------------------------------------
@pytest.fixture
def shipped_copy(tmp_path):
    """The committed traces file and its meta file, in a results folder of their own."""
    import shutil

    from retune.config.profiles import load_profile

    results = tmp_path / "results"
    results.mkdir()
    for name in ("traces.jsonl.gz", "traces.meta.json"):
        shutil.copy(ROOT / "results" / name, results / name)
    return load_profile("cpu", {"paths": {"results": str(results)}}), results


def test_the_committed_traces_file_matches_its_meta_file(shipped_copy):
    from retune import files
    from retune.evaluation import traces

    profile, results = shipped_copy
    meta = json.loads((results / "traces.meta.json").read_text())
    assert meta["sha256"] == files.file_sha256(results / "traces.jsonl.gz")
    read = traces.shipped_traces(profile)
    assert sum(len(t) for _, t in read.values()) == sum(r["problems"] for r in meta["runs"])


def test_lines_swapped_for_copies_keep_the_count_and_are_still_refused(shipped_copy):
    """Lines 100-120 deleted, 21 copied lines added: the count the meta file lists still holds."""
    import gzip

    from retune.evaluation import traces

    profile, results = shipped_copy
    path = results / "traces.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    changed = lines[:99] + lines[120:] + lines[200:221]
    assert len(changed) == len(lines)
    path.write_bytes(gzip.compress("".join(changed).encode(), mtime=0))
    with pytest.raises(traces.DamagedTraces, match="sha256") as err:
        traces.shipped_traces(profile)
    assert "damaged" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("change", [{"runs": None}, {"runs": [{"problems": "90"}]}, {"runs": [None]},
                                    {"runs": [{"problems": True}]}, {"sha256": None}, {"sha256": 5}, "whole: []"])
def test_malformed_metadata_is_the_one_line_damaged_error(shipped_copy, change):
    from retune.evaluation import traces

    profile, results = shipped_copy
    meta_path = results / "traces.meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps([] if change == "whole: []" else meta | change))
    with pytest.raises(traces.DamagedTraces) as err:
        traces.cached_traces(profile, [], say=lambda *_: None)
    assert "damaged" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def evaluated_run(tmp_path):
    """A tiny run trained on parity, and `retune eval --run` of it once (its evaluation cached beside it)."""
    from retune.training import fine_tune as T

    path = tmp_path / "d.jsonl"
    data.make("parity", "retuning", path, sizes=(2, 4), n=5, seed=0, progress=False)
    run_dir = T.train("tiny", [path], T.TrainConfig(max_steps=2, batch_size=8, threads=1, progress=False,
                                                    save_steps=100), tmp_path / "runs", TINY)
    argv = ["eval", "--run", str(run_dir), "--profile", "smoke", "--sizes", "2", "--n", "2"]
    assert run(argv) == 0
    return run_dir, argv


def test_garbage_in_a_placement_file_is_named(evaluated_run, capsys):
    run_dir, argv = evaluated_run
    capsys.readouterr()
    (placement,) = (run_dir / "evals").glob("*.placement.json")
    for garbage in ("{not json", "[]", '{"device": 1}'):
        placement.write_text(garbage)
        assert run(argv) == 2
        one_line_error(capsys, str(placement), "not a placement record")


@pytest.mark.parametrize("damage", ["weights deleted", "weights changed"])
def test_a_cached_evaluation_is_not_served_for_a_run_whose_weights_are_gone(evaluated_run, capsys, damage):
    import shutil

    run_dir, argv = evaluated_run
    capsys.readouterr()
    if damage == "weights deleted":
        shutil.rmtree(run_dir / "model")
    else:
        weights = run_dir / "model" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert run(argv) == 2
    one_line_error(capsys, str(run_dir), "not a whole finished run")


# --- settings bounded, checked before anything is created -------------------------------------------------------
BEYOND = [  # (--set, what the one line must say)
    ("model.tiny.hidden_size=1000000", "model.tiny.hidden_size: must be at most 65,536"),
    ("model.tiny.num_hidden_layers=100000", "model.tiny.num_hidden_layers: must be at most 1,024"),
    ("model.tiny.intermediate_size=10000000000", "model.tiny.intermediate_size: must be at most 262,144"),
    ("model.tiny={hidden_size: 65536, num_attention_heads: 2, intermediate_size: 262144}", "GiB to train"),
    ("pretrain={examples: 100000000000000}", "pretrain.examples: must be at most 100,000,000"),
    ("pretrain={max_length: 100000000000}", "pretrain.max_length: must be at most 4,096"),
    ("train.max_length=100000000000", "train.max_length: must be at most 1,048,576"),
    ("train.max_steps=100000000000000000000", "train.max_steps: must be at most 100,000,000"),
    ("train.warmup_steps=100000000000000000000", "train.warmup_steps: must be at most"),
    ("train.grad_accum=100000000000000000000", "train.grad_accum: must be at most 65,536"),
    (f"train.batch_size={2 ** 63}", "train.batch_size: must be at most 65,536"),
    ("train.by_task={parity: {max_steps: 1000000000}}", "train.by_task.parity.max_steps: must be at most"),
    ("train.frozen_layers=100", "train.frozen_layers: must be at most 2"),
    ("train.lora={r: .nan}", "train.lora.r: expected an integer"),
    ("train.lora={r: 0}", "train.lora.r: expected an integer in 1..65536"),
    ("train.lora={r: -1}", "train.lora.r"),
    ("train.lora={lora_alpha: -5}", "train.lora.lora_alpha: expected a finite number > 0"),
    ("train.lora={lora_dropout: 2}", "train.lora.lora_dropout: expected a number in [0, 1)"),
    ("train.lora={target_modules: [nosuch_proj]}", "train.lora.target_modules: expected all-linear or a list"),
    ("train.sizes={nosuchtask: 3}", "train.sizes: unknown task 'nosuchtask'"),
    ("eval.sizes={nosuchtask: [1, 2]}", "eval.sizes: unknown task 'nosuchtask'"),
    ("seeds=[0, 0]", "seeds: each may be given once; 0 is given twice"),
    ("methods=[retuning, retuning]", "methods: each may be given once"),
    ("tasks=[]", "tasks: give at least one"),
    ("methods=[]", "methods: give at least one"),
]


@pytest.mark.parametrize("setting,message", BEYOND, ids=[s for s, _ in BEYOND])
def test_a_setting_beyond_its_bound_is_one_line_before_anything_is_created(tmp_path, dataset, capsys, setting,
                                                                            message, monkeypatch):
    import time

    from retune.training import fine_tune as T

    def refuse(*a, **k):
        raise AssertionError("a model was built before the settings were checked")
    monkeypatch.setattr(T, "load_base", refuse)
    start = time.perf_counter()
    assert run(train_argv(tmp_path, dataset, setting)) == 2
    one_line_error(capsys, message)
    assert time.perf_counter() - start < 10 and not (tmp_path / "runs").exists()


def test_a_cuda_device_without_cuda_is_refused_before_a_run_directory(tmp_path, dataset, capsys, monkeypatch):
    from retune.training import fine_tune as T

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(train_argv(tmp_path, dataset, "train.device=cuda")) == 2
    one_line_error(capsys, "train.device", "needs a CUDA device")
    with pytest.raises(ValueError, match="train.device"):  # the library too
        T.train("tiny", [dataset], T.TrainConfig(device="cuda", max_steps=1), tmp_path / "runs", TINY)
    assert not (tmp_path / "runs").exists()


def test_workers_and_executor_values_beyond_the_machine_are_refused(tmp_path, capsys):
    from retune.reproduce import executors
    from retune.config.profiles import load_profile

    for sets, message in (({"workers": 1000000}, "workers: must be in 1.."),
                          ({"executor": {"mem_gb": float("inf")}}, "executor.mem_gb: must be in 1..1,048,576"),
                          ({"executor": {"time_min": 10**12}}, "executor.time_min: must be in 1..")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
            executors.check(load_profile("smoke", sets))


def test_examples_longer_than_the_models_positions_are_dropped_and_counted(tmp_path, dataset, capsys):
    from retune.training import fine_tune as T

    tiny = dict(TINY, max_position_embeddings=80)
    run_dir = T.train("tiny", [dataset], T.TrainConfig(max_steps=1, batch_size=4, threads=1, progress=False),
                      tmp_path / "runs", tiny)
    m = json.loads((run_dir / "measurements.json").read_text())
    assert m["dropped_too_long"] > 0 and m["tokens_per_example"]["max"] <= 80
    assert "longer than the model's 80 positions" in capsys.readouterr().err
    with pytest.raises(ValueError, match="longer than the model positions=4"):
        T.train("tiny", [dataset], T.TrainConfig(max_steps=1, batch_size=4, threads=1, progress=False),
                tmp_path / "runs", dict(TINY, max_position_embeddings=4))


# --- training data: valid text, within a line limit, inside the tokenizer's alphabet ----------------------------
BAD_LINES = {
    "lone surrogate": ('{"input": "\\ud800 x", "output": "1"}', "a lone surrogate"),
    "deep nesting": ('{"input": "x", "output": "1", "n": ' + "[" * 200000 + "]" * 200000 + "}",
                     "nested too deeply"),
    "long line": ('{"input": "' + "1" * (2 << 20) + '", "output": "1"}', "a record may have at most"),
    "outside the alphabet": ('{"input": "x \u00e9", "output": "1"}', "'\u00e9', a character the tiny model"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_training_data_that_is_not_trainable_text_is_named_by_file_and_line(tmp_path, dataset, capsys, case):
    line, message = BAD_LINES[case]
    with dataset.open("a") as f:
        f.write(line + "\n")
    number = len(dataset.read_text(encoding="utf-8", errors="surrogateescape").splitlines())
    assert run(train_argv(tmp_path, dataset)) == 2
    one_line_error(capsys, f"{dataset}:{number}", message)
    assert finished_runs(tmp_path) == []


def test_a_full_disk_in_torchs_zip_writer_is_the_one_line_message(tmp_path, dataset, capsys, monkeypatch):
    """How torch's zip writer says it when a checkpoint does not fit (before: a 46-line traceback)."""
    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:858] . unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    assert run(train_argv(tmp_path, dataset, "train.save_steps=1")) == 2
    one_line_error(capsys, "[Errno 28] no space left while writing")


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "..", "a/b", ""])
def test_a_profile_name_cannot_leave_the_results_folder(name):
    from retune.config.profiles import load_profile
    from retune.settings import ProfileError

    with pytest.raises(ProfileError, match="profile: expected a name"):
        load_profile("smoke", {"profile": name})


# --- interrupting the driver stops what is in flight ------------------------------------------------------------
DRIVER = """
import sys
from retune.reproduce import executors as E
from retune.reproduce.plan import Piece
from retune.config.profiles import load_profile
from retune.training.runs import RunSpec

class NeverDone:
    describe, poll_s = "jobs that never finish", 0.05

    def start(self, profile, pieces):
        return [(piece, object()) for piece in pieces]

    def ready(self, job):
        print("started", flush=True)  # the driver waits on its jobs
        return False

    def stop(self, pending):
        open({stopped!r}, "w").write(str(len(pending)))

    def close(self):
        pass

profile = load_profile("smoke", {{"paths": {{"runs": {runs!r}}}}})
pieces = [Piece("run", seed, RunSpec("parity", "baseline", seed)) for seed in range(3)]
E.drive(profile, NeverDone(), lambda line: None, progress=False, pieces=([], pieces))
"""


def test_sigterm_stops_the_jobs_in_flight(tmp_path):
    """`retune reproduce` stopped by SIGTERM: the executor's stop (submitit's cancel) runs, as for Ctrl-C; before,
    the process died at once and submitit's job processes ran on with no parent."""
    import signal

    stopped = tmp_path / "stopped"
    script = DRIVER.format(stopped=str(stopped), runs=str(tmp_path / "runs"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert stopped.read_text() == "3"  # every job in flight was stopped


# --- loader noise ----------------------------------------------------------------------------------------------
def test_a_refused_model_directory_is_one_line_without_the_loaders_report(tmp_path, capsys, monkeypatch):
    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_pretrained import write_tiny_pretrained

    model = write_tiny_pretrained(tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"num_hidden_layers": config["num_hidden_layers"] + 1}))
    capsys.readouterr()
    argv = ["eval", "--model", str(model), "--task", "parity", "--method", "retuning", "--sizes", "2", "--n", "1",
            "--profile", "smoke"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json does not match the weights" in err, err
    from transformers.utils import logging as hf_logging

    from retune.files import quiet_loader

    monkeypatch.setenv("RETUNE_VERBOSE", "1")  # asked for, transformers' own settings stand
    hf_logging.set_verbosity_warning()
    with quiet_loader():
        assert hf_logging.get_verbosity() == hf_logging.WARNING


@pytest.mark.parametrize("parameters", [{"tasks": ["nosuch"]}, {"seeds": [0, 1]}, {"threads": 4}])
def test_a_profile_key_given_as_a_notebook_parameter_is_refused_by_name(parameters):
    """papermill's `-p tasks '["nosuch"]'`: before, a warning, then the whole notebook with the profile's tasks."""
    from retune.reproduce.notebook import ParameterError, setup

    with pytest.raises(ParameterError, match=f"{next(iter(parameters))}: not a notebook parameter"):
        setup({"profile": "smoke", **parameters})
    from retune.training import fine_tune  # a module under a parameter's name is no parameter

    assert setup({"profile": "smoke", "train": fine_tune}).profile.profile == "smoke"
