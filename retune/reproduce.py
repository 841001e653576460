"""`retune reproduce`: run every notebook of notebooks/ in order, under one profile, with papermill.

Each notebook answers one question of the paper; the runner executes them in file-name order (00_..., 01_...)
with the checked profile (retune.profiles: the defaults + profiles/<name>.yaml + --set overrides) injected as the
papermill parameters `profile` (its name) and `settings` (all its settings), and keeps
the executed copies, outputs included, under results/notebooks/<profile>/. A notebook that raises stops the run
with an error naming the notebook and its failing cell.

Resuming: after a notebook succeeds the runner writes a done-marker holding a hash of the notebook's content and
the parameters. A second run skips every notebook whose executed copy exists and whose marker matches, so an
interrupted reproduction picks up where it stopped (`--force` runs everything again). The expensive steps inside
a notebook (datasets, training, evaluation) are cached separately by retune.experiments, so a re-run notebook is
cheap too.

With the profile key `workers` > 1, every run the notebooks need is first trained and evaluated in that many
processes side by side (`prepare`); the notebooks then find them cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from .profiles import Profile, available, load_profile, parameters, parse_sets

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
EXECUTED_DIR = ROOT / "results" / "notebooks"
KERNEL = "retune"  # installed into the venv by `make install`


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
    if isinstance(profile, Profile) and profile.workers > 1 and only is None:
        log(f"runs first, {profile.workers} side by side (profile key `workers`); then the notebooks")
        prepare(profile, log=log, progress=progress)
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
        marker.write_text(json.dumps({"hash": fingerprint(notebook, profile), "seconds": seconds,
                                      "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
        log(f"{head}: done in {seconds} s")
        records.append({"notebook": notebook.name, "status": "ran", "seconds": seconds, "executed": executed})
    return records


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="run every notebook under a profile (the main job)",
                              description="Execute notebooks/NN_*.ipynb in order with papermill, parameters from "
                                          "the profile; executed copies go to results/notebooks/<profile>/. "
                                          "Finished notebooks are skipped on a second run.")
    p.add_argument("--profile", default="cpu",
                   help=f"profile name ({', '.join(n for n in available() if n != 'base')}) or a YAML path; "
                        "over the defaults of retune/profiles.py")
    p.add_argument("--model", help="pretrained model (local path or hub id) instead of the profile's")
    p.add_argument("--only", metavar="NOTEBOOK", help="run just this notebook (file name, stem or number)")
    p.add_argument("--force", action="store_true", help="run notebooks even if their executed copy is current")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="override a profile key, the value read as YAML (repeatable), dotted into a section: "
                        "--set 'seeds=[0, 1, 2]' --set train.max_steps=100")
    p.set_defaults(func=run_cli)


def run_cli(args) -> list[dict]:
    overrides = parse_sets(args.set)
    if args.model:
        overrides["model"] = dict(overrides.get("model") or {}, source=args.model)
    profile = load_profile(args.profile, overrides)  # checked here: a bad key or value stops before any work
    try:
        records = reproduce(profile, only=args.only, force=args.force)
    except NotebookFailed as err:
        raise SystemExit(f"retune reproduce: error: {err}") from None
    print(f"\nexecuted notebooks: {EXECUTED_DIR / profile.profile}")
    for key, what in (("results", "tables"), ("figures", "figures")):
        path = Path(getattr(profile.paths, key))
        print(f"{what}: {path if path.is_absolute() else ROOT / path}")
    return records


# --- training and evaluating side by side, before the notebooks -----------------------------------------------
def _job(job: tuple) -> tuple:
    """One piece of work in a worker process; returns (job, seconds per stage)."""
    kind, profile, spec, threads = job
    import torch

    from . import experiments as ex

    torch.set_num_threads(threads)
    started = time.perf_counter()
    if kind == "base":
        ex.base_model(profile, spec["seed"], progress=False)  # the pool's bar and one line per piece suffice
        return job, {"trained": round(time.perf_counter() - started)}
    if kind == "step probe":
        from .probe import pretrained_run

        pretrained_run(profile, spec["seed"], log=lambda *_: None)
        return job, {"trained": round(time.perf_counter() - started)}
    run_dir = ex.trained(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                         spec["variant"], progress=False)
    trained_at = time.perf_counter()
    ex.evaluate_run(profile, run_dir, spec["task"], spec["method"], spec["seed"], spec["variant"], progress=False)
    return job, {"trained": round(trained_at - started), "evaluated": round(time.perf_counter() - trained_at)}


def describe_job(job: tuple) -> str:
    kind, _, spec, _ = job
    if kind != "run":
        return f"{kind} seed {spec['seed']}"
    extra = "".join(f" {k} {spec[k]}" for k in ("distribution", "n", "variant") if spec[k] not in ("scaled", None, 0))
    return f"{spec['task']}/{spec['method']} seed {spec['seed']}{extra}"


def expected_cost(profile: Profile, spec: dict) -> float:
    """Training tokens of a run (steps x batch x mean example length), to start the longest first. Builds the
    run's dataset (seconds), so workers never build one at the same time."""
    from . import data, experiments as ex

    path = ex.dataset(profile, spec["task"], spec["method"], spec["seed"], spec["distribution"], spec["n"],
                      spec["variant"])
    config = ex.train_config(profile, spec["seed"], spec["task"], spec["method"])
    return config.max_steps * config.batch_size * data.read_manifest(path)["char_tokens"]["mean"]


def prepare(profile: Profile, workers: int | None = None, log=print, progress: bool = True) -> list[tuple]:
    """Train and evaluate every run the notebooks need (retune.experiments.all_runs), plus the generic bases and
    the step probe's pretrained fine-tune, in `workers` processes side by side (default: the profile's
    `workers`); the notebooks then read cached results. A seed's runs start once its base is built; the main
    comparison's runs go first, the longest of them first. One line per finished piece, a bar with the ETA over
    all of them. Everything is cached, so an interrupted preparation resumes where it stopped."""
    import multiprocessing

    from tqdm.auto import tqdm

    from . import experiments as ex
    from .memory import die_with_parent

    workers = workers or profile.workers
    threads = max(1, (profile.threads or workers) // workers)
    runs = ex.all_runs(profile)
    main = [ex.run_spec(run) for run in ex.main_runs(profile)]
    # the main comparison first (an interrupted preparation has its table's runs), then the longest first
    order = sorted(runs, key=lambda spec: (spec not in main, -expected_cost(profile, spec)))
    by_seed = {}
    for spec in order:
        by_seed.setdefault(spec["seed"], []).append(("run", profile, spec, threads))
    first = [("base", profile, {"seed": seed}, threads) for seed in by_seed] if profile.pretrain else []
    if profile.step_probe.model:  # the longest single piece: beside the first base, not after all of them
        first.insert(1, ("step probe", profile, {"seed": profile.seeds[0]}, threads))
    log(f"{len(first) + len(runs)} pieces of work in {workers} processes of {threads} torch thread(s) each")
    done, pending = [], []
    with multiprocessing.get_context("spawn").Pool(workers, initializer=die_with_parent) as pool:
        def submit(job):
            pending.append((job, pool.apply_async(_job, (job,))))

        for job in first:
            submit(job)
        if not profile.pretrain:
            for jobs in by_seed.values():
                for job in jobs:
                    submit(job)
        bar = tqdm(total=len(first) + len(runs), desc="runs", unit="piece", disable=not progress)
        while pending:
            finished = next((p for p in pending if p[1].ready()), None)
            if finished is None:
                time.sleep(0.5)
                continue
            pending.remove(finished)
            try:
                job, seconds = finished[1].get()
            except Exception as err:
                raise RuntimeError(f"{describe_job(finished[0])} failed: {type(err).__name__}: {err}") from err
            if job[0] == "base":
                for run_job in by_seed[job[2]["seed"]]:
                    submit(run_job)
            bar.update()
            log(f"{describe_job(job)}: " + ", ".join(f"{k} in {v} s" for k, v in seconds.items()))
            done.append(job)
        bar.close()
        pool.close()
        pool.join()
    return done
