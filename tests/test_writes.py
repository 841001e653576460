"""Writes a reader may meet half-done go through one helper, retune.files.replacing: a temporary beside the file,
renamed over it at the end. Here: what it guarantees, and that no other module renames files by hand."""
import ast
import json
from pathlib import Path

import pytest

from retune import files

PACKAGE = Path(__file__).resolve().parent.parent / "retune"
# A converted model is a directory: moved into place whole, which the file helper does not do.
DIRECTORY_SWAPS = {("presets.py", "convert")}


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(ZeroDivisionError):
        with files.replacing(path) as tmp:
            tmp.write_text("half")
            1 / 0
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    with files.replacing(path) as tmp:
        tmp.write_text("whole")
        assert path.read_text() != "whole"  # not visible before the block ends
    assert path.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def renames(source: str) -> list[tuple[str, int]]:
    """(function, line) of each rename: os.replace / os.rename, or a .replace / .rename call with one argument
    that is not a literal (a Path's; str.replace takes two, pandas' rename a name or a mapping)."""
    tree = ast.parse(source)
    owner = {id(n): f.name for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("replace", "rename"):
            by_os = isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
            one_path = len(node.args) == 1 and not node.keywords and \
                not isinstance(node.args[0], (ast.Constant, ast.Dict))
            if by_os or one_path:
                found.append((owner.get(id(node), "<module>"), node.lineno))
    return found


def test_the_scanner_finds_a_hand_written_rename():
    planted = ("import os\ndef f(tmp, path, table):\n    tmp.replace(path)\n    os.replace(tmp, path)\n"
               "    'a'.replace('a', 'b')\n    table.rename('count')\n")
    assert renames(planted) == [("f", 3), ("f", 4)]


def test_only_the_helper_renames_files():
    hand_written = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "files.py" and path.parent == PACKAGE:
            continue
        found = [(f, line) for f, line in renames(path.read_text()) if (path.name, f) not in DIRECTORY_SWAPS]
        if found:
            hand_written[str(path.relative_to(PACKAGE))] = found
    assert hand_written == {}, "write through retune.files.replacing (or atomic_write_text / write_json)"
