"""Writing the output GeoTIFF: profile and creation options as data, atomic temp + rename,
overviews, provenance tags and Cloud Optimized GeoTIFF conversion.

The output is written under a temporary name in its own folder and renamed with ``os.replace``
only when complete, so an interrupted run never leaves a truncated file at the final path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.io import DatasetWriter

from .errors import InputError
from .grid import OutputGrid

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
        info = np.iinfo(dtype)
        return float(info.min if info.min < 0 else info.max)
    if is_float(dtype):
        return float(candidate)
    info = np.iinfo(dtype)
    if np.isnan(candidate) or not info.min <= candidate <= info.max or candidate != int(candidate):
        if requested is not None:
            raise InputError(f"nodata {requested} cannot be stored as {dtype}")
        log.warning("the source nodata %s does not fit %s: using %s", candidate, dtype, info.min)
        return float(info.min if info.min < 0 else info.max)
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
    if grid.georeferenced:
        profile.update(crs=grid.crs, transform=grid.transform)
    return profile


def overview_factors(width: int, height: int, block: int = BLOCK_SIZE) -> list[int]:
    """Powers of two until the smallest overview fits in one block."""
    factors = []
    factor = 2
    while max(width, height) / (factor / 2) > block:
        factors.append(factor)
        factor *= 2
    return factors


def to_dtype(values: np.ndarray, valid: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """Cast blended float values to the output dtype (rounded and clipped for integers), with
    ``nodata`` where not valid."""
    if not is_float(dtype):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return np.where(valid, values, nodata).astype(dtype)


def _temp_path(final: Path, suffix: str) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{suffix}.tmp")


@contextlib.contextmanager
def atomic_raster(
    path: Path,
    profile: Mapping[str, Any],
    *,
    cog: bool = False,
    cog_options: Mapping[str, str] | None = None,
) -> Iterator[DatasetWriter]:
    """Open a temporary GTiff beside ``path``; on a clean exit build overviews (or convert to
    COG) and rename it to ``path``; on any error or interrupt remove the temporaries."""
    path = Path(path)
    tmp = _temp_path(path, "part")
    cog_tmp = _temp_path(path, "cog")
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            yield dst
            if not cog:
                block = int(profile.get("blockxsize", BLOCK_SIZE))
                factors = overview_factors(dst.width, dst.height, block)
                if factors:
                    dst.build_overviews(factors, Resampling.average)
                    dst.update_tags(ns="rio_overview", resampling="average")
        if cog:
            rasterio.shutil.copy(tmp, cog_tmp, driver="COG", **dict(cog_options or {}))
            os.replace(cog_tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        for leftover in (tmp, cog_tmp):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(str(leftover) + ".aux.xml").unlink()


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


def provenance_tags(settings: Mapping[str, Any]) -> dict[str, str]:
    """Tags recording how the output was made: the main settings as separate tags for people
    and all of them as one JSON tag for programs (see :func:`read_settings`)."""
    tags = {
        f"MMSR_{key.upper()}": json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        for key, value in settings.items()
        if key in _HUMAN_TAGS
    }
    tags[SETTINGS_TAG] = json.dumps(settings, sort_keys=True, default=str)
    return tags


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings an existing output was made with, or None if it carries none."""
    with rasterio.open(path) as ds:
        text = ds.tags().get(SETTINGS_TAG)
    return json.loads(text) if text else None
