"""The task registry: every module in this folder (or in a folder named by $RETUNE_TASK_DIRS) that defines a Task
subclass with a `name` is a task, so adding a task means adding one file. `get_task(name, variant)` is the only entry point the rest needs; the methods are
objects of their own registry (retune.tasks.methods: `METHODS`, `get_method(name)`)."""
import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path

from .base import SOLUTION, Example, Malformed, Node, Task
from .methods import METHODS, Method, get_method


TASK_DIRS = "RETUNE_TASK_DIRS"  # more folders of task files, separated by os.pathsep (a user's own tasks)


def _modules():
    """Every module of this folder, then every *.py file of the folders named by $RETUNE_TASK_DIRS."""
    for module in pkgutil.iter_modules(__path__):
        yield importlib.import_module(f"{__name__}.{module.name}")
    for folder in filter(None, os.environ.get(TASK_DIRS, "").split(os.pathsep)):
        for path in sorted(Path(folder).glob("*.py")):
            name = f"{__name__}.{path.stem}"
            if name not in sys.modules:
                spec = importlib.util.spec_from_file_location(name, path)
                sys.modules[name] = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(sys.modules[name])
            yield sys.modules[name]


def _discover() -> dict[str, type[Task]]:
    """The tasks: the Task subclasses with a `name` that the modules define, in their `order`, then by name."""
    found = {}
    for module in _modules():
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, Task) and cls.__module__ == module.__name__ and cls.name:
                found[cls.name] = cls
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


TASKS = _discover()


def get_task(name: str, variant: int = 0) -> Task:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name](variant)


__all__ = ["TASKS", "METHODS", "SOLUTION", "Example", "Malformed", "Method", "Node", "Task", "get_method",
           "get_task"]
