"""The step probe: which step of a Re-Tuning solution fails first as problems grow, and for which model.

Every context a Re-Tuning decoder feeds is one of three kinds (docs/protocol.md): a *call* step (write
`Call: <smaller problem>`), a *combine* step (finish from the returned sub-answer) or a *base* step (solve the
smallest problem directly). Free decoding mixes them; teacher forcing separates them. For each problem size the
probe takes fresh problems, feeds the oracle's contexts of the top-level call and combine steps (the ones that see
the whole problem) and of the base step at the bottom of its call tree, and checks whether the model's greedy
tokens equal the oracle's target exactly, EOS included (retune.decoding.recursive.HFGenerator.exact). The result is one
accuracy per (model, size, step kind) with a Wilson interval: in distribution and beyond, to twice the trained
size.

Two models side by side: the profile's own tiny Re-Tuning model (the main table's run, re-used from the cache)
and a pretrained LLaMA (SmolLM2-135M, a retune.models.presets preset) after a short LoRA fine-tune on the same training
set. Profile section `step_probe` (retune/config/profiles.py) sets the task, sizes, problems per size and the fine-tune budget.
"""
from __future__ import annotations

from pathlib import Path

from ..evaluation import pipeline
from ..training import runs, fine_tune as train
from ..config.profiles import where
from ..evaluation.scoring import oracle_tree, wilson
from ..tasks import METHODS, get_task
from ..tasks.methods import RETUNING

KINDS = ("call", "combine", "base")


def step_contexts(task, problem, method: str = RETUNING.name) -> list[tuple[str, str, str]]:
    """(context, target, kind) of the top node's call steps, of the highest combine step and of the base step at
    the bottom of the problem's oracle call tree (its deepest node, a problem of the smallest size)."""
    tree = oracle_tree(task, problem, method)
    nodes = list(tree.walk())  # pre-order: the highest node first
    deepest = max(nodes, key=lambda nd: nd[1])[0]
    out = [c for c in tree.contexts(method) if c[2] == "call"]
    # The highest combine step: the top's own, or (DP, whose top ends at its second call's return) the first
    # node below it that combines (docs/protocol.md, "DP").
    combine = next(([c for c in nd.contexts(method) if c[2] == "combine"] for nd, _ in nodes
                    if any(c[2] == "combine" for c in nd.contexts(method))), [])
    return out + combine + [c for c in deepest.contexts(method) if c[2] == "base"]


def step_accuracy(task_name: str, generator, sizes, n: int, seed: int = 0, exclude: set[str] = frozenset(),
                  variant: int = 0, method: str = RETUNING.name, stream: str = "eval") -> list[dict]:
    """Teacher-forced accuracy per problem size and step kind: one row per (size, kind) with right/total and a
    Wilson 95 % interval. Problems come from pipeline.eval_problems (seeded apart from training, never a
    trained top context); `stream` "valid" draws validation problems, the ones recipes are chosen on."""
    if not getattr(METHODS.get(method), "recursive", False):  # one context: no call, combine or base step apart
        raise ValueError(f"method: the step probe needs a recursive method "
                         f"({', '.join(n for n, m in METHODS.items() if m.recursive)}), got {method!r}")
    task = get_task(task_name, variant)
    rows = []
    for size in sizes:
        problems = pipeline.eval_problems(task_name, (size, size), n, seed, variant, exclude, stream)
        steps = [s for p in problems for s in step_contexts(task, p, method)]
        right = generator.exact([c for c, _, _ in steps], [t for _, t, _ in steps]) if steps else []
        for kind in KINDS:
            hits = [r for r, (_, _, k) in zip(right, steps) if k == kind]
            if hits:
                lo, hi = wilson(sum(hits), len(hits))
                rows.append({"task": task_name, "size": size, "kind": kind, "right": sum(hits), "total": len(hits),
                             "accuracy": sum(hits) / len(hits), "ci_low": lo, "ci_high": hi})
    return rows


def probe_sizes(profile) -> list[int]:
    """The probe's problem sizes: `step_probe.sizes` [lo, hi] every `step_probe.every` (default: every size)."""
    lo, hi = profile.step_probe.sizes
    every = profile.step_probe.every
    sizes = list(range(lo, hi + 1, every))
    return sizes if sizes[-1] == hi else sizes + [hi]


def pretrained_run(profile, seed: int, log=print) -> Path | None:
    """The probe's pretrained model after its short LoRA fine-tune on the task's Re-Tuning training set (cached
    like every run). None when `step_probe.model` is null; None, with a message, when the preset is not fetched and the profile says not to fetch
    (`step_probe.fetch: false`, the smoke profile's choice: tests never download)."""
    from ..models import presets

    spec = profile.step_probe
    name = spec.model
    if not name:  # the profile's own model is the pretrained one (the smol profile): nothing to add
        return None
    if presets.is_preset(name):
        if not presets.is_fetched(name) and not spec.fetch:
            log(f"step probe: {name} is not fetched ({presets.preset_path(name)} missing) and this profile does not "
                f"fetch it; showing the tiny model only. Fetch it with `make smollm2`.")
            return None
        source = str(presets.fetch(name))
    else:
        source = name
    data = runs.dataset(profile, spec.task, RETUNING.name, seed)
    # threads 0: torch's setting as the caller left it (an executor worker's share, or the profile's via
    # step_probe), so a worker never takes every core beside the others
    config = dict(train.recipe_of(spec.train), seed=seed, lora=spec.lora, threads=0)
    return train.train(source, [data], train.make_config(config), where(profile, "runs"))


def step_probe(profile, seed: int | None = None, log=print):
    """Both models' step accuracies as one tidy DataFrame (columns: model, task, size, kind, right, total,
    accuracy, ci_low, ci_high)."""
    import pandas as pd

    seed = profile.seeds[0] if seed is None else seed
    spec = profile.step_probe
    task = spec.task
    models = {runs.model_label(profile): runs.trained(profile, runs.spec_for(profile, task, RETUNING.name, seed))}
    runs.use_threads(profile)
    pretrained = pretrained_run(profile, seed, log)
    if pretrained is not None:
        models[f"{Path(str(spec.model)).name} + LoRA"] = pretrained
    out = []
    for label, run_dir in models.items():
        generator = pipeline.hf_generator(profile, run_dir)
        exclude = pipeline.trained_contexts(run_dir)
        for row in step_accuracy(task, generator, probe_sizes(profile), spec.n, seed, exclude):
            out.append({"model": label, **row})
        generator.close()  # freed before the next model loads
    return pd.DataFrame(out)


def plot_step_probe(df, trained_max: int | None = None):
    """One panel per step kind: teacher-forced accuracy against problem size, one line per model with its
    Wilson band; the trained range shaded, its edge dashed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .report import set_style

    set_style()
    kinds = [k for k in KINDS if k in set(df["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for j, model in enumerate(df["model"].unique()):
            part = df[(df["kind"] == kind) & (df["model"] == model)].sort_values("size")
            ax.plot(part["size"], part["accuracy"], marker="o", markersize=3, color=f"C{j}", label=model)
            ax.fill_between(part["size"], part["ci_low"], part["ci_high"], color=f"C{j}", alpha=0.18, linewidth=0)
        if trained_max is not None:
            ax.axvspan(df["size"].min() - 0.5, trained_max + 0.5, color="0.5", alpha=0.08, linewidth=0)
            ax.axvline(trained_max + 0.5, color="0.3", linestyle="--", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=f"{kind} step", xlabel="problem size", ylabel="teacher-forced accuracy", ylim=(-0.03, 1.03))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))
    return fig


# --- a learning curve: the step probe at checkpoints of one run (research/smol_curve.py writes it) --------------
def learning_curve(path, trained_max: int):
    """One row per (step, kind, split) from a step-probe log (JSONL, one line per probed checkpoint with its
    `step`, `loss` and `rows` as step_accuracy returns them): right/total pooled over the sizes of the split
    (`id`: sizes up to `trained_max`, `ood`: beyond), with a Wilson interval. A line of a side run branched off
    the curve (`cooldown_from`: the step it left from, e.g. a decaying learning rate) keeps that step in
    `branch_from`; the curve's own rows have none."""
    import json

    import pandas as pd

    out = []
    for line in Path(path).read_text().splitlines():
        probed = json.loads(line)
        for kind in KINDS:
            for split, inside in (("id", True), ("ood", False)):
                rows = [r for r in probed["rows"] if r["kind"] == kind and (r["size"] <= trained_max) == inside]
                right, total = sum(r["right"] for r in rows), sum(r["total"] for r in rows)
                if total:
                    lo, hi = wilson(right, total)
                    out.append({"step": probed["step"], "branch_from": probed.get("cooldown_from"),
                                "loss": probed["loss"], "kind": kind, "split": split, "right": right,
                                "total": total, "accuracy": right / total, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out).sort_values(["step", "kind", "split"]).reset_index(drop=True)


def plot_learning_curve(df):
    """One panel per step kind: teacher-forced accuracy against training steps, in distribution (solid) and
    beyond (dashed), each with its Wilson band; a side run (`branch_from`) as a star, dotted from its origin (a
    step of the curve, or a side run it continues: a chain of cool-downs)."""
    import matplotlib.pyplot as plt

    from .report import set_style

    set_style()
    kinds = [k for k in KINDS if k in set(df["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for j, (split, style) in enumerate((("id", "-"), ("ood", "--"))):
            rows = df[(df["kind"] == kind) & (df["split"] == split)]
            part = rows[rows["branch_from"].isna()]
            ax.plot(part["step"], part["accuracy"], style, marker="o", markersize=3, color=f"C{j}",
                    label="in distribution" if split == "id" else "beyond")
            ax.fill_between(part["step"], part["ci_low"], part["ci_high"], color=f"C{j}", alpha=0.18, linewidth=0)
            for _, b in rows[rows["branch_from"].notna()].iterrows():  # a side run: a star joined to its origin,
                origin = part[part["step"] == b["branch_from"]]["accuracy"]  # a curve step or an earlier side run
                origin = origin if len(origin) else rows[rows["step"] == b["branch_from"]]["accuracy"]
                if len(origin):
                    ax.plot([b["branch_from"], b["step"]], [origin.iloc[0], b["accuracy"]], ":", color=f"C{j}")
                ax.plot([b["step"]], [b["accuracy"]], "*", markersize=9, color=f"C{j}")
        ax.set(title=f"{kind} step", xlabel="training step", ylabel="teacher-forced accuracy", ylim=(-0.03, 1.03))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    fig.legend(handles, labels, loc="upper center", ncol=len(labels))
    return fig
