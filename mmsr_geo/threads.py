"""CPU threads: how many this process may use, and setting torch's and numba's pools at once.

Two runs on one 2-core machine were ~10x slower per iteration than one alone, because
torch's OpenMP threads and numba's spin while they wait for work and steal the cores the other
run computes on (BENCHMARKS.md, "Concurrent runs"). The command line therefore makes waiting
threads sleep (``OMP_WAIT_POLICY=PASSIVE``, set before torch loads, see
``mmsr_geo_cli/__init__.py``), and ``--threads`` lets concurrent runs share the cores.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may use (the affinity mask under SLURM/cgroups, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_threads(threads: int) -> None:
    """Give torch and numba ``threads`` compute threads each in this process."""
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
