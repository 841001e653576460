"""The CPU rehearsal of the GPU profiles (issue 27): `smol` and `paper` run end to end, every notebook, through the
same runner `make reproduce` uses, with their own settings (LoRA with the paper's adapter, their recipes, batches,
gradient accumulation, schedules, grids, eval batches) and only what a CPU needs changed: the device and dtype
(cpu, float32, bf16 off), and tiny budgets (2 steps, 2 problems per size, small sizes, one seed, workers 1, threads
1). The model is a tiny LLaMA directory of the pretrained kind (byte-level BPE, tests/_tiny_pretrained.py), and,
under the `model` marker, SmolLM2-135M itself when `make smollm2` fetched it.

Before issue 27 the rehearsal could not be set up: `train.device` was no key (and bf16 true was a profile key a
CPU could only refuse while training)."""
import json

import nbformat
import pandas as pd
import pytest

from retune.models import presets
from retune.training.runs import finished_run, main_runs
from retune.reproduce import runner as rp
from retune.config.profiles import load_profile

from _tiny_pretrained import write_tiny_pretrained

pytest.importorskip("papermill")
pytestmark = pytest.mark.slow

SIZES = {"train": {"addition": 3, "dp": 3, "parity": 4}, "eval": {"addition": [2, 4], "dp": [2, 4], "parity": [2, 5]}}


def rehearsal_profile(name: str, root, model: str, smaller: dict | None = None):
    """The GPU profile `name` on this CPU, with tiny budgets; its data, runs and results under `root`."""
    dirs = {key: str(root / key) for key in ("data", "runs", "results", "figures")}
    cpu = {"paths": dirs, "model": {"source": model}, "seeds": [0], "threads": 1, "workers": 1,
           "train": {"max_steps": 2, "device": "cpu", "dtype": "float32", "bf16": False, "problems_per_size": 2,
                     "sizes": SIZES["train"]},
           "eval": {"device": "cpu", "dtype": "float32", "problems_per_size": 2, "sizes": SIZES["eval"]},
           "studies": {"efficiency_n": [2]},
           # the paper's probe fine-tunes SmolLM2 (fetched on demand): here the rehearsal's own model, 2 steps
           "step_probe": {"model": model if name == "paper" else None, "fetch": False, "sizes": [2, 4], "n": 2,
                          "train": {"max_steps": 2, "batch_size": 4, "warmup_steps": 0, "device": "cpu"}}}
    return load_profile(name, cpu, smaller or {})


def rehearse(profile, root) -> list[dict]:
    records = rp.reproduce(profile, executed_dir=root / "notebooks", progress=False, log=lambda *_: None)
    assert [r["notebook"] for r in records] == [p.name for p in rp.notebooks()]
    for r in records:
        nb = nbformat.read(r["executed"], as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (r["notebook"], errors)
    return records


def check_results(profile, root) -> None:
    table = pd.read_csv(root / "results" / "main_table.csv")
    assert set(table["task"]) == set(profile.tasks) and set(table["method"]) == set(profile.methods)
    runs = [p for p in (root / "runs").iterdir() if (p / "measurements.json").is_file()]
    assert runs and all((p / "adapter").is_dir() and not (p / "model").exists() for p in runs)  # LoRA everywhere
    main = [finished_run(profile, spec) for spec in main_runs(profile)]
    assert all(main) and {json.loads((p / "run.json").read_text())["config"]["grad_accum"] for p in main} == \
        {profile.train.grad_accum}  # the profile's own recipe (paper: 32)
    memory = pd.read_csv(root / "results" / "memory.csv")
    assert (memory["status"] == "ok").all() and memory["lora"].all() and (memory["device"] == "cpu").all()
    assert (memory["threads"] == 1).all()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(write_tiny_pretrained(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.mark.parametrize("name", ["smol", "paper"])
def test_the_gpu_profile_rehearses_on_cpu(name, tiny_model, tmp_path):
    profile = rehearsal_profile(name, tmp_path, tiny_model)
    rehearse(profile, tmp_path)
    check_results(profile, tmp_path)
    assert (tmp_path / "results" / "step_probe.csv").is_file()


@pytest.mark.model
@pytest.mark.skipif(not presets.is_fetched("smollm2-135m"), reason="SmolLM2 not fetched (make smollm2)")
@pytest.mark.parametrize("name", ["smol", "paper"])
def test_the_gpu_profile_rehearses_on_cpu_with_smollm2(name, tmp_path):
    """SmolLM2-135M on a CPU is ~100x the tiny model per token: one task, no gradient accumulation, short limits."""
    smaller = {"tasks": ["addition"], "train": {"batch_size": 4, "grad_accum": 1, "by_task": {}},
               "studies": {"efficiency_tasks": ["addition"], "variant_tasks": ["addition"], "variants": [0, 1],
                           "ablation_tasks": ["addition"]},
               "limits": {"new_tokens": 32}, "step_probe": {"model": None}}
    profile = rehearsal_profile(name, tmp_path, "smollm2-135m", smaller)
    rehearse(profile, tmp_path)
    check_results(profile, tmp_path)
