"""Whole-raster statistics, read once per run from decimated reads.

Every tile of a raster is normalised with the same statistics (otherwise neighbouring tiles
disagree and seams appear), and the source's range decides whether an integer output type
can hold it: both come from one bounded read of the source and of the guide where it meets
the source, however large the rasters are.
"""

from __future__ import annotations

from dataclasses import dataclass

from rasterio.windows import Window

from ..errors import InputError
from ..footprints import pixel_window, reprojected
from ..guide import pixel_aligned
from ..normalisation import Normalisation, normalisation_stats
from ..raster_io import read_decimated
from ..writer import is_float
from .plan import RunPlan


@dataclass(frozen=True)
class RasterStatistics:
    """What the whole raster looks like: z-score statistics and the source's range."""

    normalisation: Normalisation
    source_min: float
    source_max: float


def raster_statistics(plan: RunPlan) -> RasterStatistics:
    """Statistics from decimated reads: the source's valid pixels, and the guide sampled on
    its own grid over the area it shares with the source."""
    inputs = plan.inputs
    values, valid = read_decimated(inputs.source, [inputs.band], role="source")
    if not valid.any():
        raise InputError(f"the source {inputs.source.name} has no valid pixel (all nodata)")
    guide = inputs.guide_dataset
    window = Window(0, 0, guide.width, guide.height)
    if not pixel_aligned(guide, plan.grid):  # the part of the guide the source covers
        shared = reprojected(inputs.common, plan.grid.crs, guide.crs)
        window = pixel_window(guide.transform, shared, guide.width, guide.height)
    guide_values, guide_valid = read_decimated(guide, inputs.guide_bands, window, role="guide")
    if not guide_valid.any():
        raise InputError(f"the guide {guide.name} has no valid pixel where it meets the source")
    samples = guide_values[:, guide_valid][:, None, :]
    source_values = values[0][valid]
    return RasterStatistics(
        normalisation=normalisation_stats(values[0], samples, valid),
        source_min=float(source_values.min()),
        source_max=float(source_values.max()),
    )


def check_value_range(plan: RunPlan, stats: RasterStatistics) -> None:
    """Refuse an integer output type that cannot hold the source's values (they would all be
    clipped, and the output would be garbage), before any tile is fitted."""
    encoding = plan.encoding
    if is_float(encoding.dtype):
        return
    lo, hi = encoding.physical_range()
    if stats.source_min < lo or stats.source_max > hi:
        raise InputError(
            f"the source's values ({stats.source_min:.6g} to {stats.source_max:.6g}) do not "
            f"fit --dtype {encoding.dtype} (which holds {lo:.6g} to {hi:.6g}"
            + (
                f" with the source's scale {encoding.scale:g} and offset {encoding.offset:g}"
                if (encoding.scale, encoding.offset) != (1.0, 0.0)
                else ""
            )
            + "): use float32 or an integer type that holds them"
        )
