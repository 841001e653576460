"""The paper's own decoding control flow, for `eval.semantics: official` (docs/protocol.md, "Decoding semantics").

The paper's evaluation notebooks decode one problem at a time with a recursive function per task. This module
replays that control flow inside the batched decoder (retune.decoding.recursive), context by context, so that a user can
reproduce the paper's numbers and see how much our strict decoder changes them:

- a context's text (prompt, generations, returns) is capped at `cap` tokens as a whole (the notebooks'
  `max_length`), not each turn; a generation that reaches the cap keeps its text and decoding goes on;
- after a generation, the call followed is the text after the LAST `Call: ` of the context, up to its newline;
  text after that newline is ignored; addition follows one call per context (the generation after its return is
  the context's last), DP and parity follow a new call as long as the context holds more `Call: ` marks than
  calls followed, and DP's contexts end right after their second return (its top level's answer);
- a context at depth >= the depth limit returns its first generation as it is; a call with no newline returns
  the context's text as it is. For addition that text goes back to the caller as its return value and the caller
  goes on; for DP and parity (`aborts`) it ends the whole problem, every caller returning its text as it stands;
- a callee's return value is, for addition, its last generation (the notebook splits at the double space its
  tokenizer leaves between a prompt and a generation), for DP the text after its last `\\nAnswer: `, for parity
  the text after its last space; the caller's context then gets `Return: <value>\\nAnswer: ` with every double
  space made single, as the notebooks do.

Where our strict decoder would stop with a named error (a runaway turn, a bad call, a depth limit, text after a
call), the official flow goes on; the error is noted on the context and the trace, and the problem is scored by
the paper's string rule (Task.is_correct). One guard of ours stays: the contexts per problem (`tree_limit`), as
DP and parity could otherwise fan out without end. No-carry-over has no official counterpart and keeps our flow.
"""
from __future__ import annotations

from dataclasses import dataclass

from .recursive import _Open, _advance, TraceNode
from .generators import Generation
from ..tasks import SOLUTION, get_method
from ..tasks.base import CALL_MARK, node_answer

ONE_CONTEXT_CAP = 2048  # the baseline and scratchpad notebooks' max_length


@dataclass(frozen=True)
class Flow:
    """One notebook's control flow (see the module docstring)."""

    cap: int  # tokens of a context's whole text
    calls: int | None  # calls followed per context (None: as long as new `Call: ` marks appear)
    aborts: bool  # a bad call or the depth limit ends the whole problem
    stop_after: int | None  # a context ends right after this many returns (DP: 2)
    returns: str  # what a callee returns: "last_turn", "after_answer" or "last_word"


FLOWS = {
    "addition": Flow(cap=2048, calls=1, aborts=False, stop_after=None, returns="last_turn"),
    "dp": Flow(cap=1024, calls=None, aborts=True, stop_after=2, returns="after_answer"),
    "parity": Flow(cap=2048, calls=None, aborts=True, stop_after=None, returns="last_word"),
}
DEFAULT = Flow(cap=2048, calls=None, aborts=True, stop_after=None, returns="after_answer")  # a task of our own


def prepare(task, method: str, states: list):
    """The step function that decodes `method` the paper's way, with each problem's state set for it."""
    rules = get_method(method)
    if rules.recursive and not rules.returns:
        return _advance  # no-carry-over: no notebook decodes it
    flow = FLOWS.get(task.name, DEFAULT)
    for state in states:
        state.flow = flow
        state.cap = flow.cap if rules.recursive else ONE_CONTEXT_CAP
    return advance


def advance(state, open_: _Open, gen: Generation) -> _Open | None:
    """Record one generation and return the context to generate in next (None: the problem is over)."""
    node, flow = open_.node, state.flow
    node.turns.append(gen.text)
    node.tokens_in += gen.tokens_in
    node.tokens_out += gen.tokens_out
    node.context += gen.text
    if not gen.stopped:
        state.note(node, "token_limit")  # a runaway turn: the notebooks read whatever it wrote
    if not state.recursive:
        node.answer = gen.text
        return state.finish(gen.text, whole=node.context)
    if len(node.turns) == 1 and node.depth >= state.depth_limit:
        if flow.aborts or CALL_MARK in gen.text:  # (an answer at the limit is simply returned by addition)
            state.note(node, "depth_limit")
        return _leave(state, open_, flow.aborts)
    if flow.calls is not None and len(node.calls) >= flow.calls:
        return _leave(state, open_)
    if node.context.count(CALL_MARK) <= len(node.calls):  # no new call: the context is done
        return _leave(state, open_)
    line, newline, after = node.context.split(CALL_MARK)[-1].partition("\n")
    if not newline:
        state.note(node, "call_without_newline")
        return _leave(state, open_, flow.aborts)
    if after:
        state.note(node, "text_after_call")
    node.calls.append(line)
    if state.contexts + 1 > state.context_limit:
        return state.fail(node, "tree_limit")
    state.contexts += 1
    child = TraceNode(prompt=line, depth=node.depth + 1, context=line + SOLUTION)
    node.children.append(child)
    return _Open(child, open_, open_.problem)


def _leave(state, open_: _Open, abort: bool = False) -> _Open | None:
    """A context is done: hand its value to its caller (and go on there), or finish the problem."""
    while True:
        node, flow, parent = open_.node, state.flow, open_.parent
        if parent is None or abort:  # at the top, or every caller returning its text as it stands
            return _finish(state, abort)
        node.answer = _value(node, flow)
        caller = parent.node
        caller.returns.append(node.answer)
        caller.context = (caller.context + state.rules.return_text(node.answer)).replace("  ", " ")
        if flow.stop_after is None or len(caller.calls) < flow.stop_after:
            return parent
        open_ = parent  # DP: the caller ends at this return


def _value(node: TraceNode, flow: Flow) -> str:
    if flow.returns == "last_turn":
        return node.turns[-1]
    if flow.returns == "last_word":
        return node.context.split(" ")[-1]
    return node.context.split("\nAnswer: ")[-1]


def _finish(state, abort: bool) -> None:
    """Score the top-level text. DP's notebook has a text to read only when its top level ended at its second
    return; otherwise it reads none and the problem is wrong."""
    root, flow = state.trace.root, state.flow
    at_return = flow.stop_after is not None and len(root.returns) == flow.stop_after and not abort
    readable = flow.stop_after is None or at_return
    if at_return:  # the answer is the last return (our parser reads it)
        root.answer = root.returns[-1]
        writer = root.children[-1]
    else:
        root.answer = node_answer(root.turns[-1])
        writer = root
    state.finish(root.answer, writer, root.context if readable else None)
