"""A tiny LLaMA that has memorised the Re-Tuning contexts of all short parity problems, so that tests of the
HF backend see a model that really writes calls, returns and answers (and fails out of distribution)."""
from __future__ import annotations

import functools
import itertools

SIZES = (1, 2, 3)


def parity_problems(sizes=SIZES) -> list[list[int]]:
    return [list(bits) for n in sizes for bits in itertools.product((0, 1), repeat=n)]


@functools.lru_cache(maxsize=None)
def memorised_parity_model(steps: int = 150, seed: int = 0):
    """(model, tokenizer) after `steps` full-batch Adam steps on every parity Re-Tuning example of length 1-3
    (a few seconds on one CPU thread)."""
    from retune.tasks import get_task

    task = get_task("parity")
    return fit_tiny({e.input: e.output for p in parity_problems() for e in task.examples(p, "retuning")}, steps, seed)


def fit_tiny(examples: dict, steps: int, seed: int = 0):
    """(model, tokenizer): a 2-layer tiny LLaMA after `steps` full-batch Adam steps on `examples` (context ->
    target, left-padded, loss on the targets); `model.final_loss` is the last step's loss."""
    import torch

    from retune.models.causal_lm import char_tokenizer, encode_example, tiny_llama

    torch.manual_seed(seed)
    tok = char_tokenizer()
    rows = [encode_example(tok, c, t) for c, t in examples.items()]
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(i)) + i for i, _ in rows])
    labels = torch.tensor([[-100] * (width - len(l)) + l for _, l in rows])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(i) for i, _ in rows])[:, None]).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    model = tiny_llama({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 128, "seed": seed}, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.final_loss = loss.item()
    return model.eval(), tok
