"""One training step's peak memory, measured in its own process (`python -m retune.memory JOB_JSON`).

Peak resident memory only grows within a process, so a notebook that trains many models cannot measure any one
of them; this module runs one forward and backward pass on the longest examples of a dataset and prints JSON.
"""
from __future__ import annotations

import json
import subprocess
import sys


def rss_mb(field: str = "VmRSS") -> float:
    """Current (VmRSS) or peak (VmHWM) resident memory of this process from Linux /proc, in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak() -> None:
    """Reset the peak resident memory (VmHWM) to the current one (Linux >= 4.0), so loading doesn't count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(data: str, model: str = "tiny", tiny_model: dict | None = None, batch_size: int = 32) -> dict:
    import torch

    from .data import read
    from .model import encode_example
    from .train import completion_collator, load_base

    net, tok = load_base(model, tiny_model if model == "tiny" else None)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device).train()
    records = sorted(read(data), key=lambda r: len(r["input"]) + len(r["output"]))[-batch_size:]
    examples = []
    for r in records:
        ids, labels = encode_example(tok, r["input"], r["output"])
        examples.append({"input_ids": ids, "labels": labels})
    batch = {k: v.to(device) for k, v in completion_collator(tok)(examples).items()}
    before = rss_mb()
    reset_peak()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    net(**batch).loss.backward()
    peak_rss = rss_mb("VmHWM")
    out = {"batch_size": len(examples), "tokens_per_example_max": max(len(e["input_ids"]) for e in examples),
           "step_memory_mb": round(max(peak_rss - before, 0.0), 1), "device": device}
    if device == "cuda":
        out["step_memory_mb"] = round((torch.cuda.max_memory_allocated() - start) / 2**20, 1)
    return out


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """In a child between fork and exec (a `preexec_fn`): ask Linux to SIGKILL this process when its parent
    dies, so a child never outlives a killed notebook or `retune reproduce`. A no-op elsewhere."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_child(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for a child that must die with this process (SIGKILL included)."""
    return subprocess.run(argv, preexec_fn=die_with_parent, **kwargs)


def measure_in_child(job: dict) -> dict:
    """`measure(**job)` in a fresh process, which dies with this one."""
    done = run_child([sys.executable, "-m", "retune.memory", json.dumps(job)], capture_output=True, text=True,
                     check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
