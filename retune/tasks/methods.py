"""The method registry: every way of training and decoding a task, as one object each (docs/protocol.md).

A `Method` owns what the rest of retune needs to know about a method: its name, how tables and figures show it
(display name, order, colour), what kind of solution it writes (one context or a recursive tree of fresh contexts,
whether it writes calls, whether a call's answer returns to its caller), how it renders a problem into training
examples and how it reads a final answer. Nothing outside this module compares method names: callers ask
`get_method(name)` for the object and read its attributes.

The paper's three methods come first, in its order (baseline, scratchpad, Re-Tuning), then the two ablations of
Re-Tuning: inline (no isolated contexts) and no_carryover (a call's answer never returns to its caller).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from .base import SOLUTION, Example, Node, node_answer


@dataclass(frozen=True, kw_only=True)
class Method:
    """What a method is to the rest of retune; subclasses own its rendering and its reading of answers."""

    name: str  # the method's key: dataset names, traces, result rows, profiles
    display: str  # how a reader sees it named
    order: int  # the paper's order, ablations after (tables, figures, this registry)
    colour: int  # index into the report's palette (seaborn "colorblind"): a method looks the same everywhere
    main: bool = False  # one of the paper's three methods (False: an ablation)
    ablates: str | None = None  # an ablation: the name of the main method it removes one idea from
    returns: bool = False  # a call's answer comes back to its caller (only for methods that write calls)

    recursive: ClassVar[bool] = False  # decoded as a tree of fresh contexts, one per call
    writes_calls: ClassVar[bool] = False  # its solutions contain `Call: ` turns

    def examples(self, task, problem: Any, seen: set | None = None) -> list[Example]:
        """Training examples of one problem (docs/protocol.md, "Training examples"); `seen` de-duplicates a
        recursive method's contexts across problems by prompt."""
        raise NotImplementedError

    def final_answer(self, task, text: str) -> Any:
        """The final answer from the text the method wrote at top level (an answer turn: the text after its
        last `\\nAnswer: `); raises Malformed."""
        return task.parse_answer(node_answer(text))

    def official_answer(self, task, text: str) -> str | None:
        """The answer string the paper's evaluation compares with the solver's answer printed, read from `text`,
        the whole top-level text (the context, the model's turns and the returns); None where the task has no
        official reading (docs/protocol.md, "Evaluation")."""
        return task.official_answer(text, self)

    def return_text(self, answer: str) -> str:
        """What follows a solved call in its caller's context."""
        return f"Return: {answer}\nAnswer: " if self.returns else "Answer: "


@dataclass(frozen=True, kw_only=True)
class OneContext(Method):
    """A method whose whole solution is one target in the problem's one context: the task renders and reads it."""

    render: Callable[[Any, Any], tuple[str, str]] = field(compare=False, repr=False)  # (task, problem) -> (in, out)
    parse: Callable[[Any, str], Any] = field(compare=False, repr=False)  # (task, generated text) -> answer
    official: Callable[[Any, str], Any] = field(compare=False, repr=False)  # (task, whole text) -> answer string

    def examples(self, task, problem, seen=None):
        return [Example(*self.render(task, problem), size=task.size_of(problem))]

    def final_answer(self, task, text):
        return self.parse(task, text)

    def official_answer(self, task, text):
        return self.official(task, text)


@dataclass(frozen=True, kw_only=True)
class Inline(Method):
    """The ablation without isolation: the oracle call tree written out in the problem's single context, each
    call's solution inside its caller's."""

    writes_calls: ClassVar[bool] = True

    def examples(self, task, problem, seen=None):
        top = task.tree(problem)
        body = self.body(top)[len("Solution: "):]
        return [Example(top.prompt + SOLUTION, body, size=task.size_of(problem), meta=top.meta)]

    def body(self, node: Node) -> str:
        """Every context of `node`'s tree in one text. Iterative (a stack of texts to emit and nodes to expand),
        so the depth of the tree does not matter."""
        parts, stack = [], [node]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                parts.append(item)
                continue
            expansion = ["Solution: "]
            for i, turn in enumerate(item.turns):
                expansion.append(turn)
                if i < len(item.children):
                    child = item.children[i]
                    expansion += [child, "\n" + self.return_text(child.answer)]
            stack.extend(reversed(expansion))
        return "".join(parts)


@dataclass(frozen=True, kw_only=True)
class Recursive(Method):
    """A method decoded as a tree of fresh contexts: a call opens the callee's own context, and (when the method
    `returns`) the callee's answer is appended to the caller's context before it goes on."""

    recursive: ClassVar[bool] = True
    writes_calls: ClassVar[bool] = True

    def examples(self, task, problem, seen=None):
        out = []
        for node, depth in task.tree(problem).walk(seen=seen):
            out += [Example(c, t, depth, k, node.size, node.meta) for c, t, k in self.contexts(node)]
        return out

    def ends_at_last_return(self, node: Node) -> bool:
        """Whether decoding stops `node`'s context when its last call returns (no final turn; docs/protocol.md,
        "DP"): only where returns come back."""
        return node.answer_is_last_return and self.returns

    def contexts(self, node: Node) -> list[tuple[str, str, str]]:
        """(context, target, kind) for each turn of `node`, as the decoder sees them."""
        out, context = [], node.prompt + SOLUTION
        turns = node.turns[:-1] if self.ends_at_last_return(node) else node.turns
        for i, turn in enumerate(turns):
            kind = "call" if i < len(node.children) else node.kind_of_last
            out.append((context, turn, kind))
            if i < len(node.children):
                context += turn + self.return_text(node.children[i].answer)
        return out


# --- the registry ------------------------------------------------------------------------------------------------
BASELINE = OneContext(name="baseline", display="Baseline", order=0, colour=0, main=True,
                      render=lambda task, problem: task.baseline(problem),
                      parse=lambda task, text: task.parse_baseline(text),
                      official=lambda task, text: task.official_baseline(text))
SCRATCHPAD = OneContext(name="scratchpad", display="Scratchpad", order=1, colour=1, main=True,
                        render=lambda task, problem: task.scratchpad(problem),
                        parse=lambda task, text: task.parse_scratchpad(text),
                        official=lambda task, text: task.official_scratchpad(text))
RETUNING = Recursive(name="retuning", display="Re-Tuning", order=2, colour=2, main=True, returns=True)
INLINE = Inline(name="inline", display="Inline", order=3, colour=3, ablates=RETUNING.name, returns=True)
NO_CARRYOVER = Recursive(name="no_carryover", display="No carry-over", order=4, colour=4, ablates=RETUNING.name)

METHODS: dict[str, Method] = {m.name: m for m in sorted((BASELINE, SCRATCHPAD, RETUNING, INLINE, NO_CARRYOVER),
                                                        key=lambda m: m.order)}
MAIN_METHODS = tuple(name for name, m in METHODS.items() if m.main)  # the paper's three, in its order
# The ablation study's methods: each ablated method (its reference), then the ablations, in order.
ABLATION_STUDY = tuple(dict.fromkeys([m.ablates for m in METHODS.values() if m.ablates]
                                     + [name for name, m in METHODS.items() if m.ablates]))


def get_method(name: str) -> Method:
    """The registered method called `name`; a ValueError naming the allowed values otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable value, e.g. a list
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}") from None
