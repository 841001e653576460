"""Would bfloat16 autocast speed up CPU training? Seconds per training step in float32 and under
`torch.autocast("cpu", torch.bfloat16)`, alternating, in one process on the same batches.

    .venv/bin/python benchmarks/cpu_bf16.py [--rounds 2] [--threads 1]
    .venv/bin/python benchmarks/cpu_bf16.py --quick     # 1 round of 2 small batches, tiny model only: checks it runs

Two models: the `cpu` profile's tiny LLaMA (full fine-tuning, Re-Tuning addition and DP scratchpad batches) and,
when fetched (`make smollm2`), SmolLM2-135M with the paper's LoRA adapter (the step probe's fine-tune). bf16
needs a CPU with native bf16 instructions to pay off (avx512_bf16 / AMX); the last line is JSON with the ratios
(float32 seconds / bf16 seconds per step). Training today is float32 on CPU (retune.training.fine_tune refuses bf16 there)."""
import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from retune.data import datasets as data
from retune.models import presets
from retune.models.causal_lm import TinyConfig, char_tokenizer, load_pretrained, tiny_llama, with_lora
from retune.training.trainer import completion_collator, read_jsonl, tokenize


def batches(tokenizer, task: str, method: str, batch_size: int, count: int, tmp: Path) -> list:
    path = tmp / f"{task}-{method}.jsonl"
    data.make(task, method, path, "scaled", (1, 5), 100, 0, progress=False)
    records = read_jsonl(path)
    random.Random(0).shuffle(records)
    examples, _ = tokenize(records[:batch_size * count], tokenizer, 4096)
    collate = completion_collator(tokenizer)
    return [collate(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def seconds_per_step(model, batches: list, bf16: bool) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / len(times[1:])  # the first step warms up


def compare(name: str, model, batches: list, rounds: int) -> dict:
    fp32, bf16 = [], []
    for _ in range(rounds):  # alternating, so a slower or busier stretch hits both
        fp32.append(seconds_per_step(model, batches, False))
        bf16.append(seconds_per_step(model, batches, True))
    out = {"model": name, "fp32_s": round(min(fp32), 3), "bf16_s": round(min(bf16), 3)}
    out["ratio"] = round(out["fp32_s"] / out["bf16_s"], 2)
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="one round of 2 batches of 4, the tiny model only: checks the script in seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scale, count = (8, 2) if args.quick else (1, 8)  # batch sizes divided by `scale`; batches per measurement
    if args.quick:
        args.rounds = 1
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tok = char_tokenizer()
        torch.manual_seed(0)
        tiny = tiny_llama(TinyConfig(), tok)
        results.append(compare(f"tiny, addition Re-Tuning x{32 // scale}", tiny,
                               batches(tok, "addition", "retuning", 32 // scale, count, Path(tmp)), args.rounds))
        results.append(compare(f"tiny, DP scratchpad x{16 // scale}", tiny,
                               batches(tok, "dp", "scratchpad", 16 // scale, count, Path(tmp)), args.rounds))
        if args.quick:
            pass  # loading SmolLM2 alone takes longer than the whole quick run
        elif presets.is_fetched("smollm2-135m"):
            model, stok = load_pretrained(str(presets.preset_path("smollm2-135m")), "float32")
            results.append(compare("SmolLM2-135M + LoRA, addition Re-Tuning x16", with_lora(model, True),
                                   batches(stok, "addition", "retuning", 16, 4, Path(tmp)), args.rounds))
        else:
            print("SmolLM2-135M not fetched (make smollm2): skipped")
    print(json.dumps({"quick": args.quick, "threads": args.threads,
                      "ratios": {r["model"]: r["ratio"] for r in results}}))


if __name__ == "__main__":
    main()
