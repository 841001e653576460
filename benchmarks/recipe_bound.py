"""A recipe's training throughput against the machine's arithmetic bound, measured in one run.

    .venv/bin/python benchmarks/recipe_bound.py [--model models/smollm2-135m] [--frozen 20 | --lora] [--threads 2]
    .venv/bin/python benchmarks/recipe_bound.py --quick        # a tiny LLaMA from a config, seconds

The bound: the GFLOP/s of a matrix product shaped like the model's MLP (timed here, same threads), divided by the
FLOPs one token costs under the recipe: 2 per weight forward (every layer and the output head), 2 per weight for
the gradient that flows back through each layer above the lowest trained one and the head, and 2 more per trained
weight for its own gradient. Frozen lower layers skip both backward terms; a LoRA adapter skips only the second.
The measured rate runs our Trainer path (the same sampler and collator as `retune train`) on Re-Tuning addition
records and counts every position it computes, padding included; the last line is JSON with `ratio`."""
import argparse
import json
import random
import tempfile
import time

import torch

from retune.models.causal_lm import freeze_lower, load_pretrained, tiny_llama, char_tokenizer, TinyConfig, with_lora
from retune.tasks import get_task
from retune.training.trainer import make_trainer, tokenize
from retune.training.fine_tune import TrainConfig


def addition_records(top: int, n_problems: int, seed: int = 0) -> list[dict]:
    task, rng = get_task("addition"), random.Random(seed)
    return [{"input": e.input, "output": e.output} for _ in range(n_problems)
            for e in task.examples(task.sample(rng.randint(1, top), rng), "retuning")]


def matmul_gflops(tokens: int, hidden: int, inner: int, repeats: int = 5) -> float:
    """The best of `repeats` timings of a [tokens x hidden] @ [hidden x inner] product, in GFLOP/s."""
    a, b = torch.randn(tokens, hidden), torch.randn(hidden, inner)
    a @ b  # warm-up: the first call allocates
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * tokens * hidden * inner / best / 1e9


def flops_per_token(model, frozen: int, lora: bool) -> float:
    """Forward and backward FLOPs of one position under the recipe (attention scores ignored: short contexts)."""
    layers = model.get_decoder().layers
    per_layer = [sum(p.numel() for n, p in layer.named_parameters() if p.dim() == 2) for layer in layers]
    head = model.get_output_embeddings().weight.numel()
    forward = 2 * (sum(per_layer) + head)
    trained_from = 0 if lora else frozen  # gradients flow down to the lowest trained layer
    through = 2 * (sum(per_layer[trained_from:]) + head)
    own = 0 if lora else 2 * sum(per_layer[frozen:])  # a LoRA adapter's own gradients are negligible
    return forward + through + own


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/smollm2-135m", help="a local model directory")
    ap.add_argument("--frozen", type=int, default=20, help="lowest layers kept (full fine-tuning of the rest)")
    ap.add_argument("--lora", action="store_true", help="the paper's adapter instead (r 64 on q/k/v/o)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--top", type=int, default=6, help="largest trained size (digits)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a tiny LLaMA from a config and 3 steps (a smoke test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if args.quick:
        tok = char_tokenizer()
        model = tiny_llama(TinyConfig(hidden_size=64, num_hidden_layers=4, intermediate_size=256), tok)
        args.steps, args.frozen = 3, min(args.frozen, 2)
    else:
        model, tok = load_pretrained(args.model)
    frozen = 0 if args.lora else args.frozen
    cost = flops_per_token(model, frozen, args.lora)
    model = with_lora(model) if args.lora else freeze_lower(model, frozen)

    examples, _ = tokenize(addition_records(args.top, 50 * args.steps), tok, 2048)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, save_steps=10**9, logging_steps=10**9,
                         warmup_steps=0, lr_schedule="linear", progress=False, threads=args.threads)
    with tempfile.TemporaryDirectory() as out:
        trainer, counter = make_trainer(model, tok, examples, config, out)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    positions = counter.real_tokens + counter.padded_tokens
    config_ = model.config
    gflops = matmul_gflops(positions // args.steps, config_.hidden_size, config_.intermediate_size)
    bound = gflops * 1e9 / cost
    measured = positions / seconds
    print(json.dumps({
        "quick": args.quick, "model": "tiny" if args.quick else args.model, "recipe": "lora" if args.lora else f"frozen_layers={frozen}",
        "threads": args.threads, "steps": args.steps, "batch_size": args.batch_size,
        "matmul_gflops": round(gflops, 1), "flops_per_token": round(cost), "bound_tokens_per_s": round(bound, 1),
        "measured_tokens_per_s": round(measured, 1), "real_tokens_per_s": round(counter.real_tokens / seconds, 1),
        "padding_fraction": round(counter.padding_fraction, 4), "ratio": round(measured / bound, 3)}))


if __name__ == "__main__":
    main()
