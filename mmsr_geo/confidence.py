"""Where the super-resolution can be trusted (``--confidence``): a per-pixel uncertainty band.

The band is the *local departure from interpolation*: the mean, over a window of about one
source pixel, of |output - bicubic upsampling of the source|, in the source's units. Where the
output stays close to a smooth interpolation of the source, little was taken from the guide
and little can be wrong; where the guide moved it far (edges, ridges, texture the guide
suggests), the errors concentrate. Measured against the true error (BENCHMARKS.md,
"Confidence band"): on 12 held-out Middlebury crops a Spearman correlation with |error| of
0.72 on the mean, the least-confident 10 % of pixels holding 84 % of the squared error; on the
RMNP DEM much less (0.29-0.32, the least-confident 10 % with 1.5-1.9x the mean error of the
rest). Its size is of the error's order (mean |error| / mean band 0.36-2.0). It is an indication,
not an error bar: a guide edge that the terrain does not have raises it without any error,
and an error the guide does not show (a smooth but wrong surface) leaves it low.

Every step is local (the bicubic reaches two source pixels, the window half a source pixel),
so a window read with the consistency stage's halo gives exactly the whole raster's band.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .degradation import bicubic_upsample, check_blocks

CONFIDENCE_NODATA = -9999.0
"""The band's nodata value (the band itself is >= 0)."""

FILL_RADIUS = 2
"""Source pixels of no data are filled from valid ones this close (the bicubic's reach), so
that they do not spread into the valid output around them."""


def confidence_path(output: str | os.PathLike[str]) -> Path:
    """``dem_x4.tif`` -> ``dem_x4_confidence.tif``: the band's GeoTIFF, beside the output."""
    path = Path(output)
    return path.with_name(f"{path.stem}_confidence{path.suffix}")


def uncertainty(
    values: np.ndarray,
    valid: np.ndarray,
    source: np.ndarray,
    source_valid: np.ndarray,
    scale: int,
) -> np.ndarray:
    """The uncertainty band of the (H, W) output ``values`` of the (h, w) ``source``
    (``H = h * scale``), in the source's units; NaN where ``valid`` is False."""
    s = check_blocks(values, valid, source, scale)
    smooth = bicubic_upsample(_filled(source, source_valid), s)
    departure = np.where(valid, np.abs(values - smooth), 0.0)
    width = s + 1 - s % 2  # odd, at least one source pixel
    total = _box_sum(departure, width)
    count = _box_sum(valid.astype(np.float64), width)
    band = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.where(valid, band, np.nan)


def _filled(source: np.ndarray, source_valid: np.ndarray) -> np.ndarray:
    """``source`` with its invalid pixels replaced by the mean of the valid ones within
    :data:`FILL_RADIUS` (0 where there are none: no valid output is that far from data)."""
    values = np.where(source_valid, source, 0.0).astype(np.float64)
    width = 2 * FILL_RADIUS + 1
    total = _box_sum(values, width)
    count = _box_sum(source_valid.astype(np.float64), width)
    near = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.where(source_valid, values, near)


def _box_sum(values: np.ndarray, width: int) -> np.ndarray:
    """Sum over a ``width`` x ``width`` window centred on every pixel (zeros outside)."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    pad = width // 2
    return (
        F.avg_pool2d(F.pad(tensor, (pad, pad, pad, pad)), width, stride=1)[0, 0].numpy()
        * width
        * width
    )
