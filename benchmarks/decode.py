"""Benchmark of the recursive decoder (not a test): 100 addition problems of 20 digits, Re-Tuning.

What is measured, honestly:
- The model is the cpu profile's tiny LLaMA (hidden 128, 4 layers, 4 heads, char vocabulary) with *random*
  weights. A random model never writes `Call:`, so every row is *forced* to emit the oracle's tokens
  (HFGenerator(forced=...)): the model still runs its full forward pass at every step, KV cache and all, and
  only the choice of the next token is replaced. The cost is therefore that of greedy decoding with a model
  that solves every problem perfectly (the recursive path with its 2L-1 = 39 contexts per problem).
- (a) reference: the reference implementation's schedule — one problem at a time, batch size 1, every context
  re-encoded from scratch (one `generate` per context, no prefix re-use). It is timed on a subset of the
  problems and scaled to 100 (the per-problem cost is the same for every 20-digit problem).
- (b) ours: `decode` on all 100 problems, level-synchronous, one batched step of the generator per level, for
  each decoder of --decoders (HFGenerator's: `generate`, HF generate with its dynamic cache; `static`, our greedy
  loop over a StaticCache; `compiled`, that loop's step under torch.compile with CUDA graphs, the default on CUDA).
  A decoder that compiles is run twice: the first run (compiling) and the second (steady) are both reported.
- (c) the teacher-forced bound: one forward pass (in chunks) over every unique (context + target) of the
  oracle trees — what any decoder needs at least to read each context and score each target token once.
Threads: 1 (the machine is shared). The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch

from retune.decoding.recursive import decode, decode_one_by_one
from retune.decoding.generators import HFGenerator, oracle_targets
from retune.models.causal_lm import TinyConfig, char_tokenizer, tiny_llama
from retune.tasks import get_task


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="problems")
    ap.add_argument("--digits", type=int, default=20)
    ap.add_argument("--reference-subset", type=int, default=5, help="problems timed for (a), scaled to --n")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=128, help="tiny model width (the cpu profile: 128)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decoders", default="generate,static",
                    help="comma-separated HFGenerator decoders timed for (b); on CUDA add compiled")
    ap.add_argument("--quick", action="store_true",
                    help="4 problems of 4 digits on a 2-layer width-32 model: checks the script in seconds")
    args = ap.parse_args()
    if args.quick:
        args.n, args.digits, args.reference_subset, args.hidden, args.layers = 4, 4, 2, 32, 2
    torch.set_num_threads(args.threads)

    task = get_task("addition")
    rng = random.Random(0)
    problems = [task.sample(args.digits, rng) for _ in range(args.n)]
    tok = char_tokenizer()
    model = tiny_llama(TinyConfig(hidden_size=args.hidden, num_hidden_layers=args.layers,
                                  intermediate_size=4 * args.hidden), tok).to(args.device)
    targets = oracle_targets(task, problems, "retuning")
    params = sum(p.numel() for p in model.parameters())
    print(f"model: tiny LLaMA {params / 1e6:.2f}M parameters, random weights, oracle tokens forced; "
          f"{args.n} problems x {args.digits} digits, {len(targets)} unique contexts; threads {args.threads}")

    # (a) the reference schedule, on a subset
    subset = problems[:args.reference_subset]
    reference = HFGenerator(model, tok, batch_size=1, forced=targets)
    t0 = time.perf_counter()
    ref_traces = decode_one_by_one(task, subset, "retuning", reference)
    t_ref_subset = time.perf_counter() - t0
    t_ref = t_ref_subset * args.n / len(subset)
    print(f"(a) reference, batch 1, re-encoded: {t_ref_subset:.2f} s for {len(subset)} problems "
          f"-> {t_ref:.1f} s for {args.n} (scaled)")

    # (b) ours, with each decoder
    timed = {}
    for name in args.decoders.split(","):
        ours = HFGenerator(model, tok, batch_size=args.batch_size, forced=targets, decoder=name)
        for run in ("first", "steady") if name == "compiled" else ("steady",):
            sync(args.device)
            t0 = time.perf_counter()
            traces = decode(task, problems, "retuning", ours, progress=False)
            sync(args.device)
            timed[name if run == "steady" else f"{name}_first"] = time.perf_counter() - t0
        assert all(t.correct for t in traces), "forced decoding must reproduce the oracle"
        assert traces[:len(subset)] == ref_traces, "batched and one-by-one decoding must agree"
        steps = max(len(t.root.turns) + 2 * (t.contexts - 1) - 1 for t in traces)  # 2 turns per non-base context
        print(f"(b) ours, level-synchronous batches, decoder {name}: {timed[name]:.2f} s ({steps} batched steps, "
              f"{sum(t.tokens_out for t in traces)} tokens out, {len(ours.batches)} batches"
              + (f"; first run, compiling: {timed[name + '_first']:.2f} s)" if name == "compiled" else ")"))
    best = min((v, k) for k, v in timed.items() if not k.endswith("_first"))
    t_ours = best[0]

    # (c) the teacher-forced bound
    contexts = list(targets)
    sync(args.device)
    t0 = time.perf_counter()
    exact = ours.exact(contexts, [targets[c] for c in contexts])
    t_bound = time.perf_counter() - t0
    print(f"(c) teacher-forced bound, one pass over {len(contexts)} contexts: {t_bound:.2f} s "
          f"({sum(exact)} exact: random weights, expected 0)")

    result = {"quick": args.quick, "speedup_vs_reference": round(t_ref / t_ours, 2),
              "ratio_to_bound": round(t_ours / t_bound, 2), "decoder": best[1],
              "decoders_s": {k: round(v, 2) for k, v in timed.items()},
              "reference_s": round(t_ref, 2), "reference_subset": len(subset), "ours_s": round(t_ours, 2),
              "bound_s": round(t_bound, 2), "n": args.n, "digits": args.digits, "threads": args.threads,
              "hidden": args.hidden, "layers": args.layers, "device": args.device, "torch": torch.__version__}
    print(f"(a)/(b) = {result['speedup_vs_reference']}x   (b)/(c) = {result['ratio_to_bound']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
