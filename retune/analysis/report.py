"""Tables and figures: one seaborn style, one colour per method, and every result saved with what made it.

Everything here takes a tidy pandas DataFrame with one row per evaluated problem:
    task, method, model, seed, size, correct (bool), error ('' if none), first_error_kind, first_error_depth
and, where a notebook varies them, `variant` (prompt phrasing), `n_train` (training problems per size, for
sample efficiency) and `ablation`. Accuracies are pooled over seeds and come with 95 % Wilson intervals over all
problems (retune.evaluation.scoring.wilson), the interval the paper's small out-of-distribution accuracies need.

In distribution (`id`) means size <= the largest training size; out of distribution (`ood`) is up to twice that;
longer ranges get their own rows, `ood>2x` (2x..4x), `ood>4x` (4x..8x), ...

Top layer: imports evaluate and the method registry (order, colours); nothing below imports this.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from ..evaluation.scoring import wilson
from ..files import ROOT, versions
from ..tasks.methods import ABLATION_STUDY, METHODS

RESULTS_DIR = ROOT / "results"
FIGURES_DIR = ROOT / "figures"

# Methods in the order the paper discusses them, ablations after (the registry's order). Fixed colours: a method
# looks the same in every figure of the project.
METHOD_ORDER = tuple(METHODS)


def method_palette() -> dict:
    """Method name -> its colour: the registry's index into seaborn's "colorblind" palette."""
    import seaborn as sns

    colours = sns.color_palette("colorblind", 1 + max(m.colour for m in METHODS.values()))
    return {name: colours[m.colour] for name, m in METHODS.items()}


def set_style() -> None:
    """The project's one figure style (call once per notebook; the plot functions call it too)."""
    import matplotlib
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                                "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


# --- saving ------------------------------------------------------------------------------------------------------
def profile_meta(profile, **extra) -> dict:
    """The `meta` of a result made under a profile (a retune.config.profiles.Profile, or its dict): its name, seeds, model
    and the whole parameter set."""
    settings = profile if isinstance(profile, dict) else profile.to_dict()
    model = settings.get("model")
    return {"profile": settings.get("profile"), "seeds": settings.get("seeds"),
            "model": model.get("source") if isinstance(model, dict) else model, "parameters": settings, **extra}


def _write_meta(path: Path, name: str, meta: dict | None, files: list[Path]) -> Path:
    doc = dict(meta or {}, name=name, files=[p.name for p in files], versions=versions())
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not depend on)."""

    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, name: str, meta: dict | None = None, directory: Path | str | None = None) -> dict:
    """<directory>/<name>.csv, .md and .meta.json (meta: profile, seeds, ...; package versions are added).
    directory defaults to results/. Returns the paths."""
    out = Path(directory) if directory else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    df.to_csv(csv, index=False)
    md.write_text(to_markdown(df))
    return {"csv": csv, "md": md, "meta": _write_meta(out / f"{name}.meta.json", name, meta, [csv, md])}


def save_figure(fig, name: str, meta: dict | None = None, directory: Path | str | None = None) -> dict:
    """<directory>/<name>.png, .pdf and .meta.json; directory defaults to figures/. Returns the paths."""
    out = Path(directory) if directory else FIGURES_DIR
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png)
    fig.savefig(pdf, metadata={"CreationDate": None})  # no clock in the file: the same figure, the same bytes
    return {"png": png, "pdf": pdf, "meta": _write_meta(out / f"{name}.meta.json", name, meta, [png, pdf])}


# --- accuracy ----------------------------------------------------------------------------------------------------
def split_of(size: int, trained_max: int) -> str:
    """`id` up to the trained maximum, `ood` up to twice it, then `ood>2x`, `ood>4x`, ... (doubling bands)."""
    if size <= trained_max:
        return "id"
    band = math.ceil(math.log2(size / trained_max))  # 1 for (tm, 2tm], 2 for (2tm, 4tm], ...
    return "ood" if band <= 1 else f"ood>{2 ** (band - 1)}x"


def split_order(splits: Iterable[str]) -> list[str]:
    def key(s):
        return (0, 0) if s == "id" else (1, 0) if s == "ood" else (2, int(s[len("ood>"):-1]))

    return sorted(set(splits), key=key)


def with_split(df: pd.DataFrame, trained_max: dict) -> pd.DataFrame:
    """df with a `split` column, from the task's largest training size (a profile's `train.sizes`)."""
    missing = sorted(set(df["task"]) - set(trained_max))
    if missing:
        raise ValueError(f"no trained maximum for task(s) {missing}; got {sorted(trained_max)}")
    out = df.copy()
    out["split"] = [split_of(int(s), int(trained_max[t])) for t, s in zip(out["task"], out["size"])]
    return out


def accuracy_by(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Accuracy per group, pooled over seeds: correct, n, accuracy, Wilson 95 % ci_low/ci_high, the number of
    seeds and the spread (std) of per-seed accuracy."""
    by = list(by)
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        k, n = int(group["correct"].sum()), len(group)
        lo, hi = wilson(k, n)
        row = dict(zip(by, key), correct=k, n=n, accuracy=k / n, ci_low=lo, ci_high=hi)
        if "seed" in group:
            per_seed = group.groupby("seed")["correct"].mean()
            row["seeds"] = len(per_seed)
            row["seed_std"] = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def _order(values: Iterable, preferred: Sequence = METHOD_ORDER) -> list:
    """Distinct values: a categorical's own order, else the preferred ones first, then the rest sorted."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna())
        return [c for c in values.cat.categories if c in present]
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + sorted(v for v in values if v not in preferred)


def main_table(df: pd.DataFrame, trained_max: dict) -> pd.DataFrame:
    """Task x method (x model when several) x split: accuracy with its Wilson interval, n, seeds, sizes covered."""
    data = with_split(df, trained_max)
    by = ["task"] + (["model"] if "model" in data and data["model"].nunique() > 1 else []) + ["method", "split"]
    table = accuracy_by(data, by)
    sizes = data.groupby(by)["size"].agg(["min", "max"]).reset_index()
    table = table.merge(sizes, on=by)
    table["size_range"] = [f"{a}-{b}" if a != b else f"{a}" for a, b in zip(table.pop("min"), table.pop("max"))]
    rank = {m: i for i, m in enumerate(_order(table["method"]))}
    srank = {s: i for i, s in enumerate(split_order(table["split"]))}
    table = table.sort_values(by, key=lambda c: c.map(rank) if c.name == "method" else
                              c.map(srank) if c.name == "split" else c).reset_index(drop=True)
    return table[by + ["size_range", "accuracy", "ci_low", "ci_high", "correct", "n"]
                 + [c for c in ("seeds", "seed_std") if c in table]]


# --- figures -----------------------------------------------------------------------------------------------------
def _grid(n: int, width: float = 4.2, height: float = 3.2, cols: int | None = None):
    import matplotlib.pyplot as plt

    cols = cols or min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _line_with_band(ax, table: pd.DataFrame, x: str, colour, label: str, linestyle: str = "-"):
    table = table.sort_values(x)
    ax.plot(table[x], table["accuracy"], marker="o", markersize=3, color=colour, label=label, linestyle=linestyle)
    ax.fill_between(table[x], table["ci_low"], table["ci_high"], color=colour, alpha=0.18, linewidth=0)


def _legend(fig, axes) -> None:
    """One legend for all panels, above them (each panel would repeat it)."""
    handles, labels = {}, []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    if handles:
        ncol = min(len(labels), 6)
        rows = math.ceil(len(labels) / ncol)
        fig.tight_layout(rect=(0, 0, 1, 1 - (0.1 + 0.25 * rows) / fig.get_figheight()))  # room for the legend
        fig.legend([handles[l] for l in labels], labels, loc="upper center", ncol=ncol, bbox_to_anchor=(0.5, 1.0))
    else:
        fig.tight_layout()


def plot_accuracy_vs_size(df: pd.DataFrame, trained_max: dict | None = None, hue: str = "method",
                          tasks: Sequence[str] | None = None):
    """Accuracy against problem size, one panel per task, one line per `hue` value with its Wilson 95 % band.
    The trained range is shaded and its edge marked by a dashed vertical line (the paper's length plots)."""
    from matplotlib.ticker import MaxNLocator

    set_style()
    tasks = list(tasks or _order(df["task"], ()))
    palette = method_palette()
    fig, axes = _grid(len(tasks))
    styles = ["-", "--", ":", "-."]
    models = list(df["model"].unique()) if "model" in df and df["model"].nunique() > 1 else [None]
    for ax, task in zip(axes, tasks):
        part = df[df["task"] == task]
        for j, value in enumerate(_order(part[hue])):
            colour = palette.get(value, f"C{j}") if hue == "method" else f"C{j}"
            for m, model in enumerate(models):
                rows = part[(part[hue] == value) & ((part["model"] == model) if model is not None else True)]
                if len(rows):
                    label = str(value) if model is None else f"{value} ({model})"
                    _line_with_band(ax, accuracy_by(rows, ["size"]), "size", colour, label, styles[m % 4])
        if trained_max and task in trained_max:
            edge = trained_max[task]
            ax.axvspan(part["size"].min() - 0.5, edge + 0.5, color="0.5", alpha=0.08, linewidth=0)
            ax.axvline(edge + 0.5, color="0.3", linestyle="--", linewidth=1)
            ax.text(edge + 0.5, 0.02, "trained ", fontsize=8, color="0.3", va="bottom", ha="right",
                    transform=ax.get_xaxis_transform())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=task, xlabel="size", ylabel="accuracy", ylim=(-0.03, 1.03))
    _legend(fig, axes)
    return fig


def _bars(ax, table: pd.DataFrame, x: str, hue: str | None, value: str = "accuracy", palette: dict | None = None):
    """Grouped bars with asymmetric error bars from ci_low/ci_high (seaborn's own error bars would bootstrap)."""
    xs = _order(table[x])
    hues = _order(table[hue]) if hue else [None]
    width = 0.8 / len(hues)
    for j, h in enumerate(hues):
        part = table if h is None else table[table[hue] == h]
        part = part.set_index(x).reindex(xs)
        pos = [i - 0.4 + width * (j + 0.5) for i in range(len(xs))]
        colour = (palette or {}).get(h, f"C{j}")
        err = None
        if "ci_low" in part and value == "accuracy":
            err = [(part[value] - part["ci_low"]).clip(lower=0).fillna(0),
                   (part["ci_high"] - part[value]).clip(lower=0).fillna(0)]
        ax.bar(pos, part[value].fillna(0), width=width * 0.95, color=colour, label=None if h is None else str(h),
               yerr=err, capsize=2, error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    return ax


def plot_main_table(table: pd.DataFrame):
    """The main table as bars: accuracy per method, one panel per task, one bar group per split."""
    set_style()
    tasks = _order(table["task"], ())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task].copy()
        part["split"] = pd.Categorical(part["split"], split_order(part["split"]))
        _bars(ax, part, "split", "method", palette=method_palette())
        ax.set(title=task, xlabel="", ylabel="accuracy", ylim=(0, 1.05))
    _legend(fig, axes)
    return fig


# --- error analysis ----------------------------------------------------------------------------------------------
def error_counts(df: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Failed problems counted by first error kind x the depth where the trace first left the oracle tree.
    A failure with no departure recorded (a wrong answer from a right-looking tree) counts as 'none'."""
    failed = df[~df["correct"].astype(bool)].copy()
    failed["first_error_kind"] = failed["first_error_kind"].replace("", "none").fillna("none")
    failed["first_error_depth"] = failed["first_error_depth"].fillna(-1).astype(int)
    return (failed.groupby(list(by) + ["first_error_kind", "first_error_depth"]).size()
            .rename("count").reset_index())


def plot_error_heatmaps(df: pd.DataFrame, methods: Sequence[str] | None = None):
    """Where failures start: one heatmap (first error kind x depth, counts) per task x method with failures."""
    import seaborn as sns

    set_style()
    counts = error_counts(df, ["task", "method"])
    if methods:
        counts = counts[counts["method"].isin(methods)]
    tasks, methods = _order(counts["task"], ()), _order(counts["method"])
    if counts.empty:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no failures", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, axes = _grid(len(tasks) * len(methods), width=4.0, height=2.8, cols=len(methods))  # a row per task
    for i, task in enumerate(tasks):
        for j, method in enumerate(methods):
            ax = axes[i * len(methods) + j]
            part = counts[(counts["task"] == task) & (counts["method"] == method)]
            if part.empty:
                ax.set_visible(False)
                continue
            grid = part.pivot_table(index="first_error_kind", columns="first_error_depth", values="count",
                                    aggfunc="sum", fill_value=0)
            sns.heatmap(grid, ax=ax, annot=True, fmt="d", cmap="Reds", cbar=False, linewidths=0.5)
            ax.set(title=f"{task} / {method}", xlabel="depth of first error", ylabel="")
    fig.tight_layout()
    return fig


def error_examples(df: pd.DataFrame, per_kind: int = 2) -> pd.DataFrame:
    """A few failed problems per task, method and first error kind (the smallest sizes first: easiest to read)."""
    failed = df[~df["correct"].astype(bool)].copy()
    failed["first_error_kind"] = failed["first_error_kind"].replace("", "none").fillna("none")
    keep = [c for c in ("task", "method", "model", "seed", "size", "first_error_kind", "first_error_depth", "error",
                        "problem", "expected", "predicted") if c in failed]
    failed = failed.sort_values(["task", "method", "first_error_kind", "size"])
    return failed.groupby(["task", "method", "first_error_kind"]).head(per_kind)[keep].reset_index(drop=True)


# --- training cost, sample efficiency, robustness, ablations ---------------------------------------------------
TRAINING_METRICS = {"tokens_per_example_mean": "tokens per training example",
                    "step_memory_mb": "memory of one training step (MiB)"}


def plot_training_cost(measurements: pd.DataFrame, metrics: dict | Sequence[str] | None = None):
    """Bars per task x method for each training measurement (default: tokens per example and the memory of one
    training step, as notebook 05 measures it);
    columns that are absent are skipped."""
    set_style()
    metrics = dict(TRAINING_METRICS) if metrics is None else (
        dict(metrics) if isinstance(metrics, dict) else {m: m.replace("_", " ") for m in metrics})
    metrics = {k: v for k, v in metrics.items() if k in measurements}
    if not metrics:
        raise ValueError(f"none of the metrics are columns of the measurements; columns: {list(measurements)}")
    fig, axes = _grid(len(metrics), width=5.0, cols=len(metrics))
    mean = measurements.groupby(["task", "method"], as_index=False)[list(metrics)].mean()
    for ax, (column, label) in zip(axes, metrics.items()):
        _bars(ax, mean, "task", "method", value=column, palette=method_palette())
        ax.set(ylabel=label, xlabel="")
    _legend(fig, axes)
    return fig


def plot_sample_efficiency(df: pd.DataFrame, trained_max: dict | None = None):
    """Accuracy against training problems per size (`n_train`, log scale), one panel per task, one line per
    method; with trained_max, in distribution solid and out of distribution dashed."""
    set_style()
    data = with_split(df, trained_max) if trained_max else df.assign(split="all")
    data = data[data["split"].isin(["id", "ood", "all"])]
    tasks = _order(data["task"], ())
    palette = method_palette()
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        part = data[data["task"] == task]
        for method in _order(part["method"]):
            for split, style in (("all", "-"), ("id", "-"), ("ood", "--")):
                rows = part[(part["method"] == method) & (part["split"] == split)]
                if len(rows):
                    label = method if split == "all" else f"{method} ({split})"
                    _line_with_band(ax, accuracy_by(rows, ["n_train"]), "n_train", palette.get(method), label, style)
        ax.set_xscale("log")
        ax.set_xticks(sorted(part["n_train"].unique()), [str(v) for v in sorted(part["n_train"].unique())])
        ax.minorticks_off()
        ax.set(title=task, xlabel="training problems per size", ylabel="accuracy", ylim=(-0.03, 1.03))
    _legend(fig, axes)
    return fig


def plot_variants(df: pd.DataFrame):
    """Prompt-variation robustness: accuracy per prompt variant (bars with Wilson intervals), per task."""
    set_style()
    table = accuracy_by(df, ["task", "variant", "method"])
    tasks = _order(table["task"], ())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        _bars(ax, table[table["task"] == task], "variant", "method", palette=method_palette())
        ax.set(title=task, xlabel="prompt variant (0: the paper's)", ylabel="accuracy", ylim=(0, 1.05))
    _legend(fig, axes)
    return fig


def ablation_table(df: pd.DataFrame, trained_max: dict | None = None,
                   methods: Sequence[str] = ABLATION_STUDY) -> pd.DataFrame:
    """Accuracy per task x ablation (the `ablation` column, else `method`) x split."""
    column = "ablation" if "ablation" in df else "method"
    data = df[df[column].isin(methods)]
    data = with_split(data, trained_max) if trained_max else data.assign(split="all")
    table = accuracy_by(data, ["task", column, "split"])
    return table.rename(columns={column: "ablation"})


def plot_ablations(df: pd.DataFrame, trained_max: dict | None = None,
                   methods: Sequence[str] = ABLATION_STUDY):
    """Ablations: accuracy per method among Re-Tuning, inline (no isolated contexts) and no carry-over (calls
    solved but their answers not returned), per task, bars grouped by split."""
    set_style()
    table = ablation_table(df, trained_max, methods)
    tasks = _order(table["task"], ())
    fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks):
        part = table[table["task"] == task].copy()
        part["split"] = pd.Categorical(part["split"], split_order(part["split"]))
        _bars(ax, part, "split", "ablation", palette=method_palette())
        ax.set(title=task, xlabel="", ylabel="accuracy", ylim=(0, 1.05))
    _legend(fig, axes)
    return fig
