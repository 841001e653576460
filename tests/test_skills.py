"""The generic base's skill probe (retune.analysis.skills): items and surface scored apart, fresh prompts in the base's own
surfaces, and the whole probe on a tiny pre-trained base."""
import pytest

from retune.training import pretrain
from retune.analysis import skills
from retune.config.profiles import load_profile


@pytest.mark.parametrize("answer, target, expected", [
    ("821 ; 07", "821 ; 07", (True, True, True)),
    ("821 + 07", "821 ; 07", (False, True, False)),  # every digit right, the separator wrong
    ("82 ; 107", "821 ; 07", (False, False, True)),  # the same digits, grouped wrong: an item error
    ("[1, -2]", "[1, -2]", (True, True, True)),
    ("[1, 2]", "[1, -2]", (False, False, True)),
    ("Shorter: 21 | 7", "21 | 7", (False, True, False)),  # an answer word it should not have written
    ("", "5", (False, False, False)),
])
def test_items_and_surface_are_scored_apart(answer, target, expected):
    assert tuple(skills.score(answer, target).values()) == expected


def test_probe_lengths_reach_twice_the_pretraining_maximum():
    lengths = skills.probe_lengths(24)
    assert lengths[0] == 2 and lengths[-1] == 48 and 24 in lengths and 10 <= len(lengths) <= 14
    assert skills.trained_longest(24, "ints") == 12 and skills.trained_longest(24, "bits") == 24


@pytest.mark.parametrize("surfaces, multiline", [("one", 0.0), ("many", 0.4)])
def test_records_come_in_the_bases_own_surfaces_and_skip_trained_prompts(surfaces, multiline):
    spec = {"surfaces": surfaces, "multiline": multiline, "max_length": 12}
    trained = {r["input"] for r in pretrain.build_records(2000, 12, 0, surfaces, multiline)}
    records = skills.skill_records(spec, [2, 3, 16], n=4, seed=0, seen=trained)
    operations = pretrain.OPERATIONS + (("recall",) if multiline else ())
    groups = {(r["operation"], r["kind"], r["size"]) for r in records}
    every = {(o, k, n) for o in operations for k in pretrain.KINDS for n in (2, 3, 16)}
    assert groups <= every and {g for g in every if g[2] == 16} <= groups
    assert all(sum((r["operation"], r["kind"], r["size"]) == g for r in records) == 4 for g in groups if g[2] > 2)
    # two-bit lists have 4 distinct values: the pre-training set holds every prompt, so none is fresh
    assert ("copy", "bits", 2) not in groups or surfaces == "many"
    assert not {r["input"] for r in records} & trained
    one_surface = all(r["input"].endswith("\n>> ") for r in records if r["operation"] != "recall")
    assert one_surface == (surfaces == "one")


@pytest.mark.slow
def test_the_probe_scores_a_tiny_base_by_operation_kind_and_length(tmp_path):
    paths = {"paths": {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")}}
    spec = {"examples": 64, "max_length": 6, "surfaces": "many", "multiline": 0.3,
            "train": {"max_steps": 2, "batch_size": 16}}
    profile = load_profile("smoke", paths, {"pretrain": spec})
    table = skills.base_skills(profile, n=2, lengths=[2, 6, 9])
    assert set(table["operation"]) == set(pretrain.OPERATIONS) | {"recall"}
    assert set(table["score"]) == set(skills.SCORES) and (table["total"] == 2).all()
    in_range = table.set_index(["kind", "length"])["in_range"].groupby(level=[0, 1]).first()
    assert in_range[("digits", 6)] and not in_range[("digits", 9)] and not in_range[("ints", 6)]
    wide = table.pivot_table(index=["operation", "kind", "length"], columns="score", values="right")
    assert (wide["exact"] <= wide[["items", "surface"]].min(axis=1)).all()  # exact needs both
    fig = skills.plot_base_skills(table, 6)
    assert len(fig.axes) == len(pretrain.KINDS) * (len(pretrain.OPERATIONS) + 1)


def test_a_profile_without_pretraining_has_no_base_to_probe(tmp_path):
    said = []
    assert skills.base_skills(load_profile("smoke"), log=said.append) is None
    assert "no generic pre-training" in said[0]


@pytest.mark.slow
def test_a_task_with_its_own_base_gets_its_own_rows_and_figure(tmp_path):
    paths = {"paths": {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")}}
    spec = {"examples": 64, "max_length": 6, "train": {"max_steps": 2, "batch_size": 16},
            "by_task": {"parity": {"surfaces": "many", "max_length": 8}}}
    profile = load_profile("smoke", paths, {"pretrain": spec})
    bases = skills.bases(profile)
    assert bases == [None, "parity"] and [skills.figure_name(t) for t in bases] == ["base_skills", "base_skills_parity"]
    assert [skills.max_length_of(profile, t) for t in bases] == [6, 8]
    table = skills.base_skills_of(profile, bases, n=2, lengths=[2, 7])
    assert set(table["base"]) == {"shared", "parity"}
    in_range = table[(table["kind"] == "digits") & (table["length"] == 7)].groupby("base")["in_range"].first()
    assert not in_range["shared"] and in_range["parity"]  # each base's own pre-training range


def test_a_base_trained_on_first_items_requests_is_probed_on_them_too():
    spec = {"surfaces": "many", "multiline": 0.4, "heads": 0.2, "max_length": 12}
    records = skills.skill_records(spec, [4, 16], n=2, seed=0)
    assert {r["operation"] for r in records} == set(pretrain.OPERATIONS) | {"recall", "heads"}
    assert all(r["method"] == "heads" for r in records if r["operation"] == "heads")
