"""Upper limits of a profile's sizes, counts and model dimensions, so that a value no machine can carry out is
refused in one line naming the key and the range, before anything is created. Without them a hidden size of a
million or 10**14 pre-training examples ended in MemoryError tracebacks, 10**20 steps started a progress bar of
that length, and a batch of 2**63 failed deep in the data loader after a run directory was made.

The fixed limits are far beyond any run of this project (the paper's longest: a few thousand steps, batches of
tens, examples of a few thousand tokens); `check_model_fits` adds what this machine's memory allows, where a
tiny model is about to be built.
"""
from __future__ import annotations

import os
import re

from ..settings import ProfileError

MAX_STEPS = 10**8  # optimizer steps (also warm-up, checkpoint and logging intervals): years of training
MAX_BATCH = 2**16  # examples per forward pass, and forward passes per optimizer step
MAX_LENGTH = 2**20  # tokens of one training example
MAX_TINY = {"hidden_size": 2**16, "num_hidden_layers": 2**10, "num_attention_heads": 2**10,
            "intermediate_size": 2**18, "max_position_embeddings": 2**20}
MAX_PRETRAIN_EXAMPLES = 10**8  # generic pre-training examples (64,000 by default)
MAX_PRETRAIN_LENGTH = 4096  # items of the longest generic sequence (24 by default)
MAX_PROCESSES = 1024  # data-parallel processes of one run


def at_most(where: str, value, high) -> None:
    """`value` <= `high`; else an error naming the key, the range and the value."""
    if value > high:
        raise ProfileError(f"{where}: must be at most {high:,}, got {value!r}")


def check_recipe_bounds(recipe, where: str) -> None:
    """A recipe's counts within what any machine can train."""
    for key in ("max_steps", "warmup_steps", "save_steps", "logging_steps"):
        at_most(f"{where}.{key}", getattr(recipe, key), MAX_STEPS)
    for key in ("batch_size", "grad_accum"):
        at_most(f"{where}.{key}", getattr(recipe, key), MAX_BATCH)
    at_most(f"{where}.max_length", recipe.max_length, MAX_LENGTH)
    at_most(f"{where}.processes", recipe.processes, MAX_PROCESSES)
    if recipe.epochs > MAX_STEPS:
        raise ProfileError(f"{where}.epochs: must be at most {MAX_STEPS:,}, got {recipe.epochs!r}")


def check_tiny_bounds(tiny, where: str = "model.tiny") -> None:
    for key, high in MAX_TINY.items():
        at_most(f"{where}.{key}", getattr(tiny, key), high)


def check_pretrain_bounds(section, where: str = "pretrain") -> None:
    at_most(f"{where}.examples", section.examples, MAX_PRETRAIN_EXAMPLES)
    at_most(f"{where}.max_length", section.max_length, MAX_PRETRAIN_LENGTH)


def check_profile_bounds(p, recipes: list) -> None:
    """Every limit above for a profile and its (where, recipe) pairs; lists that must name something once each,
    and the per-task mappings' tasks (an unknown task in train.sizes was accepted and never used; a seed or method
    given twice would be trained once and pooled twice)."""
    from ..tasks import TASKS

    # The name files results under (results/notebooks/<profile>/, ...): a name, never a path out of that folder.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", p.profile) or ".." in p.profile:
        raise ProfileError(f"profile: expected a name of letters, digits, '_', '-' and '.' (no path), got "
                           f"{p.profile!r}")
    for where, recipe in recipes:
        check_recipe_bounds(recipe, where)
        if p.model.source == "tiny":  # its layers are known now: refused here, not after the dataset is built
            at_most(f"{where}.frozen_layers", recipe.frozen_layers, p.model.tiny.num_hidden_layers)
    if p.pretrain:
        check_pretrain_bounds(p.pretrain)
        for task, own in p.pretrain.by_task.items():
            for key, high in (("examples", MAX_PRETRAIN_EXAMPLES), ("max_length", MAX_PRETRAIN_LENGTH)):
                if isinstance(own, dict) and isinstance(own.get(key), (int, float)):
                    at_most(f"pretrain.by_task.{task}.{key}", own[key], high)

    for key in ("seeds", "tasks", "methods"):
        values = getattr(p, key)
        if not values:
            raise ProfileError(f"{key}: give at least one (an empty list would run nothing)")
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise ProfileError(f"{key}: each may be given once; {twice[0]!r} is given twice in {values}")
    for key, mapping in (("train.sizes", p.train.sizes), ("eval.sizes", p.eval.sizes)):
        unknown = [t for t in mapping if t not in TASKS]
        if unknown:
            raise ProfileError(f"{key}: unknown task {unknown[0]!r}; allowed: {', '.join(TASKS)}")
    check_tiny_bounds(p.model.tiny)


def memory_bytes() -> int | None:
    """This machine's physical memory (None where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(tiny, vocab: int = 128, where: str = "model.tiny") -> None:
    """A tiny model whose training state (weights, gradients and AdamW's two moments: 16 bytes a parameter in
    float32) fits in this machine's memory; else the key of its largest dimension is named with the estimate."""
    h, layers, inner = tiny.hidden_size, tiny.num_hidden_layers, tiny.intermediate_size
    params = 2 * vocab * h + layers * (4 * h * h + 3 * h * inner)
    need, have = 16 * params, memory_bytes()
    if have is not None and need > have:
        key = max(("hidden_size", h * h), ("intermediate_size", h * inner), key=lambda kv: kv[1])[0]
        raise ProfileError(f"{where}: {params:,} parameters need about {need / 2**30:,.1f} GiB to train, more than "
                           f"this machine's {have / 2**30:,.1f} GiB (hidden_size {h}, num_hidden_layers {layers}, "
                           f"intermediate_size {inner}); lower {where}.{key}")
