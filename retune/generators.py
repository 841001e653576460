"""Generators: what writes the text of one context, behind one batched interface.

`HFGenerator` decodes greedily with a Hugging Face causal LM (left-padded batches, KV cache through `generate`)
and teacher-forces (`exact`); `OracleGenerator` answers every context of the oracle's call trees (tests, pipeline
checks, benchmarks). The recursive decoder (retune.decode) asks a generator for many contexts at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from .tasks import Task


@dataclass
class Generation:
    """One continuation. `stopped` is True when the row ended at EOS, False when it hit its token limit."""

    text: str
    stopped: bool = True
    tokens_in: int = 0
    tokens_out: int = 0  # generated tokens, EOS included


class Generator(Protocol):
    """A batch of contexts in, one greedy continuation per context out (same order).

    `max_new_tokens[i]` bounds row i (EOS counts as a token). Implementations may batch, sort and chunk as they
    like; for a deterministic backend the result of a row must not depend on the other rows.
    """

    def generate(self, contexts: Sequence[str], max_new_tokens: Sequence[int]) -> list[Generation]: ...


def check_token_limits(max_new_tokens: Sequence[int]) -> None:
    """Every row's limit is a whole number >= 1 (a generation always has room for at least its EOS)."""
    bad = next((v for v in max_new_tokens if isinstance(v, bool) or not isinstance(v, int) or v < 1), None)
    if bad is not None:
        raise ValueError(f"max_new_tokens must be integers >= 1; got {bad!r}")


def oracle_targets(task: Task, problems: Iterable[Any], method: str) -> dict[str, str]:
    """context -> correct target for every context of the problems' oracle trees (every training example)."""
    targets = {}
    for problem in problems:
        for ex in task.examples(problem, method):
            targets[ex.input] = ex.output
    return targets


class OracleGenerator:
    """Answers every known context with its correct target; an unknown context gets the empty string (+EOS).

    Tokens are counted as characters (exact for the character tokenizer) unless a tokenizer is given.
    """

    def __init__(self, targets: dict[str, str], tokenizer=None):
        self.targets = targets
        self.tokenizer = tokenizer

    @classmethod
    def for_problems(cls, task: Task, problems: Iterable[Any], method: str, tokenizer=None) -> "OracleGenerator":
        return cls(oracle_targets(task, problems, method), tokenizer)

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        from .model import encode_context

        return len(encode_context(self.tokenizer, text))

    def generate(self, contexts, max_new_tokens):
        check_token_limits(max_new_tokens)
        out = []
        for context, limit in zip(contexts, max_new_tokens):
            target = self.targets.get(context, "")
            n = self.count(target)
            if n + 1 <= limit:  # the target and its EOS fit
                out.append(Generation(target, True, self.count(context), n + 1))
            else:  # as a model would: the first `limit` tokens, no EOS (char-exact only for char tokenizers)
                out.append(Generation(target[:limit], False, self.count(context), limit))
        return out

    def exact(self, contexts: Sequence[str], targets: Sequence[str]) -> list[bool]:
        """Teacher-forced exactness: the oracle is right exactly where the target is its own."""
        return [self.targets.get(c) == t for c, t in zip(contexts, targets)]


class HFGenerator:
    """Greedy decoding with a Hugging Face causal LM: batched with left padding, KV cache via `generate`.

    Contexts are sorted by length and cut into chunks of `batch_size` so padding stays small. Each row stops at
    EOS or at its own limit (greedy decoding is deterministic, so truncating a longer generation to a row's
    limit is the same as generating with that limit).

    `forced` (benchmarks and tests only): context -> target text; those rows emit the target's tokens instead of
    the argmax, at the same compute cost as greedy decoding (the model still runs every step). With `holes`=k
    every k-th position (offset by a hash of the context) is left to the model, which mixes oracle text with
    model text deterministically per context.
    """

    def __init__(self, model, tokenizer, batch_size: int = 128, forced: dict[str, str] | None = None,
                 holes: int = 0):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.forced = forced
        self.holes = holes

    def encode(self, text: str) -> list[int]:
        from .model import encode_context

        return encode_context(self.tokenizer, text)

    def decode_ids(self, ids: list[int]) -> str:
        # keep every token the model wrote (an <unk> or <pad> it emits is part of its answer)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _padded(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.model.device), mask.to(self.model.device)

    def generate(self, contexts, max_new_tokens):
        import torch

        check_token_limits(max_new_tokens)
        encoded = [self.encode(c) for c in contexts]
        order = sorted(range(len(contexts)), key=lambda i: len(encoded[i]))
        out: list[Generation | None] = [None] * len(contexts)
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            ids, mask = self._padded([encoded[i] for i in rows])
            limits = [int(max_new_tokens[i]) for i in rows]
            kwargs = {}
            if self.forced is not None:
                kwargs["logits_processor"] = [self._forcing([contexts[i] for i in rows], ids.shape[1])]
            with torch.no_grad():
                seqs = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(limits),
                                           do_sample=False, eos_token_id=eos,
                                           pad_token_id=self.tokenizer.pad_token_id, **kwargs)
            new = seqs[:, ids.shape[1]:].tolist()
            for r, i in enumerate(rows):
                gen = new[r][:limits[r]]
                stop = gen.index(eos) if eos in gen else None
                text_ids = gen if stop is None else gen[:stop]
                out[i] = Generation(self.decode_ids(text_ids), stop is not None, len(encoded[i]),
                                    len(gen) if stop is None else stop + 1)
        return out

    def _forcing(self, contexts: list[str], prompt_width: int):
        import zlib

        import torch
        from transformers import LogitsProcessor

        from .model import encode_target

        targets = [encode_target(self.tokenizer, self.forced[c]) if c in self.forced else [] for c in contexts]
        width = max([len(t) for t in targets] + [1])
        table = torch.full((len(contexts), width), -1, dtype=torch.long)
        for r, t in enumerate(targets):
            table[r, :len(t)] = torch.tensor(t, dtype=torch.long)
        device = self.model.device
        table = table.to(device)
        salts = torch.tensor([zlib.crc32(c.encode("utf-8", "surrogatepass")) for c in contexts], device=device)
        holes = self.holes

        class Force(LogitsProcessor):
            def __call__(self, input_ids, scores):
                step = input_ids.shape[1] - prompt_width
                if step >= width:
                    return scores
                col = table[:, step]
                force = col >= 0
                if holes:
                    force &= (salts + step) % holes != 0
                if force.any():
                    rows = force.nonzero().squeeze(1)
                    scores[rows] = float("-inf")
                    scores[rows, col[rows]] = 0.0
                return scores

        return Force()

    def exact(self, contexts: Sequence[str], targets: Sequence[str], token_budget: int = 16384) -> list[bool]:
        """Teacher forcing: is every greedy (argmax) token of the target right, EOS included? One forward pass
        per chunk of (context + target) rows, left-padded with the same position ids `generate` uses."""
        import torch

        from .model import encode_target

        pairs = [(self.encode(c), encode_target(self.tokenizer, t)) for c, t in zip(contexts, targets)]
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = [False] * len(pairs)
        start = 0
        while start < len(order):
            # grow the chunk while (rows x longest row) stays within the token budget
            end, width = start, 0
            while end < len(order):
                w = max(width, sum(map(len, pairs[order[end]])))
                if end > start and w * (end - start + 1) > token_budget:
                    break
                width, end = w, end + 1
            rows = order[start:end]
            ids, mask = self._padded([pairs[i][0] + pairs[i][1] for i in rows])
            position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
            predicted = logits.argmax(-1).tolist()
            for r, i in enumerate(rows):
                n = len(pairs[i][1])
                # the logits at position p predict token p + 1: the target occupies the last n positions
                out[i] = predicted[r][-n - 1:-1] == pairs[i][1]
            start = end
        return out


