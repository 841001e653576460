"""docs/protocol.md against the code: every example in it is what the code renders now; the DP top level is two
contexts in the data `retune data` writes."""
import random
from collections import Counter
from pathlib import Path

import pytest

from retune.data import datasets as data
from retune.cli import main
from retune.tasks import METHODS, TASKS, get_task
from retune.tasks.render import BLOCK, render, render_spec, sync

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_every_example_in_the_protocol_is_rendered_by_the_code_now():
    stale = sync(DOC)
    assert stale == [], f"regenerate with: python -m retune.tasks.render docs/protocol.md --write ({stale})"


def test_the_protocol_shows_every_task_and_method_and_the_variants():
    specs = [m["spec"].split(" ", 2) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]
    shown = Counter((task, method) for task, method, _ in specs)
    assert shown == Counter({(t, m): 1 for t in TASKS for m in (*METHODS, "variants")})


def test_sync_finds_and_rewrites_stale_blocks(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n\n<!-- rendered: parity retuning [1, 0] -->\n```text\nold\n```\n", encoding="utf-8")
    assert sync(doc) == ["parity retuning [1, 0]"]
    assert sync(doc, write=True) == ["parity retuning [1, 0]"] and sync(doc) == []
    assert render_spec("parity retuning [1, 0]") in doc.read_text(encoding="utf-8")
    doc.write_text(doc.read_text(encoding="utf-8") + "\n```python\nprint(1)\n```\n", encoding="utf-8")
    with pytest.raises(ValueError, match="every example must be rendered"):
        sync(doc)


def test_rendered_contexts_are_the_training_examples():
    """Removing the « » marks from a rendering gives each context's final text; every training example's input
    and target sit in it in order."""
    task = get_task("dp")
    text = render(task, [3, -1, 2], "retuning")
    plain = text.replace("«", "").replace("»", "")
    for ex in task.examples([3, -1, 2], "retuning"):
        assert ex.input + ex.output in plain
    assert text.count("«") == len(task.examples([3, -1, 2], "retuning"))
    assert "the context ends when #5 returns; its return is the answer: [1, 2, 1]" in text


def test_retune_data_writes_two_top_level_examples_per_dp_problem(tmp_path, capsys):
    out = tmp_path / "dp.jsonl"
    assert main(["data", "--task", "dp", "--method", "retuning", "--sizes", "1-6", "--n", "7", "--out", str(out),
                 "--quiet"]) == 0
    records = data.read(out)
    top = [r for r in records if r["depth"] == 0]
    assert len(top) == 2 * 6 * 7  # scaled: no de-duplication, no re-weighting
    assert all(r["kind"] == "call" and r["output"].startswith("Call: ") for r in top)
    prompts = Counter(r["input"].split("\nSolution: ")[0] for r in top)
    assert set(prompts.values()) <= {2, 4, 6}  # two per problem (a list drawn twice counts twice)
    assert sorted(Counter(r["input"].count("Return: ") for r in top).items()) == [(0, 42), (1, 42)]  # none past


def test_paper_dp_data_keeps_two_top_level_contexts_before_reweighting():
    task, seen = get_task("dp"), set()
    problems = [list(x) for x in random.Random(0).sample([[a, b] for a in range(-5, 6) for b in range(-5, 6)], 50)]
    examples = [e for p in problems for e in task.examples(p, "retuning", seen)]
    assert Counter(e.depth for e in examples)[0] == 2 * len(problems)


@pytest.mark.parametrize("name", list(TASKS))
def test_top_level_shape_is_the_same_for_every_problem(name):
    """Whether a top level ends at its last return (and after how many calls) is the task's, not the problem's:
    the decoder relies on it."""
    task, rng = get_task(name), random.Random(5)
    shapes = set()
    for size in range(1, 12):
        top = task.tree(task.sample(size, rng))
        shapes.add((top.answer_is_last_return, len(top.children) if top.answer_is_last_return else 0))
        assert len(top.contexts("retuning")) == len(top.turns) - top.answer_is_last_return
    assert len(shapes) == 1
    assert shapes == ({(True, 2)} if name == "dp" else {(False, 0)})

