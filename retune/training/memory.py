"""One training step's peak memory, measured in its own process (`python -m retune.training.memory JOB_JSON`).

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


def measure(data: str, model: str = "tiny", tiny_model: dict | None = None, batch_size: int = 32, lora=False,
            dtype: str = "float32", bf16: bool = False, device: str = "cpu", threads: int = 0,
            max_length: int | None = None) -> dict:
    """One training step of the recipe as it is trained (its base in `dtype`, LoRA or not, bf16 autocast or not,
    its batch of the longest examples it keeps, forward, backward and an AdamW step) on `device`."""
    import torch

    from ..data.datasets import read
    from ..models.causal_lm import encode_example, with_lora
    from .fine_tune import load_base
    from .trainer import completion_collator

    if threads:
        torch.set_num_threads(threads)
    net, tok = load_base(model, tiny_model if model == "tiny" else None, dtype)
    if lora:
        net = with_lora(net, lora)
    net.to(device).train()
    examples = []
    for r in read(data):
        ids, labels = encode_example(tok, r["input"], r["output"])
        if max_length is None or len(ids) <= max_length:  # longer ones are dropped in training too
            examples.append({"input_ids": ids, "labels": labels})
    examples = sorted(examples, key=lambda e: len(e["input_ids"]))[-batch_size:]
    batch = {k: v.to(device) for k, v in completion_collator(tok)(examples).items()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6)
    cuda = device.startswith("cuda")
    before = rss_mb()
    reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        loss = net(**batch).loss
    loss.backward()
    optimizer.step()
    peak_rss = rss_mb("VmHWM")
    out = {"batch_size": len(examples), "tokens_per_example_max": max(len(e["input_ids"]) for e in examples),
           "step_memory_mb": round(max(peak_rss - before, 0.0), 1), "device": device, "dtype": dtype, "bf16": bf16,
           "lora": bool(lora), "trainable_params": sum(p.numel() for p in trainable),
           "params": sum(p.numel() for p in net.parameters()), "threads": torch.get_num_threads(), "status": "ok"}
    if cuda:
        out["step_memory_mb"] = round((torch.cuda.max_memory_allocated() - start) / 2**20, 1)
    return out


def out_of_memory(err: BaseException) -> bool:
    """Whether an error is an allocation that failed: CUDA's, or the CPU allocator's."""
    import torch

    text = str(err).lower()
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def child_main(job: dict) -> dict:
    """What the child prints: `measure(**job)`, or, when the step ran out of memory, a row that says so."""
    try:
        return measure(**job)
    except Exception as err:
        if not out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return {"status": "OOM", "error": first[:200], "device": job.get("device", "cpu")}


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
    """`measure(**job)` in a fresh process, which dies with this one. A step that ran out of memory comes back as
    a row with status "OOM" (the allocator's error, or the child killed by SIGKILL: the kernel's OOM killer); any
    other failure raises with the child's last line of error output."""
    done = run_child([sys.executable, "-m", "retune.training.memory", json.dumps(job)], capture_output=True, text=True)
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    if done.returncode in (-9, 137):
        return {"status": "OOM", "error": "killed by SIGKILL (the kernel's out-of-memory killer, most likely)",
                "device": job.get("device", "cpu")}
    last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise RuntimeError(f"measuring one training step failed: {last}")


if __name__ == "__main__":
    print(json.dumps(child_main(json.loads(sys.argv[1]))))
