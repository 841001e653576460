"""The traces file that ships with a profile's results, and the viewers' way to the traces of finished runs.

`export_traces` / `write_traces` write every trace of a grid into one gzipped JSONL file (byte-stable: the same
traces give the same bytes) with a .meta.json beside it; `cached` reads traces from that file, else from the
cached evaluations under runs/. The viewers (inspector, tour, error analysis) go through `cached`: they never
train, build or write anything.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..files import ROOT, OneLineError, atomic_write_text, file_sha256, replacing, versions
from .pipeline import eval_key, evaluated, evaluation_cache, read_evaluation, rows
from ..config.profiles import Profile, where
from ..training.runs import RunSpec, finished_run


TRACES_FILE = "traces.jsonl.gz"  # in results_dir, with traces.meta.json beside it


def run_id(profile: Profile, spec: RunSpec) -> str:
    """What identifies a run's evaluation in the shipped file: the run's grid fields and the evaluation key."""
    return json.dumps([spec.task, spec.method, spec.seed, spec.distribution, spec.n, spec.variant,
                       eval_key(profile, spec.task, spec.method, spec.seed, spec.variant)])


def export_traces(profile: Profile, runs: list[dict], path: Path | str | None = None) -> Path:
    """Write every trace of `runs` (trained and evaluated, normally cached by run_all before) into one gzipped
    JSONL file, default results_dir/traces.jsonl.gz, with traces.meta.json beside it (see write_traces)."""
    groups = []
    for spec in map(RunSpec.of, runs):
        run_dir, traces = evaluated(profile, spec)
        groups.append((spec, spec.labels(profile, run_dir.name), traces))
    return write_traces(profile, groups, path)


def write_traces(profile: Profile, groups: list[tuple[RunSpec, dict, list]], path: Path | str | None = None) -> Path:
    """The traces file of a profile's results from (run spec, row labels, traces) per run: one line per trace,
    {"run": <run id>, "labels": ..., "trace": <Trace dict>}, gzipped without a time stamp (the same traces give
    the same bytes, so a re-run leaves git clean); the .meta.json beside it names the profile, seeds,
    evaluation settings and each run with its counts."""
    import gzip

    path = Path(path) if path else where(profile, "results") / TRACES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = []
    # gzip records a file name in its header: a fixed one (the name the committed file has), not the temp file's
    with replacing(path) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename=f"{path.name}.tmp", fileobj=raw, mode="wb", mtime=0) as f:
        for spec, labels, traces in groups:
            spec = RunSpec.of(spec)
            ident = run_id(profile, spec)
            for t in traces:
                line = {"run": ident, "labels": labels, "trace": t.to_dict()}
                f.write((json.dumps(line, ensure_ascii=True) + "\n").encode())
            counts.append(dict(asdict(spec), run=labels.get("run"), problems=len(traces),
                               failures=sum(not t.correct for t in traces)))
    meta = {"profile": profile.profile, "seeds": profile.seeds, "eval_sizes": profile.eval.sizes,
            "eval_problems_per_size": profile.eval.problems_per_size, "limits": asdict(profile.limits),
            "runs": counts, "traces": sum(c["problems"] for c in counts), "sha256": file_sha256(path),
            "written_by": "retune.evaluation.traces.write_traces", "versions": versions()}
    atomic_write_text(traces_meta_path(path), json.dumps(meta, indent=1) + "\n")  # last: it vouches for the file
    return path


def traces_meta_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name.split(".")[0] + ".meta.json")


class DamagedTraces(OneLineError):
    """The shipped traces file does not match its meta file (cut short, bytes changed, lines lost): a viewer
    says so in one line instead of a traceback, or of showing part of the traces as if they were all."""


def shipped_traces(profile: Profile, path: Path | str | None = None) -> dict[str, tuple[dict, list]]:
    """The traces file of the profile's results ({run id: (labels, traces)}); empty when there is none or it
    was written under another profile. Checked against its meta file, which is written after it: its sha256 and
    its count of traces; a mismatch, or a meta file without them, is a DamagedTraces naming the file."""
    path = Path(path) if path else where(profile, "results") / TRACES_FILE
    meta_path = traces_meta_path(path)
    if not (path.is_file() and meta_path.is_file()):
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise _damaged(path, profile, f"{meta_path.name} is not a readable meta file")
    if meta.get("profile") != profile.profile:
        return {}
    listed = _listed(meta)
    if listed is None:
        raise _damaged(path, profile, f"{meta_path.name} is malformed: it needs runs, a list of objects each with "
                                      f"problems, a count >= 0, and sha256, the file's digest")
    if meta["sha256"] != file_sha256(path):  # the digest, not the count: lines swapped for others keep the count
        raise _damaged(path, profile, f"its bytes are not those {meta_path.name} lists (sha256)")
    out = _read_shipped(path, profile)
    count = sum(len(t) for _, t in out.values())
    if count != listed:
        raise _damaged(path, profile, f"it holds {count} traces where {meta_path.name} lists {listed}")
    return out


def _listed(meta: dict) -> int | None:
    """The number of traces a meta file lists, None when it is not a meta file write_traces writes (runs not a
    list of objects with integer problem counts, or no sha256): a hand-edited or damaged meta file gave
    TypeErrors, or no check of the file at all."""
    runs, digest = meta.get("runs"), meta.get("sha256")
    if not (isinstance(runs, list) and isinstance(digest, str) and len(digest) == 64):
        return None
    counts = [r.get("problems") if isinstance(r, dict) else None for r in runs]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    return sum(counts)


def _read_shipped(path: Path, profile: Profile) -> dict[str, tuple[dict, list]]:
    import gzip
    import zlib

    from ..decoding.recursive import Trace

    out: dict[str, tuple[dict, list]] = {}
    number = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if text.strip():
                    line = json.loads(text)
                    out.setdefault(line["run"], (line["labels"], []))[1].append(Trace.from_dict(line["trace"]))
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, AttributeError) as err:
        raise _damaged(path, profile, f"{type(err).__name__} after line {number}") from None
    return out


def _damaged(path: Path, profile: Profile, why: str) -> DamagedTraces:
    return DamagedTraces(f"{path} is damaged ({why}); `make reproduce PROFILE={profile.profile}` writes it again "
                         "(a committed one: restore it from git)")


def cached_evaluation(profile: Profile, run) -> tuple[dict, list] | None:
    """(labels, traces) of a run's cached evaluation, or None when the run or its evaluation is not on disk."""
    spec = RunSpec.of(run)
    run_dir = finished_run(profile, spec)
    if run_dir is None:
        return None
    traces = read_evaluation(evaluation_cache(profile, run_dir, spec.task, spec.method, spec.seed, spec.variant))
    return (spec.labels(profile, run_dir.name), traces) if traces is not None else None


def cached(profile: Profile, runs: list, say=print) -> list[tuple[dict, list]]:
    """(labels, traces) per run that exists: from the shipped traces file of the results, else from a cached
    evaluation under runs_dir. Never trains, builds or writes anything. Runs found nowhere are named in one
    line, with the command that produces them."""
    shipped = shipped_traces(profile)
    out, missing = [], []
    for spec in map(RunSpec.of, runs):
        found = shipped.get(run_id(profile, spec)) or cached_evaluation(profile, spec)
        if found:
            out.append(found)
        else:
            missing.append(spec)
    if missing:
        results = where(profile, "results")
        shown = results.relative_to(ROOT) if results.is_relative_to(ROOT) else results
        say(f"no traces for {len(missing)} of {len(runs)} runs of profile {profile.profile!r} "
            f"(first: {missing[0].task} {missing[0].method} seed {missing[0].seed}); "
            f"`make reproduce PROFILE={profile.profile}` writes them to {shown / TRACES_FILE}")
    return out


def cached_traces(profile: Profile, runs: list, say=print) -> list:
    """Every existing trace of `runs` (see `cached`): what the inspector and the tour open."""
    return [t for _, traces in cached(profile, runs, say) for t in traces]


def cached_rows(profile: Profile, runs: list, say=print):
    """run_all's table from the existing traces of `runs` alone (see `cached`): what the error analysis reads."""
    import pandas as pd

    return pd.DataFrame([row for labels, traces in cached(profile, runs, say) for row in rows(traces, **labels)])


