"""Executors that fit tiles somewhere other than the calling thread: local processes or Dask.

Both satisfy the executor protocol of :mod:`mmsr_geo.executors` (``map_unordered(fn, jobs)``
yields results in completion order). Tile jobs carry their arrays, so workers need neither the
input files nor a shared filesystem: results come back to the caller, which checkpoints and
writes them. Submission is windowed (a bounded number of jobs in flight) so that a raster with
thousands of tiles does not ship all its arrays to the workers, or queue them on the scheduler,
at once.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .errors import InputError, MmsrGeoError
from .threads import available_cores, use_threads

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

_END = object()

GPU_RESOURCE = "GPU"
"""Name of the Dask worker resource a GPU worker advertises (``dask worker --resources GPU=1``)."""


_SHARED: Any = None
"""In a worker process: the value every job of the current run shares (sent once, when the
pool starts)."""


def _init_worker(threads: int, shared: Any = None) -> None:
    """Share the cores between worker processes instead of each one taking all of them, and
    leave Ctrl-C to the parent, which cancels the pool cleanly (workers would otherwise each
    print a KeyboardInterrupt traceback); keep the run's shared value."""
    global _SHARED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_threads(threads)
    _SHARED = shared


def _call_with_shared(fn: Callable[..., R], job: Any) -> R:
    return fn(job, _SHARED)


class LocalProcessExecutor:
    """Run jobs in ``workers`` local processes (spawn context, so torch and numba start clean).

    Every worker gets ``threads // workers`` torch and numba threads (``threads``: the cores
    this process may use, by default). A shared value (:meth:`map_unordered`) reaches each
    worker once, as the pool starts: the pool is started again when another one comes (a
    batch's next raster network). Use it as a context manager (or call :meth:`close`) to stop
    the processes.
    """

    in_process = False

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if workers < 1:
            raise InputError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.local_tiles: int | None = workers
        self._threads = max(1, (threads or available_cores()) // workers)
        self._shared_key: object = None
        self._pool = self._start(None)

    def _start(self, shared: Any) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._threads, shared),
        )

    def _pool_with(self, shared: Any) -> None:
        """Workers that hold ``shared`` (its fingerprint, or the object, identifies it)."""
        key = getattr(shared, "fingerprint", shared)
        if shared is None or key == self._shared_key:
            return
        self._pool.shutdown(wait=True)
        self._pool, self._shared_key = self._start(shared), key

    def map_unordered(
        self, fn: Callable[..., R], jobs: Iterable[J], shared: Any = None
    ) -> Iterator[R]:
        """Yield ``fn(job)`` (``fn(job, shared)``) for every job as each finishes; at most
        2 x workers in flight.

        Closing the iterator early (an error, Ctrl-C) cancels the jobs not yet started.
        """
        self._pool_with(shared)
        window = 2 * self.workers
        pending: set[cf.Future[R]] = set()
        job_iter = iter(jobs)
        try:
            for job in job_iter:
                if shared is None:
                    pending.add(self._pool.submit(fn, job))
                else:
                    pending.add(self._pool.submit(_call_with_shared, fn, job))
                if len(pending) >= window:
                    done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            for future in cf.as_completed(pending):
                pending.discard(future)
                yield future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self, terminate: bool = False) -> None:
        """Stop the workers; ``terminate`` kills tiles still running instead of waiting for
        them (on Ctrl-C or an error a tile may have minutes left, and its result is lost
        anyway)."""
        if terminate:
            # ProcessPoolExecutor has no public way to stop running work before Python 3.14.
            for process in list((self._pool._processes or {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalProcessExecutor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(terminate=exc_type is not None)


class DaskExecutor:
    """Run jobs as tasks on a Dask cluster through an existing ``distributed.Client``.

    Args:
        client: a connected client; the executor does not close it.
        resources: worker resources every task asks for, e.g. ``{"GPU": 1}`` so that tile fits
            only land on workers started with ``--resources GPU=1``, one per GPU at a time.
        max_in_flight: jobs submitted but not yet collected. By default twice the cluster's
            worker threads, re-read as tasks finish so that workers joining later (an adaptive
            or SLURM cluster still scaling up) get work too.
    """

    in_process = False
    local_tiles: int | None = None
    """Tiles run on the cluster's workers, which guard their own memory."""

    def __init__(
        self,
        client: Any,
        resources: dict[str, float] | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise InputError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.client = client
        self.resources = dict(resources) if resources else None
        self.max_in_flight = max_in_flight

    def _window(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        return max(2, 2 * sum(self.client.nthreads().values()))

    def map_unordered(
        self, fn: Callable[..., R], jobs: Iterable[J], shared: Any = None
    ) -> Iterator[R]:
        """Yield ``fn(job)`` (``fn(job, shared)``) for every job as its task finishes
        (re-raising a task's error). ``shared`` is scattered to every worker once.

        Collected futures are released at once so workers drop the results; closing the
        iterator early cancels the tasks still queued or running.
        """
        from distributed import as_completed

        extra = () if shared is None else (self.client.scatter(shared, broadcast=True),)
        completed = as_completed()
        pending: set[Any] = set()
        job_iter = iter(jobs)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self._window():
                    job = next(job_iter, _END)
                    if job is _END:
                        exhausted = True
                    else:
                        future = self.client.submit(
                            fn, job, *extra, resources=self.resources, pure=False
                        )
                        pending.add(future)
                        completed.add(future)
                if not pending:
                    return
                future = next(completed)
                pending.discard(future)
                result = future.result()
                future.release()
                yield result
        finally:
            if pending:
                self.client.cancel(list(pending))
            if extra:
                self.client.cancel(list(extra))


def _connect(scheduler: str | None, scheduler_file: str | None) -> Any:
    """A client for an existing cluster, with errors that name what could not be reached."""
    from distributed import Client

    target = scheduler or scheduler_file
    try:
        if scheduler_file is not None:
            if not os.path.exists(scheduler_file):
                raise MmsrGeoError(f"Dask scheduler file {scheduler_file} does not exist")
            return Client(scheduler_file=scheduler_file, timeout="30s")
        return Client(scheduler, timeout="30s")
    except MmsrGeoError:
        raise
    except (OSError, TimeoutError) as exc:
        raise MmsrGeoError(f"cannot connect to the Dask scheduler at {target}: {exc}") from exc


def _warn_without_gpu_workers(client: Any) -> None:
    """Tasks that ask for a GPU wait forever on a cluster without one: say so up front (workers
    may still be joining, so this is a warning, not an error)."""
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get(GPU_RESOURCE) for w in workers.values()):
        log.warning(
            "no Dask worker advertises a %s resource yet: tile tasks wait until one started "
            "with '--resources %s=1' joins",
            GPU_RESOURCE,
            GPU_RESOURCE,
        )


@contextlib.contextmanager
def executor_from_options(
    scheduler: str | None = None,
    scheduler_file: str | None = None,
    workers: int = 1,
    gpu: bool = False,
    threads: int | None = None,
) -> Iterator[Any]:
    """The executor the command-line options describe, opened for the ``with`` block.

    - ``scheduler`` (``tcp://host:port``) or ``scheduler_file``: tasks on that Dask cluster;
      with ``gpu`` each task asks for one ``GPU`` resource.
    - otherwise ``workers`` > 1: that many local processes;
    - otherwise the in-process serial executor (no setup, easiest to debug).

    ``threads`` caps the CPU threads of the local processes or of this one (all cores by
    default); Dask workers keep their own settings.
    """
    if scheduler and scheduler_file:
        raise InputError("give either a scheduler address or a scheduler file, not both")
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if scheduler or scheduler_file:
        client = _connect(scheduler, scheduler_file)
        try:
            if gpu:
                _warn_without_gpu_workers(client)
            yield DaskExecutor(client, resources={GPU_RESOURCE: 1} if gpu else None)
        finally:
            client.close()
    elif workers > 1:
        with LocalProcessExecutor(workers, threads) as executor:
            yield executor
    else:
        from .executors import SerialExecutor

        if threads is not None:
            use_threads(threads)
        yield SerialExecutor()
