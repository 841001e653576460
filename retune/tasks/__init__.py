"""The task registry: every module in this folder that defines a Task subclass with a `name` is a task, so adding
a task means adding one file. `get_task(name, variant)` is the only entry point the rest needs; the methods are
objects of their own registry (retune.tasks.methods: `METHODS`, `get_method(name)`)."""
import importlib
import pkgutil

from .base import SOLUTION, Example, Malformed, Node, Task
from .methods import METHODS, Method, get_method


SUPPORT = ("base", "methods", "render")  # modules of this folder that are not tasks


def _discover() -> dict[str, type[Task]]:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in SUPPORT:
            importlib.import_module(f"{__name__}.{module.name}")
    found = {cls.name: cls for cls in Task.__subclasses__() if getattr(cls, "name", None)}
    order = ("addition", "dp", "parity")  # the paper's order first, then any added task by name
    return {n: found[n] for n in sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n))}


TASKS = _discover()


def get_task(name: str, variant: int = 0) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name](variant)


__all__ = ["TASKS", "METHODS", "SOLUTION", "Example", "Malformed", "Method", "Node", "Task", "get_method",
           "get_task"]
