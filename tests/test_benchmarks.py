"""Every benchmark script runs: its quick mode (tiny sizes, seconds each; the numbers mean nothing) as a child
process from a bare checkout, whose last line is the JSON the full run prints, with its fields. A benchmark that
an import moved out from under fails here, not the next time someone measures."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))

# The fields each script's last JSON line must hold (the ones its docstring and results files quote).
FIELDS = {
    "compile.py": {"steps", "eager", "compiled", "ratio"},
    "cpu_bf16.py": {"threads", "ratios"},
    "decode.py": {"speedup_vs_reference", "ratio_to_bound", "decoder", "decoders_s", "ours_s", "bound_s"},
    "gpu_train.py": {"env"},
    "recipe_bound.py": {"matmul_gflops", "flops_per_token", "bound_tokens_per_s", "measured_tokens_per_s", "ratio"},
    "train.py": {"real_tokens", "plain_tokens_per_s", "trainer_tokens_per_s", "tokens_per_s_ratio",
                 "cpu_time_ratio", "padding_fraction"},
    "workers.py": {"one_process_tokens_per_s", "side_by_side_tokens_per_s", "ratio"},
}

pytestmark = pytest.mark.slow  # each script imports torch and transformers in its own process: ~10-50 s apiece


def test_every_benchmark_script_is_checked_here():
    assert sorted(FIELDS) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_quick_mode_prints_its_json(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    assert FIELDS[script] <= set(result), sorted(result)
    if "quick" in result:
        assert result["quick"] is True
    numbers = [v for v in result.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert all(v == v and v >= 0 for v in numbers)  # no NaN, no negative time or ratio
