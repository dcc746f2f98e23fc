"""Freed memory kept for reuse (glibc), so that fits and forward passes do not wait on the
kernel.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with a mapping of its
own and unmaps it when it is freed. A fit iteration or a forward pass allocates and frees
feature maps that large every time (64 channels of a 320 x 320 pass with its margin are
26 MB, their concatenation 52 MB), and every new mapping is page-faulted and zeroed by the
kernel again: in a raster-level run on 2 cores 10.7 of its 44 CPU seconds were system time
(BENCHMARKS.md, "Freed memory kept for reuse"). With no mappings of their own and a high
trim threshold, freed blocks stay in the heap and the next pass reuses them: the process
keeps the memory of its largest step, which it needed anyway.

Every command of the command line asks for this when it starts (``mmsr_geo_cli.common``)
unless ``MMSR_GEO_KEEP_FREED_MEMORY=0`` is in its environment; a library user opts in by
calling :func:`keep_freed_memory`, or with glibc's variables (:data:`SETTINGS`) in the
environment of a process.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""``mallopt`` parameters (malloc.h)."""

SETTINGS = {"MALLOC_MMAP_MAX_": 0, "MALLOC_TRIM_THRESHOLD_": 1 << 30}
"""glibc's environment variables for the two settings, read when a process starts: no
mappings of their own for large blocks, and at most 1 GiB of free memory at the top of the
heap kept (above it, the heap is trimmed back as usual)."""
OPT_OUT = "MMSR_GEO_KEEP_FREED_MEMORY"
"""``0`` in the environment: leave the allocator as it is (memory goes back to the kernel as
soon as it is freed, each step paying for it again)."""


def keep_freed_memory() -> bool:
    """Keep freed memory for reuse in this process (``mallopt``) and in the processes it
    starts (local workers, a local Dask cluster: the environment). Values already in the
    environment are kept and used. False where the C library is not glibc (macOS, Windows,
    musl) or :data:`OPT_OUT` says no: nothing changes then."""
    if os.environ.get(OPT_OUT, "").strip() == "0":
        return False
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, str(value))
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no such function)
    except (OSError, AttributeError):
        return False
    applied = []
    for parameter, name in ((M_MMAP_MAX, "MALLOC_MMAP_MAX_"),
                            (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_")):
        value = os.environ[name].strip()
        applied.append(value.isdigit() and bool(libc.mallopt(parameter, int(value))))
    return all(applied)
