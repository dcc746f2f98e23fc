"""Tiles as self-contained, picklable jobs, and the pure function that fits a batch of them.

The run reads everything a tile needs (LR source window, its mask, the guide window on the
output grid, the output validity) in the main process; :func:`fit_tiles` then needs neither
files nor shared state, so batches can run in another process or on another machine.

Out of GPU memory is handled where it happens, in :func:`fit_tiles`: a batch that does not fit
is halved and retried, and a single tile that still does not fit is fitted as four overlapping
parts that are blended back together (as chaiNNer's PixTransform node splits big images). The
user sees one line saying so, never a traceback; only a part smaller than
:data:`MIN_SPLIT_SIZE` source pixels that still does not fit is an error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import DeviceOutOfMemoryError
from .fit import ProgressCallback, fit_many
from .fit_config import FitConfig
from .normalisation import Normalisation

if TYPE_CHECKING:  # workers fit tiles without touching rasters
    from rasterio.windows import Window

log = logging.getLogger(__name__)

MIN_SPLIT_SIZE = 4
"""Smallest part edge (source pixels) a tile is split into when it does not fit the device."""


@dataclass(frozen=True)
class TileJob:
    """Everything needed to fit one tile."""

    index: int
    lr_window: Window
    hr_window: Window
    source: np.ndarray
    """(h, w) float64 LR source values (anything at invalid pixels)."""
    source_valid: np.ndarray
    """(h, w) bool: source pixels that enter the loss."""
    guide: np.ndarray
    """(C, H, W) float32 guide on the HR grid, holes already filled."""
    output_valid: np.ndarray
    """(H, W) bool: HR pixels that get a value (source, guide and AOI all present)."""
    scale: int
    stats: Normalisation
    config: FitConfig
    """Already carries this tile's seed (the run's seed + the tile index)."""

    @property
    def shape_key(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Tiles with equal keys can be fitted in one batch."""
        return self.source.shape, self.guide.shape


@dataclass(frozen=True)
class TileResult:
    """A fitted tile: the HR prediction (NaN where the output is nodata) and its quality."""

    index: int
    prediction: np.ndarray
    cycle_rmse: float
    seconds: float
    device: str
    precision: str = "fp32"
    iterations: int = 0


def is_out_of_memory(error: BaseException) -> bool:
    """A device allocation failure (CUDA's OutOfMemoryError, or a RuntimeError saying so)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def fit_tiles(
    jobs: Sequence[TileJob], progress: ProgressCallback | None = None
) -> list[TileResult]:
    """Fit a batch of tiles of one shape in one optimisation (:func:`~mmsr_geo.fit.fit_many`),
    halving the batch and then splitting tiles when the device runs out of memory."""
    announced: list[str] = []

    def announce(message: str) -> None:
        if not announced:
            log.warning(message)
        announced.append(message)

    return _fit_adaptive(list(jobs), progress, announce)


def _fit_adaptive(jobs: list[TileJob], progress, announce) -> list[TileResult]:
    try:
        return _fit_batch(jobs, progress)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        _release_device_memory()
        if len(jobs) > 1:
            half = len(jobs) // 2
            announce(
                f"out of device memory fitting {len(jobs)} tiles at once: retrying in batches "
                f"of {half} (set --batch-tiles to skip this)"
            )
            return _fit_adaptive(jobs[:half], progress, announce) + _fit_adaptive(
                jobs[half:], progress, announce
            )
        return [_fit_split(jobs[0], progress, announce)]


def _release_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fit_batch(jobs: list[TileJob], progress: ProgressCallback | None) -> list[TileResult]:
    first = jobs[0]
    results = fit_many(
        [j.source for j in jobs],
        [j.guide for j in jobs],
        first.scale,
        first.config,
        masks=[j.source_valid for j in jobs],
        stats=[j.stats for j in jobs],
        seeds=[j.config.seed for j in jobs],
        progress=progress,
    )
    return [
        TileResult(
            index=job.index,
            prediction=np.where(job.output_valid, r.prediction, np.float32(np.nan)).astype(
                np.float32
            ),
            cycle_rmse=r.cycle_rmse,
            seconds=r.seconds / len(jobs),
            device=r.device,
            precision=r.precision,
            iterations=r.iterations,
        )
        for job, r in zip(jobs, results, strict=True)
    ]


def _fit_split(job: TileJob, progress, announce) -> TileResult:
    """Fit one tile that does not fit the device as 2 x 2 overlapping parts, blended."""
    from .blending import blend_windows

    h, w = job.source.shape
    if min(h, w) < 2 * MIN_SPLIT_SIZE:
        raise DeviceOutOfMemoryError(
            f"a part of {w}x{h} source pixels (x{job.scale}) does not fit the device's "
            "memory: use fewer --features, a lower --precision (bf16) or another device"
        )
    announce(
        f"tile {job.index} ({w}x{h} source pixels) does not fit the device's memory: "
        "fitting it as 4 overlapping parts"
    )
    overlap = max(1, min(h, w) // 8)
    rows = _halves(h, overlap)
    cols = _halves(w, overlap)
    s = job.scale
    parts = []
    for number, ((r0, r1), (c0, c1)) in enumerate((r, c) for r in rows for c in cols):
        part = dataclasses.replace(
            job,
            source=job.source[r0:r1, c0:c1],
            source_valid=job.source_valid[r0:r1, c0:c1],
            guide=job.guide[:, r0 * s : r1 * s, c0 * s : c1 * s],
            output_valid=job.output_valid[r0 * s : r1 * s, c0 * s : c1 * s],
            config=dataclasses.replace(job.config, seed=job.config.seed + number),
        )
        if not part.source_valid.any():
            continue
        (result,) = _fit_adaptive([part], progress, announce)
        parts.append(((r0 * s, c0 * s), result))
    prediction = blend_windows(
        (h * s, w * s), [(origin, r.prediction) for origin, r in parts], overlap * s
    )
    prediction = np.where(job.output_valid, prediction, np.float32(np.nan)).astype(np.float32)
    first = parts[0][1]
    return TileResult(
        index=job.index,
        prediction=prediction,
        cycle_rmse=float(np.sqrt(np.mean([r.cycle_rmse**2 for _, r in parts]))),
        seconds=sum(r.seconds for _, r in parts),
        device=first.device,
        precision=first.precision,
        iterations=first.iterations,
    )


def _halves(length: int, overlap: int) -> list[tuple[int, int]]:
    """Two ranges covering [0, length) that overlap by about ``2 * overlap``."""
    middle = length // 2
    return [(0, min(length, middle + overlap)), (max(0, middle - overlap), length)]
