"""xarray / rioxarray in and out: :func:`upscale` takes and returns georeferenced DataArrays.

The run is the command line's (:func:`mmsr_geo.run.upscale_raster`: the same plan, fit,
blending, consistency and tags), so the values are the CLI's for the same inputs. The inputs
are staged as GeoTIFFs window by window (``rio.to_raster(windowed=True)``: a Dask-backed array
is computed one block at a time, never whole), and the result is read back lazily from the
output GeoTIFF in Dask chunks. The fit itself runs when :func:`upscale` is called, not when the
result is computed: it is the expensive, global part (a raster-level network sees crops from
the whole raster, tiles are blended and projected across their edges), and a lazy graph would
redo it on every ``.compute()``.

Needs the ``xarray`` extra (``pip install mmsr-geo[xarray]``: rioxarray, which brings xarray).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError, OutputExistsError
from .run import default_output_path, upscale_raster

try:
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mmsr_geo.xarray needs rioxarray: pip install 'mmsr-geo[xarray]'"
    ) from error

STAGE_BLOCK = 512
"""Block edge of the staged input GeoTIFFs: the window each Dask computation writes."""

OUTPUT_CHUNKS = {"band": 1, "y": 1024, "x": 1024}
"""Dask chunks of the returned array by default: whole blocks of the output GeoTIFF (256)."""


def upscale(
    source: xr.DataArray,
    guide: xr.DataArray,
    scale: int,
    *,
    output: str | os.PathLike[str] | None = None,
    chunks: int | dict[str, int] | bool | None = None,
    **options: Any,
) -> xr.DataArray:
    """Super-resolve ``source`` by ``scale`` with the high-resolution ``guide``.

    Args:
        source: the LR raster, (y, x) or (band, y, x), with ``rio.crs`` and a transform;
            nodata from ``rio.nodata`` / ``_FillValue`` (or its encoded value when opened
            with ``masked=True``; NaN is no data too).
        guide: the HR guide, (band, y, x) or (y, x), on any grid and CRS overlapping it.
        scale: integer factor (2-16).
        output: GeoTIFF the result is written to and read back from (lazily, in ``chunks``).
            None: written to a temporary folder, loaded into memory and the folder removed
            (fine for small rasters; give a path for large ones).
        chunks: Dask chunks of the returned array (as for ``rioxarray.open_rasterio``) when
            ``output`` is given; default :data:`OUTPUT_CHUNKS`.
        options: the other settings of :func:`mmsr_geo.run.upscale_raster` (``band`` for a
            multiband source, ``schedule``, ``iterations``, ``fit_mode``, ``consistency``,
            ``register``, ``aoi``, ``dtype``, ``nodata``, ``overwrite``, ``executor``,
            ``progress``, ...).

    Returns:
        The output, with the source's dimensions (a ``band`` dimension only if the source has
        one), ``rio.crs``, the output transform, nodata (masked like the source: NaN and
        ``rio.encoded_nodata`` if the source was opened with ``masked=True``), and the run's
        provenance tags as attributes (``MMSR_RUN``, ``MMSR_SETTINGS``, ...).
    """
    _check_georeferenced(source, "source")
    _check_georeferenced(guide, "guide")
    if output is not None:
        output = Path(output)
        if os.path.lexists(output) and not options.get("overwrite", False):
            raise OutputExistsError(f"{output} exists: use overwrite=True to replace it")
    masked = source.rio.encoded_nodata is not None
    keep_band = "band" in source.dims
    with tempfile.TemporaryDirectory(
        prefix=".mmsr-xarray-", dir=output.parent if output is not None else None
    ) as staging:
        folder = Path(staging)
        source_path = _stage(source, folder / "source.tif")
        guide_path = _stage(guide, folder / "guide.tif")
        target = output if output is not None else default_output_path(source_path, scale)
        upscale_raster(source_path, guide_path, target, scale=scale, **options)
        if output is None:
            return _open(target, masked, keep_band, source.name, chunks=None).load()
    return _open(output, masked, keep_band, source.name, chunks=chunks or OUTPUT_CHUNKS)


def _check_georeferenced(array: xr.DataArray, role: str) -> None:
    """A one-line error, before anything is staged or fitted, for what no run can use."""
    if not isinstance(array, xr.DataArray):
        raise InputError(f"{role} must be an xarray.DataArray, got {type(array).__name__}")
    if array.ndim not in (2, 3) or array.dims[-2:] != (array.rio.y_dim, array.rio.x_dim):
        raise InputError(
            f"{role} must be (y, x) or (band, y, x) with its spatial dimensions last, "
            f"got dims {array.dims}"
        )
    if array.rio.crs is None:
        raise InputError(f"{role} has no CRS: set one with .rio.write_crs(...)")


def _stage(array: xr.DataArray, path: Path) -> Path:
    """``array`` as a tiled GeoTIFF, written block by block (a Dask array is computed one
    window at a time); NaN is written as the array's nodata where it has one."""
    if array.ndim == 2:
        array = array.expand_dims(band=[1])
    array.rio.to_raster(
        path, windowed=True, tiled=True, blockxsize=STAGE_BLOCK, blockysize=STAGE_BLOCK,
        recalc_transform=not _stored_transform_holds(array),
    )
    return path


def _stored_transform_holds(array: xr.DataArray) -> bool:
    """Whether the transform stored with the array (its file's ``GeoTransform``) still
    describes its coordinates: then it is written as it is, where recomputing it from the
    pixel-centre coordinates would move it by float round-off and the output with it. A
    sliced array's stale one is off by whole pixels."""
    stored = array.rio.transform()
    from_coordinates = array.rio.transform(recalc=True)
    tolerance = 1e-6 * min(abs(from_coordinates.a), abs(from_coordinates.e))
    return stored.almost_equals(from_coordinates, precision=tolerance)


def _open(
    path: Path,
    masked: bool,
    keep_band: bool,
    name: Any,
    chunks: int | dict[str, int] | bool | None,
) -> xr.DataArray:
    result = rioxarray.open_rasterio(path, masked=masked, chunks=chunks)
    if not keep_band:
        result = result.squeeze("band", drop=True)
    return result.rename(name) if name is not None else result
