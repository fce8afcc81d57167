"""Independent jobs (evaluation episodes, sweep points) on a process pool or a Ray cluster.

    for index, result in run_jobs(simulate_point, points, workers=4, label="points"):
        save(index, result)          # completion order; sort by index for a stable output

Every job is a call `fn(job)` of a module-level function on a picklable argument, so where a
job runs cannot change its result: callers that order results by index get byte-identical
outputs whatever the worker count or backend.

- `workers=1` runs the jobs one after another in this process (easy to debug and profile);
- `backend="process"` (the default) uses a pool of fresh interpreters (`spawn`: safe after
  torch or numpy started their own threads) that exit when this process dies, even by SIGKILL
  (`exit_with_parent`), so none outlives it holding its stdout and stderr open;
- `backend="ray"` submits the jobs as Ray tasks to `address` (or a local Ray instance); it needs
  the `ray` extra.

A rich progress bar on stderr shows jobs done and the time left, unless `quiet`.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from .errors import ConfigError

BACKENDS = ("process", "ray")


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not on Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int | None = None,
             backend: str = "process", address: str | None = None, label: str = "jobs",
             quiet: bool = False) -> Iterator[tuple[int, Any]]:
    """Yield `(index, fn(jobs[index]))` for every job, in completion order.

    An exception raised by a job propagates (the remaining jobs are cancelled)."""
    if backend not in BACKENDS:
        raise ConfigError("--backend", f"must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if workers is not None and workers < 1:
        raise ConfigError("--workers", f"must be at least 1, not {workers}")
    if not jobs:
        return
    if backend == "ray":
        results = _ray(fn, jobs, address)
    elif (workers or default_workers()) == 1 or len(jobs) == 1:
        results = ((i, fn(job)) for i, job in enumerate(jobs))
    else:
        results = _pool(fn, jobs, min(workers or default_workers(), len(jobs)))
    with _Progress(len(jobs), label, quiet) as progress:
        for item in results:
            progress.advance()
            yield item


def exit_with_parent(parent_pid: int) -> None:
    """Make this pool worker exit as soon as `parent_pid`, the process that started it, dies. A
    parent killed by SIGKILL cannot shut its pool down: its workers would run on (adopted by
    init), keep its output pipes open and keep the resource tracker alive. Linux delivers
    SIGKILL to the worker when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a daemon
    thread watches the parent's pid."""
    if not _kill_me_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="exit-with-parent").start()
    if os.getppid() != parent_pid:              # it died before the watch was set
        os._exit(1)


def _kill_me_with_parent() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        PR_SET_PDEATHSIG = 1
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    import time
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of `workers` spawned interpreters that exit with this process, each running
    `initializer(*initargs)` first."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), initializer, initargs))


def _init_worker(parent_pid: int, initializer: Callable | None, initargs: tuple) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def _pool(fn, jobs, workers: int) -> Iterator[tuple[int, Any]]:
    with worker_pool(workers) as pool:
        pending = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()


def _ray(fn, jobs, address: str | None) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend", "ray needs the ray extra: pip install 'blis-gym[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False)
    task = ray.remote(fn)
    pending = {task.remote(job): i for i, job in enumerate(jobs)}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref)


class _Progress:
    """A rich progress bar (jobs done, time left) on stderr, or nothing when quiet."""

    def __init__(self, total: int, label: str, quiet: bool):
        self.bar = None
        if not quiet:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
