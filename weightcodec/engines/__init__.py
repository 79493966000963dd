"""Where per-tensor coding jobs run: this machine's process pool, or a Ray cluster.

An engine has one method, ``map(fn, jobs, *, context, describe)``, that applies ``fn(job, context)``
to every job and yields the results **in job order** (so the container is byte-identical whatever
ran the jobs, and however many workers there were). The local engine is
:func:`weightcodec.parallel.ordered_map`; :class:`~weightcodec.engines.ray_engine.RayEngine` runs the
jobs as Ray tasks (``pip install 'weightcodec[distributed]'``). Both turn a worker that dies into
one :class:`~weightcodec.errors.BackendError` and stop at Ctrl-C, yielding nothing more, so the
caller writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..parallel import ordered_map


class Engine(Protocol):
    def map(self, fn: Callable[[Any, Any], Any], jobs: Iterable[Any], *, context: Any,
            describe: Callable[[Any], str]) -> Iterator[Any]: ...


class LocalEngine:
    """A pool of ``workers`` forked processes on this machine (1: in this process)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def map(self, fn, jobs, *, context, describe=str):
        return ordered_map(fn, jobs, workers=self.workers, context=context, describe=describe)


__all__ = ["Engine", "LocalEngine"]
