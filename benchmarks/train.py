"""Throughput of our Trainer path against a plain PyTorch loop: same model, same batches, runs alternating.

    .venv/bin/python benchmarks/train.py [--steps 40] [--batch-size 32] [--threads 2] [--rounds 3]
    .venv/bin/python benchmarks/train.py --quick     # 3 steps of 8: a check that it runs, not a measurement

The data is Re-Tuning addition (1-8 digits) from the task spec; batches come from our length-grouped sampler and
collator in both paths, alternating --rounds times (each path's fastest run counts). The last printed line is JSON
with `tokens_per_s_ratio` (Trainer / plain in wall time; target >= 0.9), `cpu_time_ratio` (the same in this
process's CPU seconds, which other processes on a busy machine do not stretch) and `padding_fraction` (target <=
0.1)."""
import argparse
import json
import random
import tempfile
import time

import torch

from retune.models.causal_lm import TinyConfig, char_tokenizer, tiny_llama
from retune.tasks import get_task
from retune.training.fine_tune import TrainConfig
from retune.training.trainer import LengthGroupedSampler, completion_collator, make_trainer, tokenize


def addition_records(n_problems: int, seed: int = 0) -> list[dict]:
    task, rng, records = get_task("addition"), random.Random(seed), []
    for _ in range(n_problems):
        for e in task.examples(task.sample(rng.randint(1, 8), rng), "retuning"):
            records.append({"input": e.input, "output": e.output})
    return records


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine other processes stretch the wall time of
    whichever path they overlap, while the CPU time a path needs for the same batches stays its own."""
    return time.perf_counter(), time.process_time()


def plain_loop(model, batches, config: TrainConfig) -> tuple[float, float]:
    """nanoGPT-style loop with the Trainer's optimizer, schedule and clipping; returns (wall, CPU) seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / len(batches))
    model.train()
    start = clocks()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return tuple(b - a for a, b in zip(start, clocks()))


def trainer_run(model, tok, examples, config: TrainConfig) -> tuple[tuple[float, float], object]:
    """Our path on the same batches: ((wall, CPU) seconds of trainer.train(), its token counter)."""
    with tempfile.TemporaryDirectory() as out:
        trainer, counter = make_trainer(model, tok, examples, config, out)
        start = clocks()
        trainer.train()
        return tuple(b - a for a, b in zip(start, clocks())), counter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problems", type=int, default=800, help="addition problems drawn (1-8 digits)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="plain and Trainer runs alternate this many times; each path's fastest counts")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the script, measures nothing")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.problems, args.rounds = 3, 8, 20, 1
    torch.set_num_threads(args.threads)

    tok = char_tokenizer()
    examples, _ = tokenize(addition_records(args.problems), tok, 2048)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, save_steps=10**9, logging_steps=10**9,
                         progress=False)
    model_config = TinyConfig()  # the cpu profile's tiny LLaMA: hidden 128, 4 layers

    # The batches the Trainer will see (epoch 0 of the seeded sampler), collated the same way for the plain loop.
    order = list(LengthGroupedSampler([len(e["input_ids"]) for e in examples], args.batch_size, config.seed))
    collate = completion_collator(tok)
    batches = [collate([examples[i] for i in order[s:s + args.batch_size]])
               for s in range(0, args.steps * args.batch_size, args.batch_size)]
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)

    plain, ours = [], []
    for _ in range(args.rounds):  # alternating, so a busier stretch of the machine hits both paths
        plain.append(plain_loop(tiny_llama(model_config, tok), batches, config))
        seconds, counter = trainer_run(tiny_llama(model_config, tok), tok, examples, config)
        ours.append(seconds)
        assert counter.real_tokens == real_tokens, "both paths must train on the same batches"
    plain_s, trainer_s = min(s for s, _ in plain), min(s for s, _ in ours)
    plain_cpu, trainer_cpu = min(c for _, c in plain), min(c for _, c in ours)

    result = {
        "quick": args.quick, "steps": args.steps, "batch_size": args.batch_size, "threads": args.threads,
        "examples": len(examples), "real_tokens": real_tokens,
        "plain_tokens_per_s": round(real_tokens / plain_s, 1),
        "trainer_tokens_per_s": round(real_tokens / trainer_s, 1),
        "tokens_per_s_ratio": round(plain_s / trainer_s, 3),
        "rounds": args.rounds, "plain_s": [round(s, 2) for s, _ in plain], "trainer_s": [round(s, 2) for s, _ in ours],
        "cpu_time_ratio": round(plain_cpu / trainer_cpu, 3),  # plain CPU seconds / ours: >= 0.9 wanted, as above
        "padding_fraction": round(counter.padding_fraction, 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
