"""The machinery every task shares: the oracle call tree, the protocol's marks, the Task interface and parsers.

A task file only says what is specific to it (sampler, solver, prompts, renderers, parsers); everything that
follows from the Re-Tuning protocol (docs/protocol.md, "The Re-Tuning protocol") lives here and in
retune.tasks.methods (how each method renders a call tree into training examples and reads its answer), so a new
task is one new file.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

SOLUTION = "\nSolution: "
BASELINE_SUFFIX = "\nAnswer: "
ANSWER_MARK = "\nAnswer: "
CALL_MARK = "Call: "


def _method(name: str):
    """The registered method called `name` (retune.tasks.methods; imported here, where it is used, because it
    builds on this module's Node and Example); a ValueError naming the allowed values otherwise."""
    from .methods import get_method

    return get_method(name)


class Malformed(ValueError):
    """Model text that cannot be read; `kind` names why (recorded in traces, never raised past the decoder)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


@dataclass(eq=False, repr=False)
class Node:
    """One context of the oracle call tree.

    `turns` are the texts the model writes in this context, in order; turn i < len(children) is a call turn that
    ends in `Call: <children[i].prompt>\\n`, and the last turn is the node's answer (a base case when it is the
    only turn, a combination otherwise).

    `answer_is_last_return`: the context ends as soon as its last call returns, and that return is its answer
    (the dynamic-programming top level; docs/protocol.md, "DP"). Its final turn, then a copy of that return, is
    neither a training target nor generated wherever returns come back; only the ablations write it (no_carryover
    has no return to stop at, inline writes every context into one text).
    """

    prompt: str
    turns: list[str]
    children: list["Node"] = field(default_factory=list)
    size: int = 0  # the size of the problem this context solves (digits, length, bits)
    meta: dict = field(default_factory=dict)  # task-specific facts the paper's re-sampling needs
    answer_is_last_return: bool = False

    def __post_init__(self):
        assert len(self.turns) == len(self.children) + 1, "one turn per call, plus the final turn"
        if self.answer_is_last_return:
            assert self.children and self.turns[-1] == self.children[-1].answer, "the final turn is the last return"

    def __eq__(self, other) -> bool:  # iterative (the generated one recurses as deep as the tree)
        return isinstance(other, Node) and self.to_dict() == other.to_dict() and all(
            (a.size, a.meta) == (b.size, b.meta) for (a, _), (b, _) in zip(self.walk(), other.walk()))

    def __repr__(self) -> str:
        return f"Node(prompt={self.prompt[:60]!r}, size={self.size}, children={len(self.children)})"

    @property
    def answer(self) -> str:
        return node_answer(self.turns[-1])

    @property
    def kind_of_last(self) -> str:
        return "base" if not self.children else "combine"

    def walk(self, depth: int = 0, seen: set | None = None):
        """Yield (node, depth) in pre-order; with `seen`, skip nodes whose prompt is in it (and their subtrees:
        the same prompt always has the same subtree) and add the others. Iterative: trees are as deep as the
        problem is large."""
        stack = [(self, depth)]
        while stack:
            node, d = stack.pop()
            if seen is not None:
                if node.prompt in seen:
                    continue
                seen.add(node.prompt)
            yield node, d
            stack.extend((child, d + 1) for child in reversed(node.children))

    def ends_at_last_return(self, method: str) -> bool:
        """Whether decoding `method` (a recursive one) stops this context when its last call returns."""
        return _method(method).ends_at_last_return(self)

    def contexts(self, method: str) -> list[tuple[str, str, str]]:
        """(context, target, kind) for each turn of this node, as a recursive method's decoder sees them."""
        return _method(method).contexts(self)

    def to_dict(self) -> dict:
        root = {"prompt": self.prompt, "turns": self.turns, "children": []}
        stack = [(self, root)]
        while stack:
            node, d = stack.pop()
            for child in node.children:
                cd = {"prompt": child.prompt, "turns": child.turns, "children": []}
                d["children"].append(cd)
                stack.append((child, cd))
        return root


def node_answer(final_turn: str) -> str:
    """A context's answer as returned to its caller: the text after its last `\\nAnswer: ` (or the whole turn)."""
    return final_turn.rsplit(ANSWER_MARK, 1)[-1]


@dataclass(frozen=True)
class Example:
    input: str
    output: str
    depth: int = 0
    kind: str = "full"  # call / combine / base for recursive methods, full for single-context methods
    size: int = 0
    meta: dict = field(default_factory=dict, compare=False)


class Task:
    """A task spec. Subclasses fill in the task-specific parts; `examples` derives every method's data."""

    name: str = ""
    size_name: str = "size"
    variants: int = 1  # number of prompt phrasings; 0 is the paper's
    depth_limit: Callable[[int], int] = staticmethod(lambda size: 2 * size)
    max_size: int = 100  # the largest size the task supports (data, oracle, traces); each task declares its own
    trained_max: int = 8  # default in-distribution edge: training on sizes 1..this, evaluation on 2..twice it
    order: int = 100  # place in tables and figures (the paper's tasks first, then added ones by name)

    @classmethod
    def check_size(cls, size: int) -> None:
        """A ValueError naming the allowed range when `size` is beyond what this task supports."""
        if not 1 <= size <= cls.max_size:
            raise ValueError(f"size must be in 1..{cls.max_size} for task {cls.name!r} ({cls.size_name}); "
                             f"got {size}")

    def __init__(self, variant: int = 0):
        if not 0 <= variant < self.variants:
            raise ValueError(f"variant must be in 0..{self.variants - 1} for task {self.name!r}, got {variant}")
        self.variant = variant

    # --- task-specific ---------------------------------------------------------------------------------
    def sample(self, size: int, rng: random.Random) -> Any:
        raise NotImplementedError

    def size_of(self, problem: Any) -> int:
        raise NotImplementedError

    def solve(self, problem: Any) -> Any:
        raise NotImplementedError

    def tree(self, problem: Any) -> Node:
        raise NotImplementedError

    def baseline(self, problem: Any) -> tuple[str, str]:
        raise NotImplementedError

    def scratchpad(self, problem: Any) -> tuple[str, str]:
        raise NotImplementedError

    def parse_answer(self, text: str) -> Any:
        """The final answer from a Re-Tuning top-level answer text; raises Malformed."""
        raise NotImplementedError

    def parse_baseline(self, text: str) -> Any:
        return self.parse_answer(text)

    def parse_scratchpad(self, text: str) -> Any:
        raise NotImplementedError

    # --- derived -------------------------------------------------------------------------------------
    def examples(self, problem: Any, method: str, seen: set | None = None) -> list[Example]:
        """Training examples of one problem, as `method` renders it (retune.tasks.methods); `seen` de-duplicates
        recursive methods' contexts across problems by prompt."""
        return _method(method).examples(self, problem, seen)

    def paper_problems(self, method: str, rng: random.Random):
        """The reference training problems, before re-sampling (docs/protocol.md, "Training distributions")."""
        raise NotImplementedError

    def paper_repeats(self, example: Example, method: str, rng: random.Random) -> int:
        """How often an example appears in the reference training data (0: dropped)."""
        return 1

    def top_context(self, problem: Any, method: str) -> str:
        """The context a method's decoding starts from."""
        return self.examples(problem, method)[0].input

    def final_answer(self, method: str, text: str) -> Any:
        """The final answer from the text a method produced at top level (its answer text for recursive
        methods, the whole generation for single-context ones); raises Malformed."""
        return _method(method).final_answer(self, text)

    # --- the paper's scoring -------------------------------------------------------------------------------
    # The paper's evaluation compares strings: the answer string it reads from the whole top-level text against
    # the solver's answer printed (str(a + b), str([1, 2, 1]), str(bit)). Each paper task writes its readings
    # below; a task the paper has none for returns None and is scored on its parsed answer.
    def official_answer(self, text: str, method) -> str | None:
        """What the paper's evaluation reads from a recursive (or inline) method's whole top-level text."""
        return None

    def official_baseline(self, text: str) -> str | None:
        return None

    def official_scratchpad(self, text: str) -> str | None:
        return None

    def is_correct(self, problem: Any, method: str, text: str | None, answer: str | None = None) -> bool:
        """The verdict, as the paper's evaluation gives it: `text` is the whole top-level text (None where that
        evaluation reads none: it counts the problem wrong); `answer` what final_answer reads, for a task with no
        official reading (default: `text`). Never raises on model output."""
        rules = _method(method)  # an unknown method is the caller's error, raised
        if text is None:
            return False
        try:
            official = rules.official_answer(self, text)
            if official is not None:
                return official == str(self.solve(problem))
            return self.final_answer(method, text if answer is None else answer) == self.solve(problem)
        except Exception:  # model text no reading can use (e.g. an int() of 10,000 digits): wrong
            return False


def parse_int(text: str, what: str = "integer") -> int:
    text = text.strip()
    if not text or not (text.isascii() and text.isdigit()):
        raise Malformed("unparseable_answer", f"expected a {what}, got {text[:40]!r}")
    if len(text) > 4000:  # Python refuses longer int conversions; no answer here is that long
        raise Malformed("unparseable_answer", f"a {what} of {len(text)} digits")
    return int(text)


def parse_int_list(text: str) -> list[int]:
    """`[1, 2, 1]` -> [1, 2, 1]; anything else is Malformed. Numerals are ASCII digits with an optional minus,
    as in parse_int (no `+`, `_` or non-ASCII digits, which Python's int() would accept)."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise Malformed("unparseable_answer", f"expected a list, got {text[:40]!r}")
    inner = text[1:-1].strip()
    if not inner:
        return []
    values = []
    for part in inner.split(","):
        digits = part.strip().removeprefix("-")
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 4000:
            raise Malformed("unparseable_answer", f"not a list of integers: {text[:40]!r}")
        values.append(int(part.strip()))
    return values
