"""Decoding: the recursive decoder, with a trace of every problem.

A *generator* (retune.decoding.generators) turns a batch of context strings into a batch of continuations (greedy,
stopping at EOS or at a per-row token limit): a Hugging Face causal LM (`HFGenerator`) or the `OracleGenerator`.
A new backend (vLLM, an API) only has to implement `generate`; the decoder never looks inside.

The recursive decoder (`decode`) runs the Re-Tuning protocol (docs/protocol.md, "The Re-Tuning protocol")
level-synchronously: every unfinished problem has exactly one open context at any time (its call tree is walked
depth-first), and all open contexts of all problems advance together in one batched `generate` per step. A turn
containing `Call: X\\n` suspends its context; `X\\nSolution: ` is solved in a fresh context; its answer comes back
as `Return: <answer>\\nAnswer: ` and the caller resumes. A task whose oracle top level ends at its last return
(`Node.answer_is_last_return`: DP) is stopped there, and that return is the answer. Nothing the model writes can
crash the decoder: every failure ends its problem with a named error kind (see ERROR_KINDS) and the batch goes on.

`semantics` "official" swaps in the paper's own control flow (retune.decoding.official; docs/protocol.md, "Decoding
semantics"); either way a problem is scored as the paper's evaluation scores it (Task.is_correct).

Layering: imports tasks (and model for token ids) only; never evaluate/train/report.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..files import atomic_write_text
from .generators import Generation, Generator
from ..tasks import SOLUTION, Malformed, Task, get_method
from ..tasks.base import CALL_MARK, node_answer

# --- error kinds -------------------------------------------------------------------------------------------
# Malformed model output: the text cannot be read as the protocol says.
MALFORMED_KINDS = ("call_without_newline", "text_after_call", "unparseable_answer")
# Limits: the decoder refused to go on (each limit is a parameter of `Limits`).
LIMIT_KINDS = ("token_limit", "depth_limit", "call_limit", "repeated_call", "tree_limit")
ERROR_KINDS = MALFORMED_KINDS + LIMIT_KINDS
SEMANTICS = ("strict", "official")  # ours (the default), the paper's control flow


# --- traces --------------------------------------------------------------------------------------------------
@dataclass(eq=False, repr=False)
class TraceNode:
    """One context of a decoded call tree, as the model actually wrote it.

    `turns[i]` for i < len(calls) is a call turn; `returns[i]` is what came back for `calls[i]` (None for the
    no_carryover ablation, where nothing is solved). `context` is the whole context at the end: the fresh
    context `prompt + "\\nSolution: "` (for single-context methods: the method's top context) followed by the
    turns and returns (a top level that ends at its last return, DP, keeps that return in `returns` and `answer`
    only: the model never sees it). `error` is set on the node where decoding of the problem stopped.
    """

    prompt: str
    depth: int = 0
    context: str = ""
    turns: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    returns: list[str | None] = field(default_factory=list)
    children: list["TraceNode"] = field(default_factory=list)
    answer: str | None = None
    tokens_in: int = 0  # context tokens fed, summed over this node's generations
    tokens_out: int = 0  # tokens generated (EOS included), summed over this node's generations
    error: str | None = None

    def walk(self):
        """Yield every node in pre-order (the order contexts were opened). Iterative, like every walk over a
        trace here: a model that keeps calling makes traces as deep as the decoder's limits allow."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __eq__(self, other) -> bool:  # iterative: the generated __eq__ recurses through children
        if not isinstance(other, TraceNode):
            return NotImplemented
        mine, theirs = list(self.walk()), list(other.walk())
        return len(mine) == len(theirs) and all(
            a.shallow_dict() == b.shallow_dict() and len(a.children) == len(b.children) for a, b in zip(mine, theirs))

    def __repr__(self) -> str:  # shallow: a trace can be deeper than repr's recursion allows
        return f"TraceNode(prompt={self.prompt[:60]!r}, depth={self.depth}, children={len(self.children)})"

    def shallow_dict(self) -> dict:
        """This node's fields without its children (lists copied)."""
        return {f: (list(v) if isinstance(v, list) else v) for f in _NODE_FIELDS
                for v in (getattr(self, f),)}

    def to_dict(self) -> dict:
        root = self.shallow_dict() | {"children": []}
        stack = [(self, root)]
        while stack:
            node, d = stack.pop()
            for child in node.children:
                cd = child.shallow_dict() | {"children": []}
                d["children"].append(cd)
                stack.append((child, cd))
        return root

    @classmethod
    def from_dict(cls, d: dict) -> "TraceNode":
        root = cls(**{k: v for k, v in d.items() if k != "children"})
        stack = [(root, d.get("children", []))]
        while stack:
            node, children = stack.pop()
            for cd in children:
                child = cls(**{k: v for k, v in cd.items() if k != "children"})
                node.children.append(child)
                stack.append((child, cd.get("children", [])))
        return root


_NODE_FIELDS = tuple(f for f in TraceNode.__dataclass_fields__ if f != "children")


@dataclass
class Trace:
    """A decoded problem: its call tree plus the verdict. `error` is the kind that ended decoding (None if the
    decoding finished normally; a finished but wrong answer has correct=False and error=None), or an answer our
    parser cannot read, or under the official semantics the first failure decoding went on past. `correct` is
    the paper's verdict (a string comparison), so an answer we cannot parse can still be correct."""

    task: str
    method: str
    size: int
    problem: Any  # JSON form of the task's problem (tuples become lists)
    expected: Any
    predicted: Any = None
    correct: bool = False
    error: str | None = None
    variant: int = 0
    root: TraceNode = field(default_factory=lambda: TraceNode(""))

    @property
    def outcome(self) -> str:
        """Every problem's named outcome: `correct`, `wrong_answer` (well-formed but wrong) or an error kind."""
        return "correct" if self.correct else (self.error or "wrong_answer")

    @property
    def contexts(self) -> int:
        return sum(1 for _ in self.root.walk())

    @property
    def tokens_in(self) -> int:
        return sum(n.tokens_in for n in self.root.walk())

    @property
    def tokens_out(self) -> int:
        return sum(n.tokens_out for n in self.root.walk())

    def to_dict(self) -> dict:
        """The JSON form: the verdict, and the call tree as a flat list of nodes in pre-order, each naming its
        parent's index (-1 for the root). Flat, so no JSON encoder or decoder recurses as deep as the tree."""
        d = {k: getattr(self, k) for k in ("task", "method", "size", "problem", "expected", "predicted",
                                            "correct", "error", "variant")}
        nodes, stack = [], [(self.root, -1)]
        while stack:  # pre-order, as TraceNode.walk
            node, parent = stack.pop()
            nodes.append(node.shallow_dict() | {"parent": parent})
            stack.extend((child, len(nodes) - 1) for child in reversed(node.children))
        d["nodes"] = nodes
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trace":
        """From `to_dict`'s flat form, or the nested form (`root` with `children`) of older trace files."""
        d = dict(d)
        if "nodes" in d:
            built = []
            for nd in d.pop("nodes"):
                node = TraceNode(**{k: v for k, v in nd.items() if k != "parent"})
                if built:
                    built[nd["parent"]].children.append(node)
                built.append(node)
            d["root"] = built[0]
        else:
            d["root"] = TraceNode.from_dict(d["root"])
        return cls(**d)


def jsonable(value: Any) -> Any:
    """The JSON form of a problem or answer, so a trace equals itself after a save/load round trip."""
    return json.loads(json.dumps(value))


def save_traces(path, traces: Iterable[Trace]) -> None:
    """One JSON object per line, written atomically (the file appears only once complete). ensure_ascii keeps
    any model output (lone surrogates too) writable."""
    atomic_write_text(path, "".join(json.dumps(t.to_dict(), ensure_ascii=True) + "\n" for t in traces))


def load_traces(path) -> list[Trace]:
    with open(path, encoding="utf-8") as f:
        return [Trace.from_dict(json.loads(line)) for line in f if line.strip()]


# --- the recursive decoder -------------------------------------------------------------------------------
@dataclass
class Limits:
    """What the decoder allows before it stops a problem with a `*_limit` error. None: the per-problem default."""

    depth: int | None = None  # deepest call allowed (root = 0); default task.depth_limit(size)
    calls: int = 4  # calls in one context
    new_tokens: int | None = None  # tokens per generation; default 2 x the oracle tree's longest turn + 16, in the
    #                                generator's tokens (its `count`; characters for a generator without one)
    contexts: int | None = None  # contexts per problem (guards against endless fan-out); default 2 x oracle + 8

    def __post_init__(self):
        """Every limit given is a whole number >= 1 (0 would silently mean the default for some, none for
        others); None leaves the per-problem default."""
        for name in ("depth", "calls", "new_tokens", "contexts"):
            value = getattr(self, name)
            if value is None and name != "calls":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be an integer >= 1" + ("" if name == "calls" else
                                 " or None (the default)") + f"; got {value!r}")


def default_new_tokens(longest_target: int) -> int:
    """Token limit sized to the longest legitimate target, counted in the model's own tokens (characters for
    the character tokenizer): room for a wrong but plausible answer, no more."""
    return 2 * longest_target + 16


@dataclass
class _Open:
    """A context being decoded: its trace node, its caller, and the problem it belongs to."""

    node: TraceNode
    parent: "_Open | None"
    problem: int


class _Problem:
    """Per-problem decoding state: the trace under construction and its limits."""

    def __init__(self, task: Task, method: str, problem: Any, limits: Limits, count=len):
        self.task, self.method, self.problem = task, method, problem
        self.rules = get_method(method)  # how the method decodes: one context or a tree, returns or not
        size = task.size_of(problem)
        examples = task.examples(problem, method)
        self.top_context = examples[0].input
        self.recursive = self.rules.recursive
        self.depth_limit = limits.depth if limits.depth is not None else task.depth_limit(size)
        self.call_limit = limits.calls
        self.new_tokens = limits.new_tokens if limits.new_tokens is not None else \
            default_new_tokens(max(count(e.output) for e in examples))
        oracle_contexts = len({e.input for e in examples}) if self.recursive else 1
        # The top level of some tasks ends when its n-th call returns (docs/protocol.md, "DP"); n is the task's,
        # the same for every problem (DP: 2). 0: it ends with an answer turn, as every other context.
        top = task.tree(problem) if self.recursive else None
        self.top_calls = len(top.children) if top is not None and top.ends_at_last_return(method) else 0
        self.context_limit = limits.contexts if limits.contexts is not None else 2 * oracle_contexts + 8
        self.contexts = 1
        prompt = self.top_context[:-len(SOLUTION)] if self.recursive else self.top_context
        root = TraceNode(prompt=prompt, depth=0, context=self.top_context)
        self.trace = Trace(task.name, method, size, jsonable(problem), jsonable(task.solve(problem)),
                           variant=task.variant, root=root)
        self.done = False
        self.cap = None  # tokens for a context's whole text (the official semantics); None: `new_tokens` per turn

    def tokens_for(self, node: TraceNode, count) -> int:
        """The token limit of the next generation in `node` (<= 0: no room left in its context)."""
        return self.new_tokens if self.cap is None else self.cap - count(node.context)

    def note(self, node: TraceNode, kind: str) -> None:
        """Record a named error where decoding goes on past it (the official semantics): the node keeps its
        first, the trace the problem's first."""
        node.error = node.error or kind
        self.trace.error = self.trace.error or kind

    def fail(self, node: TraceNode, kind: str) -> None:
        node.error = kind
        self.trace.error = kind
        self.done = True

    def finish(self, text: str, writer: TraceNode | None = None, whole: str | None = None) -> None:
        """Score the problem as the paper does, from `whole`, the top-level text that evaluation reads (None
        where it reads none: wrong), and parse `text`, the top-level answer, into `predicted`. An answer our
        parser cannot read is an error, never an exception, recorded on the node that wrote the text (`writer`:
        the root, or the last callee where the answer is its return); it does not change the verdict."""
        writer = writer or self.trace.root
        self.trace.correct = self.task.is_correct(self.problem, self.method, whole, text)
        self.done = True
        try:
            self.trace.predicted = jsonable(self.task.final_answer(self.method, text))
        except Exception as e:  # Malformed, or e.g. int() of a 10,000-digit string: an unreadable answer
            self.note(writer, e.kind if isinstance(e, Malformed) else "unparseable_answer")


def parse_call(turn: str) -> tuple[str | None, str | None]:
    """(call prompt, error kind) of a turn: (None, None) for an answer turn. Text before `Call: ` is prose
    (the DP turns explain themselves there); after it comes the sub-problem, a newline, then nothing."""
    at = turn.find(CALL_MARK)
    if at < 0:
        return None, None
    rest = turn[at + len(CALL_MARK):]
    line, newline, after = rest.partition("\n")
    if not newline:
        return None, "call_without_newline"
    if after:
        return None, "text_after_call"
    return line, None


def _ancestors(open_: _Open):
    while open_ is not None:
        yield open_.node
        open_ = open_.parent


def _advance(state: _Problem, open_: _Open, gen: Generation) -> _Open | None:
    """Record one generation in its context and return the context to generate in next (None: problem over)."""
    node = open_.node
    node.turns.append(gen.text)
    node.tokens_in += gen.tokens_in
    node.tokens_out += gen.tokens_out
    node.context += gen.text
    if not gen.stopped:
        return state.fail(node, "token_limit")
    if not state.recursive:  # single-context methods: one generation is the whole answer
        node.answer = gen.text
        return state.finish(gen.text, whole=node.context)
    call, error = parse_call(gen.text)
    if error:
        return state.fail(node, error)
    if call is None:  # an answer: return it to the caller, or finish the problem at the top
        node.answer = node_answer(gen.text)
        if open_.parent is None:  # (a top level that should have ended at a return has no text to read)
            return state.finish(gen.text, whole=None if state.top_calls else node.context)
        parent = open_.parent
        parent.node.returns.append(node.answer)
        if parent.parent is None and len(parent.node.calls) == state.top_calls:
            parent.node.answer = node.answer  # the top level ends at this return: it is the answer
            # the paper reads its answer from the top-level text with this return appended
            whole = (parent.node.context + state.rules.return_text(node.answer)).replace("  ", " ")
            return state.finish(node.answer, node, whole)
        parent.node.context += state.rules.return_text(node.answer)
        return parent
    if len(node.calls) + 1 > state.call_limit:
        return state.fail(node, "call_limit")
    node.calls.append(call)
    if not state.rules.returns:  # no_carryover: no answer would come back, so the call is written, never solved
        node.returns.append(None)
        node.context += state.rules.return_text("")
        return open_
    if any(a.prompt == call for a in _ancestors(open_)):
        return state.fail(node, "repeated_call")
    if node.depth + 1 > state.depth_limit:
        return state.fail(node, "depth_limit")
    if state.contexts + 1 > state.context_limit:
        return state.fail(node, "tree_limit")
    state.contexts += 1
    child = TraceNode(prompt=call, depth=node.depth + 1, context=call + SOLUTION)
    node.children.append(child)
    return _Open(child, open_, open_.problem)


def decode(task: Task, problems: Sequence[Any], method: str, generator: Generator, limits: Limits | None = None,
           progress: bool | None = None, semantics: str = "strict") -> list[Trace]:
    """Decode every problem with `method`; all open contexts advance together, one `generate` per step.

    Returns one Trace per problem, in order. Never raises on model output. `progress`: a tqdm bar over steps
    (None: only when the decoding is large enough to take a while). `semantics`: "strict" (ours) or "official"
    (the paper's control flow, retune.decoding.official).
    """
    get_method(method)  # a ValueError naming the methods, before any work
    if semantics not in SEMANTICS:
        raise ValueError(f"semantics must be one of {', '.join(SEMANTICS)}; got {semantics!r}")
    limits = limits or Limits()
    count = getattr(generator, "count", len)  # the default limits in the generator's tokens
    states = [_Problem(task, method, p, limits, count) for p in problems]
    advance = _advance
    if semantics == "official":
        from . import official  # the same layer; imported here, as it builds on this module

        advance = official.prepare(task, method, states)
    open_ = [_Open(s.trace.root, None, i) for i, s in enumerate(states)]
    bar = _bar(progress, len(states), f"decode {task.name}/{method}")
    while open_:
        room = [states[o.problem].tokens_for(o.node, count) for o in open_]
        rows = [i for i, n in enumerate(room) if n >= 1]
        made = generator.generate([open_[i].node.context for i in rows], [room[i] for i in rows]) if rows else []
        if len(made) != len(rows):
            raise RuntimeError(f"generator returned {len(made)} generations for {len(rows)} contexts")
        made = dict(zip(rows, made))
        following = []
        for i, o in enumerate(open_):
            # a context with no room left (only under a cap on its whole text) gets nothing more, unstopped
            g = made[i] if i in made else Generation("", False, count(o.node.context), 0)
            nxt = advance(states[o.problem], o, g)
            if nxt is not None:
                following.append(nxt)
        if bar is not None:
            bar.update(len(open_) - len(following))
        open_ = following
    if bar is not None:
        bar.close()
    return [s.trace for s in states]


def decode_one_by_one(task: Task, problems: Sequence[Any], method: str, generator: Generator,
                      limits: Limits | None = None, semantics: str = "strict") -> list[Trace]:
    """The reference schedule: one problem at a time, batch size 1 (for tests and the benchmark)."""
    return [decode(task, [p], method, generator, limits, progress=False, semantics=semantics)[0] for p in problems]


def _bar(progress: bool | None, total: int, desc: str):
    if progress is False or (progress is None and total < 64):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="problem", leave=False, mininterval=1.0)


