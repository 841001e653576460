"""How well a generic pre-trained base (retune.training.pretrain) does its own skills, by operation and length: exact
greedy continuations of fresh generic prompts, lengths within and beyond pre-training's range.

    python research/pretrain_probe.py runs/generic-pretrain-<key> [--lengths 2-32] [--n 20]

Prints one JSON line per operation x sequence kind: {length: accuracy}."""
import argparse
import json
import random

from retune.training import pretrain, fine_tune as train
from retune.data.datasets import parse_sizes
from retune.decoding.generators import HFGenerator


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--lengths", default="2-32")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    model, tok = train.load_trained(args.run)
    generator = HFGenerator(model, tok, batch_size=128)
    lo, hi = parse_sizes(args.lengths)
    rng = random.Random("probe")
    for kind in pretrain.KINDS:
        for op in pretrain.OPERATIONS:
            records = [pretrain.example(op, kind, n, rng) for n in range(lo, hi + 1) for _ in range(args.n)]
            out = generator.generate([r["input"] for r in records], [2 * len(r["output"]) + 8 for r in records])
            acc = {}
            for r, g in zip(records, out):
                acc.setdefault(r["size"], []).append(g.text == r["output"])
            print(json.dumps({"kind": kind, "op": op, "accuracy": {k: round(sum(v) / len(v), 2)
                                                                   for k, v in acc.items()}}), flush=True)


if __name__ == "__main__":
    main()
