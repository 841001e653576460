"""`retune reproduce`: run every notebook of notebooks/ in order, under one profile, with papermill.

Each notebook answers one question of the paper; the runner executes them in file-name order (00_..., 01_...)
with the checked profile (retune.config.profiles: the defaults + profiles/<name>.yaml + --set overrides) injected as the
papermill parameters `profile` (its name) and `settings` (all its settings), and keeps
the executed copies, outputs included, under results/notebooks/<profile>/. A notebook that raises stops the run
with an error naming the notebook and its failing cell.

Resuming: after a notebook succeeds the runner writes a done-marker holding a hash of the notebook's content and
the parameters. A second run skips every notebook whose executed copy exists and whose marker matches, so an
interrupted reproduction picks up where it stopped (`--force` runs everything again). The expensive steps inside
a notebook (datasets, training, evaluation) are cached separately (retune.training.runs, retune.evaluation.pipeline), so a re-run
notebook is cheap too.

With `workers` > 1, or an `executor` section that asks for GPUs or Slurm, every piece of work the notebooks need
(retune.reproduce.plan) is first done by an executor (retune.reproduce.executors: processes side by side, one per GPU, or a Slurm job
array); the notebooks then find it cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from . import executors
from ..files import ROOT
from ..config.profiles import Profile
NOTEBOOKS_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "results" / "notebooks"
KERNEL = "retune"  # installed into the venv by `make install`


def parameters(profile: Profile) -> dict:
    """What the runner injects into every notebook through papermill: the profile's name and all its settings
    (retune.reproduce.notebook.from_parameters reads them back)."""
    return {"profile": profile.profile, "settings": profile.to_dict()}


class _QuietUnknownParameters(logging.Filter):
    """Every profile key is injected into every notebook, and a notebook names in its parameters cell only the few
    it shows by hand; papermill's warning for each of the others is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


class NotebookFailed(RuntimeError):
    """A notebook raised (or its kernel died). The message names the notebook and the failing cell."""

    def __init__(self, notebook: str, message: str, cell: int | None = None, executed: Path | None = None):
        self.notebook, self.cell, self.executed = notebook, cell, executed
        super().__init__(message)


def notebooks(directory: Path | str | None = None, only: str | None = None) -> list[Path]:
    """The notebooks to run, in order (file names start with their number, so name order is run order).

    `only` picks one: a file name, a stem, or its number prefix ("03")."""
    directory = Path(directory or NOTEBOOKS_DIR)
    found = sorted(p for p in directory.glob("*.ipynb") if not p.name.startswith("."))
    if only is None:
        return found
    key = Path(only).name
    picked = [p for p in found if key in (p.name, p.stem) or p.name.split("_", 1)[0] == key]
    if not picked:
        names = ", ".join(p.name for p in found) or "(none)"
        raise ValueError(f"--only {only!r} matches no notebook in {directory}; notebooks: {names}")
    return picked


def fingerprint(notebook: Path, parameters: dict) -> str:
    """What decides a notebook's result as far as the runner knows: its content and its parameters."""
    h = hashlib.sha256(Path(notebook).read_bytes())
    h.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return h.hexdigest()


def marker_path(executed: Path) -> Path:
    return executed.with_name(executed.stem + ".done.json")


def is_done(notebook: Path, executed: Path, parameters: dict) -> bool:
    marker = marker_path(executed)
    if not (executed.is_file() and marker.is_file()):
        return False
    try:
        return json.loads(marker.read_text())["hash"] == fingerprint(notebook, parameters)
    except (ValueError, KeyError):
        return False


def check_parameters(parameters: dict) -> None:
    """papermill injects each key as a Python variable: keys must be identifiers."""
    bad = [k for k in parameters if not (isinstance(k, str) and k.isidentifier())]
    if bad:
        raise ValueError(f"profile keys must be Python identifiers to become notebook parameters; got {bad}")


def without_clock(executed: Path) -> None:
    """Drop what differs between two runs of the same notebook on the same inputs (papermill's and the kernel's
    time stamps and durations, this machine's absolute paths, the random id of the injected cell), so a re-run
    leaves the committed copy as it was."""
    nb = json.loads(Path(executed).read_text(encoding="utf-8"))
    run = nb.get("metadata", {}).get("papermill", {})
    for key in ("start_time", "end_time", "duration", "input_path", "output_path"):
        run.pop(key, None)
    for cell in nb.get("cells", []):
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a random id for the cell it adds
        cell.get("metadata", {}).pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell.get("metadata", {}).get("papermill", {}).pop(key, None)
    Path(executed).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def run_notebook(notebook: Path, executed: Path, parameters: dict, kernel_name: str = KERNEL,
                 progress: bool = True) -> None:
    """Execute one notebook with papermill into `executed`; raise NotebookFailed naming the failing cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    executed.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger("papermill")
    if not any(isinstance(f, _QuietUnknownParameters) for f in log.filters):
        log.addFilter(_QuietUnknownParameters())
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=parameters, kernel_name=kernel_name,
                            progress_bar=progress, cwd=str(notebook.parent))
        without_clock(executed)
    except PapermillExecutionError as err:
        # exec_count is the [n] shown beside the cell; papermill's injected-parameters cell counts too
        first_line = next((line for line in (err.source or "").splitlines() if line.strip()), "")
        raise NotebookFailed(
            notebook.name,
            f"notebook {notebook.name} failed in cell [{err.exec_count}] ({err.ename}: {err.evalue})\n"
            f"  cell starts: {first_line[:120]}\n  executed copy with the traceback: {executed}",
            err.exec_count, executed) from err
    except Exception as err:  # the kernel died, could not start, timed out ...
        raise NotebookFailed(notebook.name, f"notebook {notebook.name} failed: {type(err).__name__}: {err}\n"
                                            f"  executed copy (if any): {executed}", None, executed) from err


def reproduce(profile: Profile | dict, notebooks_dir: Path | str | None = None, executed_dir: Path | str | None = None,
              only: str | None = None, force: bool = False, kernel_name: str = KERNEL, progress: bool = True,
              log=print) -> list[dict]:
    """Run the notebooks in order under `profile` (a Profile, injected as `profile` and `settings`; or a plain
    dict of notebook parameters).

    Returns one record per notebook: name, status ("ran" or "skipped"), seconds, executed path."""
    if isinstance(profile, Profile) and only is None and executors.wanted(profile):
        log(f"runs first, by the {executors.kind(profile)} executor (profile keys `workers`, `executor`); then the "
            f"notebooks")
        executors.execute(profile, log=log, progress=progress)
    profile = parameters(profile) if isinstance(profile, Profile) else profile
    check_parameters(profile)
    todo = notebooks(notebooks_dir, only)
    if not todo:
        raise ValueError(f"no notebooks in {notebooks_dir or NOTEBOOKS_DIR}")
    out_dir = Path(executed_dir) if executed_dir else EXECUTED_DIR / str(profile.get("profile", "default"))
    records = []
    for i, notebook in enumerate(todo, 1):
        executed = out_dir / notebook.name
        head = f"[{i}/{len(todo)}] {notebook.name}"
        if not force and is_done(notebook, executed, profile):
            log(f"{head}: done before, skipped ({executed})")
            records.append({"notebook": notebook.name, "status": "skipped", "seconds": 0.0, "executed": executed})
            continue
        log(f"{head}: running")
        marker = marker_path(executed)
        marker.unlink(missing_ok=True)  # a run cut short must not look finished
        started = time.perf_counter()
        run_notebook(notebook, executed, profile, kernel_name, progress)
        seconds = round(time.perf_counter() - started, 1)
        marker.write_text(json.dumps({"hash": fingerprint(notebook, profile)}, indent=1) + "\n")  # no clock: stable
        log(f"{head}: done in {seconds} s")
        records.append({"notebook": notebook.name, "status": "ran", "seconds": seconds, "executed": executed})
    return records
