"""How big a tile may be: default tile sizes from a target output size, and a memory guard.

The network runs at the output (HR) resolution, so a tile's memory grows with its output
pixels, i.e. with the scale squared for a fixed tile size in source pixels. A fixed default of
64 source pixels was 256 x 256 output pixels at x4 but 6400 x 6400 at x100, and a run at x100
was killed by the kernel at 24 GB with no message. Defaults are therefore chosen in output
pixels, and every run estimates its peak memory per tile before fitting and refuses, with the
estimate and a way out, when the machine does not have it.

Figures (``benchmarks/tile_memory.py``, README "Memory per tile"): one fit iteration on the CPU
holds up to about 13 KiB per output pixel with 64 feature channels (measured 10.5-12.5 KiB at
128-256 px tiles, 6.6-7.2 KiB at 384-512 px; kernels 5/3 and 11/5 within 8%; half with 32
features), on top of about
0.5 GB for the process (torch, numba, GDAL), which the available memory read at run time
already excludes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import InsufficientMemoryError

TARGET_TILE_PIXELS = 256
"""Default output tile edge: the tile size in source pixels is this divided by the scale."""
TARGET_OVERLAP_PIXELS = 32
"""Default overlap of neighbouring tiles in output pixels (8 source pixels at x4)."""
MIN_TILE_SIZE = 4
"""Smallest tile edge in source pixels: the cycle loss needs a few source pixels to learn."""

BYTES_PER_PIXEL = 13 * 1024
"""Peak bytes per output pixel of one fit at 64 features (above the largest measurement)."""
HEADROOM = 0.85
"""Share of the available memory a run may plan to use."""


def default_tile_size(scale: int) -> int:
    """Tile edge in source pixels whose output tile is about 256 pixels."""
    return max(MIN_TILE_SIZE, math.ceil(TARGET_TILE_PIXELS / scale))


def default_overlap(scale: int, tile_size: int) -> int:
    """Overlap in source pixels of about 32 output pixels, at least one source pixel and at
    most half the tile."""
    return min(tile_size // 2, max(1, round(TARGET_OVERLAP_PIXELS / scale)))


def tile_bytes(hr_height: int, hr_width: int, features: int = 64, tiles: int = 1) -> int:
    """Estimated peak memory of fitting ``tiles`` tiles of this output size at once."""
    per_pixel = BYTES_PER_PIXEL * max(features, 8) / 64
    return int(per_pixel * hr_height * hr_width * tiles)


MAX_BATCH_TILES = 64


def default_batch_tiles(
    device: str, hr_height: int, hr_width: int, features: int, precision: str
) -> int:
    """Tiles fitted in one batch when ``--batch-tiles auto``: 1 on the CPU (batching gains
    nothing there, see BENCHMARKS.md); on a CUDA device as many as 80% of its free memory
    holds by :func:`tile_bytes` (halved activations for bf16), at most 64. The out-of-memory
    handling of :func:`mmsr_geo.jobs.fit_tiles` covers an estimate that is too high."""
    if not device.startswith("cuda"):
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_tile = tile_bytes(hr_height, hr_width, features) // (2 if precision == "bf16" else 1)
    return max(1, min(MAX_BATCH_TILES, int(free * 0.8) // max(per_tile, 1)))


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit (containers, SLURM jobs), if there is one."""
    base = Path("/sys/fs/cgroup")
    try:
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory this process can still take: the smaller of the system's available memory and
    the room under a cgroup limit; None when neither can be read (not Linux: no guard)."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    if room is not None:
        candidates.append(room)
    return min(candidates) if candidates else None


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate behind a go/no-go decision, kept for messages and reports."""

    tile_bytes: int
    concurrent: int
    available: int | None

    @property
    def needed(self) -> int:
        return self.tile_bytes * self.concurrent


def check_tile_memory(
    hr_height: int,
    hr_width: int,
    *,
    features: int,
    scale: int,
    tile_size: int,
    concurrent: int = 1,
    available: int | None = None,
    what: str = "tile",
    option: str = "--tile-size",
) -> MemoryPlan:
    """Refuse a run whose tiles would not fit in the memory left on this machine.

    ``concurrent`` is how many tiles are fitted at once here (local worker processes, or the
    crops of a raster-level training step: ``what`` "crop", ``option`` "--crop-size"). The
    error gives the estimate, what is available, and the largest ``option`` that fits.
    """
    if available is None:
        available = available_bytes()
    plan = MemoryPlan(tile_bytes(hr_height, hr_width, features), concurrent, available)
    if available is None:
        return plan
    budget = available * HEADROOM
    if plan.needed <= budget:
        return plan
    per_lr_pixel = tile_bytes(scale, scale, features) * concurrent
    fitting = math.isqrt(int(budget // per_lr_pixel)) if budget > 0 else 0
    hint = (
        f"use {option} {fitting} or smaller"
        if fitting >= MIN_TILE_SIZE
        else f"even the smallest {what} does not fit: free memory or use a machine with more"
    )
    many = (" x {n} workers", ", or fewer --workers") if what == "tile" else (
        " x {n} crops a step", ", or fewer --crops-per-step"
    )
    workers = many[0].format(n=concurrent) if concurrent > 1 else ""
    raise InsufficientMemoryError(
        f"a {what} of {hr_width}x{hr_height} output pixels ({tile_size} source pixels at "
        f"x{scale}) needs about {_gib(plan.tile_bytes)}{workers} to fit, but only "
        f"{_gib(available)} is available: {hint}"
        + (many[1] if concurrent > 1 else "")
    )


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f} GiB"
