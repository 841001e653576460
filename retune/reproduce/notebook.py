"""What every notebook does first, written once: the checked profile, the figure style, where its results go.

    P, meta, RESULTS, FIGURES = setup(globals())

Under `retune reproduce`, papermill injects the profile's name and every setting (retune.reproduce.runner.parameters);
opened by hand, the notebook's parameters cell may name a profile, else the default one is loaded. A `task`
(papermill's `-p task parity`) narrows the profile to that task. A parameter that cannot be used (an unknown
profile or task, a bad setting) stops the notebook with one line, not a traceback through the library.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..analysis import report
from ..files import DEFAULT_PROFILE, OneLineError
from ..config.profiles import Profile, build, check, load_profile, where
from ..settings import ProfileError
from ..tasks import TASKS
from ..training.runs import use_threads


class Notebook(NamedTuple):
    profile: Profile  # the checked profile
    meta: dict  # what every saved table and figure records beside it (profile, seeds, versions)
    results: Path  # where tables go
    figures: Path  # where figures go


class ParameterError(OneLineError):
    """A notebook parameter that cannot be used: one line under the cell, where a traceback ran to 65."""


def setup(namespace: dict) -> Notebook:
    try:
        stray_parameters(namespace)
        profile = only_task(from_parameters(namespace), namespace.get("task"))
    except ValueError as err:  # ProfileError among them
        raise ParameterError(str(err)) from None
    use_threads(profile)  # every notebook trains, evaluates or measures with the profile's `threads`
    report.set_style()
    return Notebook(profile, report.profile_meta(profile), where(profile, "results"), where(profile, "figures"))


def stray_parameters(namespace: dict) -> None:
    """A profile key injected as a parameter of its own (`-p tasks '[parity]'`) refused by name: papermill only
    warns about a parameter the notebook does not declare, and the notebook ran on with the profile's value."""
    from dataclasses import fields

    for key in (f.name for f in fields(Profile) if f.name != "profile"):
        if isinstance(namespace.get(key), (list, dict, str, int, float, bool)):
            raise ProfileError(f"{key}: not a notebook parameter; give -p profile NAME, -p task NAME or -p settings "
                               f"with every setting ({key} among them)")


def from_parameters(namespace: dict) -> Profile:
    """The checked profile a notebook runs under, from its variables (`from_parameters(globals())`).

    Under `retune reproduce`, papermill injects `settings` (every setting of the profile); opened by hand, the
    notebook's parameters cell names only `profile = "smoke"` (say), which is loaded from profiles/."""
    settings = namespace.get("settings")
    if settings is not None:
        return check(build(Profile, settings))
    return load_profile(namespace.get("profile") or DEFAULT_PROFILE)


def only_task(profile: Profile, task: str | None) -> Profile:
    """The profile narrowed to `task` (None: as it is); an unknown task is refused by name (papermill only warns
    about a parameter the notebook does not declare, and the notebook ran on with every task)."""
    if task is None:
        return profile
    if task not in TASKS:
        raise ProfileError(f"task: unknown {task!r}; allowed: {', '.join(TASKS)}")
    return check(replace(profile, tasks=[task]))
