"""The generic base's own skills: what the tiny model pre-trained by retune.training.pretrain can do before any task.

Fresh generic prompts, written as the base was trained (its `surfaces`; multi-line recalls where it had them),
for every operation x sequence kind x length, from 2 to twice the longest pre-training sequence. Each greedy
answer gets three scores, so that a wrong separator is not mistaken for a wrong copy:
- `exact`: the whole answer;
- `items`: the sequence items alone, in order and grouping (digit runs, list items), whatever is between them;
- `surface`: everything else (separators, brackets, answer words), the items masked.
An answer is exact when both its items and its surface are right.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ..evaluation import pipeline
from ..training import runs
from ..evaluation.scoring import wilson
from ..training.pretrain import KINDS, OPERATIONS, dataset, record
from ..config.profiles import base_task, pretrain_for, where

ITEM = re.compile(r"-?\d+")
SCORES = ("exact", "items", "surface")


def score(answer: str, target: str) -> dict[str, bool]:
    """The three scores of one answer, e.g. `821 + 07` for `821 ; 07`: items right, surface wrong."""
    return {"exact": answer == target, "items": ITEM.findall(answer) == ITEM.findall(target),
            "surface": ITEM.sub("#", answer) == ITEM.sub("#", target)}


def trained_longest(max_length: int, kind: str) -> int:
    """The longest sequence of `kind` in pre-training (integer lists: half, as retune.training.pretrain draws them)."""
    return max(2, max_length // 2) if kind == "ints" else max_length


def probe_lengths(max_length: int, points: int = 12) -> list[int]:
    """About `points` lengths from 2 to twice the pre-training maximum, the maximum itself among them."""
    step = max(1, (2 * max_length - 2) // (points - 1))
    return sorted({*range(2, 2 * max_length + 1, step), max_length, 2 * max_length})


def skill_records(spec: dict, lengths, n: int, seed: int, seen: set[str] = frozenset()) -> list[dict]:
    """`n` fresh records per operation x kind x length in the base's training surface(s) (`spec`: the profile's
    pretrain section), drawn apart from pre-training's stream; prompts in `seen` (trained) are skipped, so a group with few distinct
    prompts (two-bit lists) has fewer, or none."""
    rng = random.Random(f"skills/{seed}")
    operations = OPERATIONS + (("recall",) if spec.get("multiline") else ()) + (("heads",) if spec.get("heads") else ())
    out = []
    for operation in operations:
        for kind in KINDS:
            for length in lengths:
                drawn = 0
                for _ in range(50 * n):  # short lengths have few distinct prompts
                    r = record(operation, kind, length, rng, spec.get("surfaces", "one"))
                    if r["input"] not in seen:
                        out.append(dict(r, operation=operation))
                        drawn += 1
                    if drawn == n:
                        break
    return out


def base_skills(profile, seed: int | None = None, n: int = 10, lengths=None, log=print, task: str | None = None):
    """The base's scores as one tidy DataFrame (columns: base, operation, kind, length, in_range, score, right,
    total, accuracy, ci_low, ci_high); `task`: the base of that task (its own under `pretrain.by_task`, else the
    shared one, named "shared" in column base). None, with a message, under a profile without generic
    pre-training."""
    import pandas as pd

    if not profile.pretrain:
        log(f"profile {profile.profile!r} has no generic pre-training (`pretrain: null`): no base to probe")
        return None
    seed = profile.seeds[0] if seed is None else seed
    spec = runs.pretrain_spec(profile, task)
    base = Path(runs.base_model(profile, seed, task=task))
    seen = {json.loads(line)["input"] for line in dataset(spec, seed, where(profile, "data")).read_text().splitlines()}
    records = skill_records(spec, lengths or probe_lengths(spec["max_length"]), n, seed, seen)
    runs.use_threads(profile)
    generator = pipeline.hf_generator(profile, base)
    answers = generator.generate([r["input"] for r in records], [2 * len(r["output"]) + 8 for r in records])
    generator.close()
    groups: dict[tuple, list[dict]] = {}
    for r, answer in zip(records, answers):
        groups.setdefault((r["operation"], r["kind"], r["size"]), []).append(score(answer.text, r["output"]))
    rows = []
    for (operation, kind, length), scores in groups.items():
        for name in SCORES:
            right, total = sum(s[name] for s in scores), len(scores)
            lo, hi = wilson(right, total)
            rows.append({"base": base_task(profile, task) or "shared", "operation": operation, "kind": kind, "length": length,
                         "in_range": length <= trained_longest(spec["max_length"], kind), "score": name,
                         "right": right, "total": total, "accuracy": right / total, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def bases(profile) -> list[str | None]:
    """The profile's bases of one seed, by task: None (the shared one), then each task with its own
    (`pretrain.by_task`)."""
    return [None, *(profile.pretrain.by_task if profile.pretrain else {})]


def base_skills_of(profile, tasks, seed: int | None = None, n: int = 10, lengths=None, log=print):
    """base_skills of each base (`bases`), one table (column base); None without generic pre-training."""
    import pandas as pd

    tables = [base_skills(profile, seed, n, lengths, log, task) for task in tasks]
    return None if tables[0] is None else pd.concat(tables, ignore_index=True)


def max_length_of(profile, task: str | None = None) -> int:
    return pretrain_for(profile, task).max_length


def figure_name(task: str | None) -> str:
    return "base_skills" + (f"_{task}" if task else "")


def plot_base_skills(df, max_length: int):
    """One panel per sequence kind x operation: accuracy against length for each score, with Wilson bands; the
    pre-training range shaded, its edge dashed."""
    import matplotlib.pyplot as plt

    from .report import set_style

    set_style()
    kinds = [k for k in KINDS if k in set(df["kind"])]
    operations = list(dict.fromkeys(df["operation"]))
    fig, axes = plt.subplots(len(kinds), len(operations), figsize=(2.9 * len(operations), 2.4 * len(kinds)),
                             squeeze=False, sharex=True, sharey=True)
    for i, kind in enumerate(kinds):
        for j, operation in enumerate(operations):
            ax = axes[i][j]
            for c, name in enumerate(SCORES):
                part = df[(df["kind"] == kind) & (df["operation"] == operation) & (df["score"] == name)]
                part = part.sort_values("length")
                ax.plot(part["length"], part["accuracy"], marker="o", markersize=2.5, color=f"C{c}", label=name)
                ax.fill_between(part["length"], part["ci_low"], part["ci_high"], color=f"C{c}", alpha=0.15,
                                linewidth=0)
            edge = trained_longest(max_length, kind)
            ax.axvspan(1.5, edge + 0.5, color="0.5", alpha=0.08, linewidth=0)
            ax.axvline(edge + 0.5, color="0.3", linestyle="--", linewidth=1)
            ax.set(ylim=(-0.03, 1.03), title=f"{operation.replace('_', ' ')} · {kind}")
            if i == len(kinds) - 1:
                ax.set_xlabel("sequence length")
            if j == 0:
                ax.set_ylabel("accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))
    return fig
