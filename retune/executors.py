"""Executors: who does the pieces of a plan (retune.plan). `local`: processes side by side on this machine."""
from __future__ import annotations

import time

from .plan import Piece, do, needs, plan
from .profiles import Profile


def _work(job: tuple) -> tuple:
    """One piece in a worker process, with its share of the CPU threads; returns (piece, seconds per stage)."""
    profile, piece, threads = job
    import torch

    torch.set_num_threads(threads)
    return piece, do(profile, piece)


def run_local(profile: Profile, workers: int | None = None, log=print, progress: bool = True) -> list[Piece]:
    """Every piece of the profile's plan in `workers` processes side by side (default: the profile's `workers`),
    each with its share of `threads`. A run starts once what it needs is done. One line per finished piece, a bar
    with the ETA over all of them. Everything is cached, so an interrupted preparation resumes where it stopped."""
    import multiprocessing

    from tqdm.auto import tqdm

    from .memory import die_with_parent

    workers = workers or profile.workers
    threads = max(1, (profile.threads or workers) // workers)
    first, runs = plan(profile)
    waiting = {}
    for piece in runs:
        waiting.setdefault(needs(profile, piece), []).append(piece)
    log(f"{len(first) + len(runs)} pieces of work in {workers} processes of {threads} torch thread(s) each")
    done, pending = [], []
    with multiprocessing.get_context("spawn").Pool(workers, initializer=die_with_parent) as pool:
        def submit(piece: Piece):
            pending.append((piece, pool.apply_async(_work, ((profile, piece, threads),))))

        for piece in first + waiting.pop(None, []):
            submit(piece)
        bar = tqdm(total=len(first) + len(runs), desc="runs", unit="piece", disable=not progress)
        while pending:
            finished = next((p for p in pending if p[1].ready()), None)
            if finished is None:
                time.sleep(0.5)
                continue
            pending.remove(finished)
            try:
                piece, seconds = finished[1].get()
            except Exception as err:
                raise RuntimeError(f"{finished[0]} failed: {type(err).__name__}: {err}") from err
            for after in waiting.pop(piece, []):
                submit(after)
            bar.update()
            log(f"{piece}: " + ", ".join(f"{k} in {v} s" for k, v in seconds.items()))
            done.append(piece)
        bar.close()
        pool.close()
        pool.join()
    return done
