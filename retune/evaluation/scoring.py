"""Evaluation's pure functions: Wilson intervals, oracle call trees, where a trace first departs from its oracle
tree, and exact teacher-forced evaluation.

- `wilson(correct, n)` is the 95 % interval every table reports (retune.analysis.report).
- `first_departure(...)` names where a failed problem first leaves its oracle call tree.
- `teacher_forced(...)` checks every unique context of the oracle trees in batched forward passes.

Which problems are evaluated, with which model, and the `retune eval` command live in retune.evaluation.pipeline and retune.commands.eval: the
notebooks and the command share that one path.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from ..decoding.recursive import LIMIT_KINDS, Trace, TraceNode
from ..tasks import Node, Task, get_method

DEPARTURE_KINDS = ("wrong_call", "wrong_base", "wrong_combination", "malformed", "limit")


# --- intervals -----------------------------------------------------------------------------------------------
def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; (0, 1) when there is no data. Sound near 0 and 1, where
    out-of-distribution accuracies live (the normal approximation would give intervals outside [0, 1])."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# --- oracle trees ------------------------------------------------------------------------------------------------
def oracle_tree(task: Task, problem: Any, method: str) -> Node:
    """The call tree the method's decoding should produce: the task's tree for recursive methods, a single
    context (its top context and its one target) otherwise."""
    if get_method(method).recursive:
        return task.tree(problem)
    example = task.examples(problem, method)[0]
    return Node(example.input, [example.output])


# --- error analysis --------------------------------------------------------------------------------------------
@dataclass
class Departure:
    """Where a decoded tree first leaves the oracle tree, in decoding order (a depth-first walk)."""

    kind: str  # one of DEPARTURE_KINDS
    depth: int
    error: str | None  # the decoder's error kind when the departure ended decoding
    expected: str | None  # the oracle's turn there (None if there is none)
    got: str


def first_departure(trace: Trace, oracle: Node) -> Departure | None:
    """The first turn where `trace` departs from `oracle` (None: it never does).

    A turn ending decoding with a limit error is `limit`, with a malformed-output error `malformed` (even when
    the turn agrees with the oracle, e.g. a right call past a too-small depth limit). Otherwise a turn that
    differs is classified by what the oracle wanted there: a call (`wrong_call`), a base case (`wrong_base`;
    single-context methods answer in one base-case-like turn) or a combination (`wrong_combination`).
    """
    return _depart(trace.root, oracle)


def _depart(node: TraceNode, oracle: Node) -> Departure | None:
    """Turn by turn, descending into a call's child before the caller's next turn; an explicit stack of
    (node, oracle node, next turn index), as traces can be deeper than Python's recursion limit."""
    stack = [(node, oracle, 0)]
    while stack:
        node, oracle, i = stack.pop()
        if i >= len(node.turns):
            continue
        turn = node.turns[i]
        expected = oracle.turns[i] if i < len(oracle.turns) else None
        if i == len(node.turns) - 1 and node.error:
            kind = "limit" if node.error in LIMIT_KINDS else "malformed"
            return Departure(kind, node.depth, node.error, expected, turn)
        if turn != expected:
            wanted = "call" if i < len(oracle.children) else oracle.kind_of_last
            kind = {"call": "wrong_call", "base": "wrong_base", "combine": "wrong_combination"}[wanted]
            return Departure(kind, node.depth, None, expected, turn)
        stack.append((node, oracle, i + 1))
        if i < len(node.children) and i < len(oracle.children):
            stack.append((node.children[i], oracle.children[i], 0))
    return None


# --- teacher forcing -----------------------------------------------------------------------------------------
def teacher_forced(task: Task, problems: Sequence[Any], method: str, generator) -> dict:
    """Exact evaluation in one pass: every unique context of the problems' oracle trees, teacher-forced.

    A context is right when every greedy (argmax) token equals its target token, EOS included; a problem is
    *trace-exact* when all contexts of its oracle tree are right.

    Relation to free decoding: under greedy decoding a trace-exact problem is always solved correctly. By
    induction over the decoding order: the first context is the oracle's top context; if a context equals the
    oracle's, the greedy generation equals its target (that is what exactness checked, EOS included, so the
    turn also stops where the target stops), hence the next context — the child's fresh context after a call,
    or the caller's context with the oracle's return appended — is again the oracle's. So free decoding writes
    the oracle tree turn for turn and ends with the oracle's answer. (This assumes the forward pass agrees in
    its argmax with the KV-cached generation, true up to floating-point ties; the converse does not hold: a
    wrong step can still lead to a right answer.) The limits never interfere, as they are sized to the oracle.

    Returns {"trace_exact": [bool per problem], "steps": {(depth, kind): [right, total]}} over unique contexts.
    `generator` needs an `exact(contexts, targets)` method (HFGenerator, OracleGenerator).
    """
    recursive = get_method(method).recursive
    per_problem, unique = [], {}
    for problem in problems:
        tree = oracle_tree(task, problem, method)
        rows = []
        for node, depth in tree.walk():
            contexts = node.contexts(method) if recursive else [(node.prompt, node.turns[0], "full")]
            for context, target, kind in contexts:
                unique.setdefault(context, (target, depth, kind))
                rows.append(context)
        per_problem.append(rows)
    contexts = list(unique)
    right = dict(zip(contexts, generator.exact(contexts, [unique[c][0] for c in contexts])))
    steps: dict = defaultdict(lambda: [0, 0])
    for context, (_, depth, kind) in unique.items():
        steps[(depth, kind)][0] += int(right[context])
        steps[(depth, kind)][1] += 1
    return {"trace_exact": [all(right[c] for c in rows) for rows in per_problem], "steps": dict(steps),
            "contexts": len(contexts)}
