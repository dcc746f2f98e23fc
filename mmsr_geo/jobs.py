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
from .fit import FitResult, ProgressCallback, fit_many
from .fit_config import FitConfig
from .network_weights import NetworkWeights
from .normalisation import Normalisation
from .raster_fit import finetune_many, predict_many

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
    core: tuple[int, int, int, int] | None = None
    """(row, col, height, width) of the tile's own HR window inside the arrays, when they hold
    a margin of context around it (a raster network's forward pass: the prediction at a
    tile's edge then sees what lies beyond it); None: the arrays are the tile."""

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
    jobs: Sequence[TileJob],
    network: NetworkWeights | None = None,
    progress: ProgressCallback | None = None,
) -> list[TileResult]:
    """Fit a batch of tiles of one shape in one optimisation (:func:`~mmsr_geo.fit.fit_many`),
    each from a fresh network, or from the raster ``network`` (the hybrid mode's short
    fine-tune, :func:`~mmsr_geo.raster_fit.finetune_many`); halving the batch and then
    splitting tiles when the device runs out of memory."""
    return _adaptive(list(jobs), _Fitter(network, predict=False, progress=progress), _Notice())


def predict_tiles(jobs: Sequence[TileJob], network: NetworkWeights) -> list[TileResult]:
    """The raster ``network``'s prediction of a batch of tiles of one shape (one forward
    pass, :func:`~mmsr_geo.raster_fit.predict_many`), with the same out-of-memory handling as
    :func:`fit_tiles`."""
    return _adaptive(list(jobs), _Fitter(network, predict=True), _Notice())


@dataclass(frozen=True)
class _Fitter:
    """How a batch of tiles becomes predictions: a fit from scratch, a fine-tune from a
    network, or the network's forward pass."""

    network: NetworkWeights | None
    predict: bool
    progress: ProgressCallback | None = None

    def __call__(self, jobs: list[TileJob]) -> list[FitResult]:
        first = jobs[0]
        sources, guides = [j.source for j in jobs], [j.guide for j in jobs]
        masks, stats = [j.source_valid for j in jobs], [j.stats for j in jobs]
        seeds = [j.config.seed for j in jobs]
        if self.network is None:
            return fit_many(
                sources, guides, first.scale, first.config, masks=masks, stats=stats,
                seeds=seeds, progress=self.progress,
            )
        if self.predict:
            return predict_many(
                self.network, sources, guides, first.scale, first.config, masks=masks,
                stats=stats,
            )
        return finetune_many(
            self.network, sources, guides, first.scale, first.config, masks=masks,
            stats=stats, seeds=seeds, progress=self.progress,
        )


class _Notice:
    """Says the first out-of-memory fallback of a batch once (a warning), keeps the rest."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        if not self.messages:
            log.warning(message)
        self.messages.append(message)


def _adaptive(jobs: list[TileJob], fitter: _Fitter, announce: _Notice) -> list[TileResult]:
    try:
        return _fit_batch(jobs, fitter)
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
            return _adaptive(jobs[:half], fitter, announce) + _adaptive(
                jobs[half:], fitter, announce
            )
        return [_fit_split(jobs[0], fitter, announce)]


def _release_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _fit_batch(jobs: list[TileJob], fitter: _Fitter) -> list[TileResult]:
    results = fitter(jobs)
    return [
        TileResult(
            index=job.index,
            prediction=_core(
                job, np.where(job.output_valid, r.prediction, np.float32(np.nan))
            ).astype(np.float32),
            cycle_rmse=r.cycle_rmse,
            seconds=r.seconds / len(jobs),
            device=r.device,
            precision=r.precision,
            iterations=r.iterations,
        )
        for job, r in zip(jobs, results, strict=True)
    ]


def _core(job: TileJob, prediction: np.ndarray) -> np.ndarray:
    """The tile's own part of a prediction made with a margin of context."""
    if job.core is None:
        return prediction
    row, col, height, width = job.core
    return prediction[row : row + height, col : col + width]


def _fit_split(job: TileJob, fitter: _Fitter, announce: _Notice) -> TileResult:
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
            core=None,
        )
        if not part.source_valid.any():
            continue
        (result,) = _adaptive([part], fitter, announce)
        parts.append(((r0 * s, c0 * s), result))
    prediction = blend_windows(
        (h * s, w * s), [(origin, r.prediction) for origin, r in parts], overlap * s
    )
    prediction = _core(job, np.where(job.output_valid, prediction, np.float32(np.nan)))
    prediction = prediction.astype(np.float32)
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
