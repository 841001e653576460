"""The step probe (retune.analysis.probe): which contexts it picks per step kind, how it counts, and that it skips a
pretrained model it may not fetch."""
import json
import random

import pytest

from retune.analysis import probe
from retune.config.profiles import load_profile
from retune.tasks import TASKS, get_task


@pytest.mark.parametrize("name", TASKS)
def test_step_contexts_are_the_top_steps_and_the_base_at_the_bottom(name):
    task = get_task(name)
    problem = task.sample(4, random.Random(0))
    steps = probe.step_contexts(task, problem)
    kinds = [k for _, _, k in steps]
    assert {"call", "combine", "base"} <= set(kinds) and kinds[-1] == "base" and kinds.count("base") == 1
    top = task.top_context(problem, "retuning")
    assert all(c.startswith(top) for c, _, k in steps if k == "call")  # the steps that see the whole problem
    # the combine step too: the top's own, or DP's first dp-array step (its top ends at the second return)
    combine = next(c for c, _, k in steps if k == "combine")
    assert combine.startswith(top) if name != "dp" else f"Create dp array {problem}\n" in combine
    assert not steps[-1][0].startswith(top)  # the base step is a fresh context of the smallest sub-problem


class WrongAfterReturn:
    """Right on every context except those holding a returned sub-answer (the combine steps)."""

    def exact(self, contexts, targets):
        return ["\nReturn: " not in c for c in contexts]


def test_step_accuracy_counts_each_kind_per_size():
    rows = probe.step_accuracy("addition", WrongAfterReturn(), [2, 3, 5], n=4, seed=0)
    by = {(r["size"], r["kind"]): r for r in rows}
    assert set(by) == {(s, k) for s in (2, 3, 5) for k in probe.KINDS}
    for s in (2, 3, 5):
        assert by[(s, "call")]["accuracy"] == 1.0 and by[(s, "base")]["accuracy"] == 1.0
        assert by[(s, "combine")]["accuracy"] == 0.0 and by[(s, "combine")]["total"] == 4
        assert by[(s, "combine")]["ci_high"] > 0.0  # a Wilson interval, not a point


@pytest.mark.parametrize("method", ["baseline", "scratchpad", "recursive"])
def test_the_step_probe_refuses_a_method_without_steps_by_name(method):
    with pytest.raises(ValueError, match=rf"^method: the step probe needs a recursive method \(retuning.*got '{method}'"):
        probe.step_accuracy("parity", None, [4], 2, method=method)


def test_probe_sizes_step_and_keep_the_largest():
    sizes = lambda **spec: probe.probe_sizes(load_profile("smoke", {"step_probe": spec}))  # noqa: E731
    assert sizes(sizes=[2, 16], every=2) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert sizes(sizes=[2, 15], every=4) == [2, 6, 10, 14, 15]
    assert sizes(sizes=[2, 4], every=1) == [2, 3, 4]


def test_pretrained_part_is_skipped_with_a_message_when_not_fetched_and_not_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("RETUNE_MODELS", str(tmp_path / "empty"))
    said = []
    profile = load_profile("smoke", {"step_probe": {"model": "smollm2-135m"}})
    assert profile.step_probe.fetch is False
    assert probe.pretrained_run(profile, 0, said.append) is None
    assert "smollm2-135m is not fetched" in said[0] and "make smollm2" in said[0]
    assert not (tmp_path / "empty").exists()  # nothing downloaded
    assert probe.pretrained_run(load_profile("smoke", {"step_probe": {"model": None}}), 0, said.append) is None


def test_plot_has_one_panel_per_kind():
    import pandas as pd

    rows = probe.step_accuracy("addition", WrongAfterReturn(), [2, 3], n=2, seed=0)
    df = pd.DataFrame([dict(r, model="m") for r in rows])
    fig = probe.plot_step_probe(df, trained_max=2)
    assert [ax.get_title() for ax in fig.axes] == ["call step", "combine step", "base step"]


def test_the_learning_curve_pools_sizes_by_split_and_keeps_side_runs_apart(tmp_path):
    def rows(call_right):  # two sizes in range (2, 4), one beyond (6); 10 problems each
        return [{"size": s, "kind": k, "right": (call_right if k == "call" else 1), "total": 10}
                for s in (2, 4, 6) for k in probe.KINDS]
    log = tmp_path / "curve.jsonl"
    log.write_text("\n".join(json.dumps(line) for line in [
        {"step": 200, "loss": 0.2, "rows": rows(9)},
        {"step": 100, "loss": 0.3, "rows": rows(3)},
        {"step": 250, "loss": 0.1, "cooldown_from": 200, "rows": rows(10)},  # a side run, off the curve
        {"step": 300, "loss": 0.1, "cooldown_from": 250, "rows": rows(8)},  # one continuing it
    ]) + "\n")
    both = probe.learning_curve(log, trained_max=4)
    side = both[both["branch_from"].notna()]
    assert set(side["step"]) == {250, 300} and set(side["branch_from"]) == {200, 250}
    assert (side[(side["kind"] == "call") & (side["step"] == 250)]["accuracy"] == 1).all()
    curve = both[both["branch_from"].isna()]
    assert list(curve["step"].unique()) == [100, 200]
    call = curve[curve["kind"] == "call"].set_index(["step", "split"])
    assert (call.loc[(100, "id"), "right"], call.loc[(100, "id"), "total"]) == (6, 20)
    assert (call.loc[(200, "ood"), "right"], call.loc[(200, "ood"), "total"]) == (9, 10)
    assert call.loc[(200, "id"), "ci_low"] < 0.9 < call.loc[(200, "id"), "ci_high"]
    fig = probe.plot_learning_curve(both)
    assert len(fig.axes) == len(probe.KINDS)
    stars = [ln for ln in fig.axes[0].lines if ln.get_marker() == "*"]
    assert sorted(list(ln.get_xdata()) for ln in stars) == [[250], [250], [300], [300]]  # one per split and run
    links = [list(ln.get_xdata()) for ln in fig.axes[0].lines if ln.get_linestyle() == ":"]
    assert sorted(links) == [[200, 250], [200, 250], [250, 300], [250, 300]]  # the chain joined to its origins
