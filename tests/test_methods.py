"""The method registry (retune/tasks/methods.py): its order and attributes, its error message, and that nothing
else in retune/ names a method by a string literal."""
import ast
import random
from pathlib import Path

import pytest

from retune.analysis import inspector as inspect, report
from retune.tasks import METHODS, TASKS, Method, get_method, get_task
from retune.tasks.methods import ABLATION_STUDY, MAIN_METHODS

RETUNE = Path(__file__).resolve().parent.parent / "retune"
REGISTRY = RETUNE / "tasks" / "methods.py"


def test_the_registry_orders_the_main_methods_first_and_each_ablation_after_its_reference():
    """Tables and figures follow the registry: the paper's methods, then the ablations, one colour each."""
    names = list(METHODS)
    assert all(name == m.name and isinstance(m, Method) for name, m in METHODS.items())
    assert [m.order for m in METHODS.values()] == sorted(m.order for m in METHODS.values())
    assert len({m.colour for m in METHODS.values()}) == len(METHODS)
    assert names[:len(MAIN_METHODS)] == list(MAIN_METHODS) and all(METHODS[n].main for n in MAIN_METHODS)
    for name, m in METHODS.items():
        if m.ablates:
            assert not m.main and METHODS[m.ablates].main and names.index(m.ablates) < names.index(name)
            assert ABLATION_STUDY.index(m.ablates) < ABLATION_STUDY.index(name)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("task_name", TASKS)
def test_what_a_method_says_it_is_is_what_it_writes(name, task_name):
    """Its attributes against its training examples for a problem that needs calls: one context or several,
    calls written or not, a callee's answer back in the caller's context or not."""
    m, task = get_method(name), get_task(task_name)
    problem = task.sample(4, random.Random(0))
    examples = m.examples(task, problem)
    written = "".join(e.input + e.output for e in examples)
    assert (len(examples) > 1) == m.recursive
    assert ("Call: " in written) == m.writes_calls
    assert ("Return: " in written) == m.returns


def test_return_text_is_the_methods():
    assert get_method("retuning").return_text("42") == "Return: 42\nAnswer: "
    assert get_method("inline").return_text("42") == "Return: 42\nAnswer: "
    assert get_method("no_carryover").return_text("42") == "Answer: "  # the caller goes on without the answer


@pytest.mark.parametrize("bad", ["cot", "Retuning", "", None, ["retuning"]])
def test_get_method_names_the_allowed_values(bad):
    with pytest.raises(ValueError) as err:
        get_method(bad)
    message = str(err.value)
    assert message.startswith("method must be one of baseline, scratchpad, retuning, inline, no_carryover")
    assert repr(bad) in message


def test_a_task_renders_and_reads_through_the_method():
    task = get_task("addition")
    for name, m in METHODS.items():
        assert task.examples(("45", "67"), name) == m.examples(task, ("45", "67"))
        answer = m.examples(task, ("45", "67"))[-1].output if not m.recursive else task.tree(("45", "67")).turns[-1]
        assert task.final_answer(name, answer) == m.final_answer(task, answer) == 112


def test_report_and_inspector_orders_come_from_the_registry():
    import seaborn as sns

    assert report.METHOD_ORDER == tuple(METHODS)
    palette = report.method_palette()
    assert list(palette) == list(METHODS)
    assert list(palette.values()) == list(sns.color_palette("colorblind", 5))  # the colours figures always had
    # the inspector shows Re-Tuning's failures first, then scratchpad, baseline, then the ablations
    assert sorted(METHODS, key=inspect.method_rank) == ["retuning", "scratchpad", "baseline", "inline",
                                                        "no_carryover"]
    assert sorted(["zzz", "aaa", "inline", "retuning"], key=inspect.method_rank) == ["retuning", "inline", "aaa",
                                                                                    "zzz"]


# --- nothing else names a method ---------------------------------------------------------------------------------
def method_literals(source: str) -> list[tuple[int, str]]:
    """(line, name) of every string constant in `source` that is exactly a registered method's name (f-string
    pieces and the parts of tuples, comparisons and defaults included)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in METHODS]


def test_the_scanner_catches_a_planted_comparison(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def f(method):\n    if method == "inline":\n        return 1\n'
                       '    return method in ("retuning", \'no_carryover\') or f"{method == \'baseline\'}"\n')
    assert sorted(method_literals(planted.read_text())) == [(2, "inline"), (4, "baseline"), (4, "no_carryover"),
                                                         (4, "retuning")]
    assert {name for _, name in method_literals(REGISTRY.read_text())} == set(METHODS)  # the registry's own


def test_method_names_are_literals_only_in_the_registry():
    """Task files' prompt texts may mention a method in a sentence, never as the whole string."""
    found = {str(path.relative_to(RETUNE.parent)): hits for path in sorted(RETUNE.rglob("*.py"))
             if path != REGISTRY and (hits := method_literals(path.read_text(encoding="utf-8")))}
    assert found == {}, "compare a method's attributes (retune.tasks.get_method), not its name"


def test_the_tasks_layer_imports_nothing_above_it():
    for path in (RETUNE / "tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("retune"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("retune") for a in node.names), path.name
