"""retune.experiments: evaluation problems are fresh (never a trained top context) and reproducible, the run
grids follow the profile, and evaluations are cached beside the run."""
from retune import experiments as ex
from retune.profiles import load_profile
from retune.tasks import get_task


def smoke(tmp_path, **over):
    dirs = {k: str(tmp_path / k) for k in ("data_dir", "runs_dir", "results_dir", "figures_dir")}
    return load_profile("smoke", dirs, over)


def test_eval_problems_are_reproducible_and_avoid_the_excluded():
    first = ex.eval_problems("addition", (3, 4), 20, seed=0)
    assert first == ex.eval_problems("addition", (3, 4), 20, seed=0)
    assert first != ex.eval_problems("addition", (3, 4), 20, seed=1)
    task = get_task("addition")
    banned = {task.top_context(p, "retuning") for p in first[:10]}
    again = ex.eval_problems("addition", (3, 4), 20, seed=0, exclude=banned)
    assert len(again) == 40 and not {task.top_context(p, "retuning") for p in again} & banned


def test_small_problem_spaces_give_fewer_problems_not_repeats():
    problems = ex.eval_problems("parity", (2, 2), 10, seed=0)
    assert sorted(map(tuple, problems)) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_grids_follow_the_profile(tmp_path):
    p = smoke(tmp_path, efficiency_tasks=["addition"], efficiency_methods=["retuning"], efficiency_n=[2, 4],
              variant_tasks=["dp"], variants=[0, 1], ablation_tasks=["parity"], seeds=[0, 1])
    assert len(ex.main_runs(p)) == 3 * 3 * 2
    assert {(r["task"], r["method"], r["n"]) for r in ex.efficiency_runs(p)} == {("addition", "retuning", 2),
                                                                                 ("addition", "retuning", 4)}
    assert {(r["task"], r["variant"]) for r in ex.variant_runs(p)} == {("dp", 0), ("dp", 1)}
    assert {(r["task"], r["method"]) for r in ex.ablation_runs(p)} == {("parity", m) for m in p["ablations"]}


def test_evaluation_never_sees_a_training_problem_and_is_cached(tmp_path):
    p = smoke(tmp_path, eval_sizes={"addition": [1, 3], "dp": [2, 3], "parity": [1, 4]})
    run = ex.trained(p, "parity", "baseline", 0)
    trained = ex.trained_contexts(run)
    traces = ex.evaluate_run(p, run, "parity", "baseline", 0, progress=False)
    task = get_task("parity")
    assert traces and not {task.top_context(t.problem, "baseline") for t in traces} & trained
    cached = list((run / "evals").glob("*.jsonl"))
    assert len(cached) == 1
    assert [t.problem for t in ex.evaluate_run(p, run, "parity", "baseline", 0, progress=False)] == \
        [t.problem for t in traces]
    rows = ex.rows(traces, seed=0)
    assert len(rows) == len(traces) and all(r["correct"] == t.correct for r, t in zip(rows, traces))


def test_per_task_training_budget_applies_to_every_method_of_the_task(tmp_path):
    p = smoke(tmp_path, train_by_task={"dp": {"max_steps": 7, "batch_size": 4}})
    assert ex.train_config(p, 3, "dp") == dict(p["train"], max_steps=7, batch_size=4, seed=3)
    assert ex.train_config(p, 3, "addition") == dict(p["train"], seed=3)


class Killed(Exception):
    """Stands for the process being killed mid-evaluation."""


def test_an_interrupted_evaluation_resumes_from_its_last_saved_chunk(tmp_path, monkeypatch):
    p = smoke(tmp_path, eval_sizes={"parity": [3, 6]}, eval_problems_per_size=4, eval_chunk=5)
    run = ex.trained(p, "parity", "retuning", 0)
    whole = ex.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    assert len(whole) > 10
    for f in (run / "evals").glob("*.jsonl"):
        f.unlink()

    real_decode, calls, die_at = ex.decode, [], [2]

    def decode_then_die(task, problems, *args, **kwargs):
        calls.append(len(problems))
        if len(calls) == die_at[0]:
            raise Killed
        return real_decode(task, problems, *args, **kwargs)

    monkeypatch.setattr(ex, "decode", decode_then_die)
    try:
        ex.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    except Killed:
        pass
    assert not list((run / "evals").glob("*.jsonl"))  # no finished file after an interruption
    calls.clear()
    die_at[0] = None
    resumed = ex.evaluate_run(p, run, "parity", "retuning", 0, n=4, progress=False)
    assert sum(calls) == len(whole) - 5  # the first chunk was not decoded again
    assert [t.to_dict() for t in resumed] == [t.to_dict() for t in whole]
    assert not list((run / "evals").glob("*.parts*"))
