"""The run's open inputs: source and guide datasets, their bands, the output grid and the
guide brought onto it.

Opening is where a wrong file, band or scale is found, so it happens in the plan stage,
before any work; the datasets stay open (and are closed with the plan) so that every later
stage reads windows from them without opening a file again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

from rasterio.io import DatasetReader
from shapely.geometry.base import BaseGeometry

from ..grid import OutputGrid, output_grid
from ..guide import AlignedGuide, check_overlap, pixel_aligned
from ..raster_io import open_raster, select_band, select_guide_bands

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """Source and guide as the run reads them."""

    source: DatasetReader
    band: int
    """1-based source band."""
    guide_dataset: DatasetReader
    guide_bands: tuple[int, ...]
    grid: OutputGrid
    guide: AlignedGuide
    """The guide on the output grid, read by HR windows."""
    common: BaseGeometry
    """Where source and guide both exist, in the output CRS."""


def open_inputs(
    stack: contextlib.ExitStack,
    source: str | os.PathLike[str],
    guide: str | os.PathLike[str],
    scale: int,
    band: int | None,
    guide_bands: tuple[int, ...] | None,
) -> Inputs:
    """Open and check both rasters (files, bands, scale, overlap); ``stack`` closes them."""
    source_ds = stack.enter_context(open_raster(source, "source"))
    guide_ds = stack.enter_context(open_raster(guide, "guide"))
    chosen_band = select_band(source_ds, band)
    chosen_guide_bands = select_guide_bands(guide_ds, guide_bands)
    grid = output_grid(source_ds, scale)
    if grid.has_transform and not grid.georeferenced:
        log.warning(
            "the source %s has a geotransform but no CRS: the output keeps the transform "
            "(refined by the scale) and has no CRS either",
            source_ds.name,
        )
    if pixel_aligned(guide_ds, grid):
        log.warning(
            "source or guide is not georeferenced: assuming the guide is exactly %d x the "
            "source's pixel grid",
            grid.scale,
        )
    aligned = stack.enter_context(AlignedGuide(guide_ds, chosen_guide_bands, grid))
    return Inputs(
        source=source_ds,
        band=chosen_band,
        guide_dataset=guide_ds,
        guide_bands=chosen_guide_bands,
        grid=grid,
        guide=aligned,
        common=check_overlap(guide_ds, grid),
    )
