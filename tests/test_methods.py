"""The method registry (retune/tasks/methods.py): its order and attributes, its error message, and that nothing
else in retune/ names a method by a string literal."""
import ast
from pathlib import Path

import pytest

from retune import inspect, report
from retune.tasks import METHODS, Method, get_method, get_task
from retune.tasks.methods import ABLATION_STUDY, MAIN_METHODS

RETUNE = Path(__file__).resolve().parent.parent / "retune"
REGISTRY = RETUNE / "tasks" / "methods.py"


def test_the_registry_is_in_the_papers_order():
    assert list(METHODS) == ["baseline", "scratchpad", "retuning", "inline", "no_carryover"]
    assert [m.order for m in METHODS.values()] == sorted(m.order for m in METHODS.values())
    assert all(name == m.name and isinstance(m, Method) for name, m in METHODS.items())
    assert len({m.colour for m in METHODS.values()}) == len(METHODS)  # one colour each
    assert MAIN_METHODS == ("baseline", "scratchpad", "retuning")
    assert ABLATION_STUDY == ("retuning", "inline", "no_carryover")  # the reference first, then its ablations


@pytest.mark.parametrize("name, main, recursive, writes_calls, returns, ablates, display", [
    ("baseline", True, False, False, False, None, "Baseline"),
    ("scratchpad", True, False, False, False, None, "Scratchpad"),
    ("retuning", True, True, True, True, None, "Re-Tuning"),
    ("inline", False, False, True, True, "retuning", "Inline"),
    ("no_carryover", False, True, True, False, "retuning", "No carry-over"),
])
def test_each_method_knows_what_it_is(name, main, recursive, writes_calls, returns, ablates, display):
    m = get_method(name)
    assert (m.main, m.recursive, m.writes_calls, m.returns, m.ablates, m.display) == \
        (main, recursive, writes_calls, returns, ablates, display)


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
