"""`retune reproduce`: every notebook under one profile (retune.reproduce.runner), the main job."""
from __future__ import annotations

from pathlib import Path

from ..reproduce.executors import PieceFailed
from ..files import DEFAULT_PROFILE
from ..config.profiles import available, load_profile, merge, parse_sets, where
from ..reproduce.runner import EXECUTED_DIR, NotebookFailed, reproduce
from ..models.causal_lm import looks_like_path
from ..training.checks import check_source


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="run every notebook under a profile (the main job)",
                              description="Execute notebooks/NN_*.ipynb in order with papermill, parameters from "
                                          "the profile; executed copies go to results/notebooks/<profile>/. "
                                          "Finished notebooks are skipped on a second run.")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"profile name ({', '.join(available())}) or a YAML path; over the defaults of "
                        "retune/config/profiles.py")
    p.add_argument("--model", help="pretrained model (local path or hub id) instead of the profile's")
    p.add_argument("--only", metavar="NOTEBOOK", help="run just this notebook (file name, stem or number)")
    p.add_argument("--force", action="store_true", help="run notebooks even if their executed copy is current")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="override a profile key, the value read as YAML (repeatable), dotted into a section: "
                        "--set 'seeds=[0, 1, 2]' --set train.max_steps=100")
    p.set_defaults(func=run_cli)


def run_cli(args) -> list[dict]:
    model = {"model": {"source": model_path(args.model)}} if args.model is not None else {}
    profile = load_profile(args.profile, merge(parse_sets(args.set), model))  # checked before any work
    for section, key in ((profile.model, "source"), (profile.step_probe, "model")):  # --set, a profile's YAML
        if getattr(section, key) and getattr(section, key) != "tiny":
            setattr(section, key, model_path(getattr(section, key)))
    try:
        records = reproduce(profile, only=args.only, force=args.force)
    except (NotebookFailed, PieceFailed) as err:
        raise SystemExit(f"retune reproduce: error: {err}") from None
    print(f"\nexecuted notebooks: {EXECUTED_DIR / profile.profile}")
    print(f"tables: {where(profile, 'results')}\nfigures: {where(profile, 'figures')}")
    return records


def model_path(model: str) -> str:
    """--model as the notebooks need it: a local path made absolute (they run in notebooks/), a hub id as given;
    a file or a path that is not there refused here, as `retune train` refuses it, not inside a kernel."""
    if not model.strip():
        raise ValueError("--model must name a local model directory or a hub id; got ''")
    if Path(model).expanduser().is_file() or (looks_like_path(model) and not Path(model).expanduser().exists()):
        check_source(model)  # a file, or a path that is not there
    local = Path(model).expanduser()
    return str(local.resolve()) if local.exists() else model
