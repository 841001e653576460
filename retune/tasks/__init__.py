"""The task registry: one file per task; `get_task(name, variant)` is the only entry point the rest needs."""
from .addition import Addition
from .base import METHODS, RECURSIVE_METHODS, SOLUTION, Example, Malformed, Node, Task, check_method, return_text
from .dp import DynamicProgramming
from .parity import Parity

TASKS = {cls.name: cls for cls in (Addition, DynamicProgramming, Parity)}


def get_task(name: str, variant: int = 0) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name](variant)


__all__ = ["TASKS", "METHODS", "RECURSIVE_METHODS", "SOLUTION", "Example", "Malformed", "Node", "Task",
           "check_method", "get_task", "return_text"]
