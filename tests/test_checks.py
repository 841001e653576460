"""Nothing trusted that was not checked (issue 25): settings, training data, model directories, cached weights,
evaluation caches and the shipped trace file.

Every bad value is refused with the profile, before anything is built or written: one line naming the key, the value
and what is allowed, exit 2, no run directory. Damage to anything cached is found by a digest or count written
last: a cache is recomputed, a run trained again, a committed file refused in one line; never a silently wrong
number. Each test says what happened before (the issue's numbered causes).
"""
import gzip
import json
import math
import os
import random
import shutil
from pathlib import Path

import pytest
import yaml

from retune import cli
from retune.evaluation import pipeline, traces
from retune.training import runs
from retune.training import fine_tune as T
from retune.commands import reproduce as reproduce_cmd
from retune.commands import train as train_cmd
from retune.decoding.recursive import decode, load_traces
from retune.files import seal_path
from retune.decoding.generators import OracleGenerator
from retune.models.causal_lm import char_tokenizer, load_pretrained, tiny_llama, TinyConfig
from retune.reproduce.notebook import ParameterError, setup
from retune.config.profiles import LR_SCHEDULES, Profile, ProfileError, load_profile, merged, parse_sets
from retune.tasks import get_task

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
DIRS = ("data", "runs", "results", "figures")


def run_cli(argv) -> int:
    """The CLI in-process; argparse's own errors (SystemExit) count as their exit code."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2


def paths(root: Path) -> list[str]:
    return [f"--set=paths.{key}={root / key}" for key in DIRS]


def smoke(root: Path, **over) -> Profile:
    """The smoke profile with its directories under `root`, two training steps."""
    return load_profile("smoke", {"paths": {k: str(root / k) for k in DIRS}, "train": {"max_steps": 2}}, over)


def one_line_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    return err


def records(path: Path, n: int = 12) -> Path:
    """n addition records, as `retune data` writes them."""
    rng = random.Random(0)
    lines = []
    for _ in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        lines.append(json.dumps({"input": f"{a} + {b}\nAnswer: ", "output": str(a + b), "task": "addition",
                                 "method": "baseline", "size": 2}))
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. every range checked with the profile, before anything is created -------------------------------------
# Before: each of these failed only after the model was built, leaving run.json and an empty checkpoints/ (or
# gave a traceback; train.lr .inf exited 0 with a cached run of NaN weights; epochs 0 a "finished" run of 0 steps).
BAD = [
    (["train.batch_size=0"], "train.batch_size: must be >= 1, got 0"),
    (["train.batch_size=-3"], "train.batch_size: must be >= 1, got -3"),
    (["train.grad_accum=0"], "train.grad_accum: must be >= 1, got 0"),
    (["train.lr=.nan"], "train.lr: must be a finite number > 0, got nan"),
    (["train.lr=-1.0e-3"], "train.lr: must be a finite number > 0, got -0.001"),
    (["train.lr=.inf"], "train.lr: must be a finite number > 0, got inf"),
    (["train.warmup_steps=-1"], "train.warmup_steps: must be >= 0, got -1"),
    (["train.lr_schedule=cosine_typo"], "train.lr_schedule: unknown 'cosine_typo'; allowed: linear, cosine"),
    (["train.max_steps=-1", "train.epochs=0"], "train.epochs: must be a finite number > 0 when max_steps <= 0"),
    (["train.bf16=maybe"], "train.bf16: expected auto, true or false, got 'maybe'"),
    (["seeds=[-1]"], "seeds[0]: expected an integer in 0..4294967295, got -1"),
    (["seeds=[0, 100000000000000]"], "seeds[1]: expected an integer in 0..4294967295, got 100000000000000"),
    (["model.tiny.hidden_size=0"], "model.tiny.hidden_size: must be >= 1, got 0"),
    (["model.tiny.hidden_size=-32"], "model.tiny.hidden_size: must be >= 1, got -32"),
    (["model.tiny.hidden_size=33"], "model.tiny.hidden_size: must be a multiple of 2 x num_attention_heads (4"),
    (["model.tiny.num_attention_heads=0"], "model.tiny.num_attention_heads: must be >= 1, got 0"),
    (["train.by_task.dp.batch_size=0"], "train.by_task.dp.batch_size: must be >= 1, got 0"),
    (["train.by_task.parity.retuning.lr=.inf"], "train.by_task.parity.retuning.lr: must be a finite number > 0"),
    (["pretrain.mix=1.5"], "pretrain.mix: must be in [0, 1), got 1.5"),
    (["train.lora={rank: 8}"], "unknown key 'rank' in train.lora (allowed: "),  # LoraConfig's keys, named
    (["train.by_task.dp.retuning.lora={r: 8, alpha: 8}"], "unknown key 'alpha' in train.by_task.dp.retuning.lora"),
    (["train.sizes.parity=100000"], "train.sizes.parity: size must be in 1.."),
    (["eval.sizes.parity=[3, 2]"], "eval.sizes.parity: expected [lo, hi] with 1 <= lo <= hi, got [3, 2]"),
    (["threads=-1"], "threads: must be in 0..4096 (0: torch's default), got -1"),
    (["threads=10000000000"], "threads: must be in 0..4096 (0: torch's default), got 10000000000"),
    (["model.source=''"], "model.source: expected tiny, a model directory, a run directory or a hub id, got ''"),
]


@pytest.mark.parametrize("sets, message", BAD, ids=[" ".join(s) for s, _ in BAD])
def test_a_bad_value_is_one_line_exit_2_and_nothing_is_created(sets, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--profile", "smoke", "--task", "parity", "--method", "retuning", *paths(tmp_path)]
    assert run_cli(argv + [f"--set={s}" for s in sets]) == 2
    one_line_error(capsys, "retune train: error: ", message)
    assert list(tmp_path.iterdir()) == []


def test_reproduce_refuses_a_bad_value_before_any_piece(tmp_path, capsys, monkeypatch):
    """Before: `reproduce --set workers=2 --set train.batch_size=0` gave a traceback from `prepare`, partial runs."""
    monkeypatch.setattr(reproduce_cmd, "reproduce", lambda *a, **k: pytest.fail("work started"))
    argv = ["reproduce", "--profile", "smoke", *paths(tmp_path), "--set=workers=2", "--set=train.batch_size=0"]
    assert run_cli(argv) == 2
    one_line_error(capsys, "train.batch_size: must be >= 1, got 0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", ["-1", "100000000000000"])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_seed_out_of_range_is_refused_at_once(command, seed, tmp_path, capsys, monkeypatch):
    """Before: --seed -1 or 1e14 failed after the model was built (a run directory left behind)."""
    monkeypatch.chdir(tmp_path)
    argv = [command, "--profile", "smoke", "--task", "parity", "--method", "retuning", "--seed", seed, *paths(tmp_path)]
    assert run_cli(argv) == 2
    one_line_error(capsys, f"--seed: expected an integer in 0..4294967295, got {seed}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_bf16_without_cuda_is_refused_before_anything_is_built(tmp_path, capsys):
    """Before: `bf16: true` on CPU failed in the Trainer's arguments, after run.json and checkpoints/ were written."""
    argv = ["train", "--profile", "smoke", "--task", "parity", "--method", "retuning", *paths(tmp_path)]
    assert run_cli(argv + ["--set=train.bf16=true"]) == 2
    one_line_error(capsys, "train.bf16: True needs a CUDA device and this machine has none")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ProfileError, match="train.bf16: True needs a CUDA device"):  # the library, with a config
        T.train("tiny", [records(tmp_path / "d.jsonl")], T.TrainConfig(bf16=True), tmp_path / "runs", TINY)
    assert not (tmp_path / "runs").exists()
    assert load_profile("smol").train.bf16 is True  # a GPU profile still loads here, to read its results


def test_an_empty_model_name_is_refused(tmp_path, capsys):
    """Before: `--model ""` was silently ignored (the profile's model trained instead)."""
    argv = ["train", "--profile", "smoke", "--task", "parity", "--method", "retuning", "--model", "", *paths(tmp_path)]
    assert run_cli(argv) == 2
    one_line_error(capsys, "--model must name a model directory; got ''")
    assert list(tmp_path.iterdir()) == []


def test_reproduce_refuses_a_file_as_model_before_any_kernel(tmp_path, capsys, monkeypatch):
    """Before: `reproduce --model data.jsonl` started the kernel and failed inside a notebook."""
    monkeypatch.setattr(reproduce_cmd, "reproduce", lambda *a, **k: pytest.fail("a kernel started"))
    a_file = records(tmp_path / "d.jsonl")
    assert run_cli(["reproduce", "--profile", "smoke", "--model", a_file]) == 2
    one_line_error(capsys, f"model {str(a_file)!r} is a file")
    assert run_cli(["reproduce", "--profile", "smoke", "--model", tmp_path / "nowhere"]) == 2
    one_line_error(capsys, "no such model directory")


def test_the_allowed_schedules_are_transformers_own():
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULES) <= {s.value for s in SchedulerType}


# --- 2. YAML: a key given twice; defaults merged key by key ----------------------------------------------------
def test_a_key_given_twice_is_named_with_its_file_and_lines(tmp_path, capsys):
    """Before: the second `train:` silently replaced the first (its max_steps: 5 dropped)."""
    profile = tmp_path / "twice.yaml"
    profile.write_text("train:\n  max_steps: 5\nseeds: [0]\ntrain:\n  lr: 1.0e-3\n")
    with pytest.raises(ProfileError, match=r"twice.yaml is not valid YAML \(line 4\): key 'train' given twice "
                                           r"\(first on line 1\)"):
        load_profile(str(profile))
    assert run_cli(["train", "--profile", profile, "--task", "parity", "--method", "retuning"]) == 2
    one_line_error(capsys, "key 'train' given twice")
    with pytest.raises(ProfileError, match="key 'lr' given twice"):
        parse_sets(["train={lr: 1, lr: 2}"])


def test_a_profile_that_sets_one_size_keeps_the_others(tmp_path):
    """Before (issue 25): `train.sizes: {addition: 5}` alone failed with "no size for task 'parity'"."""
    (tmp_path / "one.yaml").write_text("train:\n  sizes: {addition: 5}\neval:\n  sizes: {dp: [2, 3]}\n")
    p = load_profile("one", directory=tmp_path)
    defaults = Profile()
    assert p.train.sizes == {**defaults.train.sizes, "addition": 5}
    assert p.eval.sizes == {**defaults.eval.sizes, "dp": [2, 3]}


# --- 3. training records, checked with file and line -----------------------------------------------------------
def cut(path: Path) -> Path:
    text = path.read_text()
    path.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 9])  # the last line cut after 8 characters
    return path


MALFORMED = {  # what the file holds -> what the one line says. Before: KeyError 'input', AttributeError, "all 0
    #            records are longer than max_length", a JSON error with no file name and always line 1.
    "no input": (lambda p: p.write_text(records(p).read_text() + '{"output": "3"}\n'), ":13: the record has no input"),
    "a JSON list": (lambda p: p.write_text(json.dumps([{"input": "1", "output": "2"}]) + "\n"),
                    ":1: expected a JSON object with input and output, got a JSON list"),
    "empty": (lambda p: p.write_text(""), "holds no records"),
    "cut mid-line": (lambda p: cut(records(p)), ":12: not a JSON record"),
    "not UTF-8": (lambda p: p.write_bytes(records(p).read_bytes() + b'{"input": "\xff"}\n'), ":13: not UTF-8"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_training_file_is_named_with_its_line(case, tmp_path, capsys):
    write, message = MALFORMED[case]
    data = tmp_path / "d.jsonl"
    write(data)
    argv = ["train", "--profile", "smoke", "--data", data, *paths(tmp_path)]
    assert run_cli(argv) == 2
    one_line_error(capsys, str(data), message)
    assert not (tmp_path / "runs").exists()


# --- 4. model directories: one line with the reason ------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny LLaMA with its tokenizer, as a pretrained model directory."""
    import torch

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("model")
    tok = char_tokenizer()
    tiny_llama(TinyConfig(**TINY), tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def edit_config(path: Path, **keys) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | keys))


def damage_weights(path: Path, how: str) -> None:
    weights = path / "model.safetensors"
    blob = weights.read_bytes()
    if how == "truncated":
        weights.write_bytes(blob[: len(blob) // 2])
    elif how == "garbage":
        weights.write_bytes(os.urandom(4096))
    else:  # 200 bytes flipped inside the tensor data
        weights.write_bytes(blob[:-400] + bytes(b ^ 0xFF for b in blob[-400:-200]) + blob[-200:])


DIR_DAMAGE = {  # before: tracebacks (SafetensorError, RuntimeError), "Repo id must be in the form ...", or a model
    #             loaded silently with layers dropped or initialised at random
    "truncated weights": (lambda d: damage_weights(d, "truncated"), "model.safetensors is cut short"),
    "garbage weights": (lambda d: damage_weights(d, "garbage"), "model.safetensors is cut short or is no safetensors"),
    "config wider than the weights": (lambda d: edit_config(d, hidden_size=64), "could not be loaded"),
    "config with fewer layers": (lambda d: edit_config(d, num_hidden_layers=1),
                                 "config.json does not match the weights (9 unexpected keys"),
    "config with more layers": (lambda d: edit_config(d, num_hidden_layers=3),
                                "config.json does not match the weights (9 missing keys"),
    "only config.json": (lambda d: [f.unlink() for f in d.iterdir() if f.name != "config.json"], "no weights file"),
    "no tokenizer": (lambda d: [f.unlink() for f in d.iterdir() if f.name.startswith("tokenizer")], "no tokenizer"),
}


@pytest.mark.parametrize("case", list(DIR_DAMAGE))
def test_a_broken_model_directory_is_one_line(case, model_dir, tmp_path):
    damage, reason = DIR_DAMAGE[case]
    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    damage(broken)
    with pytest.raises(ValueError) as err:
        load_pretrained(str(broken))
    assert reason in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_broken_base_model_is_one_line_before_a_run_directory(model_dir, tmp_path, capsys):
    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    damage_weights(broken, "truncated")
    argv = ["train", "--profile", "smoke", "--data", records(tmp_path / "d.jsonl"), "--model", broken, *paths(tmp_path)]
    assert run_cli(argv) == 2
    one_line_error(capsys, "model.safetensors is cut short")
    assert not (tmp_path / "runs").exists()


# --- 5. a finished run's files: a digest written last, checked on every load and cache hit --------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(profile, run directory): the smoke profile's parity Re-Tuning run, two steps."""
    import torch

    torch.set_num_threads(1)
    profile = smoke(tmp_path_factory.mktemp("smoke"))
    return profile, runs.trained(profile, runs.spec_for(profile, "parity", "retuning"), progress=False)


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evals"))
    return copy


RUN_DAMAGE = {  # before: a traceback, "Repo id must be in the form ...", or a damaged model loaded without a word
    "run.json {}": (lambda r: (r / "run.json").write_text("{}"), "run.json: not a run record (missing or malformed"),
    "no tokenizer/": (lambda r: shutil.rmtree(r / "tokenizer"), "tokenizer/tokenizer.json is missing"),
    "200 bytes flipped": (lambda r: damage_weights(r / "model", "flipped"), "model/model.safetensors is not the file"),
    "truncated weights": (lambda r: damage_weights(r / "model", "truncated"), "model/model.safetensors is not the"),
}


@pytest.mark.parametrize("case", list(RUN_DAMAGE))
def test_a_damaged_run_is_refused_in_one_line(case, finished, tmp_path, capsys):
    profile, run = finished
    damage, reason = RUN_DAMAGE[case]
    broken = copy_run(run, tmp_path)
    damage(broken)
    with pytest.raises(ValueError, match="is damaged|not a run record") as err:
        T.load_trained(broken)
    assert reason in str(err.value) and "\n" not in str(err.value)
    assert run_cli(["eval", "--profile", "smoke", "--run", broken, "--n", "1", *paths(tmp_path)]) == 2
    one_line_error(capsys, reason)
    assert not [p for p in broken.rglob("*.jsonl") if "evals" in p.parts]  # nothing decoded or cached from it


def test_a_run_finished_before_digests_still_gets_a_structural_check(finished, tmp_path):
    _, run = finished
    legacy = copy_run(run, tmp_path)
    measured = json.loads((legacy / "measurements.json").read_text())
    (legacy / "measurements.json").write_text(json.dumps({k: v for k, v in measured.items() if k != "files"}))
    T.load_trained(legacy)  # whole: loads
    damage_weights(legacy / "model", "truncated")
    with pytest.raises(ValueError, match="model.safetensors is cut short"):
        T.load_trained(legacy)


def test_a_damaged_cache_hit_is_trained_again(tmp_path, capsys):
    """Before: with model.safetensors truncated, `retune train` returned the cached run and exited 0."""
    data = records(tmp_path / "d.jsonl")
    config = T.TrainConfig(max_steps=2, batch_size=4, threads=1, progress=False)
    run = T.train("tiny", [data], config, tmp_path / "runs", TINY)
    digest = json.loads((run / "measurements.json").read_text())["files"]
    assert set(digest) >= {"model/model.safetensors", "model/config.json", "tokenizer/tokenizer.json"}
    damage_weights(run / "model", "truncated")
    (run / "evals").mkdir()  # an evaluation of the damaged weights is not kept either
    assert T.train("tiny", [data], config, tmp_path / "runs", TINY) == run
    assert "is damaged (model/model.safetensors is not the file" in capsys.readouterr().err
    assert json.loads((run / "measurements.json").read_text())["files"] == digest  # the same weights again
    assert not (run / "evals").exists()
    T.load_trained(run)


# --- 6. evaluation caches: sealed last, recomputed when damaged ------------------------------------------------
def evaluate(profile, run):
    return pipeline.evaluate_run(profile, run, "parity", "retuning", 0, sizes=(2, 3), n=3, progress=False)


def cache_of(profile, run) -> Path:
    return pipeline.evaluation_cache(profile, run, "parity", "retuning", 0, sizes=(2, 3), n=3)


def keep_lines(path: Path, keep) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(keep(lines)))


CACHE_DAMAGE = {  # before: fewer traces reported as the evaluation (n = 40/20 instead of 40/60), KeyError 'size'
    #               for an emptied cache, a JSON error naming no file for a cut line
    "cut to 60%": lambda c: keep_lines(c, lambda lines: lines[: len(lines) * 6 // 10]),
    "emptied": lambda c: c.write_text(""),
    "cut mid-line": lambda c: c.write_text(c.read_text()[:-40]),
    "unsealed": lambda c: seal_path(c).unlink(),  # written before caches were sealed, or killed before its seal
}


@pytest.mark.parametrize("case", list(CACHE_DAMAGE))
def test_a_damaged_evaluation_cache_is_decoded_again(case, finished, tmp_path):
    profile, run = finished
    run = copy_run(run, tmp_path)
    whole = evaluate(profile, run)
    assert len(whole) >= 3 and json.loads(seal_path(cache_of(profile, run)).read_text())["traces"] == len(whole)
    CACHE_DAMAGE[case](cache_of(profile, run))
    again = evaluate(profile, run)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in whole]
    assert len(load_traces(cache_of(profile, run))) == len(whole)  # repaired on disk too


def test_a_chunk_cut_before_a_resume_is_decoded_again(finished, tmp_path):
    """Before: a chunk cut short before the resume left its problems out for good (97 of 100)."""
    profile, run = finished
    profile = load_profile(profile.to_dict(), {"eval": {"chunk": 2}})
    run = copy_run(run, tmp_path)
    whole = evaluate(profile, run)
    cache = cache_of(profile, run)
    parts = cache.with_name(cache.name + ".parts2")
    parts.mkdir()
    (parts / "0000000.jsonl").write_text(cache.read_text().splitlines(keepends=True)[0])  # 1 of its 2 traces
    cache.unlink()  # killed before the whole cache was written
    assert [t.to_dict() for t in evaluate(profile, run)] == [t.to_dict() for t in whole]


def test_chunks_left_by_a_killed_clean_up_are_removed(finished, tmp_path):
    """Before: a kill between sealing the cache and removing its chunks left evals/*.parts*/ forever."""
    profile, run = finished
    run = copy_run(run, tmp_path)
    evaluate(profile, run)
    leftover = cache_of(profile, run).with_name(cache_of(profile, run).name + ".parts256")
    leftover.mkdir()
    (leftover / "0000000.jsonl").write_text("")
    evaluate(profile, run)
    assert not leftover.exists()


# --- 7. the shipped traces file, checked against its meta file -------------------------------------------------
@pytest.fixture
def shipped(tmp_path):
    """(profile, traces file, specs): a results folder with the oracle's traces of two runs."""
    profile = smoke(tmp_path)
    task = get_task("parity")
    groups, specs = [], []
    for seed in (0, 1):
        spec = runs.RunSpec("parity", "retuning", seed)
        problems = pipeline.eval_problems("parity", (2, 4), 4, seed)
        decoded = decode(task, problems, "retuning", OracleGenerator.for_problems(task, problems, "retuning"))
        groups.append((spec, spec.labels(profile, f"run{seed}"), decoded))
        specs.append(spec)
    return profile, traces.write_traces(profile, groups), specs


def regzip(path: Path, keep) -> None:
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    path.write_bytes(gzip.compress("".join(keep(lines)).encode(), mtime=0))


SHIPPED_DAMAGE = {  # before: an EOFError or JSONDecodeError traceback in the viewers; half the lines loaded silently
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "sha256"),
    "bytes flipped": (lambda p: p.write_bytes(p.read_bytes()[:60] + b"\0" * 40 + p.read_bytes()[100:]), "sha256"),
    "half its lines": (lambda p: regzip(p, lambda lines: lines[: len(lines) // 2]), "sha256"),
}


@pytest.mark.parametrize("case", list(SHIPPED_DAMAGE))
@pytest.mark.parametrize("meta", ["with sha256", "an older meta, counts only"])
def test_a_damaged_traces_file_is_one_line_in_the_viewers(case, meta, shipped):
    profile, path, specs = shipped
    assert sum(len(t) for _, t in traces.shipped_traces(profile).values()) == 24
    meta_path = traces.traces_meta_path(path)
    if meta != "with sha256":
        doc = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({k: v for k, v in doc.items() if k not in ("sha256", "traces")}))
    damage, reason = SHIPPED_DAMAGE[case]
    damage(path)
    expected = reason if meta == "with sha256" else "malformed"  # without its digest, a meta vouches for nothing
    with pytest.raises(traces.DamagedTraces, match=expected) as err:
        traces.cached_traces(profile, specs, say=lambda *_: None)  # what the inspector, the tour and 09 call
    assert "\n" not in str(err.value) and len(err.value._render_traceback_()) == 1


# --- 8. a full disk while training ------------------------------------------------------------------------------
def test_a_full_disk_while_training_is_one_line_and_the_next_try_finishes(tmp_path, capsys, monkeypatch):
    """Before: `RuntimeError: basic_ios::clear: iostream error`, a traceback."""
    import torch

    real = torch.save

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . basic_ios::clear: iostream error")

    data = records(tmp_path / "d.jsonl")
    argv = ["train", "--profile", "smoke", "--data", data, *paths(tmp_path), "--set=train.max_steps=2",
            "--set=train.save_steps=1", "--set=train.batch_size=4", "--set=threads=1"]
    monkeypatch.setattr(torch, "save", full)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err  # the progress bar's lines, then the error's one line
    (line,) = [line for line in err.splitlines() if line.startswith("retune train: error:")]
    assert "[Errno 28] no space left while writing" in line and "run the same command" in line
    assert "Traceback" not in err and "iostream" not in err
    monkeypatch.setattr(torch, "save", real)
    assert run_cli(argv) == 0


# --- 9. notebooks: one line for an unknown profile or task -----------------------------------------------------
@pytest.mark.parametrize("parameters, message", [
    ({"profile": "nosuchprofile"}, "unknown profile 'nosuchprofile'; available profiles: "),
    ({"profile": "smoke", "task": "nosuchtask"}, "task: unknown 'nosuchtask'; allowed: "),
    ({"profile": "smoke", "settings": {"seeds": [-1]}}, "seeds[0]: expected an integer"),
])
def test_a_notebook_parameter_that_cannot_be_used_is_one_line(parameters, message):
    """Before: 65 traceback lines under the cell for an unknown profile; an unknown task warned and ran on."""
    with pytest.raises(ParameterError) as err:
        setup(dict(parameters))
    assert message in str(err.value)
    assert err.value._render_traceback_() == [f"ParameterError: {err.value}"]  # what IPython shows, all of it


def test_a_notebook_task_parameter_narrows_the_profile():
    assert setup({"profile": "smoke", "task": "parity"}).profile.tasks == ["parity"]


@pytest.mark.slow
def test_papermill_shows_the_one_line(tmp_path):
    """The whole path: a notebook run by papermill with an unknown profile fails with one line of traceback."""
    papermill = pytest.importorskip("papermill")
    import nbformat

    from retune.reproduce.runner import KERNEL

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = None\nsettings = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from retune.reproduce.notebook import setup\nP, meta, R, F = setup(globals())")]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(tmp_path / "nb.ipynb", tmp_path / "out.ipynb", parameters={"profile": "nope"},
                                   kernel_name=KERNEL, language="python", progress_bar=False)
    assert err.value.traceback == [f"ParameterError: {err.value.evalue}"] and "unknown profile 'nope'" in err.value.evalue


# --- 10. stdout carries only the run directory; a resumed run reports the whole run's loss ----------------------
def test_train_prints_only_the_run_directory(tmp_path, capsys):
    """Before: the Trainer's metrics dict ({'train_runtime': ...}) came first on stdout: RUN=$(retune train) broke."""
    argv = ["train", "--profile", "smoke", "--data", records(tmp_path / "d.jsonl"), *paths(tmp_path),
            "--set=train.max_steps=2", "--set=train.batch_size=4", "--set=threads=1"]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    assert out == f"{run}\n"


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def killer(at: int, event: str = "on_step_end"):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        pass

    def kill(self, args, state, control, **kwargs):
        if state.global_step >= at:
            raise Killed
    setattr(Kill, event, kill)
    return Kill()


@pytest.mark.parametrize("kill", ["after step 3 (checkpoint 2)", "after the last checkpoint"])
def test_a_resumed_run_reports_the_loss_of_the_whole_run(kill, tmp_path):
    """Before: a resumed run's train_loss was the mean after its checkpoint (3.553 against 3.833), or 0.0 when it
    resumed from its last checkpoint; the weights were the same."""
    data = records(tmp_path / "d.jsonl", n=24)
    config = T.TrainConfig(max_steps=6, batch_size=4, save_steps=2, logging_steps=3, threads=1, progress=False)
    straight = json.loads((T.train("tiny", [data], config, tmp_path / "a", TINY) / "measurements.json").read_text())
    callback = killer(3) if kill.startswith("after step") else killer(6, "on_train_end")
    with pytest.raises(Killed):
        T.train("tiny", [data], config, tmp_path / "b", TINY, callbacks=[callback])
    resumed = json.loads((T.train("tiny", [data], config, tmp_path / "b", TINY) / "measurements.json").read_text())
    assert resumed["resumed_from"] == ("checkpoint-2" if kill.startswith("after step") else "checkpoint-6")
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-4)


# --- the fuzz: random profile YAML and --set values -------------------------------------------------------------
def keys_of(cls, prefix="") -> list[str]:
    """Every dotted key of a settings dataclass, nested sections included (pretrain's, behind its Optional)."""
    import dataclasses
    import typing

    out = []
    for name, hint in typing.get_type_hints(cls).items():
        options = [o for o in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(o)]
        options += [hint] if dataclasses.is_dataclass(hint) else []
        out += [f"{prefix}{name}"] + [k for o in options[:1] for k in keys_of(o, f"{prefix}{name}.")]
    return out


KEYS = keys_of(Profile) + ["train.sizes.parity", "eval.sizes.parity", "train.by_task.parity.lr",
                           "train.by_task.dp.retuning.batch_size", "model.tiny.nope", "nope"]
JUNK = [0, 1, -1, 2, 3, 32, 33, 2**32, 2**63, 10**400, -10**9, 0.5, -0.0, 1e-3, float("nan"), float("inf"),
        -float("inf"), True, False, None, "", "auto", "linear", "cuda", "cpu", "x", "tiny", "1e-3", "１", "\udcff",
        [], [0], [-1], [2, 1], [1, 2, 3], {}, {"a": 1}, {"lr": 0}, [[1]]]


def junk(rng: random.Random):
    return rng.choice(JUNK)


def as_yaml(value) -> str:
    """A --set value as YAML text (JSON is YAML's flow style; YAML spells the special floats its own way)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if value != value else ("-" if value < 0 else "") + ".inf"
    return json.dumps(value)


def nearby(rng: random.Random, value):
    """A value of the same kind as a valid one, often valid itself: fuzzing near the edge, not only far off it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice([value, value + 1, value - 1, value * 2, 1, 0])
    if isinstance(value, float):
        return value * rng.choice([0.5, 1.0, 2.0, -1.0])
    return value


def current(key: str):
    value = Profile().to_dict()
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def fuzz_yaml(rng: random.Random, base: dict) -> str:
    """A profile's YAML: smoke's settings with a few keys set near or far off what is valid, then sometimes mangled
    as text."""
    doc = json.loads(json.dumps(base))
    for key in rng.sample(KEYS, rng.choice([1, 1, 2])):
        layer, parts = doc, key.split(".")
        for part in parts[:-1]:
            if not isinstance(layer.get(part), dict):
                layer[part] = {}
            layer = layer[part]
        layer[parts[-1]] = nearby(rng, current(key)) if rng.random() < 0.6 else junk(rng)
    text = yaml.safe_dump(doc, allow_unicode=False) if rng.random() < 0.95 else "- a list\n"
    roll = rng.random()
    if roll < 0.06:  # a section written twice
        text += f"train:\n  lr: {rng.choice(['1e-3', '.nan', '-1'])}\n"
    elif roll < 0.12:  # cut anywhere
        text = text[: rng.randrange(len(text) + 1)]
    elif roll < 0.16:  # a tab, a stray colon, a bad indent
        at = rng.randrange(len(text) + 1)
        text = text[:at] + rng.choice(["\t", ": :", "\n  - ", "{", "&a *a", "\udcff"]) + text[at:]
    return text


def check_outcome(load):
    """load() gives a Profile or a one-line ProfileError; anything else is the failure this fuzz looks for."""
    try:
        return load()
    except ProfileError as err:
        assert "\n" not in str(err) and str(err), repr(err)
        return None


def test_fuzz_profiles_and_sets(tmp_path, capsys, monkeypatch):
    """Several hundred random profiles and --set values: loaded and checked in one line or refused in one line,
    never a traceback; through the CLI (the work stubbed after the checks) exit 0 or 2, and nothing written
    unless 0. Every profile that passes gives transformers' TrainingArguments for each of its recipes."""
    from retune.training.checks import check_inputs
    from retune.training.trainer import training_arguments

    rng = random.Random(25)
    base = merged("smoke")
    loaded = refused = 0
    for case in range(400):
        text = fuzz_yaml(rng, base)
        path = tmp_path / f"p{case}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        sets = [f"{key}={as_yaml(nearby(rng, current(key)) if rng.random() < 0.6 else junk(rng))}"
                for key in rng.sample(KEYS, rng.choice([0, 0, 1, 2]))]
        profile = check_outcome(lambda: load_profile(str(path), parse_sets(sets)))
        if profile is None:
            refused += 1
            continue
        loaded += 1
        for task in profile.tasks:  # every recipe that passed makes Trainer arguments transformers accepts
            config = runs.train_config(profile, profile.seeds[0], task)
            # bf16 true is this machine's check (check_machine); several processes build their arguments under
            # torchrun, in its process group
            if config.bf16 is not True and getattr(config, "processes", 1) == 1:
                check_inputs(config, "tiny", None)
                training_arguments(config, tmp_path / "out", cuda=False)
    assert loaded > 60 and refused > 150, (loaded, refused)

    # through the CLI: the training itself stubbed, so an exit 0 costs nothing but says the checks let it through
    def work(*a, **k):
        (tmp_path / "w" / "runs" / "done").mkdir(parents=True)
        return tmp_path / "w" / "runs" / "done"
    monkeypatch.setattr(train_cmd, "trained", work)
    monkeypatch.setattr(reproduce_cmd, "reproduce", lambda *a, **k: work() and [])
    codes = []
    for case in range(150):
        workdir = tmp_path / "w"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        path = workdir / "p.yaml"
        path.write_text(fuzz_yaml(rng, base), encoding="utf-8", errors="surrogateescape")
        key = rng.choice(KEYS)
        value = as_yaml(nearby(rng, current(key)) if rng.random() < 0.6 else junk(rng))
        command = ["train", "--task", "parity", "--method", "retuning"] if case % 3 else ["reproduce"]
        argv = [*command, "--profile", path, *paths(workdir), f"--set={key}={value}"]
        code = run_cli(argv)
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, (argv, err)
        left = sorted(p.name for p in workdir.iterdir() if p.name != "p.yaml")
        assert left == (["runs"] if code == 0 else []), (argv, left, err)
        if code == 2:
            assert err.count("\n") == 1, err
        codes.append(code)
    assert codes.count(0) > 15 and codes.count(2) > 60, (codes.count(0), codes.count(2))
