"""Training crops for the raster-level fit, sampled across the whole raster.

Terrain that training never saw is fitted worse (issue 21: about 8 % on the half of a raster
left out), so the crops are stratified over the tile plan: the tiles are visited in an order
spread over the raster, one crop centred on a random pixel of each (several per tile when the
raster has fewer tiles than the pool holds). A crop is read exactly as a tile is
(:func:`~mmsr_geo.run.tile_jobs.read_job`: source mask, guide holes, footprint, AOI), and
only source pixels whose whole output block is valid enter the loss, so nodata, areas outside
the guide and outside the AOI never train the network; a crop with too little of them is
drawn again around its tile, then left out.
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from ..degradation import average_pool
from ..fit_config import FitConfig
from ..raster_fit import Crop, CropBudget
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import read_job

MIN_VALID_SHARE = 0.25
"""A crop enters the pool when at least this share of its source pixels can enter the loss."""
ATTEMPTS = 4
"""Positions tried in a tile before it gives no crop."""


def crop_side(plan: RunPlan, budget: CropBudget) -> tuple[int, int]:
    """(width, height) of the crops in source pixels: the budget's, or the whole raster's
    side where the raster is smaller (a small raster is trained on whole)."""
    grid = plan.grid
    return min(budget.crop_size, grid.lr_width), min(budget.crop_size, grid.lr_height)


def sample_crops(
    plan: RunPlan, stats: RasterStatistics, config: FitConfig, budget: CropBudget
) -> list[Crop]:
    """Up to ``budget.pool`` crops stratified over the tile plan (see the module docstring),
    in a fixed order for a given ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    width, height = crop_side(plan, budget)
    candidates = [t for t in plan.tiles if plan.in_aoi(t)]
    if not candidates:
        return []
    visits = _visits(len(candidates), budget.pool)
    crops: list[Crop] = []
    for position in visits:
        tile = candidates[position]
        for _ in range(ATTEMPTS):
            crop = _read_crop(plan, stats, config, tile.lr_window, width, height, rng)
            if crop is not None:
                crops.append(crop)
                break
    return crops


def _visits(tiles: int, pool: int) -> list[int]:
    """Tile positions to sample, ``pool`` in all: every tile once (again while the pool is not
    full), or, with more tiles than the pool, tiles evenly spaced through the row-major plan
    (so they spread over rows and columns alike)."""
    if tiles >= pool:
        return [int(i) for i in np.linspace(0, tiles - 1, pool).round()]
    return [i % tiles for i in range(pool)]


def _read_crop(
    plan: RunPlan,
    stats: RasterStatistics,
    config: FitConfig,
    tile: Window,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> Crop | None:
    """A crop centred on a random pixel of ``tile`` (shifted to stay inside the raster): a
    tile visited again gives another crop, even when the crop is as large as the tile."""
    grid = plan.grid
    centre_col = int(tile.col_off) + int(rng.integers(0, int(tile.width)))
    centre_row = int(tile.row_off) + int(rng.integers(0, int(tile.height)))
    col = min(max(0, centre_col - width // 2), grid.lr_width - width)
    row = min(max(0, centre_row - height // 2), grid.lr_height - height)
    job = read_job(plan, stats.normalisation, config, -1, Window(col, row, width, height))
    if job is None:
        return None
    s = grid.scale
    whole_block = average_pool(job.output_valid.astype(np.float64), s) == 1.0
    valid = job.source_valid & whole_block
    if valid.mean() < MIN_VALID_SHARE:
        return None
    return Crop(source=job.source, valid=valid, guide=job.guide)
