"""A tile as a self-contained, picklable job and the pure function that fits it.

The pipeline reads everything a tile needs (LR source window, its mask, the guide window on the
output grid, the output validity) in the main process; :func:`fit_tile` then needs neither files
nor shared state, so tiles can run in another process or on another machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .fit import FitConfig, ProgressCallback, fit
from .normalisation import Normalisation

if TYPE_CHECKING:  # workers fit tiles without touching rasters
    from rasterio.windows import Window


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


@dataclass(frozen=True)
class TileResult:
    """A fitted tile: the HR prediction (NaN where the output is nodata) and its quality."""

    index: int
    prediction: np.ndarray
    cycle_rmse: float
    seconds: float
    device: str


def fit_tile(job: TileJob, progress: ProgressCallback | None = None) -> TileResult:
    """Fit one tile; pure apart from the compute device."""
    result = fit(
        job.source,
        job.guide,
        job.scale,
        job.config,
        mask=job.source_valid,
        stats=job.stats,
        progress=progress,
    )
    prediction = np.where(job.output_valid, result.prediction, np.float32(np.nan))
    return TileResult(
        index=job.index,
        prediction=prediction.astype(np.float32),
        cycle_rmse=result.cycle_rmse,
        seconds=result.seconds,
        device=result.device,
    )
