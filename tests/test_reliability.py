"""Reliability under bad input and interruption: nothing lost, nothing stale trusted, no traceback.

Kills are simulated in-process (a write step monkeypatched to raise) and for real (a subprocess SIGKILLs itself at
a chosen step); bad paths must be refused before any work; the largest size of every task must survive data,
oracle evaluation, trace save/load and HTML export; no model name reaches the network unless the user opted in.
"""
import os
import random
import signal
import socket
import stat
import string
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from retune.data import datasets as data
from retune.evaluation import scoring as evaluate_module, pipeline
from retune import files
from retune.commands import eval as eval_cmd
from retune.cli import main
from retune.decoding.recursive import Limits, Trace, TraceNode, decode, load_traces, save_traces
from retune.decoding.generators import Generation, OracleGenerator
from retune.config.profiles import load_profile
from retune.analysis.inspector import export_html, trace_html
from retune.models.causal_lm import resolve_model
from retune.tasks import TASKS, Malformed, get_task
from retune.training.fine_tune import data_identity, file_sha256

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(argv) -> int:
    """The CLI in-process; argparse's own errors (SystemExit) count as their exit code."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2


def small(out, seed=0, n=5):
    return data.make("parity", "retuning", out, sizes=(2, 4), n=n, seed=seed, progress=False)


def trusted_sha(path) -> str:
    """What the run cache keys a dataset on."""
    return data_identity(path)["sha256"]


# --- 1, 2: a dataset and its manifest are committed together ---------------------------------------------------
class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs (BaseException, so no `except Exception` swallows it)."""


def kill_at(monkeypatch, step: str):
    """Make one step of a dataset write raise Killed."""
    if step == "records":
        real = data.iter_records

        def records(*a, **k):
            for i, r in enumerate(real(*a, **k)):
                if i == 3:
                    raise Killed
                yield r
        monkeypatch.setattr(data, "iter_records", records)
    elif step == "rename":
        monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(Killed()))
    elif step == "manifest":  # the one manifest write (the build time is not written: the manifest is committed)
        def write_json(path, obj):
            raise Killed
        monkeypatch.setattr(data, "write_json", write_json)


@pytest.mark.parametrize("step", ["records", "rename", "manifest"])
def test_a_kill_at_any_step_never_leaves_a_pair_a_later_run_trusts(tmp_path, monkeypatch, step):
    out = tmp_path / "x.jsonl"
    old = small(out, seed=0)
    old_bytes = out.read_bytes()
    with monkeypatch.context() as m:
        kill_at(m, step)
        with pytest.raises(Killed):
            small(out, seed=1, n=40)
    # whatever is on disk now, the sha a run is keyed on is the sha of the bytes that are there
    assert trusted_sha(out) == file_sha256(out)
    manifest = data.verified(out)
    if manifest is not None:  # only a manifest that names these very bytes is believed
        assert manifest["sha256"] == file_sha256(out)
    if out.read_bytes() != old_bytes:  # new data in place: the old manifest must not vouch for it
        assert manifest is None or manifest["sha256"] != old["sha256"]
    # and a later build (as retune.training.runs does) rebuilds what is not verified, leaving no temporaries
    small(out, seed=1, n=40)
    assert data.verified(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl", "x.jsonl.manifest.json"]


def test_new_records_beside_the_old_manifest_are_not_the_old_dataset(tmp_path, monkeypatch):
    """The reproduction: killed after the JSONL is renamed into place, before the manifest is rewritten."""
    out = tmp_path / "x.jsonl"
    old = small(out, seed=0)
    with monkeypatch.context() as m:
        kill_at(m, "manifest")
        with pytest.raises(Killed):
            small(out, seed=1, n=40)
    assert trusted_sha(out) != old["sha256"]
    assert data.verified(out) is None


def killed_writer(tmp_path, where: str) -> subprocess.CompletedProcess:
    """A real process that builds a dataset and SIGKILLs itself at `where`: 'records' (mid-file) or 'manifest'
    (after the JSONL is in place, before the manifest)."""
    script = textwrap.dedent(f"""
        import os, signal
        from retune.data import datasets as data
        out = {str(tmp_path / 'x.jsonl')!r}
        if {where!r} == "records":
            real = data.iter_records
            def records(*a, **k):
                for i, r in enumerate(real(*a, **k)):
                    if i == 50:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield r
            data.iter_records = records
        else:
            data.write_json = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
        data.make("parity", "retuning", out, sizes=(2, 6), n=40, seed=1, progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)


@pytest.mark.parametrize("where", ["records", "manifest"])
def test_real_sigkill_during_a_write(tmp_path, where):
    out = tmp_path / "x.jsonl"
    old = small(out, seed=0)
    done = killed_writer(tmp_path, where)
    assert done.returncode == -signal.SIGKILL
    if where == "records":  # a hidden temporary is what a killed writer leaves
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        assert data.verified(out)["sha256"] == old["sha256"]  # the old pair is untouched and still whole
    else:
        assert data.verified(out) is None and trusted_sha(out) != old["sha256"]
    small(out, seed=2)  # the next write of the same file cleans up after the dead one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl", "x.jsonl.manifest.json"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    out = tmp_path / "x.jsonl"
    mine = files.temp_path(out)  # this process is alive
    dead = tmp_path / ".x.jsonl.999999999-abcd.tmp"
    dead.write_text("partial")
    assert files.remove_stale_temps(out) == [dead]
    assert mine.exists() and not dead.exists()


def test_files_get_the_umasks_mode(tmp_path):
    out = tmp_path / "x.jsonl"
    small(out)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(data.manifest_path(out).stat().st_mode) == 0o666 & ~umask


# --- 3, 4: output paths are checked before any work ------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Fail loudly if a dataset build, a training run, a model load, sampling or decoding starts."""
    def refuse(*a, **k):
        raise AssertionError("work started before the output path was checked")
    monkeypatch.setattr(data, "iter_records", refuse)
    for name in ("decode", "eval_problems", "trained", "pretrained_generator", "hf_generator"):
        monkeypatch.setattr(eval_cmd, name, refuse)


DATA = ["data", "--task", "parity", "--method", "retuning", "--sizes", "1-3", "--n", "2", "--quiet"]
EVAL = ["eval", "--backend", "oracle", "--task", "parity", "--method", "retuning", "--sizes", "2-3", "--n", "2"]
EVAL_HF = ["eval", "--profile", "smoke", "--task", "parity", "--method", "retuning"]  # would train, then decode


@pytest.mark.parametrize("argv", [DATA, EVAL], ids=["data", "eval"])
def test_a_name_too_long_for_the_file_system_is_refused_before_work(tmp_path, capsys, no_work, argv):
    # 236 bytes is a legal file name, but not with the temporary it is written through beside it (a file only)
    long_file = [tmp_path / ("d" * 230 + ".jsonl")] if argv is DATA else []
    for out in (*long_file, tmp_path / ("f" * 300), tmp_path / ("f" * 300) / "o.jsonl"):
        assert run([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "bytes" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_special_files_at_out_are_never_replaced(tmp_path, capsys, no_work):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert run([*DATA, "--out", str(fifo)]) == 2
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert "not a regular file" in capsys.readouterr().err
    link = tmp_path / "null"  # a link to the null device: the device is checked, not the link
    link.symlink_to(os.devnull)
    assert run([*DATA, "--out", str(link)]) == 2
    assert link.is_symlink() and not (tmp_path / "null.manifest.json").exists()
    if AS_ROOT:  # a character device of our own (the null device's numbers), so nothing real is at stake
        device = tmp_path / "dev"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        assert run([*DATA, "--out", str(device)]) == 2
        assert stat.S_ISCHR(device.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fifo", "null"] + (["dev"] if AS_ROOT else []))


def bad_outs(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "dir").mkdir()
    return {"directory": str(tmp_path / "dir"), "dot": ".", "empty": "", "trailing slash": str(tmp_path / "new") + "/",
            "under a file": str(a_file / "x.jsonl"), "deep under a file": str(a_file / "a" / "b.jsonl")}


def test_bad_data_out_is_one_line_exit_2_before_work(tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.chdir(tmp_path)
    for what, out in bad_outs(tmp_path).items():
        start = time.perf_counter()
        assert run([*DATA, "--out", out]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("retune data: error: --out") and err.count("\n") == 1, what
        assert time.perf_counter() - start < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


def test_bad_eval_out_is_one_line_exit_2_before_work(tmp_path, capsys, no_work):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for argv in (EVAL, EVAL_HF):
        for out in (str(a_file), str(a_file / "sub"), str(a_file / "a" / "b"), ""):
            assert run([*argv, "--out", out]) == 2, (argv, out)
            err = capsys.readouterr().err
            assert err.startswith("retune eval: error: --out") and err.count("\n") == 1, (argv, out)
    assert [p.name for p in tmp_path.iterdir()] == ["file"] and a_file.read_text() == "x"


def test_unwritable_directory_is_refused(tmp_path, capsys, monkeypatch, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    if AS_ROOT:  # root may write anywhere but a read-only file system; stand in for one through os.access
        real = os.access
        monkeypatch.setattr(files.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    else:
        locked.chmod(0o500)
    assert run([*DATA, "--out", str(locked / "x.jsonl")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert run([*EVAL, "--out", str(locked)]) == 2
    assert "not writable" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


def test_eval_writes_the_summary_last(tmp_path, monkeypatch):
    """A failure while saving traces must not leave a summary beside missing or empty traces (nor an older
    evaluation's summary), and leaves no directory it created."""
    old = tmp_path / "old"
    assert run([*EVAL, "--out", str(old)]) == 0 and (old / "summary.json").is_file()

    def broken(path, traces):
        raise OSError("disk full")
    monkeypatch.setattr(eval_cmd, "save_traces", broken)
    assert run([*EVAL, "--out", str(old)]) == 2
    assert not list(tmp_path.rglob("summary.json"))
    assert run([*EVAL, "--out", str(tmp_path / "new" / "deeper")]) == 2
    assert not (tmp_path / "new").exists()


# --- 5, 6, 13: bounds, declared per task, said before starting -------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--sizes", "1-1000000"], "sizes: at most 1000 for task 'parity'"),
    (["--n", "1000000000000"], "n (problems per size) must be in 1.."),
    (["--sizes", "1-1000", "--n", "100000"], "problems; at most"),
    (["--sizes", "1001"], "sizes: at most 1000"),
])
def test_data_bounds_fail_at_once(tmp_path, capsys, argv, message):
    start = time.perf_counter()
    code = run(["data", "--task", "parity", "--method", "retuning", *argv, "--out", str(tmp_path / "x.jsonl"),
                "--quiet"])
    assert code == 2 and message in capsys.readouterr().err
    assert time.perf_counter() - start < 5 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", list(TASKS))
def test_a_size_beyond_the_tasks_maximum_is_a_clear_error(task, tmp_path, capsys, no_work):
    too_big, top = TASKS[task].max_size + 1, TASKS[task].max_size
    for sizes in (str(too_big), f"1-{10 ** 12}"):
        for argv in (EVAL_HF, ["eval", "--backend", "oracle", "--task", task, "--method", "retuning"]):
            argv = [a if a != "parity" else task for a in argv]
            start = time.perf_counter()
            assert run([*argv, "--sizes", sizes, "--n", "1", "--out", str(tmp_path / "out")]) == 2
            err = capsys.readouterr().err
            assert f"eval.sizes.{task}" in err and f"size must be in 1..{top}" in err and err.count("\n") == 1
            assert time.perf_counter() - start < 5
    assert run(["eval", "--backend", "oracle", "--task", task, "--method", "retuning", "--set",
                f"eval.sizes.{task}=[1, {too_big}]"]) == 2  # --sizes is only a shorthand for this key
    assert f"size must be in 1..{top}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", list(TASKS))
def test_the_library_refuses_a_size_beyond_the_tasks_maximum(task):
    too_big, top = TASKS[task].max_size + 1, TASKS[task].max_size
    with pytest.raises(ValueError, match=f"sizes: at most {top}"):
        data.build(task, "retuning", sizes=(too_big, too_big), n=1, progress=False)
    with pytest.raises(ValueError, match=f"size must be in 1..{top}"):
        pipeline.eval_problems(task, (1, 10 ** 12), 1, 0)  # at once, not after walking the range


@pytest.mark.parametrize("argv,message", [
    (["--n", "1000000000000"], "eval.problems_per_size (--n) must be in 1..10000"),
    (["--set", "eval.problems_per_size=10001"], "eval.problems_per_size (--n) must be in 1..10000"),
    (["--sizes", "1-1000", "--n", "1000"], "problems; at most 100000"),
])
def test_eval_bounds_fail_at_once(tmp_path, capsys, argv, message, no_work):
    start = time.perf_counter()
    assert run([*EVAL[:-4], *argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert time.perf_counter() - start < 5 and list(tmp_path.iterdir()) == []


def test_traces_that_would_not_fit_in_memory_are_refused(tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setattr(eval_cmd, "available_memory", lambda: 1000)
    assert run([*EVAL, "--out", str(tmp_path / "out")]) == 2
    assert "more than the 0.0 GB of memory available" in capsys.readouterr().err


def test_eval_bounds_are_in_the_help(capsys):
    assert run(["eval", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name} {cls.max_size}" in text for name, cls in TASKS.items())
    assert f"{eval_cmd.MAX_EVAL_N:,} problems per size" in text and f"{eval_cmd.MAX_EVAL_PROBLEMS:,} in all" in text


def test_data_says_what_it_will_build_first(tmp_path, capsys):
    assert run([*DATA, "--out", str(tmp_path / "x.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "6 problems (sizes 1-3 x n 2)" in err and "MB" in err


def test_a_dataset_larger_than_the_free_disk_is_refused(tmp_path, capsys, monkeypatch, no_work):
    monkeypatch.setattr(data.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    assert run([*DATA, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "MB free" in capsys.readouterr().err


def test_paper_distribution_refuses_sizes_and_n(tmp_path, capsys, no_work):
    for extra in (["--sizes", "1-3"], ["--n", "5"]):
        assert run(["data", "--task", "dp", "--method", "baseline", "--distribution", "paper", *extra,
                    "--out", str(tmp_path / "x.jsonl")]) == 2
        assert "drop --sizes and --n" in capsys.readouterr().err


def endless(contexts, max_new_tokens):
    """A model that always calls a new, slightly longer problem: only the decoder's limits stop it."""
    return [Generation(f"Call: {c.splitlines()[0]}!\n", True, len(c), 10) for c in contexts]


class Endless:
    generate = staticmethod(endless)


@pytest.mark.parametrize("task", list(TASKS))
def test_the_largest_size_of_every_task_runs_end_to_end(task, tmp_path):
    spec = get_task(task)
    size = spec.max_size
    manifest = data.make(task, "retuning", tmp_path / "d.jsonl", sizes=(size, size), n=1, progress=False)
    assert manifest["records"] > 0 and data.verified(tmp_path / "d.jsonl")
    problem = spec.sample(size, random.Random(0))
    # the oracle solves it (the depth limit raised for dp, whose default is the reference's 35)
    limits = Limits(depth=4 * size)
    oracle = OracleGenerator.for_problems(spec, [problem], "retuning")
    [solved] = decode(spec, [problem], "retuning", oracle, limits)
    assert solved.correct and solved.contexts >= size
    # the evaluation `retune eval --backend oracle` runs (problem stream, decoding, rows, summary)
    profile = load_profile("smoke", {"eval": {"sizes": {task: [size, size]}, "problems_per_size": 1},
                                     "limits": {"depth": 4 * size}})
    result = eval_cmd.evaluate_command(profile, task=task, method="retuning", backend="oracle", out=tmp_path / "eval")
    assert [(r["size"], r["correct"], r["n"]) for r in result["by_size"]] == [(size, 1, 1)]
    assert load_traces(tmp_path / "eval" / "traces.jsonl")[0].contexts >= size
    # a model that keeps calling makes a trace as deep as the limits allow (deeper than Python's recursion limit)
    [deep] = decode(spec, [problem], "retuning", Endless(), Limits(depth=1200))
    assert deep.error in ("depth_limit", "tree_limit") and max(n.depth for n in deep.root.walk()) > 1000
    assert "TraceNode(" in repr(deep) and deep == deep
    for trace in (solved, deep):
        save_traces(tmp_path / "t.jsonl", [trace])
        [back] = load_traces(tmp_path / "t.jsonl")
        assert back.to_dict() == trace.to_dict()
        export_html([back], tmp_path / "t.html")
        assert (tmp_path / "t.html").stat().st_size > 0
    assert evaluate_module.first_departure(deep, evaluate_module.oracle_tree(spec, problem, "retuning")).kind \
        in ("wrong_call", "wrong_base", "wrong_combination", "limit")


def test_endless_calls_within_the_default_limits_save_and_render(tmp_path):
    """The reproduction: parity size 200, default limits, a model that never stops calling."""
    spec = get_task("parity")
    [trace] = decode(spec, [spec.sample(200, random.Random(0))], "retuning", Endless())
    assert trace.error in ("depth_limit", "tree_limit")
    save_traces(tmp_path / "t.jsonl", [trace])
    assert load_traces(tmp_path / "t.jsonl")[0].contexts == trace.contexts
    assert "retune-trace" in trace_html(trace)


def test_older_nested_trace_files_still_load(tmp_path):
    spec = get_task("addition")
    [trace] = decode(spec, [("12", "34")], "retuning", OracleGenerator.for_problems(spec, [("12", "34")], "retuning"))
    nested = {k: v for k, v in trace.to_dict().items() if k != "nodes"} | {"root": trace.root.to_dict()}
    assert Trace.from_dict(nested).to_dict() == trace.to_dict()


# --- 7: no network unless the user opted in --------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (HF_HUB_OFFLINE too, for what is imported from here on)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RETUNE_ALLOW_HUB", raising=False)

    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_a_mistyped_run_is_no_such_model_directory_at_once(tmp_path, capsys, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    small(tmp_path / "d.jsonl")
    for name in ("runs/addition-retuning-typo", "someone/not-a-local-model", "./nope", "~/nope", "gpt2"):
        start = time.perf_counter()
        assert run(["train", "--data", "d.jsonl", "--model", name]) == 2, name
        err = capsys.readouterr().err
        assert "no such model directory" in err and err.count("\n") == 1, name
        assert time.perf_counter() - start < 5


def test_an_empty_directory_is_no_model_here(tmp_path, capsys, no_network, no_work):
    (tmp_path / "empty").mkdir()
    assert run(["eval", "--backend", "hf", "--model", str(tmp_path / "empty"), "--task", "parity", "--method",
                "retuning", "--sizes", "2", "--n", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no model here" in err and "sentencepiece" not in err.lower() and err.count("\n") == 1
    assert run(["eval", "--model", "someone/typo-model", "--task", "parity", "--method", "retuning"]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_the_hub_only_when_allowed(monkeypatch):
    monkeypatch.delenv("RETUNE_ALLOW_HUB", raising=False)
    with pytest.raises(ValueError, match="RETUNE_ALLOW_HUB=1"):
        resolve_model("someone/model")
    assert resolve_model("someone/model", allow_hub=True) == "someone/model"
    monkeypatch.setenv("RETUNE_ALLOW_HUB", "1")
    assert resolve_model("someone/model") == "someone/model"
    with pytest.raises(ValueError, match="no such model directory"):  # a path stays a path
        resolve_model("./someone/model")


def test_allowed_but_offline_fails_fast_in_one_line(tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, so this runs in a fresh process."""
    script = textwrap.dedent("""
        import time
        from retune.models.causal_lm import load_pretrained
        import transformers  # imported before the clock starts
        start = time.perf_counter()
        try:
            load_pretrained("retune-nobody/no-such-model-xyz")
        except ValueError as err:
            print("ValueError", time.perf_counter() - start, err)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RETUNE_ALLOW_HUB="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    kind, seconds, message = done.stdout.strip().split(" ", 2)
    assert kind == "ValueError" and "could not be loaded" in message and "\n" not in message
    assert float(seconds) < 60  # not a speed test (8 s on a loaded machine): what it catches is a hang in retries


# --- 8: children die with their parent ------------------------------------------------------------------------
def test_a_child_dies_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = (f"import sys; from retune.training.memory import run_child; "
              f"run_child([sys.executable, '-c', {child!r}])")
    proc = subprocess.Popen([sys.executable, "-c", parent], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.time() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 5
    while alive(child_pid) and time.time() < deadline:
        time.sleep(0.05)
    still = alive(child_pid)
    if still:
        os.kill(child_pid, signal.SIGKILL)
    assert not still


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and ("Z" in line or "X" in line) for line in f)
    except FileNotFoundError:
        return False


# --- 9: every trace that can be saved renders -------------------------------------------------------------------
def test_lone_surrogates_save_and_render(tmp_path):
    spec = get_task("parity")
    problem = [1, 0]
    root = TraceNode("What is the parity of [1, 0]?", context="x\udcff", turns=["\ud800 broken"],
                     answer="\udcff", error="unparseable_answer")
    trace = Trace("parity", "retuning", 2, problem, spec.solve(problem), error="unparseable_answer", root=root)
    save_traces(tmp_path / "t.jsonl", [trace])
    [back] = load_traces(tmp_path / "t.jsonl")
    page = export_html([back], tmp_path / "t.html").read_text(encoding="utf-8")
    assert "\\ud800 broken" in page
    trace_html(back).encode("utf-8")


# --- 10: one numeral rule for every task ------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["[１, ２]", "[+1, 2]", "[1, 0_2]", "[1, ²]", "[1 2]"])
def test_dp_answers_are_ascii_digits_only(text):
    with pytest.raises(Malformed):
        get_task("dp").parse_answer(text)


def test_dp_answers_still_parse():
    assert get_task("dp").parse_answer("[1, 2, 1]") == [1, 2, 1]


@pytest.mark.parametrize("task,text", [("addition", "Carry 0, Output １２"), ("parity", "+1")])
def test_other_tasks_agree(task, text):
    with pytest.raises(Malformed):
        get_task(task).parse_answer(text)


# --- 11: library limits are validated --------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["depth", "calls", "new_tokens", "contexts"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_below_one_are_refused(field, value):
    with pytest.raises(ValueError, match=f"Limits.{field} must be an integer >= 1"):
        Limits(**{field: value})


def test_generators_refuse_token_limits_below_one():
    with pytest.raises(ValueError, match="max_new_tokens must be integers >= 1"):
        OracleGenerator({"a": "b"}).generate(["a"], [-5])
    assert OracleGenerator({"a": "b"}).generate(["a"], [1])[0].tokens_out == 1


# --- fuzz: random arguments, never a traceback, never a file unless success ------------------------------------
OPTIONS = {
    "data": ["--task", "--method", "--distribution", "--sizes", "--n", "--seed", "--variant", "--out"],
    "eval": ["--backend", "--task", "--sizes", "--n", "--method", "--seed", "--variant", "--profile", "--set",
             "--device", "--dtype", "--out"],
}
SMALL = ["1", "2", "3"]
GOOD = {"--task": list(TASKS), "--method": ["baseline", "retuning", "scratchpad", "inline", "no_carryover"],
        "--distribution": ["scaled", "efficiency"], "--backend": ["oracle"], "--sizes": ["1-3", "2", "2,4", "3-3"],
        "--out": ["out.jsonl", "o/x.jsonl", "results"], "--variant": ["0", "1", "3"], "--seed": ["0", "1", "0,1"]}
GOOD_EVAL = {"--sizes": ["1-3", "2", "3-3"], "--seed": ["0", "1"], "--out": ["results", "o/deeper", "."],
             "--profile": ["smoke", "cpu"], "--device": ["cpu", "auto"], "--dtype": ["float32", "bfloat16"],
             "--set": ["limits.calls=4", "limits.depth=40", "eval.batch_size=8", "train.sizes.parity=2"]}
NEVER_LEFT_OUT = ("--task", "--method", "--out", "--backend")  # without --backend, hf would train a model


def good_value(rng: random.Random, command: str, option: str) -> str:
    return rng.choice((GOOD_EVAL if command == "eval" else {}).get(option) or GOOD.get(option, SMALL))


def junk_value(rng: random.Random) -> str:
    """A random string: numbers out of range, odd numerals, path-like and plain garbage."""
    kind = rng.random()
    if kind < 0.3:
        return str(rng.choice([-1, 0, 5, 10**6, 10**12, 10**40, -10**9]))
    if kind < 0.45:
        return rng.choice(["", ".", "/", "..", "-", "1-", "-3", "3-1", "1-2-3", "１", "+2", "2_0", "0x10", "1e3",
                           "a,b", ",", "1,,2", "\udcff", os.devnull, "f/x", "~", "nan"])
    alphabet = string.printable + "１２\u00b2\udcff/.-,_+ "
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def fuzz_argv(rng: random.Random, workdir: Path) -> list[str]:
    """A valid small command with zero to three options replaced by junk or left out."""
    command = rng.choice(["data", "eval"])
    values = {option: good_value(rng, command, option) for option in OPTIONS[command]}
    for option in rng.sample(OPTIONS[command], rng.choice([0, 1, 1, 2, 3])):
        if rng.random() < 0.15 and option not in NEVER_LEFT_OUT:
            del values[option]
        else:
            values[option] = junk_value(rng)
    if values.get("--out") == "f/x":  # an out path under a file
        (workdir / "f").write_text("")
    argv = [command] + [f"{option}={value}" for option, value in values.items()]  # '=': values may start with -
    return argv + (["--quiet"] if command == "data" else [])


def test_fuzz_the_cli(tmp_path, monkeypatch, capsys):
    rng = random.Random(12)
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    codes = []
    for case in range(300):
        workdir = tmp_path / f"c{case}"
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        argv = fuzz_argv(rng, workdir)
        try:
            code = run(argv)
        except Exception as err:  # an uncaught exception is the failure this test looks for
            pytest.fail(f"{argv!r} raised {type(err).__name__}: {err}")
        captured = capsys.readouterr()
        assert code in (0, 2), argv
        assert "Traceback" not in captured.err, argv
        left = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.name != "f")
        if code != 0:
            assert left == [], (argv, left)
        elif argv[0] == "eval":  # a whole evaluation: its traces, then its summary
            out = Path(next(a for a in argv if a.startswith("--out=")).split("=", 1)[1])
            assert {"traces.jsonl", "summary.json"} <= {p.name for p in out.iterdir()}, argv
        codes.append((argv[0], code))
    assert 50 < sum(code == 0 for _, code in codes) < 250  # both outcomes well exercised
    assert codes.count(("eval", 0)) > 20 and codes.count(("eval", 2)) > 20
    assert time.perf_counter() - started < 240


# --- fuzz: the bounded keys near and beyond their limits -------------------------------------------------------
BOUNDED = {  # every key with an upper limit, and that limit (as documented in retune/config/bounds.py)
    **{f"train.{k}": 10**8 for k in ("max_steps", "warmup_steps", "save_steps", "logging_steps")},
    "train.batch_size": 2**16, "train.grad_accum": 2**16, "train.max_length": 2**20, "train.processes": 1024,
    "pretrain.examples": 10**8, "pretrain.max_length": 4096, "train.lora.r": 2**16, "train.lora.lora_dropout": 0.99,
    "model.tiny.hidden_size": 2**16, "model.tiny.num_hidden_layers": 2**10, "model.tiny.num_attention_heads": 2**10,
    "model.tiny.intermediate_size": 2**18, "model.tiny.max_position_embeddings": 2**20,
}


LISTS = {"seeds": ["[0]", "[0, 1]", "[0, 0]", "[]", "[-1]", "null"],
         "methods": ["[retuning]", "[baseline, retuning]", "[retuning, retuning]", "[]", "[nosuch]"],
         "tasks": ["[parity]", "[]", "[parity, parity]", "[nosuch]"],
         "train.sizes": ["{parity: 4}", "{nosuch: 3}", "{parity: 0}", "{parity: 100000}"],
         "eval.sizes": ["{parity: [2, 3]}", "{nosuch: [1, 2]}", "{parity: [3, 2]}"],
         "train.lora.target_modules": ["[q_proj]", "all-linear", "[nosuch]", "[]", "q_proj"],
         "profile": ["smoke", "../../x", "a/b", ".", "ok-name_1.2"],
         "train.device": ["cpu", "auto", "cuda", "tpu"]}


def bounded_set(rng: random.Random) -> tuple[str, bool]:
    """One --set of a bounded key near or past its limit (and whether it is past), or of a list-valued key."""
    if rng.random() < 0.3:
        key = rng.choice(list(LISTS))
        return f"--set={key}={rng.choice(LISTS[key])}", False
    key, high = rng.choice(list(BOUNDED.items()))
    value = rng.choice([1, 2, high, high + 1, high * 1000, 2**63, 10**20, -1, 0, ".nan", ".inf", "-.inf", "x", 0.5,
                        "[1]", "null"])
    past = isinstance(value, int) and value > high
    if key.startswith("train.lora."):  # a mapping: the key inside it
        return f"--set=train.lora={{{key.rsplit('.', 1)[1]}: {value}}}", past
    if key.startswith("pretrain."):  # null in smoke: the section with the key
        return f"--set=pretrain={{{key.split('.', 1)[1]}: {value}}}", past
    return f"--set={key}={value}", past


def test_fuzz_bounded_settings(tmp_path, monkeypatch, capsys):
    """Random bounded and list-valued keys on an oracle evaluation (every key is checked when the profile loads,
    whatever the command): exit 0 or 2, one line and no traceback, nothing left behind unless exit 0."""
    rng = random.Random(37)
    codes = []
    for case in range(150):
        workdir = tmp_path / f"c{case}"
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        sets, past = zip(*[bounded_set(rng) for _ in range(rng.choice([1, 1, 2, 3]))])
        argv = ["eval", "--backend=oracle", "--profile=smoke", "--task=parity", "--method=retuning", "--sizes=2",
                "--n=1", "--out=out", *sets]
        try:
            code = run(argv)
        except Exception as err:  # an uncaught exception is the failure this test looks for
            pytest.fail(f"{argv!r} raised {type(err).__name__}: {err}")
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, (argv, err)
        assert code == 2 or not any(past), argv  # a value past its limit is refused, whichever the command
        left = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
        if code != 0:
            assert left == [] and err.count("\n") == 1, (argv, left, err)
        else:
            assert {"out/traces.jsonl", "out/summary.json"} <= set(left), argv
        codes.append((code, any(past)))
    assert 20 < sum(c == 0 for c, _ in codes) and 20 < sum(past for _, past in codes)  # every outcome exercised
