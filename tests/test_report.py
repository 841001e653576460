"""Tables and figures from a synthetic tidy frame: splits, Wilson intervals, files written with their meta."""
import json
import random

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from retune.analysis import report  # noqa: E402
from retune.evaluation.scoring import wilson  # noqa: E402

TRAINED = {"addition": 4, "parity": 5}


def frame(seed=0) -> pd.DataFrame:
    """Per-problem rows like retune.evaluation.pipeline.rows: good in distribution, poor beyond."""
    rng, rows = random.Random(seed), []
    for task, tm in TRAINED.items():
        for method in report.METHOD_ORDER:
            for s in (0, 1):
                for size in range(1, 3 * tm + 1):
                    for i in range(4):
                        ok = rng.random() < (0.9 if size <= tm else 0.3)
                        rows.append(dict(task=task, method=method, model="tiny", seed=s, size=size, correct=ok,
                                         error="" if ok else rng.choice(["", "depth_limit"]),
                                         first_error_kind="" if ok else rng.choice(["wrong_call", "limit"]),
                                         first_error_depth=-1 if ok else rng.randint(0, 3),
                                         variant=i % 2, n_train=(2, 10)[i // 2]))
    return pd.DataFrame(rows)


def test_split_bands():
    assert [report.split_of(s, 4) for s in (1, 4, 5, 8, 9, 16, 17, 33)] == \
        ["id", "id", "ood", "ood", "ood>2x", "ood>2x", "ood>4x", "ood>8x"]
    assert report.split_order(["ood>16x", "ood", "ood>2x", "id"]) == ["id", "ood", "ood>2x", "ood>16x"]


def test_accuracy_by_pools_seeds_with_wilson():
    df = pd.DataFrame(dict(task="parity", method="retuning", seed=[0, 0, 1, 1], size=2,
                           correct=[True, False, True, True]))
    row = report.accuracy_by(df, ["task"]).iloc[0]
    assert (row["correct"], row["n"], row["accuracy"], row["seeds"]) == (3, 4, 0.75, 2)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson(3, 4))
    assert row["seed_std"] == pytest.approx(pd.Series([0.5, 1.0]).std())


def test_main_table_rows_and_order():
    table = report.main_table(frame(), TRAINED)
    assert list(table.columns[:4]) == ["task", "method", "split", "size_range"]
    add = table[table["task"] == "addition"]
    assert list(add["method"].unique()) == list(report.METHOD_ORDER)  # the paper's order, not alphabetical
    retuning = add[add["method"] == "retuning"].set_index("split")
    assert list(retuning.index) == ["id", "ood", "ood>2x"]
    assert retuning.loc["id", "size_range"] == "1-4" and retuning.loc["ood", "size_range"] == "5-8"
    assert retuning.loc["id", "n"] == 4 * 4 * 2  # sizes x problems x seeds
    assert (table["ci_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["ci_high"]).all()
    with pytest.raises(ValueError, match="no trained maximum"):
        report.main_table(frame(), {"addition": 4})


def test_save_table_and_figure_write_files_with_meta(tmp_path):
    table = report.main_table(frame(), TRAINED)
    paths = report.save_table(table, "main", report.profile_meta({"profile": "smoke", "seeds": [0, 1]}), tmp_path)
    assert pd.read_csv(paths["csv"]).shape == table.shape
    md = paths["md"].read_text().splitlines()
    assert md[0].startswith("| task | method | split") and len(md) == len(table) + 2
    meta = json.loads(paths["meta"].read_text())
    assert meta["profile"] == "smoke" and meta["seeds"] == [0, 1]
    assert {"python", "torch", "transformers", "peft", "retune"} <= set(meta["versions"])
    fig = report.plot_accuracy_vs_size(frame(), TRAINED)
    paths = report.save_figure(fig, "acc", {"profile": "smoke"}, tmp_path / "figs")
    assert paths["png"].stat().st_size > 1000 and paths["pdf"].read_bytes()[:4] == b"%PDF"
    assert json.loads(paths["meta"].read_text())["files"] == ["acc.png", "acc.pdf"]


def test_every_plot_draws_from_the_tidy_frame():
    df = frame()
    fig = report.plot_accuracy_vs_size(df[df["method"].isin(["baseline", "retuning"])], TRAINED)
    assert len(fig.axes[0].lines) >= 2  # one line per method (+ the trained-range marker)
    assert [t.get_text() for t in fig.legends[0].texts] == ["baseline", "retuning"]
    report.plot_main_table(report.main_table(df, TRAINED))
    fig = report.plot_error_heatmaps(df, ["retuning", "baseline"])
    assert sum(ax.get_visible() for ax in fig.axes) == 4  # 2 tasks x 2 methods
    report.plot_sample_efficiency(df, TRAINED)
    report.plot_variants(df)
    fig = report.plot_ablations(df, TRAINED)
    assert [t.get_text() for t in fig.legends[0].texts] == ["retuning", "inline", "no_carryover"]
    cost = pd.DataFrame(dict(task=["addition", "parity"], method=["retuning", "baseline"],
                             tokens_per_example_mean=[30.0, 12.0], step_memory_mb=[7.0, 6.5]))
    assert len(report.plot_training_cost(cost).axes) == 2
    with pytest.raises(ValueError, match="none of the metrics"):
        report.plot_training_cost(cost[["task", "method"]])
    import matplotlib.pyplot as plt

    plt.close("all")


def test_error_analysis_counts_failures_by_kind_and_depth():
    df = pd.DataFrame(dict(task="addition", method="retuning", seed=0, size=[2, 3, 3, 4],
                           correct=[True, False, False, False], error=["", "", "depth_limit", ""],
                           first_error_kind=["", "wrong_call", "limit", ""], first_error_depth=[-1, 1, 1, -1]))
    counts = report.error_counts(df)
    assert counts.set_index(["first_error_kind", "first_error_depth"])["count"].to_dict() == \
        {("limit", 1): 1, ("none", -1): 1, ("wrong_call", 1): 1}
    examples = report.error_examples(df, per_kind=1)
    assert len(examples) == 3 and set(examples["first_error_kind"]) == {"limit", "none", "wrong_call"}


def test_ablation_table_uses_the_ablation_column():
    df = frame()
    df = df[df["method"].isin(["retuning", "inline", "no_carryover"])].assign(ablation=lambda d: d["method"])
    table = report.ablation_table(df.assign(method="retuning"), TRAINED)
    assert set(table["ablation"]) == {"retuning", "inline", "no_carryover"}
    assert set(table["split"]) == {"id", "ood", "ood>2x"}
