"""What every notebook does first, written once: the checked profile, the figure style, where its results go.

    P, meta, RESULTS, FIGURES = setup(globals())

Under `retune reproduce`, papermill injects the profile's name and every setting (retune.profiles.parameters);
opened by hand, the notebook's parameters cell may name a profile, else the default one is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from . import report
from .profiles import Profile, from_parameters, where
from .runs import use_threads


class Notebook(NamedTuple):
    profile: Profile  # the checked profile
    meta: dict  # what every saved table and figure records beside it (profile, seeds, versions)
    results: Path  # where tables go
    figures: Path  # where figures go


def setup(namespace: dict) -> Notebook:
    profile = from_parameters(namespace)
    use_threads(profile)  # every notebook trains, evaluates or measures with the profile's `threads`
    report.set_style()
    return Notebook(profile, report.profile_meta(profile), where(profile, "results"), where(profile, "figures"))
