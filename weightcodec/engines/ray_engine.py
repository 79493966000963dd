"""Coding jobs as Ray tasks on a cluster (``wcodec encode --ray auto|ADDRESS``).

The driver (the process running ``encode``) connects to an existing cluster, puts each job's
arrays in Ray's object store (numpy arrays reach the workers without a copy on their node), runs
``fn(job, context)`` as a task per job with at most ``window`` tasks in flight, and yields the
results in job order; it alone writes the container, so the file is byte-identical to a
single-machine encode.

Assumptions (docs/BENCHMARKS.md, "Encoding on a Ray cluster"): every node has the same
weightcodec (and PyAV / x265) version importable by Ray's workers; nothing but the object store is
shared (the driver reads the model; workers never open the input or output paths).

Failures: a task's own exception (a weightcodec error) is re-raised unchanged; a worker process
or node that dies raises one :class:`~weightcodec.errors.BackendError` (tasks are not retried, so
a crash is never hidden or repeated); Ctrl-C cancels the tasks in flight. Nothing further is
yielded after a failure, so nothing is written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import BackendError, BackendUnavailableError, ConfigError, WeightcodecError

_TASK = None


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("--ray needs Ray: pip install 'weightcodec[distributed]' (or pip install ray) "
                                      "on this machine and on every node of the cluster") from exc
    return ray


class _Slot:
    """Where the n-th top-level array argument of a task goes back into its job tuple."""

    def __init__(self, index: int) -> None:
        self.index = index


def _run(fn, job, context, *arrays):
    if isinstance(job, tuple):
        job = tuple(arrays[x.index] if isinstance(x, _Slot) else x for x in job)
    return fn(job, context)


def _task(ray):
    global _TASK
    if _TASK is None:
        # max_retries=0: a worker that dies is an error the user sees, never a silent second run
        _TASK = ray.remote(max_retries=0, num_cpus=1)(_run)
    return _TASK


class RayEngine:
    """Runs jobs on the Ray cluster at ``address`` ("auto": the one ``ray start`` made on this
    machine or ``$RAY_ADDRESS``; else ``host:port`` of the head node's GCS, or ``ray://host:10001``
    for Ray Client)."""

    name = "ray"

    def __init__(self, address: str, *, window: int | None = None) -> None:
        if not isinstance(address, str) or not address:
            raise ConfigError(f"the Ray address must be 'auto' or host:port, got {address!r}")
        self.address = address
        self.window = window

    def connect(self):
        ray = _import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendUnavailableError(f"cannot connect to the Ray cluster at {self.address!r}: "
                                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
        return ray

    def workers(self) -> int:
        ray = self.connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn: Callable[[Any, Any], Any], jobs: Iterable[Any], *, context: Any = None,
            describe: Callable[[Any], str] = str) -> Iterator[Any]:
        ray = self.connect()
        task = _task(ray)
        window = self.window or 2 * self.workers()
        context_ref = ray.put(context)
        pending: deque = deque()
        try:
            for job in jobs:
                shell, arrays = _put_arrays(ray, job)
                pending.append((job, task.remote(fn, shell, context_ref, *arrays)))
                if len(pending) >= window:
                    yield _result(ray, *pending.popleft(), describe)
            while pending:
                yield _result(ray, *pending.popleft(), describe)
        finally:
            for _, ref in pending:  # an error, Ctrl-C or an early stop: nothing more is wanted
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass


def _put_arrays(ray, job):
    """The numpy arrays of a job tuple go to the object store on their own and travel as top-level
    task arguments (which Ray resolves, zero-copy on the worker's node); the job keeps a slot."""
    if not isinstance(job, tuple):
        return job, []
    shell, arrays = [], []
    for x in job:
        if isinstance(x, np.ndarray):
            shell.append(_Slot(len(arrays)))
            arrays.append(ray.put(x))
        else:
            shell.append(x)
    return tuple(shell), arrays


def _result(ray, job, ref, describe):
    from ray import exceptions

    try:
        value = ray.get(ref)
    except exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, WeightcodecError):
            raise cause from None
        raise BackendError(f"a Ray task failed with {describe(job)}: {str(exc).strip().splitlines()[-1]}") from None
    except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.LocalRayletDiedError,
            exceptions.ObjectLostError, exceptions.OwnerDiedError) as exc:
        raise BackendError(f"a Ray worker died (killed, out of memory, or its node was lost) with {describe(job)} "
                           f"and the jobs after it unfinished; nothing was written ({type(exc).__name__})") from None
    return value


__all__ = ["RayEngine"]
