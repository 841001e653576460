"""Task-agnostic pre-training of the tiny base model: the CPU stand-in for LLaMA's generic skills.

A pretrained LLaMA can already read and copy digit strings far longer than anything it is fine-tuned on; a tiny
model trained from scratch cannot, and that is what breaks its recursion out of distribution (research/RESULTS.md). So before
fine-tuning, the tiny model learns string skills the three tasks lean on, on lengths well past the fine-tuning
range, in formats unlike the tasks' prompts: copy a sequence, drop its first item, drop the first item of two
sequences at once, put an item in front. Sequences are digit strings, bit lists and small-integer lists.

The base is an ordinary finished run (retune.train), cached under its key like every trained model; fine-tuning
starts from its weights (full fine-tuning unless the profile asks for LoRA).
"""
from __future__ import annotations

import random
from pathlib import Path

from . import data, train

OPERATIONS = ("copy", "behead", "behead_pair", "prefix")
KINDS = ("digits", "bits", "ints")
SEPARATORS = (" ; ", " | ", " & ", " + ")


def sequence(kind: str, length: int, rng: random.Random) -> list[str]:
    if kind == "digits":
        return [str(rng.randrange(10)) for _ in range(length)]
    if kind == "bits":
        return [str(rng.randrange(2)) for _ in range(length)]
    return [str(rng.randint(-9, 9)) for _ in range(length)]


def show(kind: str, items: list[str]) -> str:
    return "".join(items) if kind == "digits" else "[" + ", ".join(items) + "]"


def example(operation: str, kind: str, length: int, rng: random.Random) -> dict:
    """One generic record: {input, output, task: 'generic', method: operation, kind, size}."""
    a = sequence(kind, length, rng)
    if operation == "copy":
        prompt, answer = f"copy: {show(kind, a)}", show(kind, a)
    elif operation == "behead":
        prompt, answer = f"behead: {show(kind, a)}", show(kind, a[1:])
    elif operation == "behead_pair":
        b, sep = sequence(kind, length, rng), rng.choice(SEPARATORS)
        prompt = f"behead both: {show(kind, a)}{sep}{show(kind, b)}"
        answer = f"{show(kind, a[1:])}{sep}{show(kind, b[1:])}"
    elif operation == "prefix":
        item = sequence(kind, 1, rng)
        prompt, answer = f"put {item[0]} first: {show(kind, a)}", show(kind, item + a)
    else:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}; got {operation!r}")
    return {"input": prompt + "\n>> ", "output": answer, "task": "generic", "method": operation, "kind": kind,
            "size": length}


def build(examples: int, max_length: int, seed: int = 0) -> list[dict]:
    """`examples` records, operations and sequence kinds equally likely, lengths uniform in 2..max_length (half
    that for integer lists, whose items are several characters: DP out of distribution needs 10)."""
    if examples < 1:
        raise ValueError(f"pretrain examples must be >= 1; got {examples}")
    if max_length < 2:
        raise ValueError(f"pretrain max_length must be >= 2 (items to drop and keep); got {max_length}")
    rng = random.Random(f"pretrain/{seed}")
    out = []
    for _ in range(examples):
        operation, kind = rng.choice(OPERATIONS), rng.choice(KINDS)
        longest = max(2, max_length // 2) if kind == "ints" else max_length  # an int item is 3-4 characters
        out.append(example(operation, kind, rng.randint(2, longest), rng))
    return out


def dataset(spec: dict, seed: int, data_dir: Path) -> Path:
    """The pre-training set of `spec` ({examples, max_length}) for `seed`, written once with its manifest."""
    path = Path(data_dir) / f"pretrain-generic-len{spec['max_length']}-n{spec['examples']}-s{seed}.jsonl"
    if data.verified(path) is None:
        records = build(spec["examples"], spec["max_length"], seed)
        data.write(records, path, {"task": "generic", "method": "pretrain", "seed": seed,
                                   "examples": spec["examples"], "max_length": spec["max_length"]})
    return path


def pretrained_base(spec: dict, model_config: dict | None, seed: int, data_dir: Path, runs_dir: Path,
                    progress: bool = True) -> Path:
    """The run directory of a tiny model pre-trained on the generic set (trained once, then cached)."""
    config = dict(spec.get("train") or {}, seed=seed, lora=False, progress=progress)
    return train.train("tiny", [dataset(spec, seed, data_dir)], config, runs_dir, model_config)


def rehearsal(spec: dict, task_data: Path, seed: int, data_dir: Path) -> Path:
    """Generic examples to mix into a fine-tuning set: a fraction `spec['mix']` of the mixed total, drawn from
    a stream apart from pre-training's (seed + 1000)."""
    mix = spec["mix"]
    if not 0 < mix < 1:
        raise ValueError(f"pretrain mix must be in (0, 1); got {mix}")
    count = round(data.read_manifest(task_data)["records"] * mix / (1 - mix))
    return dataset(dict(spec, examples=max(count, 1)), seed + 1000, data_dir)
