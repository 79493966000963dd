"""Running per-tensor jobs on several cores, results in order.

:func:`ordered_map` applies ``fn(job, context)`` to every job and yields the results **in job
order**, whatever order they finish in, so a container written from them is byte-identical
whether one process or many did the work. With ``workers > 1`` the jobs run in a pool of worker
processes; at most ``window`` jobs are in flight (submitted and not yet consumed), which bounds
the memory that finished-but-waiting results take.

``context`` (e.g. the model's tensors) reaches the workers without being pickled: the pool is
forked after it is installed, so workers read it from memory they share with the parent
(copy-on-write). Where ``fork`` is unavailable it is sent once per worker.

Failures: an exception raised by ``fn`` is re-raised here unchanged (the weightcodec error it
is); a worker that dies (killed, out of memory) raises :class:`~weightcodec.errors.BackendError`
naming the job; Ctrl-C stops the pool and re-raises ``KeyboardInterrupt``. Either way no further
results are yielded, so nothing half-made is written.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .errors import BackendError, ConfigError

J = TypeVar("J")
R = TypeVar("R")

_CONTEXT: Any = None  # the context of the current ordered_map, as seen by workers


def default_workers() -> int:
    """All the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _init_worker(parent: int, context: Any) -> None:
    global _CONTEXT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    # the parent ends workers with SIGTERM: die quietly, whatever handler the parent had installed
    # (the CLI turns SIGTERM into KeyboardInterrupt, which would print a traceback per worker)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    if "torch" in sys.modules:
        # A forked child must not use the OpenMP thread pool it inherited from a parent that had
        # already run parallel torch ops (GNU libgomp is not fork-safe: the child's first parallel
        # region waits forever for threads that were not forked). One thread per worker, as
        # torch's own DataLoader workers do; the pool itself is the parallelism.
        sys.modules["torch"].set_num_threads(1)
    if context is not None:
        _CONTEXT = context


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the parent dies (even by SIGKILL), so no orphaned
    encoder keeps burning a core."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _call(fn: Callable[[Any, Any], Any], job: Any) -> Any:
    return fn(job, _CONTEXT)


def ordered_map(
    fn: Callable[[J, Any], R],
    jobs: Iterable[J],
    *,
    workers: int = 1,
    context: Any = None,
    window: int | None = None,
    describe: Callable[[J], str] = str,
) -> Iterator[R]:
    """``fn(job, context)`` for every job, yielded in job order (see the module docstring)."""
    global _CONTEXT
    workers = check_workers(workers)
    if workers == 1:
        for job in jobs:
            yield fn(job, context)
        return
    methods = multiprocessing.get_all_start_methods()
    mp_context = multiprocessing.get_context("fork" if "fork" in methods else None)
    inherit = mp_context.get_start_method() == "fork"
    previous, _CONTEXT = _CONTEXT, context
    if inherit:
        gc.freeze()  # the parent's objects out of the collector's reach: workers' GC passes do not copy their pages
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=_init_worker,
                               initargs=(os.getpid(), None if inherit else context))
    pending: deque = deque()
    window = window or 2 * workers
    stopped = False
    try:
        iterator = iter(jobs)
        for job in iterator:
            pending.append((job, pool.submit(_call, fn, job)))
            if len(pending) >= window:
                yield _result(*pending.popleft(), describe)
        while pending:
            yield _result(*pending.popleft(), describe)
    except BaseException:
        stopped = True
        _stop(pool)
        raise
    finally:
        _CONTEXT = previous
        # after _stop the workers are gone (reaped there): waiting for the executor's threads could
        # hang on a pipe a killed worker left half-read, so only a normal end waits
        pool.shutdown(wait=not stopped, cancel_futures=True)
        if inherit:
            gc.unfreeze()


def _result(job: Any, future, describe: Callable[[Any], str]) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise BackendError(f"a worker process died (killed, or out of memory) with {describe(job)} and the "
                           "jobs after it unfinished; nothing was written") from None


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (their results are not wanted)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
            process.kill()
            process.join(timeout=5)


def ordered_thread_map(
    fn: Callable[[J], R],
    jobs: Iterable[J],
    *,
    workers: int = 1,
    window: int | None = None,
) -> Iterator[R]:
    """``fn(job)`` for every job in a pool of ``workers`` threads, yielded in job order.

    For work that releases the GIL (the HEVC decoders, zstd, numpy): decoding in threads shares
    the file's memory map and hands big arrays back without copying them between processes. At
    most ``window`` (default ``2 * workers``) jobs are submitted and not yet consumed. An
    exception from ``fn`` is re-raised unchanged; on it, on Ctrl-C, or when the consumer stops
    early, jobs not yet started are cancelled and running ones are waited for (nothing keeps
    running after this returns).
    """
    from concurrent.futures import ThreadPoolExecutor

    workers = check_workers(workers)
    if workers == 1:
        for job in jobs:
            yield fn(job)
        return
    window = window or 2 * workers
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weightcodec")
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(pool.submit(fn, job))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["check_workers", "default_workers", "ordered_map", "ordered_thread_map"]
