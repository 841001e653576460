"""The README and docs/ against the repository: every relative link resolves to a file inside it, every `make`
target and `retune` subcommand the README names exists, and the README's notebook table is notebooks/."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]+`")
# [text](target) and ![alt](target); the target may carry a title ("...") and an #anchor, both ignored.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose(text: str) -> str:
    """The text outside code: fenced blocks and inline code spans are blanked (a `[x](y)` in code is no link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def code(text: str) -> str:
    """Only the code: fenced blocks and inline code spans, one per line."""
    return "\n".join(FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text)))


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Relative links and images of a markdown page whose file does not exist or lies outside `root`."""
    bad = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if SCHEME.match(target) or target.startswith("#"):
            continue  # a public URL (http:, https:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            bad.append(target)
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == [], f"{page.relative_to(ROOT)}: links to missing files"


def test_the_link_check_reports_a_planted_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "real.png").write_bytes(b"")
    (tmp_path / "docs" / "other.md").write_text("# other\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("A [good](other.md#a-section) link, a [broken](missing.md) one, an image "
                    "![ok](../figures/real.png), a missing ![figure](../figures/nope.png), one [outside](../../x.md),\n"
                    "a [URL](https://arxiv.org/abs/2407.04787), an [anchor](#top) and `[code](not-a-link.md)`.\n"
                    "```\n[in a block](nor-this.md)\n```\n")
    (tmp_path.parent / "x.md").write_text("outside the root\n")
    assert broken_links(page, root=tmp_path) == ["missing.md", "../figures/nope.png", "../../x.md"]


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.M))
    for phony in re.findall(r"^\.PHONY\s*:(.*)$", text, re.M):
        targets.update(phony.split())
    return targets


def test_every_make_target_the_readme_names_exists():
    named = set(re.findall(r"(?:^|[\s`(])make\s+([a-z][\w-]*)", code(README.read_text()), re.M))
    assert {"reproduce", "test"} <= named, "the README must give the two commands"
    assert named - makefile_targets() == set()


def readme_subcommands() -> set[str]:
    return set(re.findall(r"(?:^|[\s`(])retune\s+([a-z][\w-]*)", code(README.read_text()), re.M))


def test_the_cli_entry_point_is_retune_cli():
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^retune\s*=\s*"retune\.cli:main"', scripts, re.M)  # `python -m retune.cli` is `retune`


@pytest.mark.parametrize("sub", sorted(readme_subcommands()))
def test_every_retune_subcommand_the_readme_names_exists(sub):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "retune.cli", sub, "--help"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"retune {sub} --help: {done.stderr.strip()[-500:]}"


def test_the_readme_names_subcommands():
    assert {"reproduce", "data", "train", "eval"} <= readme_subcommands()


def test_the_notebook_table_is_the_notebooks_folder():
    listed = re.findall(r"^\|\s*`(\d\d_\w+)`\s*\|", README.read_text(), re.M)
    present = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert listed == present


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_points_at_files_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    assert [s for s in ("../shared", "SPEC.md", "MEASURED.md") if s in text] == []
