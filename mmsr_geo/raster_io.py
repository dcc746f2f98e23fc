"""Opening rasters with errors a user understands, band selection, validity masks and
decimated reads.

Everything here reads by windows or decimated: the pipeline must never hold a whole raster.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from .errors import InputError

log = logging.getLogger(__name__)

STATS_MAX_PIXELS = 1024 * 1024
"""Pixels read (per band) for the whole-raster statistics: bounded memory, however large."""


def open_raster(path: str | os.PathLike[str], role: str) -> DatasetReader:
    """Open ``path`` for reading; a missing file or a non-raster is an :class:`InputError`.

    rasterio's NotGeoreferencedWarning is swallowed here: whether a pair lacks georeferencing
    is decided (and reported once) by the pipeline.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{role} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{role} is a directory, not a raster file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{role} {path} is not a raster GDAL can read ({exc})") from None


def select_band(dataset: DatasetReader, band: int | None, role: str = "source") -> int:
    """The 1-based band to super-resolve: ``band``, or the only band of a single-band raster.

    A multi-band source without an explicit band is an error rather than a guess: taking band 1
    of an RGB source by accident would silently produce nonsense.
    """
    if band is None:
        if dataset.count != 1:
            raise InputError(
                f"{role} {dataset.name} has {dataset.count} bands: choose one with --band"
            )
        return 1
    if not 1 <= band <= dataset.count:
        raise InputError(
            f"{role} band {band} does not exist: {dataset.name} has {dataset.count} band(s)"
        )
    return band


def select_guide_bands(dataset: DatasetReader, bands: Sequence[int] | None) -> tuple[int, ...]:
    """The 1-based guide bands: ``bands`` checked, or every band except an alpha band."""
    if bands is None:
        chosen = tuple(i + 1 for i, ci in enumerate(dataset.colorinterp) if ci != ColorInterp.alpha)
        return chosen or tuple(range(1, dataset.count + 1))
    if not bands:
        raise InputError("--guide-bands needs at least one band")
    for b in bands:
        if not 1 <= b <= dataset.count:
            raise InputError(
                f"guide band {b} does not exist: {dataset.name} has {dataset.count} band(s)"
            )
    return tuple(bands)


def read_band(dataset: DatasetReader, band: int, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """One band of a window as float64 and its validity: GDAL's mask (nodata, alpha, per-dataset
    mask) and finite values."""
    data = dataset.read(band, window=window).astype(np.float64)
    valid = (dataset.read_masks(band, window=window) > 0) & np.isfinite(data)
    return data, valid


def decimated_shape(height: int, width: int, max_pixels: int = STATS_MAX_PIXELS) -> tuple[int, int]:
    """A shape of at most ``max_pixels`` with the aspect of (height, width), never upsampled."""
    factor = max(1.0, float(np.sqrt(height * width / max_pixels)))
    return max(1, int(height / factor)), max(1, int(width / factor))


def pixel_validity(masks: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(h, w) validity of a multi-band read from its (C, h, w) GDAL masks and values.

    A pixel has no data only where *every* band is masked (GDAL's per-dataset reading of a
    nodata value): an 8-bit RGB image with nodata 255 marks saturated snow or roofs in one
    band, which is real data. Non-finite values are never valid.
    """
    return (masks > 0).any(axis=0) & np.isfinite(data).all(axis=0)


def read_decimated(
    dataset: DatasetReader,
    bands: Sequence[int],
    window: Window | None = None,
    max_pixels: int = STATS_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """A decimated (C, h, w) float64 read of ``bands`` over ``window`` and its validity (see
    :func:`pixel_validity`), for statistics and quick-looks."""
    window = window or Window(0, 0, dataset.width, dataset.height)
    shape = decimated_shape(int(window.height), int(window.width), max_pixels)
    data = dataset.read(list(bands), window=window, out_shape=(len(bands), *shape))
    data = data.astype(np.float64)
    masks = dataset.read_masks(list(bands), window=window, out_shape=(len(bands), *shape))
    return data, pixel_validity(masks, data)
