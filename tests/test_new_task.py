"""Adding a task is one file: a Task subclass with the task-specific parts. This one (the sum of a digit list,
each call dropping the first digit) is registered by discovery, builds data for every method and is solved by
the oracle through the recursive decoder, with no change anywhere else."""
import random

from retune import data
from retune.decode import OracleGenerator, decode
from retune.tasks import METHODS, Node, Task, _discover
from retune.tasks.base import CALL_MARK, SOLUTION, parse_int


class DigitSum(Task):
    name = "digitsum"

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
            node = Node(self.prompt(rest), [f"{CALL_MARK}{node.prompt}\n", str(sum(rest))], [node], len(rest))
        return node

    def baseline(self, problem):
        return f"{self.prompt(problem)}\nAnswer: ", str(sum(problem))

    def scratchpad(self, problem):
        running = " ".join(str(sum(problem[: i + 1])) for i in range(len(problem)))
        return self.prompt(problem) + SOLUTION, running

    def parse_answer(self, text):
        return parse_int(text, "sum")

    def parse_scratchpad(self, text):
        return self.parse_answer(text.split()[-1] if text.split() else text)


def test_a_task_file_is_discovered_and_runs_everywhere(monkeypatch, tmp_path):
    assert _discover()["digitsum"] is DigitSum
    import retune.data as data_module
    import retune.tasks as tasks

    monkeypatch.setitem(tasks.TASKS, "digitsum", DigitSum)
    monkeypatch.setitem(data_module.TASKS, "digitsum", DigitSum)
    task = tasks.get_task("digitsum")
    problems = [task.sample(n, random.Random(n)) for n in range(1, 13)]
    for method in METHODS:
        traces = decode(task, problems, method, OracleGenerator.for_problems(task, problems, method))
        assert all(t.correct and not t.error for t in traces), method
    manifest = data.make("digitsum", "retuning", tmp_path / "d.jsonl", "scaled", (1, 4), 5, 0, progress=False)
    assert manifest["records"] > 0 and set(manifest["by_kind"]) >= {"call", "combine", "base"}
