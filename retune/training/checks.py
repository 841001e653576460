"""Checks around one run: its inputs before anything is built, its files after it finished.

Before: the recipe, the seed and the tiny model's shape (the profile's own checks, for callers that bypass a
profile), what the recipe asks of this machine (bf16 autocast and a cuda device need CUDA), and the base model
named (`check_source`). All refused in one line before a model is built or a run directory written.

After: run.json must be a run record (`read_run`), and a finished run's weights and tokenizer must still be the
files it finished with: `record_files` is written into measurements.json, which is written last, and `damaged`
compares against it whenever a run is loaded or found in the cache (runs finished before digests were recorded get
the checks their files allow alone). A cache hit that is damaged is trained again (`discard`); a load is refused.

While training, a full disk is one line (`out_of_space`), not torch's `basic_ios::clear: iostream error`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import shutil
import sys
from pathlib import Path

from ..config.bounds import check_model_fits, check_recipe_bounds, check_tiny_bounds
from ..files import changed, files_digest, nearest_existing
from ..models.causal_lm import TinyConfig, check_model_dir, check_tiny, resolve_model
from ..config.profiles import Profile, check_recipe, recipes
from ..settings import ProfileError, build, check_seed

RUN_FILES = ("model", "adapter", "tokenizer")  # what a finished run's digest covers (weights, config, tokenizer)


# --- before -------------------------------------------------------------------------------------------------------
def check_inputs(config, model_source: str, model_config: dict | None) -> None:
    """A run's recipe, seed and tiny shape, as a profile checks them, for a caller that hands train.train a config
    of its own: a bad value is named before a model is built or a run directory written."""
    check_recipe(config, "train")
    check_recipe_bounds(config, "train")
    check_seed(config.seed, "train.seed")
    check_cuda([("train.bf16", config.bf16), ("train.device", config.device)])
    if model_source == "tiny":
        tiny = check_tiny(build(TinyConfig, model_config or {}, "model.tiny"))
        check_tiny_bounds(tiny)
        check_model_fits(tiny)


def check_machine(p: Profile, evaluation: bool = True) -> Profile:
    """What the profile asks of this machine, for a command that trains (and evaluates) here. Not part of
    profiles.check, so that a profile written for a GPU still loads on a laptop to read its results."""
    wanted = [(f"{where}.{key}", getattr(recipe, key)) for where, recipe in recipes(p) for key in ("bf16", "device")]
    check_cuda(wanted + ([("eval.device", p.eval.device)] if evaluation else []))
    if p.model.source == "tiny":
        check_model_fits(p.model.tiny)
    return p


def check_cuda(settings: list[tuple[str, object]]) -> None:
    """(key, value) settings that need CUDA (bf16 true, a cuda device) refused on a machine without it, naming the
    first; torch is imported only when one asks for CUDA."""
    wanted = [(key, value) for key, value in settings if value is True or str(value).startswith("cuda")]
    if wanted:
        import torch

        if not torch.cuda.is_available():
            key, value = wanted[0]
            raise ProfileError(f"{key}: {value!r} needs a CUDA device and this machine has none (auto uses CUDA "
                               f"only where there is one)")


def check_source(source: str) -> str:
    """A base model that can be trained from, refused at once otherwise: "tiny", a preset, one of our finished
    runs, or what retune.models.causal_lm.resolve_model accepts (a model directory; a hub id when allowed). A file, an
    empty name or a typo fails here, before a kernel or a model starts."""
    from ..models.presets import is_preset

    text = str(source or "").strip()
    if text == "tiny" or is_preset(text):
        return text
    if (Path(text).expanduser() / "run.json").is_file():
        read_run(text)
        return text
    if Path(text).expanduser().is_file():
        raise ValueError(f"model {text!r} is a file; give tiny, a model directory, a run directory or a hub id")
    return resolve_model(text)


# --- after --------------------------------------------------------------------------------------------------------
RUN_RECORD = {"key": str, "model": str, "data": list, "config": dict}  # what every reader of run.json takes from it


def read_run(run_dir) -> dict:
    """run.json of a run directory, checked to be a run record (a run.json of `{}` gave KeyErrors wherever it was
    read); a ValueError naming the file otherwise."""
    path = Path(run_dir).expanduser() / "run.json"
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable run record ({type(err).__name__})") from None
    bad = [k for k, kind in RUN_RECORD.items() if not isinstance(run, dict) or not isinstance(run.get(k), kind)]
    if not bad and not (run["data"] and all(isinstance(d, dict) and "path" in d for d in run["data"])):
        bad = ["data"]
    if bad:
        raise ValueError(f"{path}: not a run record (missing or malformed: {', '.join(bad)})")
    return run


def record_files(run_dir) -> dict[str, str]:
    """The digest of a finished run's weights, config and tokenizer, for measurements.json."""
    return files_digest(run_dir, RUN_FILES)


def damaged(run_dir) -> str | None:
    """Why a finished run cannot be trusted, in a few words (None: it can). A run with a recorded digest must match
    it file for file; an older one needs a run.json, a tokenizer and whole weights (safetensors against their
    header: a file cut short is found, a changed byte is not)."""
    run_dir = Path(run_dir)
    try:
        measured = json.loads((run_dir / "measurements.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "measurements.json is not readable"
    try:
        read_run(run_dir)
    except ValueError as err:
        return str(err)
    if isinstance(measured, dict) and isinstance(measured.get("files"), dict):
        return changed(run_dir, measured["files"])
    weights = [run_dir / name for name in ("model", "adapter") if (run_dir / name).is_dir()]
    if not weights:
        return "it has neither model/ nor adapter/"
    if not (run_dir / "tokenizer").is_dir():
        return "it has no tokenizer/"
    try:
        check_model_dir(weights[0], tokenizer=False)
    except ValueError as err:
        return str(err)
    return None


def discard(run_dir, problem: str) -> None:
    """Unmark a damaged finished run (measurements.json first) and remove what it finished with, evaluations
    included, so that it trains again from scratch; said in one line on stderr."""
    run_dir = Path(run_dir)
    print(f"retune: run {run_dir.name} is damaged ({problem}); training it again", file=sys.stderr)
    (run_dir / "measurements.json").unlink(missing_ok=True)
    for name in (*RUN_FILES, "evals"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


# --- while training -----------------------------------------------------------------------------------------------
OUT_OF_SPACE = ("No space left", "iostream error", "failed writing file", "file write failed", "StorageFull",
                "code: 28", "unexpected pos")  # how torch (its zip writer too), safetensors and the OS say a write
#                                                   failed for want of space


@contextlib.contextmanager
def out_of_space(run_dir):
    """A write that fails for want of space while training or saving (torch: `basic_ios::clear: iostream error`)
    re-raised as one OSError line that says so and how to go on; anything else passes unchanged."""
    try:
        yield
    except Exception as err:
        nospace = getattr(err, "errno", None) == errno.ENOSPC or any(s in str(err) for s in OUT_OF_SPACE)
        if not nospace:
            raise
        free = shutil.disk_usage(nearest_existing(Path(run_dir))).free
        raise OSError(errno.ENOSPC, f"no space left while writing {run_dir} ({free / 1e6:.0f} MB free there); free "
                                    f"some and run the same command again: it resumes from the last whole "
                                    f"checkpoint") from None
