"""Build, re-sample, write and describe datasets: JSONL records plus a manifest beside each file.

Records use the reference code's field names (`input`, `output`) so its data and ours are interchangeable.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__, files
from ..files import file_sha256, write_json
from ..tasks import TASKS, get_method, get_task
from ..tasks.methods import RETUNING

# scaled: n random problems per size, every step of each; distinct: the same problems, but a recursive method's
# steps de-duplicated by prompt across problems (as the reference does), so the few distinct short sub-problems
# stop crowding out the long ones, then each size repeated up to SIZE_FLOOR of the commonest size's count (as
# the reference re-weights short lists: without it a one-element base case is too rare to learn);
# efficiency: n distinct problems per size.
DISTRIBUTIONS = ("paper", "scaled", "distinct", "efficiency")
SIZE_FLOOR = 0.05


def parse_sizes(text: str, name: str = "sizes") -> tuple[int, int]:
    """'A-B' (or 'A') -> (A, B) with 1 <= A <= B."""
    parts = [p.strip() for p in str(text).split("-")]
    if len(parts) in (1, 2) and all(p.isascii() and p.isdigit() and len(p) <= 18 for p in parts):
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        lo = hi = None
    if lo is None:
        raise ValueError(f"{name} must look like A-B (e.g. 1-8) or A; got {text!r}")
    if lo < 1:
        raise ValueError(f"{name}: sizes start at 1; got {text!r}")
    if lo > hi:
        raise ValueError(f"{name}: the range is empty or in the wrong order (A must be <= B); got {text!r}")
    return lo, hi


# Upper bounds of `retune data` (also `--help`): records are streamed to disk, so memory stays bounded, and the
# estimated size of the file is checked against the free disk space before any work starts.
MAX_N = 100_000  # problems per size
MAX_PROBLEMS = 2_000_000  # problems in one dataset (n x number of sizes)


def problems(task, distribution: str, sizes=(1, 8), n: int = 100, seed: int = 0, method: str = RETUNING.name):
    """The problems of a distribution, in a fixed order for a given seed."""
    rng = random.Random(seed)
    if distribution == "paper":
        yield from task.paper_problems(method, rng)
        return
    for size in range(sizes[0], sizes[1] + 1):
        if distribution in ("scaled", "distinct"):
            yield from (task.sample(size, rng) for _ in range(n))
        else:  # efficiency: n distinct problems per size (all of them where fewer exist)
            distinct = {}
            for _ in range(100 * n):
                if len(distinct) == n:
                    break
                problem = task.sample(size, rng)
                distinct.setdefault(repr(problem), problem)
            yield from distinct.values()


def iter_records(task: str, method: str, distribution: str = "scaled", sizes=(1, 8), n: int = 100, seed: int = 0,
                 variant: int = 0, progress: bool = True):
    """Training records of one task x method x distribution, one at a time (in the order `build` lists them)."""
    check_args(task, method, distribution, sizes, n)
    spec = get_task(task, variant)
    paper = distribution == "paper"
    recursive = get_method(method).recursive
    distinct = distribution == "distinct" and recursive
    seen = set() if distinct or (paper and recursive) else None
    floor = size_repeats(spec, method, sizes, n, seed) if distinct else {}
    weights = random.Random(seed + 1)  # a stream of its own, so re-sampling never shifts the problems
    for problem in tqdm(problems(spec, distribution, sizes, n, seed, method), desc=f"{task}/{method}",
                        unit=" problems", disable=not progress, mininterval=1):
        for ex in spec.examples(problem, method, seen):
            repeats = spec.paper_repeats(ex, method, weights) if paper else floor.get(ex.size, 1)
            record = {"input": ex.input, "output": ex.output, "task": task, "method": method, "size": ex.size}
            if recursive:
                record.update(depth=ex.depth, kind=ex.kind)
            if variant:
                record["variant"] = variant
            for _ in range(repeats):
                yield record


def size_repeats(spec, method: str, sizes, n: int, seed: int) -> dict[int, int]:
    """How often the distinct distribution repeats each size's de-duplicated steps: enough for every size to
    reach SIZE_FLOOR of the commonest size's count (a first pass over the same seeded problems)."""
    seen, counts = set(), Counter()
    for problem in problems(spec, "distinct", sizes, n, seed, method):
        counts.update(ex.size for ex in spec.examples(problem, method, seen))
    floor = SIZE_FLOOR * max(counts.values())
    return {size: max(1, math.ceil(floor / count)) for size, count in counts.items()}


def build(task: str, method: str, distribution: str = "scaled", sizes=(1, 8), n: int = 100, seed: int = 0,
          variant: int = 0, progress: bool = True) -> list[dict]:
    """Training records of one task x method x distribution, as a list (`make` streams them to disk instead)."""
    return list(iter_records(task, method, distribution, sizes, n, seed, variant, progress))


def check_args(task, method, distribution, sizes, n) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    get_method(method)  # a ValueError naming the methods
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if distribution == "paper":
        return  # the reference distribution fixes its own sizes and counts
    lo, hi = sizes
    if lo < 1 or lo > hi:
        raise ValueError(f"sizes must satisfy 1 <= A <= B; got {lo}-{hi}")
    if hi > TASKS[task].max_size:
        raise ValueError(f"sizes: at most {TASKS[task].max_size} for task {task!r} ({TASKS[task].size_name}); "
                         f"got {lo}-{hi}")
    if not 1 <= n <= MAX_N:
        raise ValueError(f"n (problems per size) must be in 1..{MAX_N}; got {n}")
    if n * (hi - lo + 1) > MAX_PROBLEMS:
        raise ValueError(f"sizes x n asks for {n * (hi - lo + 1)} problems; at most {MAX_PROBLEMS} per dataset")


def estimated_bytes(task: str, method: str, distribution: str, sizes, n: int, variant: int = 0) -> int:
    """An upper estimate of a dataset's file size: every problem as large as one of the largest size (records
    grow with the size). 0 for the paper's distribution, whose size is fixed and modest."""
    if distribution == "paper":
        return 0
    spec = get_task(task, variant)
    one = spec.sample(sizes[1], random.Random(0))
    per_problem = sum(len(json.dumps({"input": e.input, "output": e.output}).encode()) + 100
                      for e in spec.examples(one, method))
    return per_problem * n * (sizes[1] - sizes[0] + 1)


class _Describer:
    """`describe` computed record by record, so a streamed dataset needs no list of its records."""

    def __init__(self):
        self.records, self.max_tokens, self.total_tokens = 0, 0, 0
        self.by_size, self.by_kind = Counter(), Counter()
        self.chars = {"input": 0, "output": 0}

    def add(self, r: dict) -> None:
        tokens = len(r["input"]) + len(r["output"]) + 1
        self.records += 1
        self.total_tokens += tokens
        self.max_tokens = max(self.max_tokens, tokens)
        self.by_size[r["size"]] += 1
        self.by_kind[r.get("kind", "full")] += 1
        self.chars["input"] += len(r["input"])
        self.chars["output"] += len(r["output"])

    def result(self) -> dict:
        return {
            "records": self.records,
            "by_size": dict(sorted(self.by_size.items())),
            "by_kind": dict(sorted(self.by_kind.items())),
            "characters": dict(self.chars),
            "char_tokens": {"total": self.total_tokens, "mean": round(self.total_tokens / max(self.records, 1), 2),
                            "max": self.max_tokens},
        }


def write(records, out: str | Path, parameters: dict) -> dict:
    """Write records (any iterable) as JSONL and a manifest beside them naming the file's sha256 and size.

    The pair is committed in an order a kill cannot turn into a trusted mismatch: the JSONL is written to a
    hidden temporary, the old manifest is removed, the JSONL is renamed into place, then the new manifest is
    written atomically. A reader trusts a dataset only when `verified` finds the manifest's sha256 equal to the
    file's. Temporaries left by killed writers of the same file are removed first."""
    out = files.check_output_file(out, "out", companions=(MANIFEST_SUFFIX,))
    out.parent.mkdir(parents=True, exist_ok=True)
    files.remove_stale_temps(out)
    digest, summary, size = hashlib.sha256(), _Describer(), 0
    with files.replacing(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                line = json.dumps(record, ensure_ascii=False) + "\n"
                encoded = line.encode("utf-8")
                digest.update(encoded)
                size += len(encoded)
                summary.add(record)
                f.write(line)
        manifest_path(out).unlink(missing_ok=True)  # from here on the old manifest can never vouch for new data
    # Only what the inputs decide goes into the manifest (it is committed beside ignored data and must come out
    # byte-identical when rebuilt): no timing, no timestamp, no absolute path, no Python version (the bytes are
    # the same on every Python; the sha256 above is what vouches for them).
    manifest = summary.result() | {"file": out.name, "sha256": digest.hexdigest(), "bytes": size,
                                   "parameters": parameters, "versions": {"retune": __version__}}
    write_json(manifest_path(out), manifest)
    return manifest


def describe(records: list[dict]) -> dict:
    """Counts per size and kind, and character / token counts (character tokenizer: one token a character,
    plus EOS after each target)."""
    summary = _Describer()
    for r in records:
        summary.add(r)
    return summary.result()


MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def verified(path: str | Path) -> dict | None:
    """The manifest of a dataset when it vouches for the file beside it (same size and sha256), else None: a
    missing, unreadable or stale manifest (e.g. a writer killed between the data and its manifest)."""
    path = Path(path)
    try:
        manifest = json.loads(manifest_path(path).read_text())
        if not path.is_file() or manifest.get("bytes", path.stat().st_size) != path.stat().st_size:
            return None
        return manifest if manifest.get("sha256") == file_sha256(path) else None
    except (OSError, ValueError, AttributeError):
        return None


def read(path: str | Path) -> list[dict]:
    """Every record of a JSONL dataset, each checked (`records`)."""
    return list(records(path))


def records(path: str | Path):
    """The records of a JSONL dataset one at a time, blank lines skipped. Each must be a JSON object with string
    `input` and `output`: anything else (a line cut short, a JSON list, a record without `input`, bytes that are
    not UTF-8) is a ValueError naming the file and the line, not a KeyError or a JSON error later and elsewhere."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist (build it with `retune data`)")
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                yield parse_record(raw, f"{path}:{number}")


MAX_LINE = 1 << 20  # bytes of one record: far above any task's example, far below what tokenizing would exhaust


def check_alphabet(path: str | Path, alphabet, who: str) -> None:
    """Every character of every record of `path` in `alphabet`, else a ValueError naming file:line and the
    character: a tokenizer without it would train on <unk> in its place, silently."""
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, 1):
            record = parse_record(raw, f"{path}:{number}") if raw.strip() else {}
            for key in ("input", "output"):
                outside = sorted(set(record.get(key, "")) - set(alphabet))
                if outside:
                    raise ValueError(f"{path}:{number}: {key} holds {outside[0]!r}, a character {who} cannot "
                                     f"read (it would train as <unk>)")


def parse_record(raw: bytes, where: str) -> dict:
    """One JSONL line as a training record, or a ValueError that starts with `where` (file:line): a line over
    MAX_LINE bytes, nesting too deep for the JSON parser, or text that is no Unicode (a lone surrogate escaped as
    \\ud800 reached the tokenizer as a TypeError) are refused here too."""
    if len(raw) > MAX_LINE:
        raise ValueError(f"{where}: the line is {len(raw):,} bytes; a record may have at most {MAX_LINE:,}")
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"{where}: not a training record (JSON nested too deeply)") from None
    except ValueError as err:
        cut = "" if raw.endswith(b"\n") else "; the line is cut short"
        raise ValueError(f"{where}: not a JSON record ({err.msg}{cut})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with input and output, got a JSON "
                         f"{type(record).__name__}")
    missing = [key for key in ("input", "output") if not isinstance(record.get(key), str)]
    if missing:
        raise ValueError(f"{where}: the record has no {' and no '.join(missing)} string (a training record is "
                         f"{{\"input\": ..., \"output\": ...}})")
    for key in ("input", "output"):
        try:
            record[key].encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{where}: {key} holds {record[key][err.start]!r}, a lone surrogate, not text") from None
    return record


def read_manifest(path: str | Path) -> dict:
    return json.loads(manifest_path(path).read_text())


def make(task: str, method: str, out: str | Path, distribution: str = "scaled", sizes=(1, 8), n: int = 100,
         seed: int = 0, variant: int = 0, progress: bool = True, announce=None) -> dict:
    """Build and write one dataset, streamed to disk; returns its manifest, plus the build time (`build_seconds`,
    which is returned and printed but never written: it differs on every build, and the manifest is committed).

    Every argument and the output path are checked before any work; `announce` (e.g. print) is told what will
    be built and its estimated size first. A dataset estimated larger than the free disk space is refused."""
    start = time.perf_counter()
    check_args(task, method, distribution, sizes, n)
    get_task(task, variant)  # checks the variant
    out = files.check_output_file(out, "out", companions=(MANIFEST_SUFFIX,))
    estimate = estimated_bytes(task, method, distribution, sizes, n, variant)
    free = shutil.disk_usage(files.nearest_existing(out.parent)).free
    if estimate > free:
        raise ValueError(f"the dataset would take about {estimate / 1e6:.0f} MB, more than the "
                         f"{free / 1e6:.0f} MB free beside {str(out)!r}; use fewer sizes or a smaller n")
    if announce is not None:
        what = "the paper's distribution" if distribution == "paper" else \
            f"{n * (sizes[1] - sizes[0] + 1)} problems (sizes {sizes[0]}-{sizes[1]} x n {n}), " \
            f"at most about {max(estimate / 1e6, 0.1):.1f} MB"
        announce(f"retune data: {task}/{method}: {what} -> {out}")
    parameters = {"task": task, "method": method, "distribution": distribution, "seed": seed, "variant": variant}
    if distribution != "paper":
        parameters |= {"sizes": f"{sizes[0]}-{sizes[1]}", "n": n}
    records = iter_records(task, method, distribution, sizes, n, seed, variant, progress)
    manifest = write(records, out, parameters)
    return manifest | {"build_seconds": round(time.perf_counter() - start, 2)}
