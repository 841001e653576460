"""retune.training.runs and retune.evaluation.pipeline: evaluation problems are fresh (never a trained top context) and reproducible, the run
grids follow the profile, and evaluations are cached beside the run."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from retune.decoding import recursive as decode
from retune.evaluation import pipeline
from retune.training import runs
from retune.training import fine_tune as T
from retune.config.profiles import load_profile
from retune.tasks import get_task


def smoke(tmp_path, **over):
    paths = {"paths": {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")}}
    return load_profile("smoke", paths, over)


def test_eval_problems_are_reproducible_and_avoid_the_excluded():
    first = pipeline.eval_problems("addition", (3, 4), 20, seed=0)
    assert first == pipeline.eval_problems("addition", (3, 4), 20, seed=0)
    assert first != pipeline.eval_problems("addition", (3, 4), 20, seed=1)
    task = get_task("addition")
    banned = {task.top_context(p, "retuning") for p in first[:10]}
    again = pipeline.eval_problems("addition", (3, 4), 20, seed=0, exclude=banned)
    assert len(again) == 40 and not {task.top_context(p, "retuning") for p in again} & banned


def test_small_problem_spaces_give_fewer_problems_not_repeats():
    problems = pipeline.eval_problems("parity", (2, 2), 10, seed=0)
    assert sorted(map(tuple, problems)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_grids_follow_the_profile(tmp_path):
    p = smoke(tmp_path, studies={"efficiency_tasks": ["addition"], "efficiency_methods": ["retuning"],
                                 "efficiency_n": [2, 4], "variant_tasks": ["dp"], "variants": [0, 1],
                                 "ablation_tasks": ["parity"]}, seeds=[0, 1])
    assert len(runs.main_runs(p)) == 3 * 3 * 2
    assert {(r.task, r.method, r.n) for r in runs.efficiency_runs(p)} == {("addition", "retuning", 2),
                                                                                 ("addition", "retuning", 4)}
    assert {(r.task, r.variant) for r in runs.variant_runs(p)} == {("dp", 0), ("dp", 1)}
    assert {(r.task, r.method) for r in runs.ablation_runs(p)} == {("parity", m) for m in p.studies.ablations}


def test_evaluation_never_sees_a_training_problem_and_is_cached(tmp_path):
    p = smoke(tmp_path, eval={"sizes": {"addition": [1, 3], "dp": [2, 3], "parity": [1, 4]}})
    run = runs.trained(p, runs.spec_for(p, "parity", "baseline", 0))
    trained = pipeline.trained_contexts(run)
    traces = pipeline.evaluate_run(p, run, "parity", "baseline", 0, progress=False)
    task = get_task("parity")
    assert traces and not {task.top_context(t.problem, "baseline") for t in traces} & trained
    cached = list((run / "evals").glob("*.jsonl"))
    assert json.loads(pipeline.placement_path(cached[0]).read_text()) == {"device": "cpu", "dtype": "float32"}
    assert len(cached) == 1
    assert [t.problem for t in pipeline.evaluate_run(p, run, "parity", "baseline", 0, progress=False)] == \
        [t.problem for t in traces]
    rows = pipeline.rows(traces, seed=0)
    assert len(rows) == len(traces) and all(r["correct"] == t.correct for r, t in zip(rows, traces))


def test_per_task_training_budget_applies_to_every_method_of_the_task(tmp_path):
    p = smoke(tmp_path, train={"by_task": {"dp": {"max_steps": 7, "batch_size": 4}}})
    recipe = T.recipe_of(p.train)
    assert runs.train_config(p, 3, "dp") == T.TrainConfig(**dict(recipe, max_steps=7, batch_size=4, seed=3))
    assert runs.train_config(p, 3, "addition") == T.TrainConfig(**dict(recipe, seed=3))


def test_a_methods_overrides_within_a_task_come_after_the_task_budget(tmp_path):
    p = smoke(tmp_path, train={"by_task": {"dp": {"max_steps": 7, "retuning": {"loss_mean": "example"}}}})
    recipe = T.recipe_of(p.train)
    assert runs.train_config(p, 3, "dp", "retuning") == \
        T.TrainConfig(**dict(recipe, max_steps=7, loss_mean="example", seed=3))
    assert runs.train_config(p, 3, "dp", "baseline") == T.TrainConfig(**dict(recipe, max_steps=7, seed=3))
    assert runs.train_config(p, 3, "parity", "retuning") == T.TrainConfig(**dict(recipe, seed=3))


class Killed(Exception):
    """Stands for the process being killed mid-evaluation."""


def test_an_interrupted_evaluation_resumes_from_its_last_saved_chunk(tmp_path, monkeypatch):
    p = smoke(tmp_path, eval={"sizes": {"parity": [3, 6]}, "problems_per_size": 4, "chunk": 5})
    run = runs.trained(p, runs.spec_for(p, "parity", "retuning", 0))
    whole = pipeline.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    assert len(whole) > 10
    for f in (run / "evals").glob("*.jsonl"):
        f.unlink()

    real_decode, calls, die_at = decode.decode, [], [2]

    def decode_then_die(task, problems, *args, **kwargs):
        calls.append(len(problems))
        if len(calls) == die_at[0]:
            raise Killed
        return real_decode(task, problems, *args, **kwargs)

    monkeypatch.setattr(pipeline, "decode", decode_then_die)
    try:
        pipeline.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    except Killed:
        pass
    assert not list((run / "evals").glob("*.jsonl"))  # no finished file after an interruption
    calls.clear()
    die_at[0] = None
    resumed = pipeline.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    assert sum(calls) == len(whole) - 5  # the first chunk was not decoded again
    assert [t.to_dict() for t in resumed] == [t.to_dict() for t in whole]
    assert not list((run / "evals").glob("*.parts*"))


# --- one evaluation path: `retune eval` is the notebooks' evaluation ------------------------------------------
def eval_cli(argv, capsys) -> dict:
    from retune.cli import main

    assert main(["eval", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def write_profile(tmp_path, **over) -> str:
    """A profile file: smoke, with its paths under tmp_path, 4 training steps, `over` merged on top."""
    import yaml

    from retune.config.profiles import merge, merged

    path = tmp_path / "mine.yaml"
    settings = merge(merged("smoke"), {"paths": {k: str(tmp_path / k) for k in ("data", "runs", "results", "figures")},
                                       "train": {"max_steps": 4},
                                       "eval": {"sizes": {"parity": [2, 6]}, "problems_per_size": 3}})
    path.write_text(yaml.safe_dump(merge(settings, over)))
    return str(path)


@pytest.mark.slow
def test_retune_eval_gives_the_notebooks_numbers(tmp_path, capsys):
    from retune.analysis import report

    profile_file = write_profile(tmp_path)
    p = load_profile(profile_file)
    run = runs.trained(p, runs.spec_for(p, "parity", "retuning", 0))
    out = eval_cli(["--profile", profile_file, "--run", str(run)], capsys)
    assert (out["task"], out["method"], out["seed"], out["variant"]) == ("parity", "retuning", 0, 0)
    assert (out["device"], out["dtype"]) == ("cpu", "float32")
    shutil.rmtree(run / "evals")  # the notebook path decodes afresh: nothing is shared through the cache
    df = pipeline.run_all(p, [{"task": "parity", "method": "retuning", "seed": 0}], progress=False)
    by_size = report.accuracy_by(df, ["size"])
    assert [(r["size"], r["correct"], r["n"]) for r in out["by_size"]] == \
        list(zip(by_size["size"], by_size["correct"], by_size["n"]))
    table = report.main_table(df, p.train.sizes)
    assert [(r["split"], r["correct"], r["n"]) for r in out["splits"]] == \
        list(zip(table["split"], table["correct"], table["n"]))
    assert {r["split"] for r in out["splits"]} >= {"id", "ood"}
    assert sum(r["n"] for r in out["by_size"]) == len(df)
    # the same stream the notebooks use: fresh problems, never a training problem
    problems = pipeline.eval_problems("parity", (2, 6), 3, 0, exclude=pipeline.trained_contexts(run))
    assert [t.problem for t in pipeline.traces_of(p, [{"task": "parity", "method": "retuning", "seed": 0}])] == problems


def memorised_run(tmp_path, records=()) -> Path:
    """A finished run directory holding the tiny model that memorised every parity Re-Tuning context of 1-3 bits:
    it writes calls and returns, and on the shortest problems its greedy choices have margins far wider than bf16's
    rounding, so there a bf16 evaluation must decode what the fp32 one decodes (on 3 bits one choice in 14 flips).
    Its run.json names a dataset of `records` (none by default: every problem is fresh)."""
    from retune.data import datasets as data
    from _tiny_model import memorised_parity_model

    model, tok = memorised_parity_model()
    run = tmp_path / "runs" / "parity-retuning-memorised"
    T.save_model(model, tok, run, lora=False)
    dataset = tmp_path / "data" / "none.jsonl"
    data.write(list(records), dataset, {"task": "parity", "method": "retuning", "seed": 0, "variant": 0})
    (run / "run.json").write_text(json.dumps({"key": "memorised", "model": "tiny", "config": {"seed": 0},
                                              "data": [{"task": "parity", "method": "retuning",
                                                        "path": str(dataset)}]}))
    (run / "measurements.json").write_text("{}")
    return run


@pytest.mark.slow
def test_bf16_evaluation_runs_in_bf16_and_answers_as_fp32(tmp_path, capsys):
    run = memorised_run(tmp_path)
    # sizes 1-2 (every problem of them): the easy case, where the memorised margins are wide
    argv = ["--profile", write_profile(tmp_path, eval={"sizes": {"parity": [1, 2]}, "problems_per_size": 8}),
            "--run", str(run)]
    fp32 = eval_cli(argv, capsys)
    bf16 = eval_cli(argv + ["--dtype", "bfloat16"], capsys)
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16") and bf16["device"] == "cpu"
    p = load_profile(argv[1])
    traces32 = pipeline.evaluate_run(p, run, "parity", "retuning", 0, progress=False)
    traces16 = pipeline.evaluate_run(load_profile(argv[1], {"eval": {"dtype": "bfloat16"}}), run, "parity", "retuning", 0,
                               progress=False)
    assert any(t.contexts > 1 for t in traces32) and any(t.correct for t in traces32)  # it calls and answers
    same = [(t.predicted, t.correct, t.error, t.contexts, t.tokens_out) for t in traces32]
    assert [(t.predicted, t.correct, t.error, t.contexts, t.tokens_out) for t in traces16] == same
    assert bf16["by_size"] == fp32["by_size"]


@pytest.mark.slow
def test_the_eval_loader_places_and_casts_the_model(tmp_path):
    run = memorised_run(tmp_path)
    model, _ = T.load_trained(run, merge=True, device="cpu", dtype="bfloat16")
    assert T.placement(model) == {"device": "cpu", "dtype": "bfloat16"}
    assert T.placement(T.load_trained(run)[0]) == {"device": "cpu", "dtype": "float32"}


@pytest.mark.slow
def test_a_base_model_is_evaluated_like_a_run(tmp_path, capsys):
    """--model (a model we did not train; no training set, nothing excluded) goes through the same evaluation as
    --run: the same weights give the same numbers."""
    from _tiny_model import memorised_parity_model

    run = memorised_run(tmp_path)  # its dataset is empty: nothing excluded either
    base = tmp_path / "base"
    model, tok = memorised_parity_model()
    model.save_pretrained(base)
    tok.save_pretrained(base)
    profile = write_profile(tmp_path)
    common = ["--profile", profile, "--sizes", "1-2", "--n", "8"]
    as_run = eval_cli([*common, "--run", str(run)], capsys)
    as_model = eval_cli([*common, "--model", str(base), "--task", "parity", "--method", "retuning"], capsys)
    assert as_model["model"] == str(base) and "run" not in as_model
    assert (as_model["backend"], as_model["device"], as_model["dtype"]) == ("hf", "cpu", "float32")
    assert as_model["by_size"] == as_run["by_size"] and as_model["splits"] == as_run["splits"]
    assert sum(r["correct"] for r in as_model["by_size"]) > 0
    from retune.cli import main

    for bad in (["--run", str(run)], ["--backend", "oracle", "--task", "parity", "--method", "retuning"],
                ["--task", "parity", "--method", "retuning"]):
        model_dir = str(run) if bad[-1] == "retuning" and len(bad) == 4 else str(base)
        assert main(["eval", "--profile", profile, "--model", model_dir, *bad]) == 2, bad
    err = capsys.readouterr().err
    assert "give one of them" in err and "--model is evaluated with --backend hf" in err and "with --run" in err


def test_the_oracle_backend_checks_the_pipeline_and_writes_out(tmp_path, capsys):
    profile = write_profile(tmp_path)
    argv = ["--profile", profile, "--backend", "oracle", "--task", "parity", "--method", "retuning",
            "--sizes", "2-4", "--n", "3"]
    out = eval_cli([*argv, "--out", str(tmp_path / "o")], capsys)
    assert out["backend"] == "oracle" and "device" not in out and "dtype" not in out
    assert [(r["size"], r["correct"], r["n"]) for r in out["by_size"]] == [(s, 3, 3) for s in (2, 3, 4)]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {k: summary[k] for k in out} == out
    assert summary["settings"]["eval"]["sizes"]["parity"] == [2, 4] and summary["seeds"]["eval"] == 0
    assert summary["versions"]["python"] and "torch" in summary["versions"]
    traces = decode.load_traces(tmp_path / "o" / "traces.jsonl")
    assert [t.problem for t in traces] == pipeline.eval_problems("parity", (2, 4), 3, 0)
    # --sizes and --n are shorthands for the profile keys: the same evaluation either way
    longhand = ["--profile", profile, "--backend", "oracle", "--task", "parity", "--method", "retuning",
                "--set", "eval.sizes.parity=[2, 4]", "--set", "eval.problems_per_size=3"]
    assert eval_cli(longhand, capsys) == {k: v for k, v in out.items() if k != "out"}


@pytest.mark.slow
def test_the_oracle_over_a_run_never_sees_its_training_problems(tmp_path, capsys):
    from retune.data import datasets as data
    from _tiny_model import parity_problems

    records = data.build("parity", "retuning", sizes=(3, 3), n=6, seed=0, progress=False)
    run = memorised_run(tmp_path, records)
    trained = pipeline.trained_contexts(run)
    seen = [p for p in parity_problems((3,)) if get_task("parity").top_context(p, "retuning") in trained]
    assert 0 < len(seen) < 8
    out = eval_cli(["--profile", write_profile(tmp_path), "--backend", "oracle", "--run", str(run), "--sizes", "3",
                    "--n", "8", "--out", str(tmp_path / "o")], capsys)
    assert (out["run"], out["task"], out["backend"]) == (str(run), "parity", "oracle")
    problems = [t.problem for t in decode.load_traces(tmp_path / "o" / "traces.jsonl")]
    assert problems == pipeline.eval_problems("parity", (3, 3), 8, 0, exclude=trained)
    assert len(problems) == 8 - len(seen)  # every three-bit problem not trained on
    assert not {get_task("parity").top_context(p, "retuning") for p in problems} & trained


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_smoke_profile_end_to_end_on_cuda(tmp_path, capsys):
    profile_file = write_profile(tmp_path)
    out = eval_cli(["--profile", profile_file, "--task", "parity", "--method", "retuning", "--dtype", "float16"],
                   capsys)
    assert out["device"].startswith("cuda") and out["dtype"] == "float16"
    measured = json.loads((Path(out["run"]) / "measurements.json").read_text())
    assert measured["device"] == "cuda" and measured["config"]["bf16"] == "auto"
    assert sum(r["n"] for r in out["by_size"]) > 0


@pytest.mark.parametrize("method", ["baseline", "scratchpad", "retuning"])
def test_evaluation_problems_are_never_training_problems_of_the_run(tmp_path, method):
    """Whatever the method, its training set's top contexts are excluded (DP's scratchpad prompt is its own)."""
    from retune.data import datasets as data
    from retune.tasks import get_task

    path = tmp_path / f"dp-{method}.jsonl"
    data.make("dp", method, path, "scaled", (1, 3), 40, seed=0, progress=False)
    trained = {r["input"] for r in data.read(path) if r.get("depth", 0) == 0}
    problems = pipeline.eval_problems("dp", (2, 4), 30, seed=0, exclude=trained)
    task = get_task("dp")
    assert problems and not [p for p in problems if task.top_context(p, method) in trained]
