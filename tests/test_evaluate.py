"""Evaluation's pure functions: intervals, error analysis on planted faults, teacher-forced exactness."""
import random
from collections import Counter

import pytest

from retune.decoding.recursive import Limits, decode
from retune.decoding.generators import Generation, HFGenerator, OracleGenerator
from retune.evaluation.scoring import first_departure, oracle_tree, teacher_forced, wilson
from retune.tasks import get_task


def test_wilson():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[1] == 1.0


class Planted:
    """The oracle, except for one context whose target is replaced."""

    def __init__(self, oracle, context, text):
        self.oracle, self.context, self.text = oracle, context, text

    def generate(self, contexts, max_new_tokens):
        out = self.oracle.generate(contexts, max_new_tokens)
        return [Generation(self.text, True, g.tokens_in, len(self.text) + 1) if c == self.context else g
                for c, g in zip(contexts, out)]


def context_at(task, problem, depth, turn):
    """The oracle context of `turn` in the node at `depth` (first such node in pre-order)."""
    node = next(n for n, d in task.tree(problem).walk() if d == depth)
    return node.contexts("retuning")[turn]


@pytest.mark.parametrize("depth,turn,text,kind", [
    (2, 0, "Call: 1 + 2\n", "wrong_call"),        # depth 2 calls the wrong sub-problem
    (0, 0, "Carry 0, Output 0", "wrong_call"),     # answers where it should call
    (5, 0, "Carry 1, Output 4", "wrong_base"),     # the 1-digit base case
    (3, 1, "Carry 0, Output 111", "wrong_combination"),
    (1, 0, "Call: 34567 + 12345", "malformed"),    # no newline
    (0, 1, "Carry 0, Output", "malformed"),        # unparseable at the top
])
def test_first_departure_planted(depth, turn, text, kind):
    task = get_task("addition")
    problem = ("123456", "654321")
    context, target, _ = context_at(task, problem, depth, turn)
    assert text != target
    oracle = OracleGenerator.for_problems(task, [problem], "retuning")
    trace = decode(task, [problem], "retuning", Planted(oracle, context, text))[0]
    assert not trace.correct
    d = first_departure(trace, task.tree(problem))
    assert (d.kind, d.depth, d.got, d.expected) == (kind, depth, text, target)


def test_first_departure_limit_and_dp_second_call():
    task = get_task("addition")
    problem = ("123456", "654321")
    oracle = OracleGenerator.for_problems(task, [problem], "retuning")
    trace = decode(task, [problem], "retuning", oracle, Limits(depth=3))[0]
    d = first_departure(trace, task.tree(problem))
    assert (d.kind, d.depth, d.error) == ("limit", 3, "depth_limit")  # the call itself agreed with the oracle
    dp = get_task("dp")
    x = [2, -3, 4, 1]
    context, target, kind = dp.tree(x).contexts("retuning")[1]  # the second top-level call
    trace = decode(dp, [x], "retuning", Planted(OracleGenerator.for_problems(dp, [x], "retuning"), context,
                                                target.replace("True", "False")))[0]
    d = first_departure(trace, dp.tree(x))
    assert (d.kind, d.depth) == ("wrong_call", 0)


def test_first_departure_single_context_and_correct():
    task = get_task("parity")
    problem = [1, 0, 1]
    top = task.top_context(problem, "baseline")
    trace = decode(task, [problem], "baseline", Planted(OracleGenerator({}), top, "1"))[0]
    assert first_departure(trace, oracle_tree(task, problem, "baseline")).kind == "wrong_base"
    ok = decode(task, [problem], "retuning", OracleGenerator.for_problems(task, [problem], "retuning"))[0]
    assert first_departure(ok, task.tree(problem)) is None


# --- teacher forcing ---------------------------------------------------------------------------------------
def test_teacher_forced_oracle_step_counts():
    """With the oracle every context is exact, and the steps are the oracle trees' contexts by depth and kind."""
    dp = get_task("dp")
    x = [1, -2, 3, 4]
    tf = teacher_forced(dp, [x], "retuning", OracleGenerator.for_problems(dp, [x], "retuning"))
    assert tf["trace_exact"] == [True]
    expected = {(0, "call"): [2, 2], (4, "base"): [2, 2]}  # the top level is two calls, no answer turn
    expected.update({(d, k): [2, 2] for d in (1, 2, 3) for k in ("call", "combine")})  # the dp and chosen chains
    assert tf["steps"] == expected
    addition = get_task("addition")
    streams = {size: random.Random(f"eval-addition-{size}-0") for size in (1, 6)}
    problems = [addition.sample(size, streams[size]) for size in (1, 6) for _ in range(3)]
    tf = teacher_forced(addition, problems, "retuning", OracleGenerator.for_problems(addition, problems, "retuning"))
    counts = Counter()
    for p in problems:
        for node, depth in addition.tree(p).walk():
            for context, target, kind in node.contexts("retuning"):
                counts[(depth, kind)] += 1
    assert {k: v[1] for k, v in tf["steps"].items()} == counts  # random problems share no context here
    assert all(right == n for right, n in tf["steps"].values())


@pytest.mark.slow
def test_teacher_forced_exact_implies_free_decoding_correct(parity_model):
    model, tok = parity_model
    task = get_task("parity")
    problems = [list(map(int, f"{i:0{n}b}")) for n in (1, 2, 3, 4) for i in range(2**n)]
    generator = HFGenerator(model, tok)
    exact = teacher_forced(task, problems, "retuning", generator)["trace_exact"]
    traces = decode(task, problems, "retuning", generator)
    assert any(exact)  # not vacuous
    for e, t in zip(exact, traces):
        if e:
            assert t.correct and t.error is None
    # per context, both ways: exact <=> greedy generation writes the target and stops
    targets = {ex.input: ex.output for p in problems for ex in task.examples(p, "retuning")}
    contexts = list(targets)
    right = generator.exact(contexts, [targets[c] for c in contexts])
    free = generator.generate(contexts, [len(targets[c]) + 1 for c in contexts])
    assert right == [g.stopped and g.text == targets[c] for c, g in zip(contexts, free)]
    assert 0 < sum(right) < len(right)
