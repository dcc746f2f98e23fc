"""A source split into its smooth local level and the detail around it.

One network trained for a whole raster must serve every part of it, and a raster that holds
different scenes (a city and its hills, a mosaic of campaigns) spans a far wider range of
values than any one tile: a per-tile fit only has to reproduce its own tile's range, the
raster network every range at once, through 1x1 convolutions on the source. Fed the detail
(the source minus a Gaussian-weighted local mean, scaled to unit spread) and adding the level
back to its output, the network learns one mapping that holds at every level. Measured both
ways (BENCHMARKS.md, "Fit modes"): on the 16-tile Middlebury mosaic the raster-level fit went
from 4.196 to 3.737 at the same cost, on the RMNP DEM x4 from 35.84 to 39.73, so it is an
option (``--level-sigma``), off by default.

The level is computed from the tensor the network is given (a crop, a tile with its margin),
normalised by the kernel's weight inside it, so no halo has to be read: near an edge it is
the mean of what lies inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LEVEL_SIGMA = 3.0
"""Standard deviation, in source pixels, of the Gaussian the level is averaged with. Measured
on the 16-tile Middlebury mosaic (raster-level fit, 900 steps): 1.5 -> 3.56, 3 -> 3.33,
8 -> 3.44, without the split 4.15 (a small sigma leaves the network little to learn, as a
residual start on the bicubic does; a large one leaves wide ranges)."""
MAX_GAIN = 1e4
"""Largest factor the detail is scaled up by (a source that is almost its level)."""


def level_radius(sigma: float) -> int:
    """Source pixels around a pixel that its level averages over (3 sigma)."""
    return max(1, math.ceil(3 * sigma))


def local_level(source: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 1, h, w) Gaussian-weighted mean of ``source`` around every pixel (radius
    :func:`level_radius`), each weight taken over the pixels inside the tensor."""
    radius = level_radius(sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=source.dtype, device=source.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    rows, cols = kernel.view(1, 1, -1, 1), kernel.view(1, 1, 1, -1)

    def blur(values: torch.Tensor) -> torch.Tensor:
        values = F.conv2d(values, rows, padding=(radius, 0))
        return F.conv2d(values, cols, padding=(0, radius))

    weight = blur(torch.ones_like(source[:1]))
    return blur(source) / weight


def detail_gain(source: torch.Tensor, weight: torch.Tensor, sigma: float) -> float:
    """The factor that scales the detail of ``source`` (B, 1, h, w) to unit standard deviation
    over the pixels where ``weight`` is 1."""
    detail = (source - local_level(source, sigma))[weight > 0]
    spread = float(detail.std()) if detail.numel() > 1 else 0.0
    return min(MAX_GAIN, 1.0 / spread) if spread > 0 else 1.0
