"""Tracked outputs are byte-stable: a dataset rebuilt from the same inputs gives the same JSONL and manifest bytes,
so rebuilding what the main job commits (the manifests under data/) leaves `git status` clean."""
import json
from pathlib import Path

import pytest

from retune.data import datasets as data
from retune.training import pretrain

ROOT = Path(__file__).resolve().parent.parent


def build_twice(tmp_path, build):
    outs = []
    for name in ("first", "second"):
        out = build(tmp_path / name / "set.jsonl")
        outs.append((out.read_bytes(), data.manifest_path(out).read_bytes()))
    return outs


@pytest.mark.parametrize("task,method,distribution", [("addition", "baseline", "scaled"),
                                                      ("dp", "retuning", "distinct"),
                                                      ("parity", "scratchpad", "efficiency")])
def test_a_dataset_built_twice_has_the_same_bytes(tmp_path, task, method, distribution):
    def build(out):
        data.make(task, method, out, distribution, sizes=(1, 3), n=20, seed=1, progress=False)
        return out
    (jsonl_a, manifest_a), (jsonl_b, manifest_b) = build_twice(tmp_path, build)
    assert jsonl_a == jsonl_b and manifest_a == manifest_b
    manifest = json.loads(manifest_a)
    assert "build_seconds" not in manifest and manifest["versions"] == {"retune": manifest["versions"]["retune"]}


def test_a_pretraining_set_built_twice_has_the_same_bytes(tmp_path):
    def build(out):
        return pretrain.dataset({"examples": 30, "max_length": 8}, 3, out.parent)
    (jsonl_a, manifest_a), (jsonl_b, manifest_b) = build_twice(tmp_path, build)
    assert jsonl_a == jsonl_b and manifest_a == manifest_b


def test_the_build_time_is_returned_but_not_written(tmp_path):
    out = tmp_path / "set.jsonl"
    manifest = data.make("parity", "retuning", out, sizes=(2, 3), n=5, progress=False)
    assert manifest["build_seconds"] >= 0 and "build_seconds" not in data.read_manifest(out)


def test_a_committed_manifest_is_what_a_rebuild_writes(tmp_path):
    committed = ROOT / "data" / "profiles" / "addition-retuning-efficiency-1to6-n100-v0-s0.jsonl.manifest.json"
    p = json.loads(committed.read_text())["parameters"]
    out = tmp_path / committed.name.removesuffix(data.MANIFEST_SUFFIX)
    data.make(p["task"], p["method"], out, p["distribution"], data.parse_sizes(p["sizes"]), p["n"], p["seed"],
              p["variant"], progress=False)
    assert data.manifest_path(out).read_bytes() == committed.read_bytes()
