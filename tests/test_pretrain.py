"""The generic pre-training set (every record checked against an independent reading of its prompt), the cached
pre-trained base that fine-tuning starts from, and the rehearsal mix."""
import json
import re

import pytest

from retune.data import datasets as data
from retune.training import pretrain, runs
from retune.config.profiles import load_profile


def items(text: str) -> list[str]:
    """A sequence as written: a digit string, or a bracketed list."""
    return re.findall(r"-?\d", text[1:-1]) if text.startswith("[") else list(text)


def expected(prompt: str) -> str:
    body = prompt.removesuffix("\n>> ")
    op, _, rest = body.partition(": ")
    listed = rest.startswith("[")
    show = (lambda xs: "[" + ", ".join(xs) + "]") if listed else "".join
    if op == "copy":
        return rest
    if op == "behead":
        return show(items(rest)[1:])
    if op == "behead both":
        sep = re.search(r" [;|&+] ", rest).group(0)
        a, b = rest.split(sep)
        return show(items(a)[1:]) + sep + show(items(b)[1:])
    item = re.fullmatch(r"put (-?\d) first", op).group(1)
    return show([item] + items(rest))


def test_every_record_does_what_its_prompt_says():
    records = pretrain.build_records(3000, 24, seed=1)
    assert {r["method"] for r in records} == set(pretrain.OPERATIONS)
    assert {r["kind"] for r in records} == set(pretrain.KINDS)
    for r in records:
        assert r["output"] == expected(r["input"]), r
        longest = 12 if r["kind"] == "ints" else 24
        assert 2 <= r["size"] <= longest and len(items(r["input"].split(": ", 1)[1].split(" ")[0].rstrip("\n>")))
    sizes = {r["size"] for r in records if r["kind"] == "digits"}
    assert sizes == set(range(2, 25))  # the whole range, far past addition's 8 training digits


def test_same_seed_same_records_other_seed_other_records():
    assert pretrain.build_records(200, 10, seed=3) == pretrain.build_records(200, 10, seed=3)
    assert pretrain.build_records(200, 10, seed=3) != pretrain.build_records(200, 10, seed=4)


@pytest.mark.parametrize("examples, max_length, name", [(0, 10, "examples"), (10, 1, "max_length")])
def test_bad_sizes_are_named(examples, max_length, name):
    with pytest.raises(ValueError, match=f"pretrain {name}"):
        pretrain.build_records(examples, max_length)


def smoke_with_pretraining(tmp_path, mix=0.2):
    paths = {"paths": {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")}}
    spec = {"examples": 64, "max_length": 12, "mix": mix, "train": {"max_steps": 4, "batch_size": 16, "lr": 1.0e-3}}
    return load_profile("smoke", paths, {"pretrain": spec})


@pytest.mark.slow
def test_fine_tuning_starts_from_the_cached_base_with_rehearsal(tmp_path):
    profile = smoke_with_pretraining(tmp_path)
    base = runs.base_model(profile, seed=0)
    assert json.loads((tmp_path / "runs" / base.split("/")[-1] / "run.json").read_text())["model"] == "tiny"
    assert runs.base_model(profile, seed=0) == base  # cached: the same run, nothing trained again
    assert runs.base_model(profile, seed=0, progress=False) == base  # the bar is not part of the run's identity
    assert runs.base_model(profile, seed=1) != base  # one base per seed
    run = json.loads((runs.trained(profile, runs.spec_for(profile, "parity", "retuning", 0)) / "run.json").read_text())
    assert run["model"] == base and run["model_kind"] == "run"
    task_data, generic = (data.read_manifest(d["path"]) for d in run["data"])
    assert generic["parameters"]["task"] == "generic"
    share = generic["records"] / (generic["records"] + task_data["records"])
    assert abs(share - 0.2) < 0.02
    assert runs.model_label(profile) == "tiny+pretrain"


def test_mix_outside_the_unit_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"pretrain.mix: must be in \[0, 1\), got 1.0"):  # when the profile loads
        smoke_with_pretraining(tmp_path, mix=1.0)


@pytest.mark.slow
def test_a_task_with_its_own_base_trains_and_rehearses_from_it_and_leaves_the_others_alone(tmp_path):
    from retune.reproduce.plan import Piece, needs, plan

    own = {"surfaces": "many", "multiline": 0.3, "train": {"max_steps": 3}}
    profile = load_profile(smoke_with_pretraining(tmp_path).to_dict(), {"pretrain": {"by_task": {"parity": own}}})
    shared = runs.base_model(smoke_with_pretraining(tmp_path), seed=0)
    assert runs.base_model(profile, seed=0) == runs.base_model(profile, seed=0, task="addition") == shared
    parity_base = runs.base_model(profile, seed=0, task="parity")
    assert parity_base != shared
    assert json.loads((tmp_path / "runs" / parity_base.split("/")[-1] / "run.json").read_text())["config"][
        "max_steps"] == 3
    parity = runs.describe(profile, runs.spec_for(profile, "parity", "retuning", 0))
    addition = runs.describe(profile, runs.spec_for(profile, "addition", "retuning", 0))
    assert (parity.base, addition.base) == (parity_base, shared)
    rehearsed = data.read_manifest(parity.datasets[1])["parameters"]
    assert (rehearsed["surfaces"], rehearsed["multiline"]) == ("many", 0.3)
    assert "surfaces" not in data.read_manifest(addition.datasets[1])["parameters"]
    first, pieces = plan(profile)
    assert {p for p in first if p.kind == "base"} == {Piece("base", 0), Piece("base", 0, task="parity")}
    by_task = {p.run.task: needs(profile, p) for p in pieces}
    assert by_task["parity"] == Piece("base", 0, task="parity") and by_task["addition"] == Piece("base", 0)
    assert str(by_task["parity"]) == "base parity seed 0"


def first_items_asked(prompt: str) -> str:
    """An independent reading of a first-items request: the named line's two sequences, their first items."""
    *lines, ask = prompt.removesuffix(": ").split("\n")
    label = re.fullmatch(r"(?:Firsts of |Leading items of )?(\w+)(?: heads)?", ask).group(1)
    line = next(line.split(": ", 1)[1] for line in lines if line.startswith(label + ": "))
    if line.startswith("["):  # two lists: the separator is what lies between "]" and "["
        end = line.index("]") + 1
        sep = line[end:line.index("[", end)]
        a, b = line[:end], line[end + len(sep):]
    else:
        sep = re.search(r"\D+", line).group(0)
        a, b = line.split(sep)
    return items(a)[0] + sep + items(b)[0]


def test_first_items_requests_answer_the_named_lines_leading_items_in_their_share():
    records = pretrain.build_records(4000, 24, seed=2, surfaces="many", multiline=0.3, heads=0.2)
    asked = [r for r in records if r["method"] == "heads"]
    assert 0.17 < len(asked) / len(records) < 0.23  # of the total, not of what the recalls leave
    assert 0.27 < sum(r["method"].startswith("recall") for r in records) / len(records) < 0.33
    assert {r["kind"] for r in asked} == set(pretrain.KINDS) and max(r["size"] for r in asked) == 24
    for r in asked:
        assert r["output"] == first_items_asked(r["input"]), r


def test_a_set_without_first_items_requests_draws_as_before_and_the_share_names_its_file(tmp_path):
    assert pretrain.build_records(300, 12, 0, "many", 0.4) == pretrain.build_records(300, 12, 0, "many", 0.4, 0.0)
    spec = {"examples": 20, "max_length": 6, "surfaces": "many", "multiline": 0.4, "heads": 0.2}
    assert pretrain.dataset(spec, 0, tmp_path).name == "pretrain-generic-many-ml0.4-hd0.2-len6-n20-s0.jsonl"
    with pytest.raises(ValueError, match="multiline and heads"):
        pretrain.build_records(10, 6, 0, "many", 0.6, 0.4)
