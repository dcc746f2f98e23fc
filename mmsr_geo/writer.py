"""Writing the output GeoTIFF: profile and creation options as data, atomic temp + rename,
overviews, provenance tags and Cloud Optimized GeoTIFF conversion.

The output is written under a temporary name in its own folder and put in place only when
complete (:mod:`mmsr_geo.atomic`), so an interrupted run never leaves a truncated file at the
final path, and an existing file is only replaced when asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.dtypes import dtype_ranges, in_dtype_range
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetWriter
from rasterio.rio.overview import get_maximum_overview_level

from .atomic import atomic_file, remove_temporaries, temp_path
from .errors import InputError
from .grid import OutputGrid
from .raster_io import GDALError

log = logging.getLogger(__name__)

DTYPES = ("float32", "float64", "int16", "uint16", "int32", "uint8")
FLOAT_NODATA = -9999.0
SETTINGS_TAG = "MMSR_SETTINGS"
BLOCK_SIZE = 256


def is_float(dtype: str) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


def choose_nodata(source_nodata: float | None, dtype: str, requested: float | None) -> float:
    """The output's nodata: the requested one, else the source's if the dtype can hold it,
    else -9999 for floats or the dtype's minimum (signed) / maximum (unsigned)."""
    if requested is not None:
        candidate = requested
    elif source_nodata is not None:
        candidate = source_nodata
    elif is_float(dtype):
        return FLOAT_NODATA
    else:
        lowest, highest = dtype_ranges[dtype]
        return float(lowest if lowest < 0 else highest)
    if is_float(dtype):
        return float(candidate)
    if not in_dtype_range(candidate, dtype) or candidate != int(candidate):
        if requested is not None:
            raise InputError(f"nodata {requested} cannot be stored as {dtype}")
        lowest, highest = dtype_ranges[dtype]
        log.warning("the source nodata %s does not fit %s: using %s", candidate, dtype, lowest)
        return float(lowest if lowest < 0 else highest)
    return float(candidate)


def creation_options(
    dtype: str, user: Mapping[str, str] | None = None, *, cog: bool = False
) -> dict[str, str]:
    """GDAL creation options: tiled, DEFLATE with the right predictor (3 for floats, 2 for
    integers), BIGTIFF=IF_SAFER; ``user`` options (``--co``) win. For ``cog`` these are the COG
    driver's options (BLOCKSIZE instead of TILED/BLOCKXSIZE/BLOCKYSIZE)."""
    options = {
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "3" if is_float(dtype) else "2",
        "BIGTIFF": "IF_SAFER",
    }
    if cog:
        options.update({"BLOCKSIZE": str(BLOCK_SIZE), "OVERVIEW_RESAMPLING": "AVERAGE"})
        if options["PREDICTOR"] == "3":
            options["PREDICTOR"] = "FLOATING_POINT"
    else:
        options.update(
            {"TILED": "YES", "BLOCKXSIZE": str(BLOCK_SIZE), "BLOCKYSIZE": str(BLOCK_SIZE)}
        )
    options.update({k.upper(): str(v) for k, v in (user or {}).items()})
    return options


def output_profile(
    grid: OutputGrid, dtype: str, nodata: float, options: Mapping[str, str]
) -> dict[str, Any]:
    """A GTiff profile for the HR grid (no CRS/transform for pixel-only pairs)."""
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": dtype,
        "nodata": nodata,
        **{k.lower(): v for k, v in options.items()},
    }
    for key in ("blockxsize", "blockysize"):  # numbers, so rasterio checks them (16 multiples)
        if str(profile.get(key, "")).isdigit():
            profile[key] = int(profile[key])
    if grid.has_transform:
        profile["transform"] = grid.transform
    if grid.crs is not None:
        profile["crs"] = grid.crs
    return profile


def overview_factors(width: int, height: int, block: int = BLOCK_SIZE) -> list[int]:
    """Powers of two until the smallest overview fits in one block (rasterio's level count,
    taken on the longer side so that a long, narrow raster gets overviews too)."""
    side = max(width, height)
    return [2**level for level in range(1, get_maximum_overview_level(side, side, block) + 1)]


@dataclass(frozen=True)
class OutputEncoding:
    """How physical values are stored: data type, nodata and, for integer outputs of a scaled
    source, the source's scale and offset (``stored = (physical - offset) / scale``)."""

    dtype: str
    nodata: float
    scale: float = 1.0
    offset: float = 0.0

    def stored_range(self) -> tuple[float, float]:
        """Smallest and largest storable value (stored units)."""
        lowest, highest = dtype_ranges[self.dtype]
        return float(lowest), float(highest)

    def physical_range(self) -> tuple[float, float]:
        """The physical values the output can hold."""
        lo, hi = (v * self.scale + self.offset for v in self.stored_range())
        return (min(lo, hi), max(lo, hi))

    def encode(self, values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, EncodeCounts]:
        """Stored array (``nodata`` where not valid) and what had to be changed.

        Integer outputs are rounded and clipped to the type (counted); a valid value that
        would be stored as the nodata value is moved one step away from it (counted), so a
        prediction never turns into a hole.
        """
        stored = values if (self.scale, self.offset) == (1.0, 0.0) else (
            (values - self.offset) / self.scale
        )
        lo, hi = self.stored_range()
        if is_float(self.dtype):
            out = stored.astype(self.dtype)
            clipped = int(np.count_nonzero(valid & ~np.isfinite(out) & np.isfinite(stored)))
        else:
            rounded = np.rint(stored)
            clipped = int(np.count_nonzero(valid & ((rounded < lo) | (rounded > hi))))
            out = np.clip(rounded, lo, hi).astype(self.dtype)
        hits = valid & (out == np.asarray(self.nodata).astype(self.dtype))
        moved = int(np.count_nonzero(hits))
        if moved:
            nodata = np.asarray(self.nodata, dtype=self.dtype)
            if is_float(self.dtype):
                step = np.nextafter(nodata, np.asarray(np.inf, dtype=self.dtype))
            else:
                step = nodata + 1 if nodata < hi else nodata - 1
            out[hits] = step
        out[~valid] = np.asarray(self.nodata).astype(self.dtype)
        return out, EncodeCounts(clipped=clipped, moved_off_nodata=moved)


@dataclass
class EncodeCounts:
    """Valid pixels changed by :meth:`OutputEncoding.encode` (summed over blocks)."""

    clipped: int = 0
    moved_off_nodata: int = 0

    def add(self, other: EncodeCounts) -> None:
        self.clipped += other.clipped
        self.moved_off_nodata += other.moved_off_nodata


def validate_profile(profile: Mapping[str, Any], cog_options: Mapping[str, str] | None) -> None:
    """Create (and drop) the output in memory with its real profile, so that a bad creation
    option (``--co BLOCKXSIZE=13``, a predictor the type does not take, an unknown value) is an
    error before any tile is fitted rather than after the whole fit. GDAL's warnings about
    options it would ignore are errors here: a silently uncompressed output is not asked for."""
    ignored: list[str] = []
    handler = _Collect(ignored)
    gdal_log = logging.getLogger("rasterio._env")
    level, propagate = gdal_log.level, gdal_log.propagate
    gdal_log.setLevel(logging.WARNING)  # whatever the application set, we need to see these
    gdal_log.propagate = False  # ... and to say it once, as an error
    gdal_log.addHandler(handler)
    name = f"/vsimem/mmsr-check-{uuid.uuid4().hex}.tif"
    cog_name = name.replace(".tif", ".cog.tif")
    try:
        with rasterio.open(name, "w", **profile):
            pass
        if cog_options is not None:
            rasterio.shutil.copy(name, cog_name, driver="COG", **dict(cog_options))
    except (RasterioError, GDALError, ValueError) as exc:
        message = " ".join(str(exc).split()).replace(name, "the output")
        raise InputError(f"the output cannot be created with these options: {message}") from None
    finally:
        gdal_log.removeHandler(handler)
        gdal_log.setLevel(level)
        gdal_log.propagate = propagate
        for path in (name, cog_name):
            with contextlib.suppress(RasterioError, GDALError):
                rasterio.shutil.delete(path)
    if ignored:
        raise InputError(f"GDAL would ignore a creation option: {ignored[0]}")


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "creation option" in message or "not recognised" in message:
            self.into.append(message.split(" in ", 1)[-1])


@contextlib.contextmanager
def atomic_raster(
    path: Path,
    profile: Mapping[str, Any],
    *,
    overwrite: bool,
    cog: bool = False,
    cog_options: Mapping[str, str] | None = None,
) -> Iterator[DatasetWriter]:
    """Open a temporary GTiff beside ``path``; on a clean exit build overviews (or convert to
    COG) and put it in place (see :mod:`mmsr_geo.atomic`); on any error or interrupt remove
    the temporaries."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite, tag="part") as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            yield dst
            if not cog:
                block = int(profile.get("blockxsize", BLOCK_SIZE))
                factors = overview_factors(dst.width, dst.height, block)
                if factors:
                    dst.build_overviews(factors, Resampling.average)
                    dst.update_tags(ns="rio_overview", resampling="average")
        if cog:
            cog_tmp = temp_path(path, "cog")
            try:
                rasterio.shutil.copy(tmp, cog_tmp, driver="COG", **dict(cog_options or {}))
                os.replace(cog_tmp, tmp)
            finally:
                remove_temporaries(cog_tmp)


_HUMAN_TAGS = frozenset(
    (
        "version",
        "scale",
        "iterations",
        "s2g_kernel",
        "g2s_kernel",
        "features",
        "seed",
        "source",
        "guide",
        "tile_size",
        "overlap",
    )
)


RUN_TAG = "MMSR_RUN"


def provenance_tags(settings: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, str]:
    """Tags recording how the output was made: the main settings as separate tags for people,
    all of them as one JSON tag for programs (``MMSR_SETTINGS``, see :func:`read_provenance`)
    and the facts of the run that made it (``MMSR_RUN``: devices, tiles, timings), which
    are not part of its identity."""
    tags = {
        f"MMSR_{key.upper()}": json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        for key, value in settings.items()
        if key in _HUMAN_TAGS
    }
    tags[SETTINGS_TAG] = json.dumps(settings, sort_keys=True, default=str)
    tags[RUN_TAG] = json.dumps(run, sort_keys=True, default=str)
    return tags


def read_provenance(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(settings, run facts) an existing output records, each None if it carries none."""
    with rasterio.open(path) as ds:
        tags = ds.tags()

    def load(name: str) -> dict[str, Any] | None:
        try:
            value = json.loads(tags[name])
        except (KeyError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    return load(SETTINGS_TAG), load(RUN_TAG)


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings an existing output was made with, or None if it carries none."""
    return read_provenance(path)[0]
