"""Opening rasters with errors a user understands, band selection, validity masks and
decimated reads.

Everything here reads by windows or decimated: a run must never hold a whole raster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from .errors import InputError

log = logging.getLogger(__name__)

GDALError = CPLE_BaseError
"""GDAL's own errors (a creation option it refuses, a failed copy), which reach Python outside
rasterio's exception classes: rasterio exports no public alias for them (1.4), so the private
name is imported here, once, and used under this one."""

STATS_MAX_PIXELS = 1024 * 1024
"""Pixels read (per band) for the whole-raster statistics: bounded memory, however large."""


def is_remote(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a URL or GDAL virtual path (``https://``, ``s3://``, ``/vsicurl/``,
    ``/vsizip/``, ...) that rasterio opens as it is, rather than a local file."""
    text = os.fspath(path)
    return "://" in text or text.startswith("/vsi")


def remote_name(address: str | os.PathLike[str]) -> str:
    """The file name at the end of a URL or GDAL path, without query or fragment
    (``https://host/a/dem.tif?sig=...`` -> ``dem.tif``; ``zip://x.zip!dem.tif`` ->
    ``dem.tif``); empty when the address ends in a folder."""
    text = os.fspath(address).split("#", 1)[0].split("?", 1)[0]
    return text.rstrip("/").rsplit("/", 1)[-1].rsplit("!", 1)[-1]


def open_raster(path: str | os.PathLike[str], role: str) -> DatasetReader:
    """Open ``path`` for reading; a missing file or a non-raster is an :class:`InputError`.

    Local paths are checked first for a clear message; URLs and GDAL virtual paths are handed
    to rasterio untouched (GDAL reads them by HTTP ranges, archives member by member).
    rasterio's NotGeoreferencedWarning is swallowed here: whether a pair lacks georeferencing
    is decided (and reported once) by the run's plan stage.
    """
    if not is_remote(path):
        local = Path(path)
        if not local.exists():
            raise InputError(f"{role} file not found: {local}")
        if local.is_dir():
            raise InputError(f"{role} is a directory, not a raster file: {local}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        if is_remote(path):  # a missing object, a refused connection or denied credentials
            raise InputError(f"cannot open the {role} {path}: {_cause(exc)}") from None
        raise InputError(f"{role} {path} is not a raster GDAL can read ({_cause(exc)})") from None


def _cause(exc: BaseException) -> str:
    """The most specific message of a GDAL error chain: rasterio's "Read failed. See previous
    exception for details." keeps GDAL's own explanation in ``__cause__``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split())


@contextlib.contextmanager
def reading(dataset: DatasetReader, role: str) -> Iterator[None]:
    """Turn a failed read (a truncated or corrupt file, a lost connection) into an
    :class:`InputError` that names the file and what GDAL found wrong."""
    try:
        yield
    except RasterioError as exc:
        raise InputError(f"cannot read the {role} {dataset.name}: {_cause(exc)}") from None


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
    repeated = sorted({b for b in bands if list(bands).count(b) > 1})
    if repeated:
        raise InputError(
            f"guide band {repeated[0]} is given twice in --guide-bands: a band repeated adds "
            "nothing but weight"
        )
    return tuple(bands)


def band_encoding(dataset: DatasetReader, band: int) -> tuple[float, float]:
    """(scale, offset) that turn the band's stored values into physical ones
    (``physical = stored * scale + offset``); (1, 0) when the file declares none."""
    scale = dataset.scales[band - 1] if dataset.scales else 1.0
    offset = dataset.offsets[band - 1] if dataset.offsets else 0.0
    return float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)


def read_band(dataset: DatasetReader, band: int, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """One band of a window in physical units (scale and offset applied) as float64, and its
    validity: GDAL's mask (nodata, alpha, per-dataset mask) and finite values."""
    with reading(dataset, "source"):
        data = dataset.read(band, window=window).astype(np.float64)
        valid = (dataset.read_masks(band, window=window) > 0) & np.isfinite(data)
    scale, offset = band_encoding(dataset, band)
    if (scale, offset) != (1.0, 0.0):
        data = data * scale + offset
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
    role: str = "raster",
) -> tuple[np.ndarray, np.ndarray]:
    """A decimated (C, h, w) float64 read of ``bands`` over ``window`` in physical units, and
    its validity (see :func:`pixel_validity`), for statistics and quick-looks."""
    window = window or Window(0, 0, dataset.width, dataset.height)
    shape = decimated_shape(int(window.height), int(window.width), max_pixels)
    with reading(dataset, role):
        data = dataset.read(list(bands), window=window, out_shape=(len(bands), *shape))
        masks = dataset.read_masks(list(bands), window=window, out_shape=(len(bands), *shape))
    data = data.astype(np.float64)
    for i, band in enumerate(bands):
        scale, offset = band_encoding(dataset, band)
        if (scale, offset) != (1.0, 0.0):
            data[i] = data[i] * scale + offset
    return data, pixel_validity(masks, data)
