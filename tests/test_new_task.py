"""Adding a task is one file. A task module written to disk (here a folder named by $RETUNE_TASK_DIRS, as a user's
own tasks; a file in retune/tasks/ is found the same way) is picked up by the registry, the data, the decoder and
evaluation, the profiles' defaults and the notebooks, with no change anywhere else. And each task file shows
its own prompts and targets for one small problem, kept equal to the code's rendering."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retune.tasks import METHODS, TASKS, render

ROOT = Path(__file__).resolve().parent.parent

DIGITSUM = '''
"""The sum of a digit list; each call drops the first digit."""
from retune.tasks import Node, Task
from retune.tasks.base import CALL_MARK, SOLUTION, parse_int


class DigitSum(Task):
    name = "digitsum"
    trained_max = 4

    def sample(self, size, rng):
        return [rng.randrange(10) for _ in range(size)]

    def size_of(self, problem):
        return len(problem)

    def solve(self, problem):
        return sum(problem)

    def prompt(self, digits):
        return f"Sum the digits {list(digits)}"

    def tree(self, problem):
        node = Node(self.prompt(problem[-1:]), [str(problem[-1])], size=1)
        for start in reversed(range(len(problem) - 1)):
            rest = problem[start:]
            node = Node(self.prompt(rest), [f"{CALL_MARK}{node.prompt}\\n", str(sum(rest))], [node], len(rest))
        return node

    def baseline(self, problem):
        return f"{self.prompt(problem)}\\nAnswer: ", str(sum(problem))

    def scratchpad(self, problem):
        running = " ".join(str(sum(problem[: i + 1])) for i in range(len(problem)))
        return self.prompt(problem) + SOLUTION, running

    def parse_answer(self, text):
        return parse_int(text, "sum")

    def parse_scratchpad(self, text):
        return self.parse_answer(text.split()[-1] if text.split() else text)
'''

CHECK = textwrap.dedent('''
    import json, random, sys
    from retune.data import datasets as data
    from retune.decoding.recursive import decode
    from retune.decoding.generators import OracleGenerator
    from retune.config.profiles import load_profile
    from retune.tasks import METHODS, TASKS, get_task

    out = {"tasks": list(TASKS)}
    task = get_task("digitsum")
    problems = [task.sample(n, random.Random(n)) for n in range(1, 9)]
    out["oracle"] = {m: all(t.correct and not t.error for t in decode(
        task, problems, m, OracleGenerator.for_problems(task, problems, m))) for m in METHODS}
    profile = load_profile("smoke")
    out["profile"] = [profile.tasks, profile.train.sizes["digitsum"], profile.eval.sizes["digitsum"]]
    json.dump(out, sys.stdout)
''')


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    (folder / "digitsum.py").write_text(DIGITSUM)
    return folder


def run(argv, task_dir, **kw):
    env = dict(os.environ, RETUNE_TASK_DIRS=str(task_dir))
    return subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)


def test_a_task_file_on_disk_reaches_the_registry_decoder_and_profile_defaults(task_dir):
    done = run([sys.executable, "-c", CHECK], task_dir)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tasks"] == [*TASKS, "digitsum"]  # the registered ones first, then added ones
    assert all(out["oracle"].values()) and set(out["oracle"]) == set(METHODS)
    # the smoke profile names three tasks in its sizes: the new one takes its own defaults, key by key
    assert out["profile"] == [[*TASKS, "digitsum"], 4, [2, 8]]
    assert "digitsum" not in TASKS  # this process never saw it: nothing was patched


@pytest.mark.slow
def test_a_task_file_on_disk_is_built_evaluated_and_shown_by_a_notebook(task_dir, tmp_path):
    retune = [sys.executable, "-m", "retune.cli"]
    built = run(retune + ["data", "--task", "digitsum", "--method", "retuning", "--sizes", "1-4", "--n", "5",
                          "--out", str(tmp_path / "d.jsonl"), "--quiet"], task_dir)
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["records"] > 0
    paths = [a for k in ("data", "runs", "results", "figures") for a in ("--set", f"paths.{k}={tmp_path / k}")]
    oracle = run(retune + ["eval", "--backend", "oracle", "--task", "digitsum", "--method", "retuning",
                           "--profile", "smoke", *paths], task_dir)
    assert oracle.returncode == 0, oracle.stderr
    summary = json.loads(oracle.stdout)
    assert summary["sizes"] == [2, 8] and all(r["accuracy"] == 1.0 for r in summary["by_size"])
    notebook = textwrap.dedent(f'''
        from retune.config.profiles import load_profile
        from retune.reproduce.runner import reproduce
        profile = load_profile("smoke", {{"tasks": ["digitsum"], "paths": {{k: "{tmp_path}/" + k for k in
                                          ("data", "runs", "results", "figures")}}}})
        reproduce(profile, only="01", executed_dir="{tmp_path / 'executed'}", progress=False)
    ''')
    shown = run([sys.executable, "-c", notebook], task_dir)
    assert shown.returncode == 0, shown.stderr[-3000:]
    table = (tmp_path / "results" / "datasets.csv").read_text()
    assert "digitsum" in table and "addition" not in table


@pytest.mark.parametrize("name", TASKS)
def test_each_task_file_shows_its_prompts_and_targets_as_the_code_renders_them(name):
    path = ROOT / "retune" / "tasks" / f"{name}.py"
    assert "<!-- rendered: " in path.read_text()
    assert render.sync(path) == []  # rewrite with: python -m retune.tasks.render retune/tasks/NAME.py --write
