"""Reading tiles into self-contained jobs (:class:`~mmsr_geo.jobs.TileJob`), lazily.

A job holds everything its fit needs (LR source window and mask, the guide on the HR window,
which output pixels get a value), so it can run in another process or on another machine.
Tiles are read only when drawn, and tiles without a valid output pixel (no source data, no
guide, outside the AOI) are reported instead of read into jobs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from rasterio.features import geometry_mask
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from ..fit_config import FitConfig
from ..guide import fill_guide, guide_holes, max_hole_pixels
from ..jobs import TileJob
from ..normalisation import Normalisation
from ..raster_io import read_band
from ..tiling import Tile
from .plan import RunPlan


def read_job(
    plan: RunPlan, stats: Normalisation, config: FitConfig, index: int, lr_window: Window
) -> TileJob | None:
    """The job of one LR window (and its HR counterpart), fitted with ``config`` and seed
    ``config.seed + index``, or None when no output pixel of it would be valid."""
    inputs, grid, s = plan.inputs, plan.grid, plan.grid.scale
    values, source_valid = read_band(inputs.source, inputs.band, lr_window)
    if not source_valid.any():
        return None
    hr_window = grid.hr_window(lr_window)
    hr_transform = window_transform(hr_window, grid.transform)
    guide_values, guide_valid = inputs.guide.read(hr_window)
    shape = guide_valid.shape
    covered = geometry_mask([inputs.common], out_shape=shape, transform=hr_transform, invert=True)
    usable = guide_valid | (guide_holes(guide_valid, max_hole_pixels(s)) & covered)
    output_valid = np.repeat(np.repeat(source_valid, s, axis=0), s, axis=1) & usable
    if plan.aoi is not None:
        output_valid &= geometry_mask(
            [plan.aoi], out_shape=shape, transform=hr_transform, invert=True
        )
    if not output_valid.any():
        return None
    return TileJob(
        index=index,
        lr_window=lr_window,
        hr_window=hr_window,
        source=values,
        source_valid=source_valid,
        guide=fill_guide(guide_values, guide_valid),
        output_valid=output_valid,
        scale=s,
        stats=stats,
        config=dataclasses.replace(config, seed=config.seed + index),
    )


def with_margin(plan: RunPlan, job: TileJob | None, tile: Tile) -> TileJob | None:
    """``job`` (read around ``tile``, with context) as the tile's job: its own windows, and
    where the tile lies in its arrays; None when the tile itself has no valid output pixel."""
    if job is None:
        return None
    s = plan.grid.scale
    row = (int(tile.lr_window.row_off) - int(job.lr_window.row_off)) * s
    col = (int(tile.lr_window.col_off) - int(job.lr_window.col_off)) * s
    core = (row, col, int(tile.hr_window.height), int(tile.hr_window.width))
    if not job.output_valid[row : row + core[2], col : col + core[3]].any():
        return None
    return dataclasses.replace(
        job, lr_window=tile.lr_window, hr_window=tile.hr_window, core=core
    )


def tile_jobs(
    plan: RunPlan,
    stats: Normalisation,
    config: FitConfig,
    pending: set[int],
    on_skip: Callable[[int], None],
    margin: int = 0,
) -> Iterator[TileJob]:
    """Read each pending tile into a job, lazily; tiles without a valid output pixel are
    reported to ``on_skip`` (with their index) instead. With a ``margin`` each job holds that
    many source pixels of context around its tile (a forward pass, not a fit: a fit's loss
    would cover the margin too)."""
    for tile in plan.tiles:
        if tile.index not in pending:
            continue
        job = None
        if plan.in_aoi(tile):
            if margin:
                window = plan.grid.grown(tile.lr_window, margin)
                job = with_margin(plan, read_job(plan, stats, config, tile.index, window), tile)
            else:
                job = read_job(plan, stats, config, tile.index, tile.lr_window)
        if job is None:
            on_skip(tile.index)
        else:
            yield job


def batched(jobs: Iterable[TileJob], size: int) -> Iterator[list[TileJob]]:
    """Group jobs into batches of up to ``size`` tiles of one shape, lazily (at most ``size``
    jobs per shape held); tiles of other shapes (a raster smaller than a tile) form their own
    batches."""
    waiting: dict[Any, list[TileJob]] = {}
    for job in jobs:
        group = waiting.setdefault(job.shape_key, [])
        group.append(job)
        if len(group) >= size:
            yield waiting.pop(job.shape_key)
    yield from waiting.values()
