"""How one run is trained: transformers' Trainer assembled around our data.

Owns the completion-only examples (prompt labels -100, EOS after the target), the right-padding collator, a
length-grouped sampler whose order depends only on (seed, epoch) so a resumed run sees the same batches, the
per-example loss mean, the Trainer's arguments and the token counter behind the throughput figures.
The run cache around it (what a run is, where it lives, when it is finished) is retune.training.fine_tune.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.datasets import read
from ..models.causal_lm import encode_example
from ..config.profiles import LOSS_MEANS

if TYPE_CHECKING:
    from .fine_tune import TrainConfig


def read_jsonl(path) -> list[dict]:
    """A training set's records, each checked by retune.data.datasets.read (a JSON object with string input and output; a
    bad line is named by its file and line number), and at least one of them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {str(path)!r} does not exist (--data expects a JSONL file from `retune data`)")
    records = read(path)
    if not records:
        raise ValueError(f"dataset {str(path)!r} holds no records (an empty file?)")
    return records


def tokenize(records: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int]:
    """Encoded examples (prompt labels -100, EOS after the target) and the number dropped for being too long.

    Too-long examples are dropped, not truncated: a truncated target would teach the model to stop mid-answer."""
    examples, dropped = [], 0
    for r in records:
        ids, labels = encode_example(tokenizer, r["input"], r["output"])
        if len(ids) > max_length:
            dropped += 1
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


def completion_collator(tokenizer):
    """transformers' DataCollatorForSeq2Seq on a right-padding copy of `tokenizer` (positions then start at 0, as
    in generation; the tokenizer itself keeps the left padding generation needs).

    Labels were built per example (prompt -100, target, EOS) and are padded with -100, so padding never masks a
    real EOS even when the pad token is EOS (LLaMA)."""
    import copy

    from transformers import DataCollatorForSeq2Seq

    right = copy.copy(tokenizer)
    right.padding_side = "right"
    return DataCollatorForSeq2Seq(right, label_pad_token_id=-100, return_tensors="pt")


class TokenCounter:
    """Real and padded tokens of the batches actually trained on (counted at the training step: the data loader
    collates one batch ahead, so counting in the collator would include a batch that never trains), and the
    seconds spent in optimizer steps.

    The counts of the whole run survive a kill: every checkpoint holds them as they were at its step (written
    into its folder before the Trainer's own files, so a checkpoint that can be resumed from has them), and a
    resumed run starts from them; it then reports what the uninterrupted run would, throughput included."""

    FILE = "retune_counts-{rank}.json"  # one per process: each counts its share of every batch

    def __init__(self):
        self.real_tokens, self.padded_tokens, self.batch_tokens, self.examples = 0, 0, [], 0
        self.step_seconds = 0.0  # inside optimizer steps (forward, backward, update): not loading, logging, saving

    def add(self, attention_mask) -> None:
        real = int(attention_mask.sum())
        self.real_tokens += real
        self.padded_tokens += attention_mask.numel() - real
        self.batch_tokens.append(real)
        self.examples += attention_mask.shape[0]

    def save(self, checkpoint: Path, rank: int) -> None:
        from ..files import write_json

        checkpoint.mkdir(parents=True, exist_ok=True)
        write_json(checkpoint / self.FILE.format(rank=rank), {
            "real_tokens": self.real_tokens, "padded_tokens": self.padded_tokens, "batch_tokens": self.batch_tokens,
            "examples": self.examples, "step_seconds": self.step_seconds})

    def restore(self, checkpoint: Path, rank: int) -> bool:
        """The counts saved with `checkpoint`; False (and counting from zero) where it has none, as a checkpoint
        written before counts were saved has not."""
        try:
            saved = json.loads((Path(checkpoint) / self.FILE.format(rank=rank)).read_text(encoding="utf-8"))
            real, padded, batches = int(saved["real_tokens"]), int(saved["padded_tokens"]), saved["batch_tokens"]
            examples, seconds = int(saved["examples"]), float(saved["step_seconds"])
            batches = [int(b) for b in batches]
        except (OSError, ValueError, TypeError, KeyError):
            return False
        self.real_tokens, self.padded_tokens, self.batch_tokens = real, padded, batches
        self.examples, self.step_seconds = examples, seconds
        return True

    def add_other_processes(self, trainer) -> None:
        """After a data-parallel run, the totals over every process (each counted its share of the batches)."""
        if trainer.args.world_size > 1:
            import torch

            mine = torch.tensor([self.real_tokens, self.padded_tokens, self.examples], device=trainer.args.device)
            total = trainer.accelerator.reduce(mine, "sum").tolist()
            self.real_tokens, self.padded_tokens, self.examples = (int(x) for x in total)

    @property
    def padding_fraction(self) -> float:
        return self.padded_tokens / max(self.real_tokens + self.padded_tokens, 1)


class LengthGroupedSampler:
    """Shuffled batches of similar length, so little of each batch is padding.

    Like transformers' LengthGroupedSampler (shuffle, sort within mega-batches of 50 batches, cut into batches), but
    the order is a function of (seed, epoch) only: a run resumed mid-training sees exactly the batches the
    uninterrupted run saw, which the global RNG state at the start of a resumed epoch would not guarantee."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, mega: int = 50):
        self.lengths, self.batch_size, self.seed, self.mega, self.epoch = lengths, batch_size, seed, mega, 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer (via accelerate) at every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start:start + size], key=lambda i: self.lengths[i], reverse=True)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        # Shuffle whole batches, but keep a short last batch last: the DataLoader cuts the flat index list every
        # batch_size indices, so a short batch in the middle would shift every later batch.
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        return iter([i for b in full + short for i in b])


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """The fraction of positions that are padding when `batches` (lists of example indices) are padded."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / max(total, 1)


def on_cuda(device: str) -> bool:
    """Whether a recipe's `device` trains on the GPU: auto where CUDA is available; cuda without it is an error."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device cuda: no CUDA device here (use auto or cpu)")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def training_arguments(config: TrainConfig, output_dir: Path, cuda: bool):
    from transformers import TrainingArguments

    from ..models.causal_lm import bf16_supported

    bf16 = cuda and bool(bf16_supported()) if config.bf16 == "auto" else bool(config.bf16)
    if bf16 and not cuda:
        raise ValueError("bf16=True needs a CUDA device; use bf16='auto' or False on CPU")
    if bf16 and not bf16_supported():
        raise ValueError("bf16=True, but this GPU has no bf16; use bf16='auto' (off here) or False")
    if config.processes < 1 or config.batch_size % config.processes:
        raise ValueError(f"processes must be >= 1 and divide batch_size {config.batch_size}; got {config.processes}")
    # Several processes (torchrun): the loader's batch of batch_size is split among them (accelerate's
    # split_batches), so the batches, the global batch and their order are those of one process.
    parallel = {"accelerator_config": {"split_batches": True}, "ddp_backend": "nccl" if cuda else "gloo",
                "ddp_find_unused_parameters": False} if config.processes > 1 else {}
    args = TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.lr_schedule,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,  # the last two: if a kill lands while the newest is being written, the older is whole
        logging_steps=config.logging_steps,
        bf16=bf16,
        use_cpu=not cuda,
        remove_unused_columns=False,  # our collator needs input_ids and labels as they are
        dataloader_num_workers=0,  # tiny batches collate in microseconds; workers would only add start-up time
        report_to="none",
        disable_tqdm=not config.progress,
        **parallel,
    )
    if cuda:
        one_device(args)
    return args


def one_device(args) -> None:
    """More than one visible GPU and no launcher (torchrun sets WORLD_SIZE): the Trainer would wrap the model in
    DataParallel, and every step's batch would be the recipe's times the number of GPUs, outside the run's cache
    key. The run trains on one device (cuda:0) instead, and one line says so."""
    import os
    import sys

    import torch

    count = torch.cuda.device_count()
    if count < 2 or "WORLD_SIZE" in os.environ:
        return
    _ = args.device  # transformers counts the visible GPUs into args._n_gpu here ...
    args._n_gpu = 1  # ... and wraps the model in DataParallel when it is more than one
    print(f"retune: {count} GPUs visible and no launcher: this run trains on cuda:0 alone (the recipe's batch); "
          "to use them all, executor.kind gpus or train.processes", file=sys.stderr)


def example_mean_loss(outputs, labels, num_items_in_batch=None):
    """The mean over examples of each example's mean target-token loss (Recipe.loss_mean = "example")."""
    import torch.nn.functional as F

    logits, target = outputs.logits[:, :-1].float(), labels[:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
    mask = target != -100
    per_example = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_example[mask.any(1)].mean()


def make_trainer(model, tokenizer, examples, config: TrainConfig, output_dir: Path, callbacks=()):
    """(trainer, token counter): a transformers Trainer over `examples` with our collator and a length-grouped,
    seed-determined sampler."""
    from transformers import PrinterCallback, ProgressCallback, Trainer

    LogAtSaves, StderrProgress, CountSteps = _callbacks()
    sampler = LengthGroupedSampler([len(e["input_ids"]) for e in examples], config.batch_size, config.seed)

    counter = TokenCounter()

    if config.loss_mean not in LOSS_MEANS:
        raise ValueError(f"loss_mean must be one of {', '.join(LOSS_MEANS)}; got {config.loss_mean!r}")
    per_example = config.loss_mean == "example"

    class RetuneTrainer(Trainer):
        loss_is_scaled_for_ga = False if per_example else None  # a per-batch mean: the Trainer divides by grad_accum

        def _get_train_sampler(self, train_dataset=None):
            return sampler

        def training_step(self, model, inputs, num_items_in_batch=None):
            counter.add(inputs["attention_mask"])
            return super().training_step(model, inputs, num_items_in_batch)

    args = training_arguments(config, output_dir, on_cuda(config.device))
    trainer = RetuneTrainer(model=model, args=args, train_dataset=examples,
                            data_collator=completion_collator(tokenizer), callbacks=[LogAtSaves(), CountSteps(counter), *callbacks],
                            compute_loss_func=example_mean_loss if per_example else None)
    if not config.progress:  # without its bar the Trainer prints every logged loss; measurements.json keeps them
        trainer.remove_callback(PrinterCallback)
    else:  # the metrics logged beside the bar go to stderr, as the bar does: stdout carries only a command's result
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StderrProgress())
    return trainer, counter


def whole_run_loss(log_history: list[dict], resumed_at: int = 0) -> float | None:
    """The mean loss per optimizer step over the whole run, from the logged losses (each the mean since the log
    before it). The Trainer's own train_loss covers only the steps run in its process: a resumed run reported the
    mean after its checkpoint, one resumed from its last checkpoint 0.0. LogAtSaves logs at every checkpoint, so
    the history a checkpoint restores covers every step before it (an older checkpoint may leave a gap: skipped)."""
    total = steps = last = 0
    for entry in sorted((h for h in log_history if "loss" in h), key=lambda h: h["step"]):
        start = resumed_at if last < resumed_at < entry["step"] else last  # this process logs from its checkpoint
        total += entry["loss"] * (entry["step"] - start)
        steps += entry["step"] - start
        last = entry["step"]
    return total / steps if steps else None


def finished_at(checkpoint: Path) -> bool:
    """Whether `checkpoint` was written at the run's last step (the Trainer always saves there): killed between it
    and the model's save, the run has nothing left to train."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return 0 < int(state["max_steps"]) <= int(state["global_step"])
    except (OSError, ValueError, TypeError, KeyError):
        return False


def restore_finished(trainer, checkpoint: Path):
    """The Trainer's model and state as `checkpoint` (written at the last step) holds them, without training:
    resumed from there, the Trainer would run a step past the end with gradient accumulation (7 steps of 6)."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return TrainOutput(trainer.state.global_step, None, {})


def diverged(trainer, result, resume, config: "TrainConfig", run_dir: Path | None) -> None:
    """Refuse, in one line, a run whose weights or final loss are not finite (a learning rate far too large makes
    every weight NaN, and such a run evaluated scores 0 as if it had learned nothing), removing its directory
    (`run_dir`; None in the ranks that do not write) so that nothing of it is cached or resumed."""
    import math
    import shutil

    from ..models.causal_lm import nonfinite

    loss = final_loss(trainer, result, resume)
    problem = nonfinite(trainer.model) or (None if loss is None or math.isfinite(loss) else f"the loss is {loss}")
    if problem is None:
        return
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)
    raise ValueError(f"training diverged ({problem}); nothing was cached. The likely cause is the learning rate "
                     f"(train.lr={config.lr:g}): lower it")


def final_loss(trainer, result, resume) -> float | None:
    """The whole run's mean loss (see whole_run_loss), the Trainer's own where nothing was logged."""
    return whole_run_loss(trainer.state.log_history, int(resume.name.split("-")[1]) if resume else 0) \
        or result.training_loss


def peak_memory() -> dict:
    """Peak resident memory of this process (CPU), and peak allocated CUDA memory when on GPU."""
    import resource

    import torch

    out = {"rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def stats(values: list[int]) -> dict:
    return {"mean": round(sum(values) / max(len(values), 1), 2), "max": max(values, default=0)}


def _callbacks():
    from transformers import ProgressCallback, TrainerCallback

    class LogAtSaves(TrainerCallback):
        """A loss log at every checkpoint (the Trainer logs every logging_steps only), so that a checkpoint's log
        history accounts for every step before it and a resumed run can report the loss of the whole run."""

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:
                control.should_log = True
            return control

    class CountSteps(TrainerCallback):
        """Times every optimizer step into the token counter and saves the counter into each checkpoint's folder
        before the Trainer writes it (DefaultFlowCallback, which runs first, has decided on the save by now)."""

        def __init__(self, counter: TokenCounter):
            self.counter, self.started = counter, None

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.started is not None:
                self.counter.step_seconds += time.perf_counter() - self.started
            if control.should_save:
                self.counter.save(Path(args.output_dir) / f"checkpoint-{state.global_step}", args.process_index)
            return control

    class StderrProgress(ProgressCallback):
        """transformers' progress bar, except that the metrics it writes beside the bar (each logged loss, and the
        closing {'train_runtime': ...}) go to stderr with the bar, not to stdout: `RUN=$(retune train ...)`."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None:
                shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in (logs or {}).items()
                         if k != "total_flos"}
                self.training_bar.write(str(shown), file=sys.stderr)

    return LogAtSaves, StderrProgress, CountSteps


