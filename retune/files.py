"""Output paths checked before any work starts, and files written so that an interrupted write leaves nothing a
later run could mistake for a finished result.

- `check_output_file` / `check_output_dir`: a bad `--out` (empty, a directory where a file is wanted, a device or
  FIFO, a path under a file, an unwritable directory) is a one-line ValueError before anything is computed.
- `atomic_write_text` and `temp_path`: a file appears under its name only once it is complete (written to a
  hidden temporary beside it, then renamed). Temporaries carry the writer's process id, so
  `remove_stale_temps` can delete those whose writer is gone (killed) without touching a live writer's.
- `locked`: one process at a time makes a given result (two workers asking for the same run or evaluation:
  the second waits, then finds it cached).
- The helpers every layer shares, written once: `ROOT` (the repository), `DEFAULT_PROFILE`, `versions()` (what
  produced a result), `file_sha256`, `write_json` (atomic).
- Digests written last (`files_digest` / `changed` for a folder of results, `seal` / `sealed` for one cache file):
  damage after a result was finished means a recompute or a clear error, never a silently wrong number.

The lowest layer: imports nothing from retune.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository: profiles/, data/, results/, figures/, notebooks/
DEFAULT_PROFILE = "cpu"  # what `make reproduce`, `retune train | eval | reproduce` and the notebooks use unless told


class OneLineError(ValueError):
    """An error whose message says it all. IPython (so papermill and the notebooks) shows an exception through its
    `_render_traceback_` when it has one: here this one line, not a traceback through the library. The command
    lines print any ValueError as one line already."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


@contextlib.contextmanager
def quiet_loader():
    """transformers' loading bars and reports kept off the terminal for the block (a model directory we refuse
    printed up to 32 lines of its load report before our one line); RETUNE_VERBOSE=1 shows them."""
    if os.environ.get("RETUNE_VERBOSE", "").strip() == "1":
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def versions() -> dict:
    """Versions of what produced a result, read from package metadata (so torch is not imported)."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "tokenizers", "peft", "retune", "pandas", "seaborn", "matplotlib"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            out[package] = None
    return out


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest ancestor that exists (the directory a write would have to create in)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_parent(path: Path, what: str, original) -> None:
    """Every missing directory above `path` can be created: the closest existing ancestor is a writable
    directory (as root every permission check passes except a read-only file system)."""
    anchor = nearest_existing(path.parent)
    if not anchor.is_dir():
        raise ValueError(f"{what} {str(original)!r} lies under {str(anchor)!r}, which is not a directory")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(original)!r}: directory {str(anchor)!r} is not writable")


def check_output_file(path, what: str = "--out", companions: tuple[str, ...] = ()) -> Path:
    """The output file `path` as a Path, or a ValueError naming why it cannot be written.

    An existing regular file may be replaced; anything else that exists (directory, device, FIFO, socket) is
    refused, as is a file that would be written beside it with one of the `companions` suffixes."""
    text = "" if path is None else str(path)
    if not text.strip():
        raise ValueError(f"{what} must name a file; got {text!r}")
    out = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or out.name in ("", ".", ".."):
        raise ValueError(f"{what} must name a file, not a directory; got {text!r}")
    _check_name_lengths(out, what, text, file_suffix=max(map(len, companions), default=0))
    for target in (out, *(out.with_name(out.name + suffix) for suffix in companions)):
        if target.is_dir():
            raise ValueError(f"{what} {str(target)!r} is a directory; it must name a file")
        if os.path.exists(target) and not target.is_file():
            raise ValueError(f"{what} {str(target)!r} exists and is not a regular file (a device, FIFO or "
                             f"socket); refusing to replace it")
    _check_parent(out, what, text)
    return out


TEMP_EXTRA = 32  # what temp_path adds to a name: a dot, then `.<pid>-<8 hex>.tmp`


def _check_name_lengths(out: Path, what: str, text: str, file_suffix: int | None = None) -> None:
    """Every component short enough for the file system (else an OSError 'File name too long' mid-run); a file's
    own name (`file_suffix` not None) with room for the temporary it is written through (temp_path) and for its
    longest companion suffix."""
    anchor = nearest_existing(out.parent)
    limit = os.pathconf(anchor, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    folders = out.parts if file_suffix is None else out.parts[:-1]
    for part in folders:
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"{what} {text[:60]!r}...: a folder name of {len(os.fsencode(part))} bytes; this file "
                             f"system takes at most {limit}")
    room = limit - TEMP_EXTRA - (file_suffix or 0)
    if file_suffix is not None and len(os.fsencode(out.name)) > room:
        raise ValueError(f"{what} {text[:60]!r}...: the file name is {len(os.fsencode(out.name))} bytes; at most {room} "
                         f"here ({limit} bytes a name, less room for the files written beside it)")


def check_output_dir(path, what: str = "--out") -> Path:
    """The output directory `path` as a Path (it may not exist yet), or a ValueError naming why it cannot be."""
    text = "" if path is None else str(path)
    if not text.strip():
        raise ValueError(f"{what} must name a directory; got {text!r}")
    out = Path(text).expanduser()
    _check_name_lengths(out, what, text)
    if os.path.lexists(out) and not out.is_dir():
        raise ValueError(f"{what} {text!r} exists and is not a directory")
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"{what}: directory {text!r} is not writable")
    else:
        _check_parent(out, what, text)
    return out


# --- writes that an interruption cannot half-do -------------------------------------------------------------
def temp_path(out: Path) -> Path:
    """A fresh hidden temporary beside `out`, named `.<name>.<pid>-<random>.tmp`, created empty with the
    umask's default mode (unlike tempfile.mkstemp's 0600)."""
    while True:
        tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(out: Path) -> list[Path]:
    """Delete the temporaries of writes to `out` (or to a file beside it, e.g. its manifest) whose writing
    process no longer runs: what a killed writer left behind. Returns what was removed."""
    out = Path(out)
    removed = []
    if not out.parent.is_dir():
        return removed
    prefix = f".{out.name}."
    for entry in out.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")) or not entry.is_file():
            continue
        tag = name[len(prefix):-len(".tmp")].rsplit(".", 1)[-1].split("-", 1)[0]
        if tag.isdigit() and _writer_alive(int(tag)):  # a write in progress (this process's included)
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def replacing(path):
    """The one way retune writes a file that a reader may find half-written: yields a fresh temporary beside
    `path` (temp_path) to write; when the block ends cleanly the temporary replaces `path` in one rename, when it
    raises the temporary is removed. `path` is thus its old content or the whole new one, never a part (a killed
    writer leaves only a hidden temporary, which remove_stale_temps clears)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str, encoding: str = "utf-8", errors: str = "strict") -> Path:
    """Write `text` to `path` so that `path` is either its old content or the whole new text, never a part."""
    path = Path(path)
    with replacing(path) as tmp:
        with open(tmp, "w", encoding=encoding, errors=errors) as f:
            f.write(text)
    return path


def write_json(path, obj) -> Path:
    """`obj` as indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock on `path` for the block (its result need not exist yet). The lock file lives in the
    temporary directory, named by a hash of the absolute path, so result folders hold nothing but results; the
    kernel releases the lock when its holder dies, so a killed process never leaves a result locked."""
    name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "retune-locks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- digests written last: a result damaged after it was finished is found, never trusted ---------------------
def files_digest(root, names) -> dict[str, str]:
    """sha256 of every file under `root`/<name> (a file or a folder) for each of `names` that exists, by path
    relative to `root`: what a finished result records of itself, last, so that a later change is found."""
    root, out = Path(root), {}
    for name in names:
        top = root / name
        for f in sorted([top] if top.is_file() else top.rglob("*") if top.is_dir() else []):
            if f.is_file():
                out[str(f.relative_to(root))] = file_sha256(f)
    return out


def changed(root, digests: dict) -> str | None:
    """What differs from `digests` (files_digest's) under `root`, in a few words: the first file missing or not
    byte for byte what was recorded; None when every one matches."""
    for name, sha in digests.items():
        f = Path(root) / name
        if not f.is_file():
            return f"{name} is missing"
        if file_sha256(f) != sha:
            return f"{name} is not the file recorded when it was finished (cut short or changed)"
    return None


def seal_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".seal.json")


def seal(path, **facts) -> Path:
    """Write `path`'s seal beside it, after it is complete: its size and sha256, and `facts` (e.g. a count of
    records). A reader (`sealed`) then trusts the file only while it holds those bytes: a cache cut short,
    emptied or changed later reads as absent (recomputed), never as a smaller result."""
    path = Path(path)
    return write_json(seal_path(path), {"bytes": path.stat().st_size, "sha256": file_sha256(path), **facts})


def sealed(path) -> dict | None:
    """The seal of `path` when it vouches for the bytes there (same size and sha256), else None: no file, no seal,
    an unreadable seal, or a file changed since it was sealed."""
    path = Path(path)
    try:
        facts = json.loads(seal_path(path).read_text())
        if facts.get("bytes") == path.stat().st_size and facts.get("sha256") == file_sha256(path):
            return facts
    except (OSError, ValueError, AttributeError):
        pass
    return None
