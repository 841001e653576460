"""Typed profiles: the merge rule, one source of defaults, and every bad key or value refused before any work,
in one line naming it (the CLI exits 2 within seconds, no traceback)."""
import subprocess
import sys
import time
from dataclasses import fields

import pytest

from retune.config.profiles import (PROFILES_DIR, Profile, ProfileError, Recipe, TrainSection, base_task, build, check,
                                    load_profile, merge, parse_sets, pretrain_for)


def test_profiles_merge_over_the_defaults_and_later_wins(tmp_path):
    (tmp_path / "small.yaml").write_text("train: {max_steps: 5, lr: 2.0e-3}\nseeds: [7]\n")
    extra = tmp_path / "extra.yml"
    extra.write_text("seeds: [9]\ntrain: {lr: 4.0e-3}\n")
    p = load_profile("small", directory=tmp_path)
    assert (p.profile, p.seeds, p.train.max_steps, p.train.lr) == ("small", [7], 5, 2e-3)
    assert p.train.batch_size == TrainSection().batch_size  # not given: the dataclass default
    p = load_profile("small", str(extra), {"model": {"source": "x"}}, directory=tmp_path)
    assert p.seeds == [9] and p.model.source == "x" and p.profile == "extra"
    assert (p.train.max_steps, p.train.lr) == (5, 4e-3)  # mappings merge key by key, the later wins
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    assert merge({"a": {"b": 1}}, {"a": None}) == {"a": None}
    assert merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_defaults_live_only_in_the_dataclasses(tmp_path):
    assert not (PROFILES_DIR / "base.yaml").exists()
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_profile("empty", directory=tmp_path) == Profile(profile="empty")


def test_unknown_profile_names_the_available_ones(tmp_path):
    (tmp_path / "cpu.yaml").write_text("profile: cpu\n")
    with pytest.raises(ProfileError, match=r"unknown profile 'gpu'.*available profiles: cpu"):
        load_profile("gpu", directory=tmp_path)


@pytest.mark.parametrize("over, message", [
    ({"foo": 1}, r"^unknown key 'foo' in profile \(allowed: profile, seeds, "),
    ({"seed": [1]}, r"unknown key 'seed' in profile; did you mean 'seeds'\?"),
    ({"efficiency_n": [1]}, r"unknown key 'efficiency_n' in profile; did you mean studies.efficiency_n\?"),
    ({"train": {"lrr": 1.0}}, r"unknown key 'lrr' in train; did you mean 'lr'\? \(allowed: lr, epochs, "),
    ({"model": {"tiny": {"hidden": 8}}}, r"unknown key 'hidden' in model.tiny; did you mean 'hidden_size'\?"),
    ({"limits": {"dept": 3}}, r"unknown key 'dept' in limits; did you mean 'depth'\?"),
    ({"train": {"by_task": {"dp": {"max_step": 3}}}}, r"unknown key 'max_step' in train.by_task.dp"),
])
def test_an_unknown_key_is_named_with_the_allowed_ones_and_the_closest(over, message):
    with pytest.raises(ProfileError, match=message):
        load_profile("smoke", over)


@pytest.mark.parametrize("over, message", [
    ({"seeds": "abc"}, r"^seeds: expected a list of integers, got 'abc'$"),
    ({"seeds": [0, "x"]}, r"^seeds\[1\]: expected an integer, got 'x'$"),
    ({"studies": {"efficiency_n": "abc"}}, r"^studies.efficiency_n: expected a list of integers, got 'abc'$"),
    ({"train": {"max_steps": 2.5}}, r"^train.max_steps: expected an integer, got 2.5$"),
    ({"train": {"lr": "fast"}}, r"^train.lr: expected a number, got 'fast'$"),
    ({"eval": {"sizes": {"parity": [3, 2]}}}, r"eval.sizes.parity: expected \[lo, hi\]"),
    ({"pretrain": {"mix": "x"}}, r"^pretrain.mix: expected a number, got 'x'$"),
    ({"tasks": ["addition", "sorting"]}, r"^tasks: unknown 'sorting'; allowed: "),
    ({"eval": {"device": "gpu"}}, r"^eval.device: expected auto, cpu, cuda or cuda:N, got 'gpu'$"),
    ({"eval": {"dtype": "fp8"}}, r"^eval.dtype: expected one of float32, "),
    ({"train": {"loss_mean": "sequence"}}, r"^train.loss_mean: unknown 'sequence'; allowed: token, example$"),
    ({"train": {"by_task": {"parity": {"retuning": {"loss_mean": "x"}}}}},
     r"^train.by_task.parity.retuning.loss_mean: unknown 'x'; allowed: token, example$"),
    ({"train": {"by_task": {"parity": {"retuning": {"lrr": 1.0}}}}},
     r"^unknown key 'lrr' in train.by_task.parity.retuning; did you mean 'lr'\?"),
    ({"train": {"by_task": {"parity": {"retuning": 3}}}},
     r"^train.by_task.parity.retuning: expected a mapping of recipe keys, got 3$"),
    ({"pretrain": {"by_task": {"sorting": {"examples": 9}}}}, r"^pretrain.by_task: unknown 'sorting'; allowed: "),
    ({"pretrain": {"by_task": {"parity": {"multiline": 1.5}}}},
     r"^pretrain.by_task.parity.multiline: must be in \[0, 1\), got 1.5$"),
    ({"pretrain": {"multiline": 0.5, "heads": 0.5}}, r"^pretrain.multiline \+ heads: must be in \[0, 1\), got 1.0$"),
    ({"pretrain": {"by_task": {"parity": {"surfaces": "all"}}}},
     r"^pretrain.by_task.parity.surfaces: unknown 'all'; allowed: one, many$"),
    ({"pretrain": {"by_task": {"parity": {"train": {"max_step": 9}}}}},
     r"^unknown key 'max_step' in pretrain.by_task.parity.train; did you mean 'max_steps'\?"),
    ({"pretrain": {"by_task": {"parity": {"examples": "many"}}}},
     r"^pretrain.by_task.parity.examples: expected an integer, got 'many'$"),
    ({"pretrain": {"by_task": {"parity": 3}}}, r"^pretrain.by_task.parity: expected a mapping, got 3$"),
])
def test_a_wrong_value_names_the_key_the_value_and_the_expected_type(over, message):
    with pytest.raises(ProfileError, match=message):
        load_profile("smoke", over)


def test_every_task_run_needs_its_sizes():
    """Through a profile the defaults fill in every task's size (tests/test_checks.py); a Profile built by hand
    without one is still refused by name."""
    with pytest.raises(ProfileError, match=r"train.sizes: no size for task 'dp'"):
        check(Profile(train=TrainSection(sizes={"addition": 3, "parity": 4})))


def test_values_are_converted_where_yaml_is_loose():
    p = load_profile("smoke", {"train": {"lr": "3e-4", "epochs": 2}, "pretrain": {"mix": 0}})
    assert p.train.lr == 3e-4 and isinstance(p.train.epochs, float) and p.pretrain.mix == 0.0
    assert p.pretrain.train == Recipe()  # a partial section is completed from its defaults
    assert build(Profile, {"pretrain": None}).pretrain is None


def test_set_overrides_parse_as_yaml_and_reach_into_sections():
    assert parse_sets(["seeds=[0, 1, 2]", "train.max_steps=5", "train.lr=1e-3", "model.source=/x/y"]) == \
        {"seeds": [0, 1, 2], "train": {"max_steps": 5, "lr": "1e-3"}, "model": {"source": "/x/y"}}
    for bad in ("seeds", "=3", "train.=3"):
        with pytest.raises(ProfileError, match="--set expects KEY=VALUE"):
            parse_sets([bad])
    with pytest.raises(ProfileError, match=r"^--set seeds: '\[0, 1' is not a YAML value"):
        parse_sets(["seeds=[0, 1"])


def test_the_trainer_config_is_the_profile_recipe_plus_per_run_fields():
    from retune.training.fine_tune import TrainConfig

    recipe = {f.name for f in fields(Recipe)}
    assert {f.name for f in fields(TrainConfig)} - recipe == {"seed", "threads", "progress"}
    assert {f.name for f in fields(TrainSection)} - recipe == {"sizes", "problems_per_size", "distribution", "by_task"}


@pytest.mark.parametrize("setting, named", [
    ("foo=1", "'foo'"), ("seeds=abc", "seeds: expected a list of integers, got 'abc'"),
    ("efficiency_n=abc", "'efficiency_n'"), ("studies.efficiency_n=abc", "studies.efficiency_n: expected"),
    ("seeds=[0, 1", "--set seeds: '[0, 1' is not a YAML value"),
])
@pytest.mark.parametrize("command", ["reproduce", "train", "eval"])
def test_cli_refuses_a_bad_setting_in_one_line_before_any_work(setting, named, command, tmp_path):
    extra = ["--data", str(tmp_path / "none.jsonl")] if command == "train" else []
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "retune.cli", command, "--profile", "smoke", "--set", setting,
                           *extra], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and named in done.stderr
    assert done.stderr.startswith(f"retune {command}: error: ")
    assert time.perf_counter() - started < 60  # seconds, not a notebook's worth of work


@pytest.mark.parametrize("argv, named", [
    (["--task", "sorting", "--method", "retuning"], "--task must be one of"),
    (["--task", "parity"], "give --run RUN_DIR, or --task and --method"),
    (["--run", "/nonexistent/run"], "is not a run directory"),
    (["--run", "/nonexistent/run", "--task", "parity"], "--run names the run already"),
])
def test_eval_cli_refuses_bad_arguments_in_one_line(argv, named):
    done = subprocess.run([sys.executable, "-m", "retune.cli", "eval", "--profile", "smoke", *argv],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and named in done.stderr, done.stderr


def test_a_task_with_its_own_base_merges_its_keys_over_the_shared_pretraining():
    shared = {"examples": 64, "surfaces": "one", "train": {"max_steps": 4, "lr": 2.0e-3}}
    profile = load_profile("smoke", {"pretrain": shared | {"by_task": {"parity": {
        "surfaces": "many", "multiline": 0.4, "train": {"max_steps": 9}}}}})
    own = pretrain_for(profile, "parity")
    assert (own.surfaces, own.multiline, own.examples) == ("many", 0.4, 64)  # examples kept from the shared one
    assert (own.train.max_steps, own.train.lr) == (9, 2.0e-3)  # train merged key by key
    assert own.by_task == {}
    plain = load_profile("smoke", {"pretrain": shared})
    assert pretrain_for(profile, "addition") == pretrain_for(profile, None) == pretrain_for(plain, "addition")
    assert (base_task(profile, "parity"), base_task(profile, "addition"), base_task(plain, "parity")) == \
        ("parity", None, None)
    assert pretrain_for(load_profile("smoke"), "parity") is None


def test_eval_semantics_is_strict_by_default_and_a_bad_value_is_named():
    assert load_profile("smoke").eval.semantics == "strict"
    assert load_profile("smoke", {"eval": {"semantics": "official"}}).eval.semantics == "official"
    with pytest.raises(ProfileError, match=r"eval.semantics: unknown 'paper'; allowed: strict, official"):
        load_profile("smoke", {"eval": {"semantics": "paper"}})


def test_eval_semantics_enters_the_cache_key_only_when_not_the_default():
    """The key of an evaluation under the default semantics is what it was before the key existed (pinned), so
    every cached evaluation stays valid; the official semantics is cached apart."""
    from retune.evaluation import pipeline

    def key(**eval_):
        profile = load_profile("smoke", {"eval": {"device": "cpu", "dtype": "float32", **eval_}})
        return pipeline.eval_key(profile, "addition", "retuning", 0, 0, [2, 4], 2)

    assert key() == key(semantics="strict") == "41e769e1260e"
    assert key(semantics="official") not in ("41e769e1260e", "")
