"""Profiles: the run settings of a reproduction as plain YAML data (profiles/*.yaml).

`load_profile("cpu")` reads profiles/base.yaml and merges profiles/cpu.yaml over it; more profiles, YAML paths
or dicts given after it are merged on top, the later one winning. Merging is deep for mappings (a profile that
sets `train: {max_steps: 20}` keeps base's other train keys) and replaces everything else (lists, scalars, null).

The lowest layer: it imports nothing of retune, so experiments, the runner and notebooks can all use it.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
BASE = "base"


def available(directory: Path | str = PROFILES_DIR) -> list[str]:
    """The profile names in `directory` (file stems of *.yaml), base included."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def profile_path(name_or_path: str | Path, directory: Path | str = PROFILES_DIR) -> Path:
    """profiles/<name>.yaml for a bare name, else the path itself; a clear error naming the known profiles."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    if looks_like_path and path.is_file():
        return path
    candidate = Path(directory) / f"{text}.yaml"
    if not looks_like_path and candidate.is_file():
        return candidate
    raise ValueError(f"unknown profile {text!r}; available profiles: {', '.join(available(directory)) or '(none)'} "
                     f"(in {directory}), or give the path of a YAML file")


def read_yaml(path: Path | str) -> dict:
    import yaml

    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"profile {path} must be a YAML mapping of keys to values, got {type(doc).__name__}")
    return doc


def merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`: mappings merge key by key (recursively), anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_profile(name_or_path: str | Path | dict, *more: str | Path | dict,
                 directory: Path | str = PROFILES_DIR) -> dict:
    """base.yaml, then each named profile / YAML path / dict merged over it in order (the later wins).

    `profile` (the name results are filed under) defaults to the stem of the last named profile."""
    directory = Path(directory)
    out: dict[str, Any] = {}
    base = directory / f"{BASE}.yaml"
    if base.is_file():
        out = read_yaml(base)
    name = None
    for item in (name_or_path, *more):
        if isinstance(item, dict):
            layer = item
        else:
            path = profile_path(item, directory)
            layer = read_yaml(path)
            name = path.stem
        out = merge(out, layer)
        if name and "profile" not in layer:
            out["profile"] = name
    out.setdefault("profile", name or BASE)
    return out


def from_parameters(namespace: dict) -> dict:
    """The profile a notebook runs under, from its variables (`from_parameters(globals())`).

    Under `retune reproduce`, papermill injects every key of the merged profile as a variable; opened by hand,
    the notebook's parameters cell only names `profile = "smoke"` (say). Either way: load the named profile and
    let every variable of the same name as one of its keys win."""
    name = namespace.get("profile", BASE)
    try:
        out = load_profile(name)
    except ValueError:  # a profile given by a path: base's keys, each overridden by its injected variable
        out = load_profile({"profile": name})
    for key in list(out):
        if key in namespace:
            out[key] = copy.deepcopy(namespace[key])
    return out
