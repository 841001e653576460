"""Call trees and prompts as plain text, for docs/protocol.md and for reading.

`render(task, problem, method)` writes every context a method's oracle solution goes through, in the order the
decoder opens them, with the text the model writes between « and » (an end-of-sequence token follows each such
target) and everything else exactly as the prompt or the decoder puts it. Lines starting with `→` are comments.

docs/protocol.md embeds such renderings in blocks marked `<!-- rendered: TASK METHOD PROBLEM -->`; `sync` checks
or rewrites them (`python -m retune.tasks.render docs/protocol.md [--write]`), and a test keeps them equal to
what the code renders now, so the document cannot drift from the code.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

from .base import Node, Task
from .methods import MAIN_METHODS, get_method

OPEN, CLOSE = "«", "»"
BLOCK = re.compile(r"<!-- rendered: (?P<spec>[^\n]*?) -->\n```text\n(?P<body>.*?)```", re.DOTALL)
FENCE = re.compile(r"^```", re.MULTILINE)


def marked(contexts: list[tuple[str, str, str]]) -> str:
    """One context's final text with each target between « and »: the contexts of one node grow by the previous
    target and what the decoder appended after it (a return), so the differences are recovered exactly."""
    text, plain = "", ""
    for context, target, _ in contexts:
        assert context.startswith(plain), "a node's contexts each extend the previous one"
        text += context[len(plain):] + OPEN + target + CLOSE
        plain = context + target
    return text


def render(task: Task, problem: Any, method: str) -> str:
    """Every context of `problem`'s oracle solution under `method` (see the module docstring)."""
    if not get_method(method).recursive:
        (example,) = task.examples(problem, method)
        context = [(example.input, example.output, example.kind)]
        answer = task.final_answer(method, example.output)
        return f"#1 the only context\n{marked(context)}\n→ final answer: {answer}\n"
    blocks, numbers = [], {}
    for node, depth in task.tree(problem).walk():
        numbers[id(node)] = len(numbers) + 1
        blocks.append((node, depth))
    out = []
    parents = {id(c): numbers[id(n)] for n, _ in blocks for c in n.children}
    for node, depth in blocks:
        number = numbers[id(node)]
        head = f"#{number} depth {depth}" + (f", called by #{parents[id(node)]}" if depth else "")
        lines = [head, marked(node.contexts(method))]
        lines += comments(task, node, method, number, numbers, parents)
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def comments(task: Task, node: Node, method: str, number: int, numbers: dict, parents: dict) -> list[str]:
    if node.ends_at_last_return(method):
        last = numbers[id(node.children[-1])]
        return [f"→ the context ends when #{last} returns; its return is the answer: {node.answer}",
                f"→ final answer: {task.final_answer(method, node.answer)}"]
    if id(node) in parents:
        if not get_method(method).returns:
            return [f"→ answer (never returned to #{parents[id(node)]}: no carry-over): {node.answer}"]
        return [f"→ returns to #{parents[id(node)]}: {node.answer}"]
    return [f"→ final answer: {task.final_answer(method, node.turns[-1])}"]


def render_variants(task_name: str, problem: Any) -> str:
    """Each prompt phrasing of a task, as Python string literals (newlines and trailing spaces visible): the
    context each method starts from and the prompts of Re-Tuning's top-level calls."""
    from . import get_task

    out = []
    for variant in range(get_task(task_name).variants):
        task = get_task(task_name, variant)
        top = task.tree(problem)
        lines = [f"variant {variant}" + (" (the paper's)" if variant == 0 else "")]
        for method in MAIN_METHODS:
            lines.append(f"  {method + ':':<17} {task.top_context(problem, method)!r}")
        lines += [f"  {f'call {i + 1}:':<17} {child.prompt!r}" for i, child in enumerate(top.children)]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def render_spec(spec: str) -> str:
    """The rendering a block's marker names: `TASK METHOD PROBLEM` or `TASK variants PROBLEM`."""
    from . import get_task

    task_name, method, problem = spec.split(" ", 2)
    problem = ast.literal_eval(problem)
    if method == "variants":
        return render_variants(task_name, problem)
    return render(get_task(task_name), problem, method)


def sync(path: str | Path, write: bool = False) -> list[str]:
    """The specs of the rendered blocks of `path` that differ from the code's rendering now (rewritten when
    `write`). Raises ValueError when a fenced block of the file is not a rendered one."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    fences = len(FENCE.findall(text))
    if fences != 2 * len(blocks):
        raise ValueError(f"{path}: {fences // 2} fenced blocks, {len(blocks)} of them rendered; every example "
                         "must be rendered (<!-- rendered: TASK METHOD PROBLEM --> before a ```text block)")
    stale = [m["spec"] for m in blocks if m["body"] != render_spec(m["spec"])]
    if write and stale:
        new = BLOCK.sub(lambda m: f"<!-- rendered: {m['spec']} -->\n```text\n{render_spec(m['spec'])}```", text)
        path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m retune.tasks.render FILE.md [--write]", file=sys.stderr)
        return 2
    stale = sync(argv[0], write="--write" in argv[1:])
    verb = "rewrote" if "--write" in argv[1:] else "stale"
    for spec in stale:
        print(f"{verb}: {spec}")
    return 1 if stale and "--write" not in argv[1:] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
