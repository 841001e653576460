"""Generators: what writes the text of one context, behind one batched interface.

`HFGenerator` decodes greedily with a Hugging Face causal LM (left-padded batches, KV cache through `generate`)
and teacher-forces (`exact`); `OracleGenerator` answers every context of the oracle's call trees (tests, pipeline
checks, benchmarks). The recursive decoder (retune.decoding.recursive) asks a generator for many contexts at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

from ..tasks import Task


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
    like; for a deterministic backend the result of a row must not depend on the other rows. A generator may
    offer `count(text)`, the tokens of a target: the decoder's default limits are counted in them.
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
        from ..models.causal_lm import encode_context

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

    Contexts are sorted by length and cut into batches of at most `batch_size` rows whose KV cache (rows x (the
    longest context + the largest limit) tokens, `cache_tokens`) stays within the budget: `kv_budget_gib` of
    memory at the model's own bytes per cached token (kv_bytes_per_token: from its config), by default half of
    the GPU memory free once the model is loaded (4 GiB on a CPU). No row runs past the model's
    `max_position_embeddings`: its limit is cut to the positions left, and a context that fills them all gets
    an empty, unstopped generation (the decoder's `token_limit`). Each row stops at EOS or at its own limit
    (greedy decoding is deterministic, so truncating a longer generation to a row's limit is the same as
    generating with that limit, and a row's tokens do not depend on the batch it is in). `batches` records
    (rows, cache tokens) of every batch run.

    `decoder`: "generate" (HF `generate`, dynamic cache), "static" (our own greedy loop over a preallocated
    StaticCache: the same tokens as `generate`, without its per-step overhead), "compiled" (static, with the
    decoding step under torch.compile and CUDA graphs, batches padded to a few shapes), or "auto": compiled on a
    CUDA device, generate elsewhere.

    `forced` (benchmarks and tests only): context -> target text; those rows emit the target's tokens instead of
    the argmax, at the same compute cost as greedy decoding (the model still runs every step). With `holes`=k
    every k-th position (offset by a hash of the context) is left to the model, which mixes oracle text with
    model text deterministically per context.
    """

    def __init__(self, model, tokenizer, batch_size: int = 128, forced: dict[str, str] | None = None,
                 holes: int = 0, kv_budget_gib: float | None = None, decoder: str = "generate"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.forced = forced
        self.holes = holes
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        gib = kv_budget_gib if kv_budget_gib is not None else default_kv_budget_gib(model.device)
        self.budget = max(1, int(gib * 2**30 // kv_bytes_per_token(model)))  # cached tokens per batch
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}; got {decoder!r}")
        self.decoder = ("compiled" if model.device.type == "cuda" else "generate") if decoder == "auto" else decoder
        self.pad_shapes = self.decoder == "compiled"  # batches padded to few shapes (few compiled graphs)
        self.batches: list[tuple[int, int]] = []
        self._compiled, self._cache = None, None

    def encode(self, text: str) -> list[int]:
        from ..models.causal_lm import encode_context

        return encode_context(self.tokenizer, text)

    def close(self) -> None:
        """Let go of the model now (its GPU memory too), so that the next one loads beside nothing."""
        import gc

        import torch

        self.model = self._compiled = self._cache = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def count(self, text: str) -> int:
        """Tokens of `text` as a target (EOS not counted): what the decoder's default limits are counted in."""
        return len(self.encode(text))

    def decode_ids(self, ids: list[int]) -> str:
        # keep every token the model wrote (an <unk> or <pad> it emits is part of its answer)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _padded(self, rows: list[list[int]], total: int | None = None):
        import torch

        width = max(len(r) for r in rows)
        rows = rows + [rows[-1]] * ((total or len(rows)) - len(rows))  # shape padding: copies of the last row
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        return ids.to(self.model.device), mask.to(self.model.device)

    def _shape(self, rows: int, width: int, new: int) -> tuple[int, int]:
        """(rows, cache length) a batch runs at: as it is, or, for the compiled step (one graph per shape, and
        torch.compile's recompile limit, 8, after which a shape runs eagerly), each rounded up to a power of two
        (the cache to at least 64 positions). The budget counts the rounded shape."""
        if not self.pad_shapes:
            return rows, width + new
        length = max(64, 1 << (width + new - 1).bit_length())
        return min(1 << (rows - 1).bit_length(), max(self.batch_size, rows)), length

    def plan(self, lengths: Sequence[int], limits: Sequence[int]) -> list[list[int]]:
        """Row indices in batches: sorted by length, each batch within `batch_size` rows and the token budget
        (a row that alone exceeds it runs alone)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out, start = [], 0
        while start < len(order):
            end, width, new = start + 1, lengths[order[start]], limits[order[start]]
            while end < len(order) and end - start < self.batch_size:
                w, n = max(width, lengths[order[end]]), max(new, limits[order[end]])
                rows, length = self._shape(end - start + 1, w, n)
                if rows * length > self.budget:
                    break
                width, new, end = w, n, end + 1
            out.append(order[start:end])
            start = end
        return out

    def generate(self, contexts, max_new_tokens):
        check_token_limits(max_new_tokens)
        encoded = [self.encode(c) for c in contexts]
        out: list[Generation | None] = [None] * len(contexts)
        limits = [int(v) for v in max_new_tokens]
        if self.max_positions:
            for i, ids in enumerate(encoded):
                limits[i] = min(limits[i], self.max_positions - len(ids))
                if limits[i] < 1:  # no position left to generate in
                    out[i] = Generation("", False, len(ids), 0)
        todo = [i for i in range(len(contexts)) if out[i] is None]
        eos = self.tokenizer.eos_token_id
        for batch in self.plan([len(encoded[i]) for i in todo], [limits[i] for i in todo]):
            rows = [todo[b] for b in batch]
            width, new = max(len(encoded[i]) for i in rows), max(limits[i] for i in rows)
            shape = self._shape(len(rows), width, new)
            self.batches.append((len(rows), len(rows) * (width + new)))
            ids, mask = self._padded([encoded[i] for i in rows], shape[0])
            force = self._forcing([contexts[i] for i in rows], shape[0]) if self.forced is not None else None
            if self.decoder == "generate":
                new_ids = self._hf_generate(ids, mask, new, force)
            else:
                new_ids = self._static_generate(ids, mask, new, shape[1], force, [limits[i] for i in rows])
            for r, i in enumerate(rows):
                gen = new_ids[r][:limits[i]]
                stop = gen.index(eos) if eos in gen else None
                text_ids = gen if stop is None else gen[:stop]
                out[i] = Generation(self.decode_ids(text_ids), stop is not None, len(encoded[i]),
                                    len(gen) if stop is None else stop + 1)
        return out

    def _hf_generate(self, ids, mask, new: int, force) -> list[list[int]]:
        import torch
        from transformers import LogitsProcessor

        kwargs = {}
        if force is not None:
            width = ids.shape[1]

            class Force(LogitsProcessor):
                def __call__(self, input_ids, scores):
                    return force(input_ids.shape[1] - width, scores)

            kwargs["logits_processor"] = [Force()]
        with torch.no_grad():
            seqs = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                       eos_token_id=self.tokenizer.eos_token_id,
                                       pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        return seqs[:, ids.shape[1]:].tolist()

    def _static_generate(self, ids, mask, new: int, length: int, force, limits: list[int]) -> list[list[int]]:
        """Greedy decoding over a StaticCache of `length` positions: one prefill, then one forward per token (under
        torch.compile for the compiled decoder); finished rows are fed the pad token, as `generate` does."""
        import torch
        from transformers import StaticCache

        rows, width = ids.shape
        if self._cache is not None and self._cache[0] == (rows, length):
            cache = self._cache[1]  # the compiled step's buffers stay where its graphs recorded them
            cache.reset()
        else:
            self._cache = None  # the previous batch's cache is freed before this one is allocated
            cache = StaticCache(config=self.model.config, max_cache_len=length)
            if self.decoder == "compiled":
                self._cache = ((rows, length), cache)
        full = torch.cat([mask, mask.new_ones(rows, length - width)], 1)  # one mask shape for every step
        position = (mask.cumsum(-1) - 1).clamp(min=0)[:, -1:]
        step = self._step()
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        last = torch.tensor(limits + [0] * (rows - len(limits)), device=ids.device)  # shape-padding rows: done
        done = last <= 0
        tokens = []
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=full, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            for t in range(new):
                if force is not None:
                    logits = force(t, logits)
                nxt = logits.argmax(-1).masked_fill(done, pad)
                tokens.append(nxt)
                done = done | (nxt == eos) | (last <= t + 1)
                if t + 1 == new or bool(done.all()):
                    break
                position = position + 1
                if self.decoder == "compiled":  # CUDA graphs: this step may overwrite the last one's outputs
                    torch.compiler.cudagraph_mark_step_begin()
                logits = step(input_ids=nxt[:, None], attention_mask=full, position_ids=position, cache=cache,
                              use_cache=True).logits[:, -1]
        return torch.stack(tokens, 1).tolist()

    def _step(self):
        """The forward of one decoding step: the model's own, or (compiled decoder) compiled once per generator."""
        if self.decoder != "compiled":
            return self.model
        if self._compiled is None:
            import torch

            self._compiled = torch.compile(self.model, mode="reduce-overhead", dynamic=False)
        return self._compiled

    def _forcing(self, contexts: list[str], total: int):
        """force(step, scores): the forced rows' scores at generation step `step` replaced by their target token."""
        import zlib

        import torch

        from ..models.causal_lm import encode_target

        targets = [encode_target(self.tokenizer, self.forced[c]) if c in self.forced else [] for c in contexts]
        targets += [[]] * (total - len(targets))
        width = max([len(t) for t in targets] + [1])
        table = torch.full((total, width), -1, dtype=torch.long)
        for r, t in enumerate(targets):
            table[r, :len(t)] = torch.tensor(t, dtype=torch.long)
        device = self.model.device
        table = table.to(device)
        salts = torch.tensor([zlib.crc32(c.encode("utf-8", "surrogatepass")) for c in contexts]
                             + [0] * (total - len(contexts)), device=device)
        holes = self.holes

        def force(step: int, scores):
            if step >= width:
                return scores
            col = table[:, step]
            forced = col >= 0
            if holes:
                forced &= (salts + step) % holes != 0
            if forced.any():
                rows = forced.nonzero().squeeze(1)
                scores[rows] = float("-inf")
                scores[rows, col[rows]] = 0.0
            return scores

        return force

    def exact(self, contexts: Sequence[str], targets: Sequence[str]) -> list[bool]:
        """Teacher forcing: is every greedy (argmax) token of the target right, EOS included? One forward pass
        per batch of (context + target) rows within the same budget as `generate` (rows x longest row, at most
        `batch_size` rows), left-padded with the same position ids `generate` uses, logits kept only where the
        targets are. A row longer than the model's positions is not right (the model cannot read it whole)."""
        import torch

        from ..models.causal_lm import encode_target

        pairs = [(self.encode(c), encode_target(self.tokenizer, t)) for c, t in zip(contexts, targets)]
        lengths = [len(a) + len(b) for a, b in pairs]
        fits = [i for i in range(len(pairs)) if not self.max_positions or lengths[i] <= self.max_positions]
        out = [False] * len(pairs)
        for batch in self.plan([lengths[i] for i in fits], [0] * len(fits)):
            rows = [fits[b] for b in batch]
            self.batches.append((len(rows), len(rows) * max(lengths[i] for i in rows)))
            ids, mask = self._padded([pairs[i][0] + pairs[i][1] for i in rows])
            position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            keep = max(len(pairs[i][1]) for i in rows) + 1
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                                    logits_to_keep=keep).logits
            predicted = logits.argmax(-1).tolist()
            for r, i in enumerate(rows):
                n = len(pairs[i][1])
                # the logits at position p predict token p + 1: the target occupies the last n positions
                out[i] = predicted[r][-n - 1:-1] == pairs[i][1]
        return out


DECODERS = ("auto", "generate", "static", "compiled")  # HFGenerator(decoder=...)


def check_decoding(decoder: str, kv_budget_gib: float | None, where: str = "eval") -> None:
    """The profile's `eval.decoder` and `eval.kv_budget_gib`, before any model is loaded."""
    import math

    from ..settings import ProfileError

    if decoder not in DECODERS:
        raise ProfileError(f"{where}.decoder: expected one of {', '.join(DECODERS)}, got {decoder!r}")
    if kv_budget_gib is not None and not (math.isfinite(kv_budget_gib) and kv_budget_gib > 0):
        raise ProfileError(f"{where}.kv_budget_gib: must be a finite number > 0 (GiB) or null, got {kv_budget_gib!r}")


def kv_bytes_per_token(model) -> int:
    """Bytes the KV cache holds per token of a batch row: keys and values (2) x layers x KV heads x head size x
    the bytes of the model's dtype, from its config (grouped-query attention counts its KV heads only)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()


def default_kv_budget_gib(device) -> float:
    """Half of the GPU memory free now (the model loaded), or 4 GiB on a CPU."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2 / 2**30
    return 4.0
