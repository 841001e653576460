"""The layer picture of docs/architecture.md, held against the code: every module of retune/ has a layer, and no
module imports one from a higher layer (imports inside functions included; `if TYPE_CHECKING:` ones are not
imports at run time). Also the shared helpers are defined once and no module grows past ~400 lines."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "retune"

# Bottom to top, as drawn in docs/architecture.md: the packages of retune/ (and the modules left at its top).
# A module may import its own layer and those below it.
LAYERS = [
    ("files", "settings"),  # helpers every layer shares; plain data into typed, checked settings
    ("tasks",),  # tasks and methods: the protocol's formats (tasks import nothing else of retune)
    ("data", "models"),  # datasets; tiny and pretrained models, presets
    ("decoding",),  # who writes a context, the recursive decoder
    ("config",),  # the profiles
    ("training",),  # one run trained (cached, checked), its memory, pre-training, a profile's runs
    ("evaluation",),  # scoring, the evaluation pipeline, the shipped traces
    ("analysis",),  # tables, figures, the trace inspector, the step probe, the base's skills
    ("reproduce",),  # the pieces of work, who does them, the notebooks' runner
    ("commands", "cli"),  # the command lines, thin faces
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_name(module: str) -> str:
    """retune.tasks.base -> tasks; retune.commands.eval -> commands; retune.files -> files."""
    return module.split(".")[1] if module.count(".") else ""


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """The retune modules `path` imports, resolved to their full names."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            if target and target.startswith("retune"):
                found |= {f"{target}.{a.name}" for a in node.names} if node.module is None else {target}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("retune")}
    return found


def test_every_module_has_a_layer():
    unplaced = sorted({top_name(m) for m in modules()} - set(LAYER) - {""})
    assert not unplaced, f"add these modules to a layer of LAYERS and of docs/architecture.md: {unplaced}"


def test_no_lower_layer_imports_a_higher_one():
    upward = []
    for name, path in modules().items():
        if name == "retune":
            continue
        mine = LAYER[top_name(name)]
        for target in imports(name, path):
            theirs = LAYER.get(top_name(target)) if target != "retune" else 0
            if theirs is not None and theirs > mine:
                upward.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "\n".join(upward)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The check can fail: an upward import planted in the data layer (at module level and inside a function)."""
    planted = tmp_path / "datasets.py"
    planted.write_text("from ..analysis.report import main_table\n\ndef f():\n    from ..evaluation import pipeline\n")
    found = imports("retune.data.datasets", planted)
    assert found == {"retune.analysis.report", "retune.evaluation"}
    assert all(LAYER[top_name(t)] > LAYER["data"] for t in found)


def test_tasks_import_nothing_of_the_rest():
    for name, path in modules().items():
        if top_name(name) == "tasks":
            assert all(top_name(t) == "tasks" for t in imports(name, path)), name


SHARED = ("ROOT", "DEFAULT_PROFILE", "versions", "file_sha256", "write_json", "atomic_write_text", "replacing")


@pytest.mark.parametrize("helper", SHARED)
def test_shared_helpers_are_defined_once(helper):
    """In retune/files.py and nowhere else (imported where needed)."""
    where = []
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            targets = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if helper in targets:
                where.append(name)
    assert where == ["retune.files"], where


def test_the_default_profile_is_named_once():
    """Only files.DEFAULT_PROFILE names it: no command line default, loader or notebook writes "cpu" as a profile."""
    import re

    by_name = re.compile(r'(profile[^\n]*"cpu"|default="cpu")')
    named = [name for name, path in modules().items() if by_name.search(path.read_text()) and name != "retune.files"]
    assert named == [], named
    notebooks = [p.name for p in (ROOT / "notebooks").glob("*.ipynb") if 'profile = \\"cpu\\"' in p.read_text()]
    assert notebooks == [], notebooks


def test_no_module_is_much_longer_than_a_few_screens():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 420}
    assert not long, long


def test_the_top_of_the_package_holds_few_modules():
    """Concerns live in sub-packages; beside them only the package, the command line and the shared helpers."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
