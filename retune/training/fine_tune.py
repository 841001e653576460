"""Fine-tuning through transformers' Trainer: completion-only loss, LoRA or full fine-tuning, checkpoints that
survive a kill, a run cache keyed by everything that determines the result, and measurements beside the model.

    run_dir = train("tiny", ["data/addition_retuning.jsonl"], TrainConfig(max_steps=2000))
    model, tokenizer = load_trained(run_dir)

A run directory holds: run.json (what went in, and the cache key), model/ (full weights) or adapter/ (LoRA only,
the base is rebuilt from run.json), tokenizer/, measurements.json (written last: its presence means "finished"),
and checkpoints/ while the run is in progress.

With `processes` > 1 a run trains data-parallel: torchrun starts that many processes (`python -m retune.training.fine_tune`),
each trains over the same data through the Trainer's own DDP (one GPU each; gloo on CPU) and takes its share of
every batch (retune.training.trainer), so the global batch and the data order are the one-process run's; rank 0 writes.
The key leaves `processes` out, as it does threads: the same run, up to the order of float sums.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from ..data import datasets as data
from ..files import file_sha256, locked, versions, write_json
from ..models.causal_lm import (CHARS, TinyConfig, char_tokenizer, load_pretrained, load_tokenizer, load_weights,
                                tiny_llama, freeze_lower, refuse_nonfinite, torch_dtype, with_lora)
from ..config.profiles import Recipe
from ..settings import build
from .checks import check_inputs, check_source, damaged, discard, out_of_space, read_run, record_files
from .trainer import (diverged, final_loss, finished_at, make_trainer, peak_memory, read_jsonl, restore_finished, stats,
                      tokenize)


@dataclass
class TrainConfig(Recipe):
    """Everything the trainer needs, as plain data: a profile's recipe (retune.config.profiles.Recipe, where the
    defaults and their reasons are written) plus what each run sets for itself."""

    seed: int = 0  # seeds the trainer, dropout and the data order
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    progress: bool = True  # the Trainer's tqdm progress bar


# Keys that change how a run is carried out but not what it produces: left out of the cache key.
NOT_IN_KEY = ("save_steps", "threads", "logging_steps", "progress", "processes", "device")
LAUNCHED = "RETUNE_DISTRIBUTED_RUN"  # set for the processes torchrun starts for one run: that run's directory
# Keys added after runs were cached: left out of the key while at these defaults, so older runs keep their keys.
LATER_DEFAULTS = {"loss_mean": "token", "frozen_layers": 0}


def key_config(config: dict) -> dict:
    """The part of a run's config (a dict, as in run.json) that determines its result."""
    return {k: v for k, v in config.items() if k not in NOT_IN_KEY and LATER_DEFAULTS.get(k, object()) != v}


# --- models ----------------------------------------------------------------------------------------------

def is_run_dir(source) -> bool:
    return (Path(str(source)).expanduser() / "run.json").is_file()


def base_identity(source: str, model_config: dict | None = None, dtype: str = "float32") -> tuple[str, dict]:
    """(kind, identity) of a base model without loading it, so a cache hit costs no model load. kind is "tiny",
    "run" (one of our finished runs) or "pretrained" (a local model directory or a hub id)."""
    if source == "tiny":
        return "tiny", {"tiny": asdict(TinyConfig(**(model_config or {})))}
    if model_config:
        raise ValueError("model_config only applies to --model tiny")
    if is_run_dir(source):
        return "run", {"run": read_run(source)["key"]}
    local = Path(source).expanduser()
    if local.is_dir():  # a local model: identified by its files' content, wherever it lies
        return "pretrained", {"pretrained_files": model_files_fingerprint(local), "dtype": dtype}
    return "pretrained", {"pretrained": source, "dtype": dtype}


def model_files_fingerprint(directory: Path) -> str:
    """A cheap content fingerprint of a model directory: config.json in full, and each weights file's size with
    its first and last MiB (hashing all of a 13 GB checkpoint would take longer than many runs)."""
    digest = hashlib.sha256()
    for f in sorted(directory.iterdir()):
        if f.name == "config.json":
            digest.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            with f.open("rb") as fh:
                head = fh.read(1 << 20)
                fh.seek(max(size - (1 << 20), 0))
                tail = fh.read()
            digest.update(f"{f.name}:{size}".encode() + head + tail)
    return digest.hexdigest()


def load_base(source: str, model_config: dict | None = None, dtype: str = "float32", device: str | None = None):
    """(model, tokenizer) of a base model: "tiny" (random init from TinyConfig), one of our finished runs (LoRA
    merged in, so a new adapter or full fine-tuning starts from its weights), or a pretrained causal LM; in `dtype`,
    and on `device` when one is given."""
    if source == "tiny":
        tok = char_tokenizer()
        model = tiny_llama(TinyConfig(**(model_config or {})), tok)
    elif is_run_dir(source):
        model, tok = load_trained(source, merge=True, device=device, dtype=dtype if device else None)
        model = model.train()
    else:
        model, tok = load_pretrained(source, dtype)
    return (model.to(device=resolve_device(device), dtype=torch_dtype(dtype)) if device else model), tok


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is present, else 'cpu'; anything else as given (a clear error for cuda without
    a GPU, instead of torch's deep in the first forward pass)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA device here (use device auto or cpu)")
    return device


def load_trained(run_dir, merge: bool = False, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) of a finished run, in eval mode. A LoRA run comes back as a PeftModel over its rebuilt
    base; `merge=True` folds the adapter into the base weights (a plain model).

    The one place a trained model is put on a device and cast: with `device` ('auto', 'cpu', 'cuda', ...) and/or
    `dtype` ('float16', 'bfloat16', ...) a LoRA run's base is loaded once, in that dtype (no float32 copy of a 7B
    base in host memory), and put on that device, where the adapter (its own weights in float32) is folded in; a
    full model is moved and cast. Without them the model stays on the CPU in the dtype it was saved in."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / "measurements.json").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a finished run (no measurements.json)")
    problem = damaged(run_dir)  # never a model whose files are not the ones it finished with
    if problem:
        raise ValueError(f"run {str(run_dir)!r} is damaged: {problem}; delete the directory and train it again")
    run = read_run(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer", run_dir)
    if (run_dir / "model").is_dir():
        model = load_weights(run_dir / "model", name=run_dir)
    else:
        from peft import PeftModel

        placed = device is not None or dtype is not None
        base, _ = load_base(run["model"], run.get("model_config"), dtype or run["config"]["dtype"],
                            (device or "cpu") if placed else None)
        model = PeftModel.from_pretrained(base, run_dir / "adapter")
        refuse_nonfinite(model, run_dir)  # the adapter's own weights (the base was checked as it loaded)
        if merge:
            model = model.merge_and_unload()
    if device is not None or dtype is not None:
        model = model.to(device=resolve_device(device or "cpu"), dtype=torch_dtype(dtype) if dtype else None)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def placement(model) -> dict:
    """The device and dtype a model's weights actually are in (read from its parameters)."""
    weight = next(model.parameters())
    return {"device": str(weight.device), "dtype": str(weight.dtype).removeprefix("torch.")}


# --- the run cache ---------------------------------------------------------------------------------------

_IDENTITIES: dict[tuple, dict] = {}  # (path, size, mtime): a file is hashed once per process, not per lookup


def data_identity(path) -> dict:
    """sha256, task and method of a dataset. The sha256 is always the file's own: a manifest is only trusted
    for task and method when it names that same sha256 (a writer killed between the data and its manifest
    leaves a stale one beside new data), else they come from the first record."""
    path = Path(path)
    st = path.stat()
    manifest = data.manifest_path(path)
    m = manifest.stat() if manifest.is_file() else None
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, m and (m.st_size, m.st_mtime_ns))
    if memo not in _IDENTITIES:
        _IDENTITIES[memo] = _data_identity(path)
    return dict(_IDENTITIES[memo])


def _data_identity(path: Path) -> dict:
    from ..data.datasets import verified

    m = verified(path)
    if m is not None:
        params = m.get("parameters", {})
        return {"sha256": m["sha256"], "task": params.get("task", m.get("task")),
                "method": params.get("method", m.get("method"))}
    first = next(data.records(path), {})  # checked: a bad first line is named by file and line
    return {"sha256": file_sha256(path), "task": first.get("task"), "method": first.get("method")}


def run_key(base_identity: dict, data: list[dict], config: TrainConfig) -> str:
    """A hash of everything that determines a run's result."""
    train_part = key_config(asdict(config))
    blob = json.dumps({"base": base_identity, "data": data, "train": train_part}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_name(data: list[dict], key: str) -> str:
    """runs/<task>-<method>-<key prefix>: readable, and unique through the key."""
    tasks = "+".join(sorted({d["task"] or "data" for d in data}))
    methods = "+".join(sorted({d["method"] or "any" for d in data}))
    return f"{tasks}-{methods}-{key[:16]}"


class RunIdentity(NamedTuple):
    """What a run is, computed without loading or training anything: the base's kind and identity, the
    datasets' identities and the cache key over both and the recipe."""

    kind: str
    base: dict
    data: list[dict]
    key: str


def identify(model_source: str, dataset_paths, config: TrainConfig, model_config: dict | None = None) -> RunIdentity:
    kind, base = base_identity(model_source, model_config, config.dtype)
    data = [data_identity(p) for p in dataset_paths]
    return RunIdentity(kind, base, data, run_key(base, data, config))


def run_directory(ident: RunIdentity, runs_dir) -> Path:
    """Where a run lives: runs_dir/<task>-<method>-<key prefix>."""
    return Path(runs_dir) / run_name(ident.data, ident.key)


def last_checkpoint(checkpoints: Path) -> Path | None:
    done = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


# --- training --------------------------------------------------------------------------------------------

def use_lora(config: TrainConfig, kind: str):
    """The LoRA setting of a run: explicit when given, else LoRA only for a pretrained base."""
    return config.lora if config.lora is not None else kind == "pretrained"


def train(model_source: str, dataset_paths, config: TrainConfig | dict | None = None, runs_dir="runs",
          model_config: dict | None = None, callbacks=()) -> Path:
    """Fine-tune `model_source` ("tiny", one of our run dirs, a local model or a hub id) on the JSONL datasets and
    return the run directory. A finished run with the same key is returned at once, without training; an
    interrupted one resumes from its last checkpoint."""
    import torch

    config = config if isinstance(config, TrainConfig) else make_config(config or {})
    paths = [Path(p) for p in ([dataset_paths] if isinstance(dataset_paths, (str, Path)) else dataset_paths)]
    if not paths:
        raise ValueError("dataset_paths is empty: give at least one JSONL file (--data)")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"dataset {str(p)!r} does not exist (--data expects a JSONL file)")
    check_inputs(config, model_source, model_config)  # every value named before a model or a directory exists
    check_source(model_source)  # fails at once for a typo, a file or an empty directory; no network unless allowed
    if config.threads > 0:
        torch.set_num_threads(config.threads)

    start = time.perf_counter()
    kind, identity, data_ids, key = ident = identify(model_source, paths, config, model_config)
    run_dir = run_directory(ident, runs_dir)
    launched = os.environ.get(LAUNCHED) == str(run_dir)  # a rank of this run: its launcher holds the lock
    with contextlib.nullcontext() if launched else locked(run_dir):  # a second asker waits, then finds it finished
        if (run_dir / "measurements.json").is_file():
            problem = damaged(run_dir)  # its weights hashed against the digest it finished with
            if problem is None:
                return run_dir  # cached: nothing loaded, nothing trained
            discard(run_dir, problem)
        if config.processes > 1 and not launched:
            return launch(model_source, paths, config, runs_dir, model_config, run_dir, callbacks)
        rank0 = int(os.environ.get("RANK", "0")) == 0

        model, tok = load_base(model_source, model_config, config.dtype)

        lora = use_lora(config, kind)
        if lora and config.frozen_layers:  # a pretrained base gets LoRA by default: say so rather than ignore it
            raise ValueError("frozen_layers applies to full fine-tuning; this run uses LoRA (set lora: false)")
        model = with_lora(model, lora) if lora else freeze_lower(model, config.frozen_layers)
        records = [r for p in paths for r in read_jsonl(p)]
        for p in paths if kind == "tiny" else ():  # the character tokenizer's alphabet: printable ASCII, newline
            data.check_alphabet(p, CHARS, "the tiny model's character tokenizer")
        # An example longer than the model's positions would train on positions it has no embedding for (RoPE
        # computes them anyway, silently): such examples are dropped and counted, as those over max_length are.
        positions = getattr(model.config, "max_position_embeddings", None) or config.max_length
        limit = min(config.max_length, positions)
        examples, dropped = tokenize(records, tok, limit)
        if not examples:
            raise ValueError(f"no training examples: all {len(records)} records are longer than "
                             f"{'max_length' if limit == config.max_length else 'the model positions'}={limit}")
        if dropped and limit < config.max_length:
            print(f"retune: {dropped} of {len(records)} examples (longer than the model's {positions} positions, "
                  f"model max_position_embeddings) dropped", file=sys.stderr)

        run_dir.mkdir(parents=True, exist_ok=True)
        # Local sources are recorded absolute, so load_trained can rebuild a LoRA run's base from any directory.
        source_ref = model_source if kind == "tiny" or not Path(model_source).expanduser().is_dir() \
            else str(Path(model_source).expanduser().resolve())
        run = {"key": key, "model": source_ref, "model_kind": kind, "model_config": model_config, "base": identity,
               "data": [dict(d, path=str(p)) for d, p in zip(data_ids, paths)], "config": asdict(config),
               "lora": lora if lora is not True else "paper"}
        if rank0:
            write_json(run_dir / "run.json", run)

        checkpoints = run_dir / "checkpoints"
        resume = last_checkpoint(checkpoints)
        trainer, counter = make_trainer(model, tok, examples, config, checkpoints, callbacks)
        if resume:  # the counts of the steps before the checkpoint, so the measurements cover the whole run
            counter.restore(resume, trainer.args.process_index)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        train_start = time.perf_counter()
        with out_of_space(run_dir):  # a full disk: one line, and the next try resumes
            result = restore_finished(trainer, resume) if resume and finished_at(resume) else \
                trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        train_seconds = time.perf_counter() - train_start
        counter.add_other_processes(trainer)
        diverged(trainer, result, resume, config, run_dir if rank0 else None)  # never cached as finished
        if not rank0:
            return run_dir

        with out_of_space(run_dir):
            save_model(trainer.model, tok, run_dir, bool(lora))
        m = measurements(examples, dropped, counter, config, train_seconds, time.perf_counter() - start,
                         trainer, result, resume)
        m["files"] = record_files(run_dir)  # checked whenever the run is loaded or found in the cache
        write_json(run_dir / "measurements.json", m)  # last: marks the run finished
        shutil.rmtree(checkpoints, ignore_errors=True)
        return run_dir


def launch(model_source: str, paths: list[Path], config: TrainConfig, runs_dir, model_config, run_dir: Path,
           callbacks=()) -> Path:
    """Train one run in `config.processes` processes started by torchrun (`python -m torch.distributed.run`), each
    running `train` on the same inputs with its share of every batch; waits for them. Their output (a failing
    rank's traceback) goes to this process's."""
    from .memory import run_child

    if callbacks:
        raise ValueError("callbacks run in the training process: with processes > 1 there are several; train with "
                         "processes 1 to use them")
    threads = max(1, config.threads // config.processes) if config.threads else 1
    job = {"model_source": model_source, "dataset_paths": [str(p) for p in paths], "runs_dir": str(runs_dir),
           "config": asdict(config) | {"threads": threads}, "model_config": model_config}
    env = dict(os.environ, **{LAUNCHED: str(run_dir), "OMP_NUM_THREADS": str(threads)})
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.processes}",
            "-m", "retune.training.fine_tune", json.dumps(job)]
    done = run_child(argv, env=env)
    if done.returncode or not (run_dir / "measurements.json").is_file():
        raise RuntimeError(f"training {run_dir.name} in {config.processes} processes failed (torchrun exit "
                           f"{done.returncode}; the failing rank's traceback is printed above)")
    return run_dir


def save_model(model, tokenizer, run_dir: Path, lora: bool) -> None:
    model.save_pretrained(run_dir / ("adapter" if lora else "model"))
    tokenizer.save_pretrained(run_dir / "tokenizer")


def measurements(examples, dropped, counter, config, train_seconds, wall_seconds, trainer, result, resume) -> dict:
    """What a run cost and saw. Batches, tokens and throughput cover the whole run, a resumed one included (the
    counts before its checkpoint were saved with it); throughput is over the seconds spent in optimizer steps, so
    that starting, resuming and saving do not count against it. train_seconds is this process's time in training."""
    return {
        "examples": len(examples),
        "dropped_too_long": dropped,
        "tokens_per_example": stats([len(e["input_ids"]) for e in examples]),
        "target_tokens_per_example": stats([sum(x != -100 for x in e["labels"]) for e in examples]),
        "tokens_per_batch": stats(counter.batch_tokens),
        "batches_run": len(counter.batch_tokens),
        "padding_fraction": round(counter.padding_fraction, 4),
        "examples_per_s": round(counter.examples / max(counter.step_seconds, 1e-9), 2),
        "tokens_per_s": round(counter.real_tokens / max(counter.step_seconds, 1e-9), 1),
        "step_seconds": round(counter.step_seconds, 2),
        "steps": trainer.state.global_step,
        "train_loss": final_loss(trainer, result, resume),  # the whole run's, also when it resumed
        "losses": [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h],
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(wall_seconds, 2),
        "resumed_from": resume.name if resume else None,
        "device": "cuda" if trainer.args.device.type == "cuda" else "cpu",
        "processes": trainer.args.world_size,  # data-parallel processes (tokens_per_batch: the first one's share)
        **peak_memory(),
        "versions": versions(),
        "seed": config.seed,
        "config": asdict(config),
    }


# --- configuration ---------------------------------------------------------------------------------------

def make_config(overrides: dict, base: TrainConfig | None = None) -> TrainConfig:
    """A TrainConfig from `base` with `overrides`, each key and value checked as in a profile (an unknown key is
    an error naming the allowed ones and the closest)."""
    values = {k: v for k, v in asdict(base or TrainConfig()).items()}
    return build(TrainConfig, values | dict(overrides), "train")


def recipe_of(section) -> dict:
    """The Recipe keys of a profile section (train or pretrain.train), without its other keys (sizes, ...)."""
    names = {f.name for f in fields(Recipe)}
    return {k: v for k, v in asdict(section).items() if k in names}


if __name__ == "__main__":  # one rank of a run trained in several processes (`launch`)
    from retune.training.fine_tune import make_config as _config, train as _train

    import torch.distributed as _dist

    _job = json.loads(sys.argv[1])
    _train(**dict(_job, config=_config(_job["config"])))
    if _dist.is_initialized():  # a rank leaving with gloo's threads alive aborts ("terminate called ...")
        _dist.barrier()  # the others wait while rank 0 saves
        _dist.destroy_process_group()
