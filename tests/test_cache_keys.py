"""Cache keys are fixed values, not whatever the code computes today: a trained run and an evaluation cached
before a change (a module moved, a recipe key added, a field renamed) must be found after it. The values below
were computed once from the smoke profile's addition x Re-Tuning run, seed 0; a change that alters one of them
makes every cached run or evaluation of that kind unreachable, and has to say so here."""
from retune.evaluation import pipeline
from retune.training import runs
from retune.config.profiles import load_profile

RUN_DIRECTORY = "addition-retuning-8fd4332b56fd25e8"  # <task>-<method>-<run key>
EVAL_KEY = "41e769e1260e"


def smoke(tmp_path):
    dirs = {key: str(tmp_path / key) for key in ("data", "runs", "results", "figures")}
    return load_profile("smoke", {"paths": dirs, "eval": {"device": "cpu"}})  # cpu: the same key on a GPU machine


def test_the_run_key_of_a_fixed_run_has_not_changed(tmp_path):
    """Builds the run's dataset (a few records, deterministic), trains nothing."""
    profile = smoke(tmp_path)
    description = runs.describe(profile, runs.RunSpec("addition", "retuning", 0))
    assert description.directory(tmp_path / "runs").name == RUN_DIRECTORY


def test_the_evaluation_key_of_a_fixed_evaluation_has_not_changed(tmp_path):
    profile = smoke(tmp_path)
    assert pipeline.eval_key(profile, "addition", "retuning", 0) == EVAL_KEY
    cache = pipeline.evaluation_cache(profile, tmp_path / "run", "addition", "retuning", 0)
    assert cache.name == f"addition-retuning-v0-{EVAL_KEY}.jsonl"
