"""The notebook runner on a temporary folder of trivial notebooks, and profile loading. A kernel starts in about
a second, so each notebook run here costs one or two seconds."""
import json
from pathlib import Path

import nbformat
import pytest

from retune.reproduce import runner as rp
from retune.reproduce.notebook import from_parameters
from retune.config.profiles import available, load_profile

pytest.importorskip("papermill")

KERNELSPEC = {"name": "retune", "display_name": "retune (.venv)", "language": "python"}


def kernel_available():
    from jupyter_client.kernelspec import KernelSpecManager

    return "retune" in KernelSpecManager().find_kernel_specs()


needs_kernel = pytest.mark.skipif(not kernel_available(), reason="kernel 'retune' not installed (make install)")


def write_notebook(path: Path, *cells: str, parameters: str = "profile = 'smoke'\nseeds = [0]") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def outputs(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# --- profiles (more in test_profiles.py) ---------------------------------------------------------------------
def test_shipped_profiles_load_and_hold_what_experiments_need():
    assert {"smoke", "cpu", "paper"} <= set(available())
    for name in ("smoke", "cpu", "paper"):
        p = load_profile(name)
        assert p.profile == name
        for task in p.tasks:
            lo, hi = p.eval.sizes[task]
            assert 1 <= lo <= hi and hi > p.train.sizes[task], (name, task)
    smoke = load_profile("smoke")
    assert smoke.model.tiny.hidden_size == 32 and smoke.train.max_steps <= 30
    paper = load_profile("paper")
    assert paper.train.sizes == {"addition": 15, "dp": 5, "parity": 21}
    assert (paper.eval.dtype, paper.eval.device) == ("float16", "auto")
    cpu = load_profile("cpu")
    assert cpu.train.sizes == {"addition": 6, "dp": 5, "parity": 10}
    assert all(cpu.eval.sizes[t][1] == 2 * cpu.train.sizes[t] for t in cpu.tasks)  # out to twice the trained
    assert cpu.step_probe.sizes[1] == 2 * cpu.train.sizes[cpu.step_probe.task]
    assert cpu.workers == 2 and cpu.studies.seeds == [0]


def test_from_parameters_takes_the_injected_settings_and_checks_them():
    p = load_profile("smoke", {"seeds": [3]})
    assert from_parameters({"profile": "smoke", "settings": p.to_dict()}) == p
    assert from_parameters({"profile": "smoke"}) == load_profile("smoke")  # opened by hand: loaded by name
    with pytest.raises(ValueError, match="seeds: expected a list of integers, got 'x'"):
        from_parameters({"profile": "smoke", "settings": dict(p.to_dict(), seeds="x")})


# --- the runner ----------------------------------------------------------------------------------------------
def test_notebook_order_and_only(tmp_path):
    for name in ("10_b.ipynb", "02_a.ipynb", "00_tour.ipynb"):
        write_notebook(tmp_path / name)
    assert [p.name for p in rp.notebooks(tmp_path)] == ["00_tour.ipynb", "02_a.ipynb", "10_b.ipynb"]
    assert [p.name for p in rp.notebooks(tmp_path, "02")] == ["02_a.ipynb"]
    assert [p.name for p in rp.notebooks(tmp_path, "10_b")] == ["10_b.ipynb"]
    with pytest.raises(ValueError, match="matches no notebook.*00_tour.ipynb"):
        rp.notebooks(tmp_path, "99")


def test_bad_parameter_names_are_refused():
    with pytest.raises(ValueError, match="identifiers"):
        rp.check_parameters({"profile": "x", "not-ok": 1})


@needs_kernel
@pytest.mark.slow
def test_runs_in_order_injects_parameters_and_skips_on_rerun(tmp_path):
    nbs, out, log = tmp_path / "nbs", tmp_path / "out", tmp_path / "order.txt"
    nbs.mkdir()
    record = f"open({str(log)!r}, 'a').write(NAME + '\\n')"
    write_notebook(nbs / "01_second.ipynb", "NAME = 'second'", record,
                   "print('T', tasks, train['max_steps'], eval_sizes['parity'], pretrain)")
    write_notebook(nbs / "00_first.ipynb", "NAME = 'first'", record, "print('S', seeds)")
    profile = {"profile": "t", "seeds": [1, 2], "tasks": ["addition", "dp"], "train": {"max_steps": 3, "lr": 1e-3},
               "eval_sizes": {"parity": [2, 5]}, "pretrain": None}
    lines = []
    records = rp.reproduce(profile, nbs, out, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["ran", "ran"]
    assert log.read_text().split() == ["first", "second"]
    assert "S [1, 2]" in outputs(out / "00_first.ipynb")
    assert "T ['addition', 'dp'] 3 [2, 5] None" in outputs(out / "01_second.ipynb")
    assert (out / "00_first.done.json").is_file()

    # second run: nothing to do
    records = rp.reproduce(profile, nbs, out, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert log.read_text().split() == ["first", "second"]

    # changed parameters or a changed notebook run again; --force runs all
    write_notebook(nbs / "01_second.ipynb", "NAME = 'second'", record, "print('changed')")
    records = rp.reproduce(profile, nbs, out, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["skipped", "ran"]
    records = rp.reproduce(dict(profile, seeds=[3]), nbs, out, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["ran", "ran"]
    records = rp.reproduce(dict(profile, seeds=[3]), nbs, out, force=True, progress=False, log=lines.append)
    assert [r["status"] for r in records] == ["ran", "ran"]


@needs_kernel
@pytest.mark.slow
def test_failure_names_notebook_and_cell_and_stops_the_run(tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    write_notebook(nbs / "00_ok.ipynb", "x = 1")
    write_notebook(nbs / "01_broken.ipynb", "y = 2", "raise ValueError('no model here')")
    write_notebook(nbs / "02_never.ipynb", "z = 3")
    with pytest.raises(rp.NotebookFailed) as info:
        rp.reproduce({"profile": "t"}, nbs, out, progress=False, log=lambda *_: None)
    message = str(info.value)
    assert "01_broken.ipynb" in message and "ValueError" in message and "no model here" in message
    # cells: parameters [1], injected parameters [2], y = 2 [3], the raise [4]
    assert info.value.cell == 4 and "cell [4]" in message and "raise ValueError" in message
    assert (out / "00_ok.done.json").is_file() and not (out / "01_broken.done.json").exists()
    assert not (out / "02_never.ipynb").exists()

    # after the fix, a rerun resumes: the finished notebook is skipped
    write_notebook(nbs / "01_broken.ipynb", "y = 2")
    records = rp.reproduce({"profile": "t"}, nbs, out, progress=False, log=lambda *_: None)
    assert [r["status"] for r in records] == ["skipped", "ran", "ran"]


def test_cli_registers_reproduce():
    from retune.cli import parser

    args = parser("reproduce").parse_args(["reproduce", "--profile", "smoke", "--only", "00", "--force",
                                           "--model", "some/model"])
    assert (args.profile, args.only, args.force, args.model) == ("smoke", "00", True, "some/model")
    from retune.commands import reproduce as command

    assert args.func is command.run_cli


def test_a_relative_model_path_reaches_the_notebooks_absolute(tmp_path, monkeypatch):
    """Before: `make reproduce MODEL=./llama-7b` handed the relative path on, and papermill runs in notebooks/."""
    from retune.commands.reproduce import model_path

    (tmp_path / "llama").mkdir()
    monkeypatch.chdir(tmp_path)
    assert model_path("./llama") == str(tmp_path / "llama")
    assert model_path("org/hub-model") == "org/hub-model"  # not a local path: a hub id, as given
    with pytest.raises(ValueError, match="--model"):
        model_path("  ")


def test_every_shipped_notebook_carries_kernelspec_and_language():
    for path in sorted(rp.NOTEBOOKS_DIR.glob("*.ipynb")):
        meta = json.loads(path.read_text())["metadata"]
        assert meta["kernelspec"]["name"] == "retune" and meta["kernelspec"]["language"] == "python", path.name
        assert meta["language_info"]["name"] == "python", path.name


@needs_kernel
@pytest.mark.slow
def test_cli_runs_resumes_and_reports_a_failure(tmp_path, monkeypatch, capsys):
    from retune.cli import main

    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    monkeypatch.setattr(rp, "NOTEBOOKS_DIR", nbs)
    monkeypatch.setattr(rp, "EXECUTED_DIR", out)
    write_notebook(nbs / "00_model.ipynb", "print('MODEL', settings['model']['source'], profile)",
                   parameters="profile = 'smoke'\nsettings = None")
    profile = tmp_path / "mine.yaml"
    profile.write_text("seeds: [4]\n")
    llama = tmp_path / "models" / "llama"  # a path that is not there is refused before any kernel starts
    llama.mkdir(parents=True)
    (llama / "config.json").write_text("{}")
    assert main(["reproduce", "--profile", str(profile), "--model", str(llama)]) == 0
    printed = capsys.readouterr().out
    assert "[1/1] 00_model.ipynb: done" in printed and "tables:" in printed and "figures:" in printed
    assert f"MODEL {llama} mine" in outputs(out / "mine" / "00_model.ipynb")
    main(["reproduce", "--profile", str(profile), "--model", str(llama)])
    assert "skipped" in capsys.readouterr().out
    write_notebook(nbs / "01_bad.ipynb", "1 / 0")
    with pytest.raises(SystemExit, match=r"01_bad.ipynb failed in cell \[3\] \(ZeroDivisionError"):
        main(["reproduce", "--profile", str(profile)])


@needs_kernel
@pytest.mark.slow
def test_tour_notebook_runs_under_smoke(tmp_path):
    records = rp.reproduce(load_profile("smoke"), executed_dir=tmp_path, only="00", progress=False,
                           log=lambda *_: None)
    assert [r["status"] for r in records] == ["ran"]
    assert 'class=\\"retune-trace\\"' in (tmp_path / "00_tour.ipynb").read_text()


@needs_kernel
@pytest.mark.slow
def test_a_rerun_on_the_same_inputs_leaves_the_executed_copy_and_marker_byte_for_byte(tmp_path):
    """Before: papermill's time stamps, durations and this machine's absolute paths made every rerun a new file."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "00_only.ipynb", "print(sum(range(10)))")
    profile = {"profile": "t", "seeds": [0]}
    rp.reproduce(profile, nbs, tmp_path / "a", progress=False, log=lambda *_: None)
    rp.reproduce(profile, nbs, tmp_path / "b", progress=False, log=lambda *_: None, force=True)
    for name in ("00_only.ipynb", "00_only.done.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert str(tmp_path) not in (tmp_path / "a" / "00_only.ipynb").read_text()
