"""Raster-level super-resolution: read -> grid -> tiles -> fit -> blend -> write.

:func:`upscale_raster` validates everything it can before any work (files, bands, scale,
overlap, AOI, an existing output), computes the normalisation statistics of the whole raster
from decimated reads, then turns tiles into self-contained :class:`~mmsr_geo.jobs.TileJob` s
that an executor runs anywhere. Finished tiles are checkpointed beside the output; blending
then walks over output blocks, loading only the tiles that touch each block, and writes into a
temporary file renamed into place at the end. Memory is bounded by the tile and block sizes,
never by the raster's; a rerun after a crash resumes from the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.features import geometry_mask
from rasterio.io import DatasetReader
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rasterio.windows import transform as window_transform
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from ._version import __version__
from .aoi import load_aoi
from .blending import blend_block
from .checkpoints import TileCheckpoints, work_dir_for
from .devices import resolve_device
from .errors import InputError, OutputExistsError, OverlapError
from .executors import SerialExecutor, TileExecutor
from .fit import FitConfig
from .grid import OutputGrid, output_grid
from .guide import AlignedGuide, check_overlap, pixel_aligned
from .jobs import TileJob, TileResult, fit_tile
from .normalisation import Normalisation, normalisation_stats
from .raster_io import (
    open_raster,
    read_band,
    read_decimated,
    select_band,
    select_guide_bands,
)
from .tiling import TilePlan, plan_tiles, tile_intersects
from .writer import (
    BLOCK_SIZE,
    DTYPES,
    atomic_raster,
    choose_nodata,
    output_profile,
    provenance_tags,
    to_dtype,
)
from .writer import creation_options as gdal_creation_options

log = logging.getLogger(__name__)

TILE_CACHE_SIZE = 16
"""Checkpointed tiles held in memory while blending (the blocks walk row by row)."""


@dataclass(frozen=True)
class UpscaleReport:
    """What a run did."""

    output: Path
    tiles_total: int
    tiles_fitted: int
    """Tiles fitted by this run."""
    tiles_resumed: int
    """Tiles taken from the checkpoints of an earlier, interrupted run."""
    tiles_skipped: int
    """Tiles with no valid output pixel (nodata, outside the guide or the AOI)."""
    seconds: float
    mean_cycle_rmse: float
    """Mean over the fitted and resumed tiles of their cycle RMSE (source units); NaN if none."""
    device: str


def default_output_path(source: str | os.PathLike[str], scale: int) -> Path:
    """``dem.tif`` -> ``dem_x4.tif`` beside the source (always a GeoTIFF)."""
    source = Path(source)
    return source.with_name(f"{source.stem}_x{scale}.tif")


def _check_output(output: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    if any(output.resolve() == p.resolve() for p in inputs):
        raise InputError(f"the output {output} would overwrite an input")
    if not output.parent.is_dir():
        raise InputError(f"the output's folder {output.parent} does not exist")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists: use --overwrite to replace it")


def _statistics(
    source: DatasetReader,
    band: int,
    guide: DatasetReader,
    guide_bands: Sequence[int],
    grid: OutputGrid,
    common: BaseGeometry,
) -> Normalisation:
    """Whole-raster z-score statistics from decimated reads, so that all tiles agree.

    The guide is sampled on its own grid over the area it shares with the source.
    """
    values, valid = read_decimated(source, [band])
    if not valid.any():
        raise InputError(f"the source {source.name} has no valid pixel (all nodata)")
    window = Window(0, 0, guide.width, guide.height)
    if not pixel_aligned(guide, grid):
        bounds = transform_bounds(grid.crs, guide.crs, *common.bounds, densify_pts=21)
        shared = from_bounds(*bounds, transform=guide.transform).round_offsets().round_lengths()
        with contextlib.suppress(ValueError):  # no intersection: keep the whole guide
            window = window.intersection(shared)
    guide_values, guide_valid = read_decimated(guide, guide_bands, window)
    if not guide_valid.any():
        raise InputError(f"the guide {guide.name} has no valid pixel where it meets the source")
    samples = guide_values[:, guide_valid][:, None, :]
    try:
        return normalisation_stats(values[0], samples, valid)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and modification time: enough to tell that an input changed since a run."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _jobs(
    plan: TilePlan,
    pending: set[int],
    source: DatasetReader,
    band: int,
    guide: AlignedGuide,
    grid: OutputGrid,
    aoi: BaseGeometry | None,
    stats: Normalisation,
    config: FitConfig,
    skipped: list[int],
) -> Iterator[TileJob]:
    """Read each pending tile into a job, lazily; tiles without a valid output pixel are
    appended to ``skipped`` instead."""
    s = grid.scale
    fill = stats.guide_mean_array()[:, None, None]
    for tile in plan:
        if tile.index not in pending:
            continue
        if not tile_intersects(tile, aoi, grid.lr_transform):
            skipped.append(tile.index)
            continue
        values, source_valid = read_band(source, band, tile.lr_window)
        if not source_valid.any():
            skipped.append(tile.index)
            continue
        guide_values, guide_valid = guide.read(tile.hr_window)
        output_valid = np.repeat(np.repeat(source_valid, s, axis=0), s, axis=1) & guide_valid
        if aoi is not None:
            output_valid &= geometry_mask(
                [aoi],
                out_shape=output_valid.shape,
                transform=window_transform(tile.hr_window, grid.transform),
                invert=True,
            )
        if not output_valid.any():
            skipped.append(tile.index)
            continue
        yield TileJob(
            index=tile.index,
            lr_window=tile.lr_window,
            hr_window=tile.hr_window,
            source=values,
            source_valid=source_valid,
            guide=np.where(guide_valid[None], guide_values, fill).astype(np.float32),
            output_valid=output_valid,
            scale=s,
            stats=stats,
            config=dataclasses.replace(config, seed=config.seed + tile.index),
        )


class _TileCache:
    """A small LRU of checkpointed tile predictions, recording each tile's cycle RMSE."""

    def __init__(self, checkpoints: TileCheckpoints, size: int = TILE_CACHE_SIZE) -> None:
        self._checkpoints = checkpoints
        self._size = size
        self._tiles: OrderedDict[int, np.ndarray] = OrderedDict()
        self.rmse: dict[int, float] = {}

    def get(self, index: int) -> np.ndarray:
        if index in self._tiles:
            self._tiles.move_to_end(index)
            return self._tiles[index]
        prediction, rmse = self._checkpoints.load(index)
        self.rmse[index] = rmse
        self._tiles[index] = prediction
        if len(self._tiles) > self._size:
            self._tiles.popitem(last=False)
        return prediction


def _blocks(width: int, height: int, size: int) -> Iterator[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def _blend_size(plan: TilePlan, block: int) -> int:
    """Blend windows: whole GTiff blocks, at least one tile stride wide, so each checkpoint
    is loaded only a few times."""
    stride = max(1, plan.tile_size - plan.overlap) * plan.scale
    return block * max(1, math.ceil(stride / block))


def upscale_raster(
    source: str | os.PathLike[str],
    guide: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    scale: int,
    config: FitConfig | None = None,
    band: int | None = None,
    guide_bands: Sequence[int] | None = None,
    tile_size: int = 64,
    overlap: int = 8,
    aoi: str | None = None,
    dtype: str = "float32",
    nodata: float | None = None,
    creation_options: Mapping[str, str] | None = None,
    cog: bool = False,
    overwrite: bool = False,
    preview: str | os.PathLike[str] | None = None,
    executor: TileExecutor | None = None,
    show_progress: bool = False,
) -> UpscaleReport:
    """Super-resolve a georeferenced raster band by ``scale`` with a high-resolution guide.

    Args:
        source: LR raster (one band is super-resolved: ``band``, required if it has several).
        guide: HR guide raster, on any grid/CRS overlapping the source (warped tile by tile).
        output: GeoTIFF to write; default ``<source stem>_x<scale>.tif`` beside the source.
        scale: integer factor >= 2; the output grid is the source's with pixels scale x smaller.
        config: fit settings (iterations, kernels, features, seed, device). Tile i uses seed
            ``config.seed + i``.
        band: 1-based source band.
        guide_bands: 1-based guide bands (default: all but alpha).
        tile_size: tile edge in source (LR) pixels.
        overlap: overlap of neighbouring tiles in source (LR) pixels, blended smoothly.
        aoi: GeoJSON file (EPSG:4326 unless it names a crs) or WKT (source CRS); tiles outside
            are skipped and output pixels outside are nodata.
        dtype: output data type (float32 by default).
        nodata: output nodata (default: the source's, or -9999 for floats).
        creation_options: GDAL creation options overriding the defaults (``--co``).
        cog: write a Cloud Optimized GeoTIFF.
        overwrite: replace an existing output.
        preview: PNG quick-look to write after the output.
        executor: runs the tile jobs (default: serially in this process).
        show_progress: tqdm progress bars on stderr.
    """
    started = time.perf_counter()
    config = config or FitConfig()
    source_path, guide_path = Path(source), Path(guide)
    output_path = Path(output) if output is not None else default_output_path(source_path, scale)
    if dtype not in DTYPES:
        raise InputError(f"unsupported output dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    plan_tiles(4, 4, 2, tile_size, overlap)  # validates tile_size/overlap before opening files
    executor = executor or SerialExecutor()
    # Tiles that run elsewhere (worker processes, a Dask cluster) pick their device there: a
    # CPU-only login node may well send tiles to GPU workers.
    in_process = getattr(executor, "in_process", False)
    device = str(resolve_device(config.device)) if in_process else config.device

    with contextlib.ExitStack() as stack:
        src = stack.enter_context(open_raster(source_path, "source"))
        gds = stack.enter_context(open_raster(guide_path, "guide"))
        _check_output(output_path, [source_path, guide_path], overwrite)
        band = select_band(src, band)
        bands = select_guide_bands(gds, guide_bands)
        grid = output_grid(src, scale)
        if pixel_aligned(gds, grid):
            log.warning(
                "source or guide is not georeferenced: assuming the guide is exactly %d x the "
                "source's pixel grid",
                scale,
            )
        guide_reader = stack.enter_context(AlignedGuide(gds, bands, grid))
        common = check_overlap(gds, grid)
        aoi_geometry = None
        if aoi is not None:
            aoi_geometry = load_aoi(aoi, grid.crs)
            if not aoi_geometry.intersects(common):
                raise OverlapError("the AOI does not overlap the area covered by source and guide")
        stats = _statistics(src, band, gds, bands, grid, common)
        plan = plan_tiles(grid.lr_width, grid.lr_height, scale, tile_size, overlap)
        out_nodata = choose_nodata(src.nodatavals[band - 1], dtype, nodata)
        settings = {
            "version": __version__,
            "source": source_path.name,
            "source_file": file_fingerprint(source_path),
            "band": band,
            "guide": guide_path.name,
            "guide_file": file_fingerprint(guide_path),
            "guide_bands": list(bands),
            "scale": scale,
            "tile_size": tile_size,
            "overlap": overlap,
            "aoi": aoi,
            "dtype": dtype,
            "nodata": out_nodata,
            **dataclasses.asdict(config),
            "resolved_device": device,
        }
        checkpoints = TileCheckpoints(work_dir_for(output_path), settings)
        done = checkpoints.open()
        pending = {i for i in range(len(plan))} - done
        log.info(
            "%d tiles of %dx%d source pixels (%d already done), %d iterations each, on %s",
            len(plan),
            plan.tile_width,
            plan.tile_height,
            len(done),
            config.iterations,
            device,
        )
        skipped: list[int] = []
        fitted = 0
        try:
            fitted = _fit_tiles(
                plan,
                pending,
                done,
                src,
                band,
                guide_reader,
                grid,
                aoi_geometry,
                stats,
                config,
                skipped,
                checkpoints,
                executor,
                show_progress,
            )
            tags = provenance_tags(settings)
            description = src.descriptions[band - 1] or f"band {band}"
            rmse = _blend_and_write(
                plan,
                checkpoints,
                grid,
                output_path,
                dtype,
                out_nodata,
                creation_options,
                cog,
                tags,
                f"{description} x{scale} (MMSR)",
            )
        except BaseException:
            if not checkpoints.done():
                checkpoints.remove()
            raise
        checkpoints.remove()
        if preview is not None:
            from .preview import write_preview

            write_preview(Path(preview), src, band, gds, bands, grid, output_path)

    if skipped and len(skipped) == len(plan):
        log.warning("every tile was skipped (nodata, outside the guide or AOI): output is empty")
    return UpscaleReport(
        output=output_path,
        tiles_total=len(plan),
        tiles_fitted=fitted,
        tiles_resumed=len(done),
        tiles_skipped=len(skipped),
        seconds=time.perf_counter() - started,
        mean_cycle_rmse=float(np.mean(list(rmse.values()))) if rmse else float("nan"),
        device=device,
    )


def _fit_tiles(
    plan: TilePlan,
    pending: set[int],
    done: set[int],
    source: DatasetReader,
    band: int,
    guide: AlignedGuide,
    grid: OutputGrid,
    aoi: BaseGeometry | None,
    stats: Normalisation,
    config: FitConfig,
    skipped: list[int],
    checkpoints: TileCheckpoints,
    executor: TileExecutor,
    show_progress: bool,
) -> int:
    """Run the pending tiles through the executor, checkpointing each result; returns how
    many were fitted."""
    jobs = _jobs(plan, pending, source, band, guide, grid, aoi, stats, config, skipped)
    tiles_bar = tqdm(
        total=len(plan),
        initial=len(done),
        desc="tiles",
        unit="tile",
        disable=not show_progress,
        position=0,
    )
    iterations_bar = tqdm(
        total=config.iterations,
        desc="iterations",
        unit="it",
        leave=False,
        disable=not (show_progress and getattr(executor, "in_process", False)),
        position=1,
    )

    def on_iteration(step: int, total: int, loss: float) -> None:
        if step == 1:
            iterations_bar.reset(total)
        iterations_bar.update(1)
        if step % 50 == 0 or step == total:
            iterations_bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    fn = (
        functools.partial(fit_tile, progress=on_iteration)
        if show_progress and getattr(executor, "in_process", False)
        else fit_tile
    )
    fitted = 0
    try:
        for result in executor.map_unordered(fn, jobs):
            _record(result, checkpoints)
            fitted += 1
            tiles_bar.update(1)
            tiles_bar.set_postfix(skipped=len(skipped), refresh=False)
        tiles_bar.update(len(skipped))
    finally:
        iterations_bar.close()
        tiles_bar.close()
    return fitted


def _record(result: TileResult, checkpoints: TileCheckpoints) -> None:
    checkpoints.save(result)
    log.debug(
        "tile %d fitted in %.1f s, cycle RMSE %.4g", result.index, result.seconds, result.cycle_rmse
    )


def _blend_and_write(
    plan: TilePlan,
    checkpoints: TileCheckpoints,
    grid: OutputGrid,
    output: Path,
    dtype: str,
    nodata: float,
    user_options: Mapping[str, str] | None,
    cog: bool,
    tags: Mapping[str, str],
    description: str,
) -> dict[int, float]:
    """Blend the checkpointed tiles block by block into the (atomic) output; returns the
    cycle RMSE of every tile."""
    done = checkpoints.done()
    gtiff_options = gdal_creation_options(dtype, None if cog else user_options)
    profile = output_profile(grid, dtype, nodata, gtiff_options)
    block = int(gtiff_options.get("BLOCKXSIZE", BLOCK_SIZE))
    cache = _TileCache(checkpoints)
    ramp = plan.overlap * plan.scale
    cog_options = gdal_creation_options(dtype, user_options, cog=True) if cog else None
    with atomic_raster(output, profile, cog=cog, cog_options=cog_options) as dst:
        for window in _blocks(grid.width, grid.height, _blend_size(plan, block)):
            contributions = [
                (tile.hr_window, cache.get(tile.index))
                for tile in plan.tiles_touching(window)
                if tile.index in done
            ]
            values, valid = blend_block(window, contributions, ramp)
            dst.write(to_dtype(values, valid, dtype, nodata), 1, window=window)
        dst.update_tags(**tags)
        dst.set_band_description(1, description)
    return cache.rmse
