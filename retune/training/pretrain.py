"""Task-agnostic pre-training of the tiny base model: the CPU stand-in for LLaMA's generic skills.

A pretrained LLaMA can already read and copy digit strings far longer than anything it is fine-tuned on; a tiny
model trained from scratch cannot, and that is what breaks its recursion out of distribution (research/RESULTS.md). So before
fine-tuning, the tiny model learns string skills the three tasks lean on, on lengths well past the fine-tuning
range, in formats unlike the tasks' prompts: copy a sequence, drop its first item, drop the first item of two
sequences at once, put an item in front, and (opt-in) name the first items of two sequences on a line above.
Sequences are digit strings, bit lists and small-integer lists.

The base is an ordinary finished run (retune.training.fine_tune), cached under its key like every trained model; fine-tuning
starts from its weights (full fine-tuning unless the profile asks for LoRA).
"""
from __future__ import annotations

import random
from pathlib import Path

from ..data import datasets as data
from . import fine_tune as train
from ..config.profiles import SURFACES

OPERATIONS = ("copy", "behead", "behead_pair", "prefix")
KINDS = ("digits", "bits", "ints")
SEPARATORS = (" ; ", " | ", " & ", " + ")

# "many" surfaces: every operation has its own keyword pairs (a request word, an answer word), written in one of
# several layouts, so that a skill is tied to no single surface. No pair is a task's word (Call, Return, Answer).
KEYWORDS = {
    "copy": (("Echo", "Echoed"), ("Repeat", "Again"), ("Copy", "Copied")),
    "behead": (("Drop", "Dropped"), ("Tail", "Rest"), ("Trim", "Trimmed")),
    "behead_pair": (("Shorten", "Shorter"), ("Both", "Cut")),
    "prefix": (("Front", "Fronted"), ("Lead", "Led")),
}
MANY_SEPARATORS = (" + ", " | ", " ; ", " & ", ", ", " and ")
LAYOUTS = ("{x}\n{w}: ", "{w}: {x}\n>> ", "{w} {x}\n", "Q: {w} {x}\nA: ")


def sequence(kind: str, length: int, rng: random.Random) -> list[str]:
    if kind == "digits":
        return [str(rng.randrange(10)) for _ in range(length)]
    if kind == "bits":
        return [str(rng.randrange(2)) for _ in range(length)]
    return [str(rng.randint(-9, 9)) for _ in range(length)]


def show(kind: str, items: list[str]) -> str:
    return "".join(items) if kind == "digits" else "[" + ", ".join(items) + "]"


def operands(operation: str, kind: str, length: int, rng: random.Random, separators) -> tuple[str, str, str]:
    """(the operand as written, the result, the item put first or '') of one operation on fresh sequences."""
    a = sequence(kind, length, rng)
    if operation == "copy":
        return show(kind, a), show(kind, a), ""
    if operation == "behead":
        return show(kind, a), show(kind, a[1:]), ""
    if operation == "behead_pair":
        b, sep = sequence(kind, length, rng), rng.choice(separators)
        return f"{show(kind, a)}{sep}{show(kind, b)}", f"{show(kind, a[1:])}{sep}{show(kind, b[1:])}", ""
    if operation == "prefix":
        item = sequence(kind, 1, rng)
        return show(kind, a), show(kind, item + a), item[0]
    raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}; got {operation!r}")


def many_surfaces(operation: str, kind: str, length: int, rng: random.Random) -> dict:
    """One generic record in a randomly chosen surface: keyword pair, layout and separator vary, e.g.
    `4821 ; 907\nShorten: ` -> `Shorter: 821 ; 07`; the answer repeats its answer word where the layout ends
    with the request word, as Re-Tuning's `Return:`/`Answer:` lines do."""
    x, y, item = operands(operation, kind, length, rng, MANY_SEPARATORS)
    ask, answer = rng.choice(KEYWORDS[operation])
    word = f"{ask} {item}" if item else ask
    layout = rng.choice(LAYOUTS)
    output = f"{answer}: {y}" if layout.endswith("{w}: ") else y
    return {"input": layout.format(x=x, w=word), "output": output, "task": "generic", "method": operation,
            "kind": kind, "size": length}


FIELD_WORDS = ("Flag", "Mark", "Bit", "Value", "Digits", "Rest", "Tail", "Body")
LABELS = ("Note", "Memo", "Line", "Item", "Got", "Seen")
HEADS_ASKS = ("Firsts of {t}", "{t} heads", "Leading items of {t}")


def recall(kind: str, length: int, rng: random.Random) -> dict:
    """A multi-line record: 2-4 labelled lines, then a request to repeat one line's sequence of `length` items
    from one or more lines above, to put an item in front of it, or (two-field lines, the shape of a recursive
    answer: a flag, then a sequence) to rewrite its flag and put an item in front, e.g.
    `Note: 5512\nMemo: Mark 1, Body 90\nMemo with Mark 0 and 3 first: ` -> `Mark 0, Body 390`."""
    labels = rng.sample(LABELS, rng.randint(2, 4))
    rows = {lab: show(kind, sequence(kind, length if lab == labels[0] else rng.randint(2, length), rng))
            for lab in labels}
    target, seq = labels[0], sequence(kind, length, rng)
    style = rng.choice(("repeat", "first", "fields"))
    item = sequence(kind, 1, rng)
    if style == "repeat":
        rows[target], ask, result = show(kind, seq), f"Repeat {target}", show(kind, seq)
    elif style == "first":
        rows[target], ask, result = show(kind, seq), f"{target} with {item[0]} first", show(kind, item + seq)
    else:
        flag, body = rng.sample(FIELD_WORDS, 2)
        rows[target] = f"{flag} {rng.randrange(2)}, {body} {show(kind, seq)}"
        new = rng.randrange(2)
        ask = f"{target} with {flag} {new} and {item[0]} first"
        result = f"{flag} {new}, {body} {show(kind, item + seq)}"
    rng.shuffle(labels)
    lines = "\n".join(f"{lab}: {rows[lab]}" for lab in labels)
    return {"input": f"{lines}\n{ask}: ", "output": result, "task": "generic", "method": f"recall_{style}",
            "kind": kind, "size": length}


def heads(kind: str, length: int, rng: random.Random) -> dict:
    """A multi-line record: 2-4 labelled lines, one of them two sequences of `length` items, then a request for
    the first item of each. A recursive combination has that shape: it reads the leading items of a problem
    written lines above its return. E.g. `Memo: 55\nNote: 4821 ; 9073\nFirsts of Note: ` -> `4 ; 9`."""
    labels = rng.sample(LABELS, rng.randint(2, 4))
    rows = {lab: show(kind, sequence(kind, rng.randint(2, length), rng)) for lab in labels[1:]}
    a, b, sep = sequence(kind, length, rng), sequence(kind, length, rng), rng.choice(MANY_SEPARATORS)
    rows[labels[0]] = f"{show(kind, a)}{sep}{show(kind, b)}"
    ask = rng.choice(HEADS_ASKS).format(t=labels[0])
    rng.shuffle(labels)
    lines = "\n".join(f"{lab}: {rows[lab]}" for lab in labels)
    return {"input": f"{lines}\n{ask}: ", "output": f"{a[0]}{sep}{b[0]}", "task": "generic", "method": "heads",
            "kind": kind, "size": length}


MULTILINE = {"recall": recall, "heads": heads}  # operations written over several lines, whatever the surfaces


def example(operation: str, kind: str, length: int, rng: random.Random) -> dict:
    """One generic record in the one-surface format, e.g. `behead both: 4821 ; 9073\n>> ` -> `821 ; 073`."""
    x, y, item = operands(operation, kind, length, rng, SEPARATORS)
    request = {"copy": "copy", "behead": "behead", "behead_pair": "behead both", "prefix": f"put {item} first"}
    return {"input": f"{request[operation]}: {x}\n>> ", "output": y, "task": "generic", "method": operation,
            "kind": kind, "size": length}


def record(operation: str, kind: str, length: int, rng: random.Random, surfaces: str = "one") -> dict:
    """One generic record as a base with these `surfaces` is trained on (a MULTILINE operation in its own form)."""
    if operation in MULTILINE:
        return MULTILINE[operation](kind, length, rng)
    return many_surfaces(operation, kind, length, rng) if surfaces == "many" else example(operation, kind, length, rng)


def build_records(examples: int, max_length: int, seed: int = 0, surfaces: str = "one", multiline: float = 0.0,
                  heads: float = 0.0) -> list[dict]:
    """`examples` records, operations and sequence kinds equally likely, lengths uniform in 2..max_length (half
    that for integer lists, whose items are several characters: DP out of distribution needs 10). `surfaces`
    "many" writes each record in a random surface; a share `multiline` of the records are multi-line recalls and
    a share `heads` multi-line first-items requests (a set without them draws exactly as before they existed)."""
    if surfaces not in SURFACES:
        raise ValueError(f"pretrain surfaces must be one of {', '.join(SURFACES)}; got {surfaces!r}")
    if not (0 <= multiline < 1 and 0 <= heads < 1 and multiline + heads < 1):
        raise ValueError(f"pretrain multiline and heads must be in [0, 1) with a sum below 1; got {multiline}, {heads}")
    if examples < 1:
        raise ValueError(f"pretrain examples must be >= 1; got {examples}")
    if max_length < 2:
        raise ValueError(f"pretrain max_length must be >= 2 (items to drop and keep); got {max_length}")
    rng = random.Random(f"pretrain/{seed}")
    out = []
    for _ in range(examples):
        operation, kind = rng.choice(OPERATIONS), rng.choice(KINDS)
        longest = max(2, max_length // 2) if kind == "ints" else max_length  # an int item is 3-4 characters
        length = rng.randint(2, longest)
        if multiline and rng.random() < multiline:
            operation = "recall"
        elif heads and rng.random() < heads / (1 - multiline):  # of what recalls leave: `heads` of the total
            operation = "heads"
        out.append(record(operation, kind, length, rng, surfaces))
    return out


def dataset(spec: dict, seed: int, data_dir: Path, build: bool = True) -> Path | None:
    """The pre-training set of `spec` ({examples, max_length, surfaces, multiline, heads}) for `seed`, written once
    with its manifest; with build False, None unless it is on disk."""
    surfaces, multiline, share = spec.get("surfaces", "one"), spec.get("multiline", 0.0), spec.get("heads", 0.0)
    variant = (("" if surfaces == "one" else f"-{surfaces}") + (f"-ml{multiline:g}" if multiline else "")
               + (f"-hd{share:g}" if share else ""))
    path = Path(data_dir) / f"pretrain-generic{variant}-len{spec['max_length']}-n{spec['examples']}-s{seed}.jsonl"
    if data.verified(path) is None:
        if not build:
            return None
        records = build_records(spec["examples"], spec["max_length"], seed, surfaces, multiline, share)
        data.write(records, path, {"task": "generic", "method": "pretrain", "seed": seed,
                                   "examples": spec["examples"], "max_length": spec["max_length"],
                                   **({"surfaces": surfaces} if surfaces != "one" else {}),
                                   **({"multiline": multiline} if multiline else {}),
                                   **({"heads": share} if share else {})})
    return path


def pretrained_base(spec: dict, model_config: dict | None, seed: int, data_dir: Path, runs_dir: Path,
                    progress: bool = True, build: bool = True) -> Path | None:
    """The run directory of a tiny model pre-trained on the generic set (trained once, then cached); with build
    False, None unless that run is finished (nothing is built or trained)."""
    config = train.make_config(dict(spec.get("train") or {}, seed=seed, lora=False, progress=progress))
    generic = dataset(spec, seed, data_dir, build)
    if build:
        return train.train("tiny", [generic], config, runs_dir, model_config)
    if generic is None:
        return None
    run_dir = train.run_directory(train.identify("tiny", [generic], config, model_config), runs_dir)
    return run_dir if (run_dir / "measurements.json").is_file() else None


def rehearsal(spec: dict, task_data: Path, seed: int, data_dir: Path, build: bool = True) -> Path | None:
    """Generic examples to mix into a fine-tuning set: a fraction `spec['mix']` of the mixed total, drawn from
    a stream apart from pre-training's (seed + 1000)."""
    mix = spec["mix"]
    if not 0 < mix < 1:
        raise ValueError(f"pretrain mix must be in (0, 1); got {mix}")
    count = round(data.read_manifest(task_data)["records"] * mix / (1 - mix))
    return dataset(dict(spec, examples=max(count, 1)), seed + 1000, data_dir, build)
