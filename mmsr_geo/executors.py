"""Where tile jobs run: anything with ``map_unordered(fn, jobs)``.

Tile jobs (:class:`mmsr_geo.jobs.TileJob`) carry their arrays, so an executor needs no file
access: a process pool or a Dask cluster can run them as well as this module's serial default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class TileExecutor(Protocol):
    """Runs ``fn`` on every job and yields the results in any order, as they complete.

    ``jobs`` is a lazy iterator (each job is read from disk when it is drawn): an executor
    should draw only as many as it keeps busy, so that memory stays bounded.
    """

    in_process: bool
    """Whether ``fn`` runs in the calling process: the run then also reports per-iteration
    progress of the current tile, and resolves the device here."""
    local_tiles: int | None
    """How many tiles it fits at once on this machine, for the memory guard (None: the tiles
    are fitted elsewhere, and guarded there)."""

    def map_unordered(
        self, fn: Callable[..., R], jobs: Iterable[J], shared: Any = None
    ) -> Iterator[R]:
        """``fn(job)`` for every job, or ``fn(job, shared)`` when ``shared`` is given: a value
        every job needs (a raster network's weights) that the executor sends to each worker
        once, not with every job."""
        ...


class SerialExecutor:
    """Runs jobs one after another in this process (the default)."""

    in_process = True
    local_tiles: int | None = 1

    def map_unordered(
        self, fn: Callable[..., R], jobs: Iterable[J], shared: Any = None
    ) -> Iterator[R]:
        for job in jobs:
            yield fn(job) if shared is None else fn(job, shared)
