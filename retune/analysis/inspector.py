"""The trace inspector: a decoded problem's call tree as nested, collapsible HTML, the first wrong step in red.

`trace_html(trace)` is plain HTML (inline styles, no scripts), so it survives where no kernel runs: an executed
notebook, its HTML export, a README. `inspector(traces)` wraps it in an ipywidgets browser (task, method, size,
problem, "only failures") for a live notebook; where widgets cannot run (a saved or exported notebook) the same
output is a static view of one failure instead. `export_failures` writes the failures page of the results.

What is "wrong" is decided against the oracle call tree of the problem (retune.evaluation.scoring.oracle_tree): walking the
decoded tree in the order its contexts were opened, the first turn that differs from the oracle's turn (or that
ended decoding with an error) is the first error, as in retune.evaluation.scoring.first_departure.

Top layer, next to report.py: imports decode/evaluate/tasks; nothing below imports this.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Iterable, Sequence

from ..decoding.recursive import Trace, TraceNode
from ..evaluation.scoring import first_departure, oracle_tree
from ..tasks import METHODS, Node, get_task

RED, GREEN, GREY = "#c62828", "#2e7d32", "#666"
BOX = "margin:2px 0 2px 14px;padding:2px 6px;border-left:2px solid {colour};"
PRE = ("margin:1px 0;padding:2px 4px;white-space:pre-wrap;word-break:break-all;font-family:monospace;"
       "font-size:12px;background:{bg};")


def as_trace(trace: Trace | dict) -> Trace:
    """Traces from load_traces, or their dict form (one JSONL line)."""
    return trace if isinstance(trace, Trace) else Trace.from_dict(trace)


def oracle_of(trace: Trace) -> Node | None:
    """The oracle call tree of the trace's problem, or None when the problem cannot be rebuilt."""
    try:
        return oracle_tree(get_task(trace.task, trace.variant), trace.problem, trace.method)
    except Exception:  # a problem the task cannot read (hand-made traces): show the trace without a verdict
        return None


def first_wrong(node: TraceNode, oracle: Node | None) -> tuple[TraceNode, int, str | None] | None:
    """(node, turn index, the oracle's turn there) of the first turn that leaves the oracle tree, walking in the
    order contexts were opened; the same walk as retune.evaluation.scoring.first_departure. Without an oracle: the node
    where decoding stopped with an error, if any."""
    if oracle is None:
        stopped = next((n for n in node.walk() if n.error), None)
        return (stopped, len(stopped.turns) - 1, None) if stopped else None
    stack = [(node, oracle, 0)]  # explicit stack: traces can be deeper than Python's recursion limit
    while stack:
        node, oracle, i = stack.pop()
        if i >= len(node.turns):
            if node.error:  # stopped before writing a turn
                return node, -1, oracle.turns[0] if oracle.turns else None
            continue
        turn = node.turns[i]
        expected = oracle.turns[i] if i < len(oracle.turns) else None
        if (i == len(node.turns) - 1 and node.error) or turn != expected:
            return node, i, expected
        stack.append((node, oracle, i + 1))
        if i < len(node.children) and i < len(oracle.children):
            stack.append((node.children[i], oracle.children[i], 0))
    return None


SHOWN_WHITESPACE = {" ": "\u2423", "\n": "\u23ce\n", "\t": "\u21e5", "\r": "\u240d"}


def visible(text: str) -> str:
    """Model output as a reader can see it: an empty or whitespace-only text, and whitespace at either end of a
    text, are drawn with symbols (space, newline, tab, carriage return); whitespace between words stays."""
    if text == "":
        return "(empty)"
    body = text.strip()
    if not body:
        return "".join(SHOWN_WHITESPACE.get(c, c) for c in text)
    start, end = text.index(body[0]), text.rindex(body[-1]) + 1
    show = lambda part: "".join(SHOWN_WHITESPACE.get(c, c) for c in part)  # noqa: E731
    return show(text[:start]) + text[start:end] + show(text[end:])


def _pre(text: str, bg: str = "#f6f6f6", colour: str | None = None, label: str = "", raw: bool = False) -> str:
    """A text box; model output (raw=False) has its whitespace made visible and its length in the label."""
    style = PRE.format(bg=bg) + (f"color:{colour};border:1px solid {colour};" if colour else "")
    label = label if raw or not label else f"{label} \u00b7 {len(text)} char{'' if len(text) == 1 else 's'}"
    head = f'<span style="color:{GREY};font-size:11px">{html.escape(label)}</span>' if label else ""
    return f'{head}<pre style="{style}">{html.escape(text if raw else visible(text))}</pre>'


def _path_to(root: TraceNode, target: TraceNode | None) -> set[int]:
    """The ids of `target` and every node above it (empty without a target), found in one walk."""
    if target is None:
        return set()
    parent: dict[int, TraceNode | None] = {id(root): None}
    for node in root.walk():
        for child in node.children:
            parent[id(child)] = node
    path, node = set(), target
    while node is not None and id(node) in parent:
        path.add(id(node))
        node = parent[id(node)]
    return path


def _tree_html(root: TraceNode, wrong, open_depth: int) -> str:
    """The call tree's HTML without recursion: each node's parts hold its children as placeholders (the child
    nodes themselves), expanded in place from an explicit stack, so the work is linear in the output and no
    call goes as deep as the tree."""
    on_path = _path_to(root, wrong[0] if wrong else None)
    parts_of = {id(node): _node_html(node, wrong, open_depth, on_path) for node in root.walk()}
    out, stack = [], [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        else:
            stack.extend(reversed(parts_of.pop(id(item))))
    return "".join(out)


def _node_html(node: TraceNode, wrong, open_depth: int, on_path: set[int]) -> list:
    """One node's HTML as a list of strings, with its children (TraceNode placeholders) where their HTML goes."""
    target, turn_index, expected = wrong if wrong else (None, None, None)
    is_wrong = node is target
    colour = RED if is_wrong or id(node) in on_path else GREEN if node.answer is not None else GREY
    opened = " open" if node.depth < open_depth or id(node) in on_path else ""
    verdict = f' <b style="color:{RED}">&#10007; {html.escape(node.error or "first error")}</b>' if is_wrong else ""
    answer = "" if node.answer is None else f" &rarr; <code>{html.escape(node.answer[:80])}</code>"
    summary = (f'<summary style="cursor:pointer"><span style="color:{GREY}">depth {node.depth}</span> '
               f'<code>{html.escape(node.prompt[:100])}</code>{answer}{verdict}</summary>')
    parts = [_pre(node.prompt, label="prompt", raw=True)]
    for i, turn in enumerate(node.turns):
        bad = is_wrong and i == turn_index
        label = f"generation {i + 1}" + (" (first error)" if bad else "")
        parts.append(_pre(turn, "#fdecea" if bad else "#f6f6f6", RED if bad else None, label))
        if bad and expected is not None:
            parts.append(_pre(expected, "#edf7ed", GREEN, "oracle"))
        if i < len(node.calls):
            parts.append(_pre(node.calls[i], "#eef3fb", label="call (solved in a fresh context below)", raw=True))
            if i < len(node.children):
                parts.append(node.children[i])
            if i < len(node.returns):
                ret = node.returns[i]
                parts.append(_pre("(nothing returned: no carry-over)" if ret is None else f"Return: {ret}",
                                  "#eef3fb", label="return", raw=True))
    if is_wrong and turn_index == -1 and expected is not None:
        parts.append(_pre(expected, "#edf7ed", GREEN, "oracle"))
    if node.answer is not None:
        parts.append(_pre(node.answer, label="answer"))
    if node.error:
        parts.append(f'<div style="color:{RED}"><b>error:</b> {html.escape(node.error)}</div>')
    parts.append(f'<details><summary style="cursor:pointer;color:{GREY};font-size:11px">full context</summary>'
                 f'{_pre(node.context, raw=True)}</details>')
    return [f'<details{opened} style="{BOX.format(colour=colour)}">{summary}', *parts, "</details>"]


def trace_html(trace: Trace | dict, open_depth: int = 2) -> str:
    """One problem's trace as self-contained HTML: a header with the verdict, then the call tree as nested
    <details> (prompt, generations, calls, returns, answer, error per node). The first wrong turn and the nodes
    above it are red and unfolded; other nodes unfold down to `open_depth`."""
    trace = as_trace(trace)
    oracle = None if trace.correct else oracle_of(trace)
    wrong = None if trace.correct else first_wrong(trace.root, oracle)
    departure = first_departure(trace, oracle) if wrong and oracle is not None else None
    outcome = "correct" if trace.correct else (trace.error or "wrong answer")
    mark = f'<b style="color:{GREEN if trace.correct else RED}">{"&#10003;" if trace.correct else "&#10007;"} ' \
           f'{html.escape(outcome)}</b>'
    where = (f' &middot; first error: <b>{html.escape(departure.kind)}</b> at depth {departure.depth}'
             if departure else "")
    head = (f'<div style="font-family:sans-serif;font-size:13px;margin-bottom:4px">'
            f'<b>{html.escape(trace.task)}</b> &middot; {html.escape(trace.method)} &middot; size {trace.size}'
            f'{" &middot; variant " + str(trace.variant) if trace.variant else ""} &middot; {mark}{where}<br>'
            f'problem <code>{html.escape(str(trace.problem))}</code> &middot; expected '
            f'<code>{html.escape(str(trace.expected))}</code> &middot; predicted '
            f'<code>{html.escape(str(trace.predicted))}</code></div>')
    page = f'<div class="retune-trace" style="font-family:sans-serif">{head}{_tree_html(trace.root, wrong, open_depth)}</div>'
    return displayable(page)


def displayable(text: str) -> str:
    """`text` with lone surrogates (which model output may hold, and traces keep) shown as `\\udcxx` escapes,
    so every trace that can be saved can also be encoded as UTF-8 and rendered."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def export_html(traces: Trace | dict | Sequence, path: str | Path, title: str = "retune traces",
                intro: str = "") -> Path:
    """A standalone HTML page with one or more traces (opens in any browser, no Jupyter needed); `intro` is
    HTML put under the title."""
    items = [traces] if isinstance(traces, (Trace, dict)) else list(traces)
    body = "\n<hr>\n".join(trace_html(t) for t in items)
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
            f'<body style="max-width:1100px;margin:auto">\n<h2 style="font-family:sans-serif">{html.escape(title)}'
            f'</h2>\n{intro}\n{body}\n</body></html>\n')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(displayable(page), encoding="utf-8")
    return path


# --- which failures a page shows --------------------------------------------------------------------------------
def method_rank(method: str) -> tuple[int, int, str]:
    """The order failures are shown in: the paper's main methods last to first (Re-Tuning first: its failures are
    the call trees; then scratchpad, then baseline), then the ablations in the registry's order, then any name
    the registry does not know, by name."""
    m = METHODS.get(method)
    if m is None:
        return 2, 0, method
    return (0, -m.order, method) if m.main else (1, m.order, method)


def tree_depth(trace: Trace) -> int:
    return max(n.depth for n in trace.root.walk())


def pick_failures(traces: Iterable[Trace | dict], per_group: int = 4) -> list[Trace]:
    """Up to `per_group` failures of each task x method (tasks in order, Re-Tuning first), spread over the depth
    of their call trees: the deepest tree first, then the deepest of each remaining depth, then the largest
    problems; within a depth the largest size first (the longer problems are where methods differ)."""
    groups: dict[tuple[str, str], list[Trace]] = {}
    for t in (as_trace(t) for t in traces):
        if not t.correct:
            groups.setdefault((t.task, t.method), []).append(t)
    out = []
    for key in sorted(groups, key=lambda k: (k[0], method_rank(k[1]))):
        pool = sorted(groups[key], key=lambda t: (-tree_depth(t), -t.size))
        chosen, depths = [], set()
        for t in pool:  # one per depth, deepest first
            if tree_depth(t) not in depths and len(chosen) < per_group:
                chosen.append(t)
                depths.add(tree_depth(t))
        chosen += [t for t in sorted(pool, key=lambda t: -t.size) if t not in chosen][:per_group - len(chosen)]
        out += chosen
    return out


def export_failures(traces: Iterable[Trace | dict], path: str | Path, title: str = "retune: failures",
                    per_group: int = 4) -> Path:
    """The failures page (results/failing_traces.html): pick_failures' choice, with a table of what was chosen
    from how many per task x method and the rule, so a reader knows what the page is a sample of."""
    traces = [as_trace(t) for t in traces]
    chosen = pick_failures(traces, per_group)
    rows = []
    for task, method in dict.fromkeys((t.task, t.method) for t in chosen + traces):
        of = [t for t in traces if (t.task, t.method) == (task, method)]
        shown = [t for t in chosen if (t.task, t.method) == (task, method)]
        depths = sorted({tree_depth(t) for t in shown})
        rows.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(method)}</td>"
                    f"<td>{len(shown)}</td><td>{sum(not t.correct for t in of)}</td><td>{len(of)}</td>"
                    f"<td>{', '.join(map(str, depths)) or '-'}</td></tr>")
    intro = (f'<p style="font-family:sans-serif;font-size:13px">Up to {per_group} failed problems per task '
             f'&times; method (Re-Tuning first), chosen to cover the depths of their call trees: the deepest tree, '
             f'then the deepest tree of each other depth, then the largest problems. The first turn that leaves '
             f'the oracle&#39;s call tree is red, beside the oracle&#39;s turn in green.</p>'
             f'<table class="retune-choice" style="font-family:sans-serif;font-size:12px;border-collapse:collapse" '
             f'border="1" cellpadding="3"><tr><th>task</th><th>method</th><th>shown</th><th>failed</th>'
             f'<th>problems</th><th>tree depths shown</th></tr>{"".join(rows)}</table>')
    return export_html(chosen or traces[:5], path, title, intro)


# --- the widget -------------------------------------------------------------------------------------------------
def select(traces: Iterable[Trace], task: str | None = None, method: str | None = None, size: int | None = None,
           only_failures: bool = False) -> list[Trace]:
    """The traces matching every given field (None: any)."""
    return [t for t in traces if (task is None or t.task == task) and (method is None or t.method == method)
            and (size is None or t.size == size) and not (only_failures and t.correct)]


def problem_label(i: int, trace: Trace) -> str:
    mark = "ok" if trace.correct else (trace.error or "wrong")
    return f"#{i} {str(trace.problem)[:40]} ({mark})"


class Inspector:
    """Dropdowns for task, method, size and problem, an "only failures" toggle, and the selected trace's HTML.
    Every dropdown's options follow the choices before it; the state lives in plain attributes, so tests can
    drive it without a browser. A problem's value is its position among all traces, so the selected problem
    stays selected when the filter changes around it."""

    def __init__(self, traces: Iterable[Trace | dict], only_failures: bool = False):
        import ipywidgets as w

        self.traces = [as_trace(t) for t in traces]
        self.task = w.Dropdown(description="task")
        self.method = w.Dropdown(description="method")
        self.size = w.Dropdown(description="size")
        self.problem = w.Dropdown(description="problem", layout=w.Layout(width="420px"))
        self.only_failures = w.Checkbox(value=only_failures, description="only failures")
        self.count = w.HTML()
        self.view = w.HTML()
        self.widget = w.VBox([w.HBox([self.task, self.method, self.only_failures]),
                              w.HBox([self.size, self.problem, self.count]), self.view])
        self._busy = False
        self._selection: list[Trace] = []
        self.task.observe(lambda _: self._refresh("task"), "value")
        self.method.observe(lambda _: self._refresh("method"), "value")
        self.size.observe(lambda _: self._refresh("size"), "value")
        self.problem.observe(lambda _: self._show(), "value")
        self.only_failures.observe(lambda _: self._refresh("only_failures"), "value")
        self._refresh("start")

    def _pool(self) -> list[Trace]:
        return select(self.traces, only_failures=self.only_failures.value)

    @staticmethod
    def _set(dropdown, options) -> None:
        value = dropdown.value
        dropdown.options = options
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        dropdown.value = value if value in values else (values[0] if values else None)

    def _refresh(self, changed: str) -> None:
        """Re-derive the options below the changed control (each list depends on the choices above it)."""
        if self._busy:
            return
        self._busy = True
        try:
            pool = self._pool()
            self._set(self.task, sorted({t.task for t in pool}))
            pool = select(pool, task=self.task.value)
            self._set(self.method, sorted({t.method for t in pool}, key=method_rank))
            pool = select(pool, method=self.method.value)
            self._set(self.size, sorted({t.size for t in pool}))
            pool = select(pool, size=self.size.value)
            index = {id(t): i for i, t in enumerate(self.traces)}
            self._set(self.problem, [(problem_label(n, t), index[id(t)]) for n, t in enumerate(pool)])
            self._selection = pool
        finally:
            self._busy = False
        self._show()

    @property
    def current(self) -> Trace | None:
        i = self.problem.value
        return self.traces[i] if i is not None else None

    def _show(self) -> None:
        if self._busy:
            return
        failures = sum(not t.correct for t in self._selection)
        n = len(self._selection)
        self.count.value = f"{n} problem{'' if n == 1 else 's'}, {failures} failed"
        trace = self.current
        self.view.value = trace_html(trace) if trace else "<i>no trace matches</i>"


class _LiveOrStatic:
    """One output that is the live widget where a widget manager runs (JupyterLab with a kernel) and a static
    HTML view elsewhere (an exported notebook, nbconvert, GitHub): both in one mime bundle, so the two never
    show side by side and the static one never contradicts the live one."""

    def __init__(self, ui: Inspector, static_html: str):
        self.ui, self.static_html = ui, static_html

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = self.ui.widget._repr_mimebundle_()
        return dict(bundle, **{"text/html": self.static_html})


def static_view(ui: Inspector) -> str:
    """What a reader without a kernel sees: the first failing problem (else the first problem), said so."""
    failed = next((t for t in ui.traces if not t.correct), None)
    shown = failed or (ui.traces[0] if ui.traces else None)
    if shown is None:
        return "<i>no traces</i>"
    what = "the first failing problem" if failed else "the first problem (none failed)"
    return (f'<div style="color:#666;font-size:12px">Static view of {what} of {len(ui.traces)}; run the '
            'notebook to browse them all.</div>' + trace_html(shown))


def inspector(traces: Iterable[Trace | dict], only_failures: bool = False, display: bool = True):
    """The interactive trace browser (an ipywidgets VBox, returned). With display=True it is displayed as one
    output that is the live browser under a kernel and, where widgets cannot run (a saved or exported notebook),
    a static HTML view of the first failing problem instead."""
    ui = Inspector(traces, only_failures)
    if display:
        from IPython.display import display as show

        show(_LiveOrStatic(ui, static_view(ui)))
    return ui.widget


def show_trace(trace: Trace | dict) -> None:
    """Display one trace's HTML in a notebook (static: stays in the saved notebook)."""
    from IPython.display import HTML, display

    display(HTML(trace_html(trace)))
