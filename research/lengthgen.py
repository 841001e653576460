"""Length generalisation of a tiny LLaMA under Re-Tuning, on CPU (research harness, not the product pipeline).

Trains a tiny LLaMA (retune.model.tiny_llama) on the Re-Tuning contexts of one task at in-distribution sizes,
optionally after a generic pre-training, and scores it with a teacher-forced proxy:

  a context is right when the argmax at every target position (EOS included) equals the target token;
  a problem is exact when every context of its oracle call tree is right, which is the same as the full
  recursive greedy decode being right. "first call" = the top-level context's first turn (its call).

Position handling (--pos):
  rope     plain RoPE (rope_theta from --rope-theta), positions 0..n-1
  randpos  RoPE, but in training every sequence gets sorted position ids drawn without replacement from
           0..--max-pos-1 (Ruoss et al. 2023, "randomized positional encodings"); eval with --eval-pos
  nope     no position encoding: the rotary inverse frequencies are zeroed (cos=1, sin=0), so attention
           sees position only through the causal mask

Examples:
  python research/lengthgen.py --task addition --pos randpos --ft-min 5
  python research/lengthgen.py --task addition --pos nope --pt-min 10 --pt-tasks copy2,drop2 --ft-min 5

Prints one JSON line of results at the end and appends it to --out (jsonl).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from retune.model import TinyConfig, char_tokenizer, encode_example, tiny_llama  # noqa: E402
from retune.tasks import get_task  # noqa: E402

# in-distribution / out-of-distribution sizes per task (the brief's setting)
SIZES = {"addition": ((1, 8), (9, 16)), "parity": ((1, 10), (11, 20)), "dp": ((1, 5), (6, 10))}


# ---------------------------------------------------------------------------------------------- model tweaks
def apply_nope(model):
    """NoPE: make every rotary embedding the identity (inv_freq = 0 -> cos = 1, sin = 0).

    inv_freq is a non-persistent buffer, so this must be re-applied after every from_pretrained / reload."""
    for mod in model.modules():
        if hasattr(mod, "inv_freq"):
            mod.inv_freq.zero_()
            if hasattr(mod, "original_inv_freq"):
                mod.original_inv_freq.zero_()
    return model


def random_position_ids(lengths: list[int], width: int, max_pos: int, gen: torch.Generator | None = None):
    """Randomized positions (Ruoss et al. 2023): for each sequence of real length n, n sorted distinct ids drawn
    uniformly from 0..max_pos-1; padded positions (right padding) continue after the last real id."""
    out = torch.empty(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        if n > max_pos:
            raise ValueError(f"sequence of {n} tokens exceeds max_pos={max_pos}")
        ids = torch.randperm(max_pos, generator=gen)[:n].sort().values
        out[i, :n] = ids
        if width > n:
            out[i, n:] = ids[-1] + 1 + torch.arange(width - n)
    return out


# ------------------------------------------------------------------------------------------------- the data
def task_examples(task, size_lo, size_hi, n_problems, rng):
    """(prompt, target) Re-Tuning contexts of n_problems random problems with sizes uniform in [lo, hi]."""
    out = []
    for _ in range(n_problems):
        prob = task.sample(rng.randint(size_lo, size_hi), rng)
        out += [(e.input, e.output) for e in task.examples(prob, "retuning")]
    return out


WORDS = ["copy", "tail", "rest", "shift", "skip", "echo", "drop", "move", "take", "list", "str", "seq"]
SEPS = ["|", "&", "#", ",", ";", "/", "*", "~"]


def _word(rng):
    return rng.choice(WORDS) if rng.random() < 0.5 else "".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                                                                 for _ in range(rng.randint(2, 6)))


def _digits(n, rng):
    return "".join(rng.choice("0123456789") for _ in range(n))


def generic_example(kind, n, rng):
    """One generic string-skill example over length n, in formats unlike the task prompts (random words and
    separators; never `+`, `Call`, `Solution`, `Return`, `Answer`)."""
    w1, w2 = _word(rng), _word(rng)
    if kind == "copy":  # echo a digit string
        s = _digits(n, rng)
        return f"{w1} {s}\n{w2}: ", s
    if kind == "drop":  # drop the first digit
        s = _digits(n, rng)
        return f"{w1} {s}\n{w2}: ", s[1:] or "-"
    if kind in ("copy2", "drop2"):  # two equal-length operands with a separator
        a, b, sep = _digits(n, rng), _digits(n, rng), rng.choice(SEPS)
        k = 0 if kind == "copy2" else 1
        return f"{w1} {a} {sep} {b}\n{w2}: ", f"{a[k:] or '-'} {sep} {b[k:] or '-'}"
    if kind in ("listcopy", "listdrop"):  # python lists of small ints
        xs = [rng.randint(-5, 5) if rng.random() < 0.5 else rng.randint(0, 1) for _ in range(n)]
        k = 0 if kind == "listcopy" else 1
        return f"{w1} {xs}\n{w2}: ", str(xs[k:])
    if kind == "ctx2":  # a two-line context: copy the digit string of the earlier line after a label
        a, b = _digits(n, rng), _digits(max(1, n - 1), rng)
        return f"{w1} {a}\n{w2} {b}\n{_word(rng)}: ", a
    raise ValueError(kind)


def generic_examples(kinds, lo, hi, n, rng):
    return [generic_example(rng.choice(kinds), rng.randint(lo, hi), rng) for _ in range(n)]


def make_batches(pairs, tok, batch_size, rng):
    """Encode, sort by length, cut into batches, shuffle the batch order."""
    enc = [encode_example(tok, p, t) for p, t in pairs]
    enc.sort(key=lambda x: len(x[0]))
    batches = [enc[i:i + batch_size] for i in range(0, len(enc), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(batch, pad_id):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    lab = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(batch):  # right padding: with a causal mask, pads never influence real tokens
        ids[i, :len(x)] = torch.tensor(x)
        lab[i, :len(y)] = torch.tensor(y)
    return ids, lab, [len(x) for x, _ in batch]


# --------------------------------------------------------------------------------------------- training loop
def train(model, tok, source, minutes, lr, batch_size, pos, max_pos, rng, log_every=100, warmup=50,
          weight_decay=0.01, label="", loss_norm="token"):
    """AdamW with warm-up then linear decay to 0 over a wall-clock budget (lr follows elapsed/budget);
    `source()` returns a fresh list of (prompt, target) pairs whenever the current pool is used up."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    budget = minutes * 60.0
    t0, step, tokens, real, seen, losses = time.time(), 0, 0, 0, 0, []
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    batches = []
    model.train()
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget:
            break
        if not batches:
            batches = make_batches(source(), tok, batch_size, rng)
        ids, lab, lens = collate(batches.pop(), tok.pad_token_id)
        frac = elapsed / budget
        cur = lr * min(1.0, (step + 1) / warmup) * (1.0 - frac)
        for g in opt.param_groups:
            g["lr"] = cur
        pids = random_position_ids(lens, ids.shape[1], max_pos, gen) if pos == "randpos" else None
        # pass an explicit attention mask with custom position ids: with use_cache=False and no mask, transformers 5
        # reads any position gap as the start of a new packed sequence and blocks attention across it
        logits = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(), position_ids=pids).logits
        tok_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), lab[:, 1:], reduction="none")  # (B, T-1)
        mask = (lab[:, 1:] != -100).float()
        if loss_norm == "example":  # every example weighs the same, however long its target
            loss = ((tok_loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
        else:  # "token": mean over all target tokens of the batch (HF Trainer default)
            loss = (tok_loss * mask).sum() / mask.sum().clamp(min=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += ids.numel()
        real += sum(lens)
        seen += len(lens)
        losses.append(loss.item())
        if step % log_every == 0:
            el = time.time() - t0
            print(f"[{label}] step {step} {el:.0f}s loss {sum(losses[-log_every:]) / log_every:.4f} "
                  f"lr {cur:.2e} {real / el:.0f} real tok/s", flush=True)
    el = time.time() - t0
    return {"steps": step, "examples": seen, "seconds": round(el, 1), "real_tok_s": round(real / el),
            "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4)}


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def context_correct(model, tok, pairs, eval_pos, max_pos, gen, batch_size=64):
    """Teacher-forced: for each (context, target), True when argmax equals the target at every target position."""
    model.eval()
    enc = [encode_example(tok, p, t) for p, t in pairs]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))
    ok = [False] * len(enc)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, lab, lens = collate([enc[i] for i in idx], tok.pad_token_id)
        pids = random_position_ids(lens, ids.shape[1], max_pos, gen) if eval_pos == "random" else None
        pred = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long(),
                     position_ids=pids).logits[:, :-1].argmax(-1)
        tgt = lab[:, 1:]
        good = ((pred == tgt) | (tgt == -100)).all(dim=1)
        for j, i in enumerate(idx):
            ok[i] = bool(good[j])
    model.train()
    return ok


def evaluate(model, tok, task, sizes, n_per_size, eval_pos, max_pos, seed=1234):
    """Per size: problem-exact accuracy, first-call accuracy, and context accuracy per kind."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    pairs, owner = [], []  # owner: (size, problem index, kind, is_first_call)
    for size in sizes:
        for p in range(n_per_size):
            exs = task.examples(task.sample(size, rng), "retuning")
            for j, e in enumerate(exs):
                pairs.append((e.input, e.output))
                owner.append((size, p, e.kind, j == 0))
    ok = context_correct(model, tok, pairs, eval_pos, max_pos, gen)
    res = {}
    for size in sizes:
        prob_ok = [True] * n_per_size
        first = [False] * n_per_size
        kinds: dict[str, list[int]] = {}
        for (s, p, kind, is_first), good in zip(owner, ok):
            if s != size:
                continue
            prob_ok[p] &= good
            if is_first:
                first[p] = good
            kinds.setdefault(kind, [0, 0])
            kinds[kind][0] += good
            kinds[kind][1] += 1
        res[size] = {"exact": sum(prob_ok) / n_per_size, "first": sum(first) / n_per_size,
                     **{k: v[0] / v[1] for k, v in kinds.items()}}
    return res


def summarize(res, lo, hi):
    sel = [v for s, v in res.items() if lo <= s <= hi]
    return {k: round(sum(v[k] for v in sel) / len(sel), 3) for k in ("exact", "first")}


# ------------------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="addition", choices=sorted(SIZES))
    ap.add_argument("--pos", default="rope", choices=["rope", "randpos", "nope"])
    ap.add_argument("--eval-pos", default="both", choices=["plain", "random", "both"],
                    help="positions at evaluation (randpos only; other modes always plain)")
    ap.add_argument("--max-pos", type=int, default=256, help="randpos: range of position ids")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=0, help="MLP width (default 4x hidden)")
    ap.add_argument("--pt-min", type=float, default=0.0, help="generic pre-training minutes (0: none)")
    ap.add_argument("--pt-tasks", default="copy,drop,copy2,drop2,listcopy,listdrop,ctx2")
    ap.add_argument("--pt-len", default="1,40", help="generic pre-training string lengths lo,hi")
    ap.add_argument("--pt-lr", type=float, default=2e-3)
    ap.add_argument("--ft-min", type=float, default=5.0, help="fine-tune minutes")
    ap.add_argument("--ft-lr", type=float, default=2e-3)
    ap.add_argument("--mix", type=float, default=0.0, help="fraction of generic examples mixed into fine-tuning")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--loss-norm", default="token", choices=["token", "example"],
                    help="fine-tune loss: mean over target tokens, or per-example mean then mean over examples")
    ap.add_argument("--n-eval", type=int, default=50, help="problems per size")
    ap.add_argument("--eval-sizes", default="", help="lo,hi of sizes to evaluate (default ID lo..OOD hi)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default="", help="save the fine-tuned state_dict here")
    ap.add_argument("--load", default="", help="start from this state_dict (skips pre-training)")
    ap.add_argument("--save-pt", default="", help="save the pre-trained state_dict here")
    ap.add_argument("--out", default="research/results.jsonl")
    ap.add_argument("--name", default="")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_start = time.time()
    rng = random.Random(args.seed)
    tok = char_tokenizer()
    cfg = TinyConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                     intermediate_size=args.ffn or 4 * args.hidden, rope_theta=args.rope_theta, seed=args.seed)
    model = tiny_llama(cfg, tok)
    if args.pos == "nope":
        apply_nope(model)
    n_params = sum(p.numel() for p in model.parameters())
    task = get_task(args.task)
    (ilo, ihi), (olo, ohi) = SIZES[args.task]
    kinds = args.pt_tasks.split(",")
    plo, phi = map(int, args.pt_len.split(","))
    record = {"name": args.name, "args": vars(args), "params": n_params}

    if args.load:
        model.load_state_dict(torch.load(args.load))
        if args.pos == "nope":
            apply_nope(model)
    elif args.pt_min > 0:
        record["pretrain"] = train(model, tok, lambda: generic_examples(kinds, plo, phi, 4096, rng), args.pt_min,
                                   args.pt_lr, args.batch, args.pos, args.max_pos, rng, label="pt")
        if args.save_pt:
            torch.save(model.state_dict(), args.save_pt)

    def ft_source():
        pairs = task_examples(task, ilo, ihi, 400, rng)
        if args.mix > 0:
            pairs += generic_examples(kinds, plo, phi, int(len(pairs) * args.mix / (1 - args.mix)), rng)
        return pairs

    if args.ft_min > 0:
        record["finetune"] = train(model, tok, ft_source, args.ft_min, args.ft_lr, args.batch, args.pos,
                                   args.max_pos, rng, label="ft", loss_norm=args.loss_norm)
    if args.save:
        torch.save(model.state_dict(), args.save)

    elo, ehi = map(int, args.eval_sizes.split(",")) if args.eval_sizes else (ilo, ohi)
    modes = ["plain", "random"] if (args.pos == "randpos" and args.eval_pos == "both") else \
        [args.eval_pos if args.pos == "randpos" else "plain"]
    t_eval = time.time()
    for mode in modes:
        res = evaluate(model, tok, task, list(range(elo, ehi + 1)), args.n_eval, mode, args.max_pos)
        record[f"eval_{mode}"] = {
            "ID": summarize(res, ilo, ihi), "OOD": summarize(res, olo, ohi),
            "per_size_exact": {s: round(v["exact"], 2) for s, v in res.items()},
            "per_size_first": {s: round(v["first"], 2) for s, v in res.items()},
            "per_size_kind": {s: {k: round(x, 2) for k, x in v.items() if k not in ("exact", "first")}
                              for s, v in res.items()},
        }
        print(mode, "ID", record[f"eval_{mode}"]["ID"], "OOD", record[f"eval_{mode}"]["OOD"], flush=True)
        print(mode, "exact", record[f"eval_{mode}"]["per_size_exact"], flush=True)
        print(mode, "first", record[f"eval_{mode}"]["per_size_first"], flush=True)
    record["eval_seconds"] = round(time.time() - t_eval, 1)
    record["wall_seconds"] = round(time.time() - t_start, 1)
    print(json.dumps(record), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
