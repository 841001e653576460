"""Executors: who does the pieces of a plan (retune.reproduce.plan), chosen by the profile's `executor` section.

- `local`: `workers` processes side by side on this machine, each with its share of the CPU `threads`;
- `gpus` (or `workers: auto`): one process per visible CUDA device, pinned to it (CUDA_VISIBLE_DEVICES is set in
  the process before torch touches CUDA); with `train.processes` N, one per N devices, which that run's torchrun
  ranks share;
- `slurm`: the pieces as Slurm job arrays through submitit, each job's partition, GPUs, CPUs, time and memory from
  the profile; `executor.cluster: local` sends the same jobs to submitit's own local executor (real processes here).

One driver serves all three: pieces already finished (plan.finished) are counted done and not started again; the
others start as soon as what they need is done (a run after its seed's base: a new array on Slurm), in the plan's
order (the longest first); one line per finished piece and a bar with the ETA over all of them. A failed piece is
named at once (with its job log on Slurm) while the others go on; at the end PieceFailed names the failures. Every
piece is cached by its inputs, so a re-run after a failure or an interruption does only what is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import traceback
from pathlib import Path

from ..files import ROOT
from .plan import Piece, do, finished, needs, plan
from ..config.profiles import Profile, recipes, where
from ..settings import ProfileError

KINDS = ("local", "gpus", "slurm")  # executor.kind
CLUSTERS = ("slurm", "local")  # executor.cluster
_PINNED: str | None = None  # in a worker of the gpus executor: the device(s) it is pinned to


class PieceFailed(RuntimeError):
    """Pieces of work failed; the message names them (and a job's log). The other pieces were done and cached."""


def kind(profile: Profile) -> str:
    return "gpus" if profile.workers == "auto" else profile.executor.kind


def wanted(profile: Profile) -> bool:
    """Whether `retune reproduce` hands the plan to an executor before the notebooks (else the notebooks train and
    evaluate what they need themselves, one run after the other)."""
    return kind(profile) != "local" or profile.workers != 1  # a bad value too: execute's check names it


def processes_per_run(profile: Profile) -> int:
    """The most processes one run of the profile trains in (`processes` of any recipe it trains with, every
    by_task entry included: profiles.recipes)."""
    return max(recipe.processes for _, recipe in recipes(profile))


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, named as CUDA_VISIBLE_DEVICES names them, so that a worker is pinned to
    the same physical device when this process was itself given a subset."""
    import torch

    count = torch.cuda.device_count()
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (named or [str(i) for i in range(count)])[:count]


def device_groups(profile: Profile, visible: list[str] | None = None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each worker of the gpus executor: one device each, or train.processes devices
    for a profile whose runs train in several processes. A ProfileError when the machine has too few."""
    visible = visible_gpus() if visible is None else visible
    asked, per_run = profile.executor.gpus, processes_per_run(profile)
    if not visible:
        raise ProfileError("executor.kind gpus: no CUDA device is visible here; on a CPU machine use executor.kind "
                           "local with `workers`")
    if asked > len(visible):
        raise ProfileError(f"executor.gpus: {asked} asked, {len(visible)} visible here ({', '.join(visible)})")
    use = visible[:asked or len(visible)]
    if per_run > len(use):
        raise ProfileError(f"train.processes: one run trains in {per_run} processes, one GPU each; {len(use)} "
                           f"GPU(s) are used here (executor.gpus)")
    return [",".join(use[i:i + per_run]) for i in range(0, len(use) - per_run + 1, per_run)]


# What one job may ask of a cluster, at most: far beyond any node (a node of 2**16 GPUs or 2**20 GB does not exist).
MOST = {"gpus": 2**16, "gpus_per_job": 2**10, "cpus_per_job": 2**16, "time_min": 60 * 24 * 366, "mem_gb": 2**20,
        "array_parallelism": 2**20}


def check(profile: Profile) -> None:
    """The keys `workers` and `executor`, and what this machine offers for them (GPUs, Slurm and its partition),
    before any work: a ProfileError of one line."""
    e = profile.executor
    if profile.workers != "auto" and (isinstance(profile.workers, str) or profile.workers < 1):
        raise ProfileError(f"workers: expected a number >= 1 or auto (one process per visible GPU), got "
                           f"{profile.workers!r}")
    for key, value, allowed in (("kind", e.kind, KINDS), ("cluster", e.cluster, CLUSTERS)):
        if value not in allowed:
            raise ProfileError(f"executor.{key}: unknown {value!r}; allowed: {', '.join(allowed)}")
    if profile.workers == "auto" and e.kind == "slurm":
        raise ProfileError("workers: auto (one process per GPU here) excludes executor.kind slurm; give one of them")
    most = 2 * (os.cpu_count() or 1)  # processes beyond twice the cores only compete for them (and for memory)
    if kind(profile) == "local" and profile.workers > most:
        raise ProfileError(f"workers: must be in 1..{most} (twice this machine's CPU cores), got {profile.workers}")
    for key in ("gpus", "gpus_per_job", "cpus_per_job", "time_min", "mem_gb", "array_parallelism"):
        least, most = 0 if key.startswith("gpus") else 1, MOST[key]
        if not least <= getattr(e, key) <= most:  # NaN and infinity fail too
            raise ProfileError(f"executor.{key}: must be in {least}..{most:,}, got {getattr(e, key)!r}")
    if kind(profile) == "gpus":
        device_groups(profile)
    if kind(profile) != "slurm":
        return
    per_run = processes_per_run(profile)
    if e.gpus_per_job and per_run > e.gpus_per_job:
        raise ProfileError(f"executor.gpus_per_job: {e.gpus_per_job} GPU(s) per job cannot hold the {per_run} "
                           f"processes of one run (train.processes: one GPU each)")
    if e.cluster == "slurm":
        if not (shutil.which("sbatch") and shutil.which("srun")):
            raise ProfileError("executor.kind slurm: no Slurm here (sbatch or srun is not on PATH); start `retune "
                               "reproduce` on the cluster's login node, or set executor.cluster local to run the "
                               "jobs here")
        if e.partition and shutil.which("sinfo"):
            listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
            names = [p.strip().rstrip("*") for p in listed.stdout.split()]
            if listed.returncode == 0 and names and e.partition not in names:
                raise ProfileError(f"executor.partition: {e.partition!r} is not a partition of this cluster (sinfo "
                                   f"lists: {', '.join(names)})")


# --- who does a piece -------------------------------------------------------------------------------------------
def _pin(devices) -> None:
    """A worker of the gpus executor takes its device(s) before torch is asked about CUDA; it dies with its parent."""
    global _PINNED
    from ..training.memory import die_with_parent

    die_with_parent()
    if devices is not None:
        _PINNED = devices.get()
        os.environ["CUDA_VISIBLE_DEVICES"] = _PINNED


def _work(job: tuple) -> dict:
    """One piece in a worker process or a job, with `threads` torch threads: {"seconds": per stage}, or
    {"error": one line} (the traceback goes to this process's stderr: a job's log)."""
    profile, piece, threads = job
    import torch

    torch.set_num_threads(threads)
    try:
        return {"seconds": do(profile, piece), "device": _PINNED}
    except Exception as err:
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {err}", "device": _PINNED}


class Processes:
    """Pieces in spawned processes of this machine: `workers` of them, or one per entry of `devices`, pinned to it.
    A process that dies breaks the pool: what is pending fails with that error instead of waiting forever."""

    poll_s = 0.5

    def __init__(self, profile: Profile, workers: int = 1, devices: list[str] | None = None, work=_work):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = len(devices) if devices else workers
        self.threads = max(1, (profile.threads or (os.cpu_count() if devices else n)) // n)
        context = multiprocessing.get_context("spawn")
        queue = None
        if devices:
            queue = context.SimpleQueue()
            for group in devices:
                queue.put(group)
        self.pool = ProcessPoolExecutor(n, mp_context=context, initializer=_pin, initargs=(queue,))
        self.work = work
        self.describe = f"{n} processes of {self.threads} torch thread(s) each" + \
            (f", pinned to GPU {' | '.join(devices)}" if devices else "")

    def start(self, profile: Profile, pieces: list[Piece]) -> list[tuple]:
        return [(piece, self.pool.submit(self.work, (profile, piece, self.threads))) for piece in pieces]

    @staticmethod
    def ready(future) -> bool:
        return future.done()

    @staticmethod
    def outcome(future) -> dict:
        try:
            return future.result()
        except Exception as err:  # the worker process died (killed, out of memory): the pool is broken
            return {"error": f"{type(err).__name__}: {err}"}

    def stop(self, pending: list[tuple]) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)  # running workers die with this process

    def close(self) -> None:
        self.pool.shutdown()


class Jobs:
    """Pieces as submitit jobs: each start() is one job array (Slurm's `--array`, at most array_parallelism at
    once); `executor.cluster: local` gives submitit's local executor the same jobs. Job files and logs in
    executor.logs."""

    poll_s = 2.0

    def __init__(self, profile: Profile):
        import submitit

        e = profile.executor
        folder = Path(e.logs) if e.logs else where(profile, "runs") / "jobs"
        self.folder = folder if folder.is_absolute() else ROOT / folder
        self.threads = e.cpus_per_job
        # a folder per job on Slurm; submitit's local executor would make a stray "%j" folder of that
        self.executor = submitit.AutoExecutor(folder=self.folder / ("%j" if e.cluster == "slurm" else ""),
                                              cluster=e.cluster)
        self.executor.update_parameters(
            name=f"retune-{profile.profile}", timeout_min=e.time_min, mem_gb=e.mem_gb, gpus_per_node=e.gpus_per_job,
            cpus_per_task=e.cpus_per_job, tasks_per_node=1, nodes=1, slurm_partition=e.partition,
            slurm_array_parallelism=e.array_parallelism, slurm_setup=list(e.setup),
            slurm_additional_parameters=dict(e.sbatch))
        where_ = f"partition {e.partition}" if e.partition else "the default partition"
        self.describe = (f"Slurm job arrays on {where_}" if e.cluster == "slurm" else "submitit's local executor") + \
            f" ({e.gpus_per_job} GPU(s), {e.cpus_per_job} CPUs, {e.mem_gb:g} GB, {e.time_min} min per job; " \
            f"logs in {self.folder})"

    def start(self, profile: Profile, pieces: list[Piece]) -> list[tuple]:
        if not pieces:
            return []
        with self.executor.batch():
            jobs = [self.executor.submit(_work, (profile, piece, self.threads)) for piece in pieces]
        return list(zip(pieces, jobs))

    @staticmethod
    def ready(job) -> bool:
        return job.done()

    @staticmethod
    def outcome(job) -> dict:
        try:
            out = job.result()
        except Exception as err:  # the job ended without a result: killed (time, memory), or it never started
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            out = {"error": f"job {job.job_id} ended without a result ({first})"}
        return dict(out, log=str(job.paths.stderr))

    @staticmethod
    def stop(pending: list[tuple]) -> None:
        for _, job in pending:  # a re-run starts them again (a run resumes from its last checkpoint)
            job.cancel(check=False)

    def close(self) -> None:
        pass


_SIGTERM = []  # the handler stopped_by_sigterm replaced


def stopped_by_sigterm(restore: bool = False) -> None:
    """While the driver waits, SIGTERM (`kill`, a scheduler's stop) raises SystemExit in it, so that what is in
    flight is stopped as for Ctrl-C: by default the process died at once, and submitit's jobs ran on for minutes
    with no parent. `restore` puts the previous handler back. Only the main thread may set handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if restore:
        if _SIGTERM:
            signal.signal(signal.SIGTERM, _SIGTERM.pop())
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)
    _SIGTERM.append(signal.signal(signal.SIGTERM, stop))


# --- the driver -------------------------------------------------------------------------------------------------
def drive(profile: Profile, backend, log=print, progress: bool = True, pieces: tuple | None = None) -> list[Piece]:
    """Every piece of the plan (or of `pieces`: (first, runs)) that is not finished yet, done by `backend`; returns
    the pieces done, those found done included. Ctrl-C stops (cancels) what is in flight."""
    from tqdm.auto import tqdm

    first, runs = pieces or plan(profile)
    everything = first + runs
    done = [piece for piece in everything if finished(profile, piece)]
    waiting: dict = {}
    for piece in everything:
        if piece not in done:
            before = needs(profile, piece)
            waiting.setdefault(None if before in done else before, []).append(piece)
    log(f"{len(everything)} pieces of work ({len(done)} done before) by {backend.describe}")
    bar = tqdm(total=len(everything), initial=len(done), desc="pieces", unit="piece", disable=not progress)
    failures, skipped = [], []
    pending = []
    stopped_by_sigterm()  # before the first job starts: from then on a SIGTERM stops them
    try:
        pending = backend.start(profile, waiting.pop(None, []))
        while pending:
            ready = [item for item in pending if backend.ready(item[1])]
            if not ready:
                time.sleep(backend.poll_s)
                continue
            for item in ready:
                pending.remove(item)
                piece, outcome = item[0], backend.outcome(item[1])
                bar.update()
                on = f" on GPU {outcome['device']}" if outcome.get("device") else ""
                if "error" in outcome:
                    failures.append(f"{piece} failed{on}: {outcome['error']}" +
                                    (f" (log: {outcome['log']})" if outcome.get("log") else ""))
                    log(failures[-1])
                    skipped += waiting.pop(piece, [])
                    continue
                log(f"{piece}{on}: " + ", ".join(f"{k} in {v} s" for k, v in outcome["seconds"].items()))
                done.append(piece)
                if piece in waiting:
                    pending += backend.start(profile, waiting.pop(piece))
    except BaseException:
        backend.stop(pending)
        raise
    finally:
        stopped_by_sigterm(restore=True)
        bar.close()
    backend.close()
    if failures:
        left = f"; {len(skipped)} not started for want of them" if skipped else ""
        raise PieceFailed(f"{len(failures)} of {len(everything)} pieces failed{left}; the first: {failures[0]}. The "
                          f"rest is done and cached: a re-run does only what is missing")
    return done


def execute(profile: Profile, log=print, progress: bool = True) -> list[Piece]:
    """The profile's plan by its executor (`executor.kind`, `workers`), checked first."""
    check(profile)
    chosen = kind(profile)
    if chosen == "slurm":
        backend = Jobs(profile)
    elif chosen == "gpus":
        backend = Processes(profile, devices=device_groups(profile))
    else:
        backend = Processes(profile, workers=profile.workers)
    return drive(profile, backend, log, progress)


def run_local(profile: Profile, workers: int | None = None, log=print, progress: bool = True) -> list[Piece]:
    """Every piece of the profile's plan in `workers` CPU processes side by side (default: the profile's)."""
    return drive(profile, Processes(profile, workers=workers or profile.workers), log, progress)
