"""The register stage: how far the guide's content is displaced from the source's, once per
run, and a plan that reads the guide moved back when the estimate is trusted.

The estimate (:func:`mmsr_geo.registration.estimate_offset`) looks at one window at the
raster's centre, :data:`SAMPLE_SIDE` source pixels a side at most, read exactly as a tile is
(nodata, guide gaps, AOI). It comes before the strategy is chosen, so that the choice, the
raster-level training and every tile see the corrected guide. It is a pure function of the
inputs, so a resumed run finds the same offset.
"""

from __future__ import annotations

import logging

import numpy as np
from rasterio.windows import Window

from ..grid import OutputGrid, ground_pixel_size
from ..guide import AlignedGuide
from ..registration import NO_REGISTRATION, Registration, estimate_offset, untrusted
from .plan import RunPlan
from .statistics import RasterStatistics
from .tile_jobs import read_job

log = logging.getLogger(__name__)

SAMPLE_SIDE = 160
"""Source pixels a side of the window the offset is estimated on (or the whole raster)."""


def register_guide(plan: RunPlan, stats: RasterStatistics) -> tuple[RunPlan, Registration]:
    """The plan reading the guide corrected by the estimated offset (or as given), and the
    estimate; ``--register off`` estimates nothing."""
    if plan.request.register == "off":
        return plan, NO_REGISTRATION
    found = _estimate(plan, stats)
    _report(found, plan)
    if not found.applied:
        return plan, found
    inputs = plan.inputs
    moved = AlignedGuide(
        inputs.guide_dataset, inputs.guide_bands, plan.grid, shift=found.correction
    )
    return plan.with_guide(moved), found


def registration_facts(found: Registration, grid: OutputGrid) -> dict[str, object]:
    """The estimate for the tags and reports, in output pixels and in metres (the grid's
    units when it has no CRS): only what the inputs determine, no timing."""
    facts = found.as_dict(_pixel_metres(grid))
    facts.pop("seconds")
    return facts


def _pixel_metres(grid: OutputGrid) -> tuple[float, float]:
    """(y, x) size of an output pixel in metres."""
    return ground_pixel_size(grid, (grid.height, grid.width))


def _estimate(plan: RunPlan, stats: RasterStatistics) -> Registration:
    grid = plan.grid
    width, height = min(SAMPLE_SIDE, grid.lr_width), min(SAMPLE_SIDE, grid.lr_height)
    window = Window((grid.lr_width - width) // 2, (grid.lr_height - height) // 2, width, height)
    job = read_job(plan, stats.normalisation, plan.schedule.base, -1, window)
    if job is None:
        return untrusted("no valid data at the raster's centre to register the guide on")
    s = grid.scale
    h, w = job.source.shape
    covered = job.output_valid.reshape(h, s, w, s).all(axis=(1, 3))
    valid = job.source_valid & covered
    source = np.where(valid, job.source, job.source[valid].mean() if valid.any() else 0.0)
    return estimate_offset(source, job.guide, s, valid=valid)


def _report(found: Registration, plan: RunPlan) -> None:
    grid = plan.grid
    s = grid.scale
    record = found.as_dict(_pixel_metres(grid))
    x, y = record["dx_metres"], record["dy_metres"]
    text = (
        f"guide registration: {found.reason} (estimated offset {found.dx:+.2f}, "
        f"{found.dy:+.2f} output pixels along columns and rows, {x:+.4g} m, {y:+.4g} m, "
        f"{found.shift / s:.2f} source pixels)"
    )
    if found.applied:  # only offsets of at least half a source pixel are corrected
        log.warning("the guide is displaced by more than half a source pixel: %s", text)
    else:
        log.info(text)
