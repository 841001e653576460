"""The `smol` profile: SmolLM2-135M with the paper's LoRA adapter. The GPU run itself is `make reproduce
PROFILE=smol`; here the same profile, moved to CPU with a few steps, trains and evaluates one task end to end
(smol-smoke): with a tiny LLaMA made from a GGUF file (always), and with the real SmolLM2 under the `model`
marker when it has been fetched."""
import pytest
import torch

from retune.evaluation import pipeline
from retune.models import presets
from retune.training import runs
from retune.config.profiles import load_profile

from _tiny_gguf import write_tiny_gguf


def test_a_profile_with_its_own_paths_shares_no_directory_with_another():
    """smol and smoke run beside the default profile: their tables, figures and runs must never be found, or
    overwritten, by another profile's (cpu and paper set none: they share the defaults)."""
    import yaml

    from retune.config.profiles import available, profile_path

    loaded = {name: load_profile(name).paths for name in available()}
    own = [name for name in loaded if "paths" in (yaml.safe_load(profile_path(name).read_text()) or {})]
    assert "smol" in own
    for name in own:
        for key in ("data", "runs", "results", "figures"):
            mine = getattr(loaded[name], key)
            others = {o for o, paths in loaded.items() if o != name and getattr(paths, key) == mine}
            assert not others, f"{name}'s {key} directory {mine} is also {sorted(others)}'s"


def smol_smoke(tmp_path, model: str, dtype: str = "float32"):
    """The smol profile on CPU, a couple of steps, addition with Re-Tuning only."""
    dirs = {key: str(tmp_path / key) for key in ("data", "runs", "results", "figures")}
    return load_profile("smol", {"paths": dirs, "model": {"source": model}, "threads": 1,
                                 "train": {"max_steps": 2, "batch_size": 4, "warmup_steps": 0, "bf16": False,
                                           "sizes": {"addition": 2}, "problems_per_size": 2},
                                 "eval": {"sizes": {"addition": [2, 3]}, "problems_per_size": 1, "batch_size": 4,
                                          "device": "cpu", "dtype": dtype},
                                 "limits": {"new_tokens": 24}})


def train_and_evaluate(profile):
    run_dir = runs.trained(profile, runs.spec_for(profile, "addition", "retuning", 0))
    assert (run_dir / "adapter").is_dir() and not (run_dir / "model").exists()  # LoRA: only the adapter is saved
    traces = pipeline.evaluate_run(profile, run_dir, "addition", "retuning", 0, progress=False)
    assert sorted(t.size for t in traces) == [2, 3]
    rows = pipeline.rows(traces, model=runs.model_label(profile))
    assert all(r["contexts"] >= 1 for r in rows)
    return run_dir


@pytest.mark.slow
def test_smol_smoke_with_a_tiny_gguf_model(tmp_path):
    gguf_file = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_file)
    model_dir = presets.convert(gguf_file, tmp_path / "tiny-smol")
    run_dir = train_and_evaluate(smol_smoke(tmp_path, str(model_dir)))
    generator = pipeline.hf_generator(smol_smoke(tmp_path, str(model_dir), "bfloat16"), run_dir)  # eval dtype
    assert next(generator.model.parameters()).dtype == torch.bfloat16


@pytest.mark.model
@pytest.mark.skipif(not presets.is_fetched("smollm2-135m"), reason="SmolLM2 not fetched (make smollm2)")
@pytest.mark.slow
def test_smol_smoke_with_smollm2(tmp_path):
    profile = smol_smoke(tmp_path, "smollm2-135m")
    assert runs.base_model(profile, 0) == str(presets.preset_path("smollm2-135m"))
    train_and_evaluate(profile)
