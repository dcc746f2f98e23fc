"""Making the output average back to the source exactly (``--consistency exact``).

Hydrology, volume and mass-balance users need the super-resolved DEM to pool back to the DEM
they started from; the fit's cycle loss only makes it do so approximately. The projection
adds the pooled residual back, spread smoothly: a few passes of back-projection (the residual
on the source grid, upsampled bilinearly with weights normalised over the valid source
pixels, added with over-relaxation), then the small remainder added to every pixel of its
block, which makes ``pool(output) == source`` hold to float round-off while leaving blocks no
larger than the remainder.

Every step is local (a pass reaches one source pixel further), so a window read with
:data:`HALO` source pixels of context gives exactly the whole raster's result on its core:
the write stage projects block by block, tiles and blending included.

A source pixel is held to its value when all of its output pixels are valid; the output
pixels of a partly valid block (a nodata, guide-gap or AOI edge) are moved with their
neighbours but not held, and invalid pixels stay invalid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .degradation import average_pool, check_blocks
from .errors import InputError

CONSISTENCY_MODES = ("off", "exact")
"""``off``: the fit's output as it is; ``exact``: projected so that it pools to the source."""

DEFAULT_CONSISTENCY = "exact"
"""What runs use unless told. Measured (BENCHMARKS.md, "consistency"): RMSE lower on every
pair (RMNP x2/x4 -5.1/-4.2 %, the 13 Middlebury crops -4.1 % at x4 and -0.8 % at x8 on the
mean), slope RMSE lower on the DEM and 1-10 % higher on depth maps."""

SMOOTH_PASSES = 12
"""Back-projection passes before the exact step; with :data:`RELAXATION` each shrinks the
roughest residual (a checkerboard on the source grid) by at least 0.6."""

RELAXATION = 1.6
"""Over-relaxation of each pass: 2 / (smallest + largest gain of pool(upsample)), 0.25 and 1."""

HALO = SMOOTH_PASSES + 2
"""Source pixels of context around a window for its projected core to equal the raster's."""


def check_consistency(mode: str) -> str:
    """``mode`` if it is one of :data:`CONSISTENCY_MODES`, else a one-line
    :class:`~mmsr_geo.errors.InputError`."""
    if mode not in CONSISTENCY_MODES:
        raise InputError(
            f"unknown consistency {mode!r}: choose one of {', '.join(CONSISTENCY_MODES)}"
        )
    return mode


def project_consistent(
    values: np.ndarray,
    valid: np.ndarray,
    source: np.ndarray,
    source_valid: np.ndarray,
    scale: int,
) -> np.ndarray:
    """``values`` (H, W) moved so that each fully valid ``scale`` x ``scale`` block averages to
    its pixel of the (h, w) ``source``; ``H = h * scale``, ``W = w * scale``.

    Returns float64 values, NaN where ``valid`` is False.
    """
    s = check_blocks(values, valid, source, scale)
    held = _held(valid, source_valid, s)
    target = np.where(held, source, 0.0)
    out = np.where(valid, values, 0.0).astype(np.float64)
    weights = _upsample(held.astype(np.float64), s)
    reach = weights > 1e-12
    for _ in range(SMOOTH_PASSES):
        residual = np.where(held, target - average_pool(out, s), 0.0)
        spread = np.divide(_upsample(residual, s), weights, out=np.zeros_like(out), where=reach)
        out += np.where(valid, RELAXATION * spread, 0.0)
    residual = np.where(held, target - average_pool(out, s), 0.0)
    out += np.where(valid, np.repeat(np.repeat(residual, s, axis=0), s, axis=1), 0.0)
    return np.where(valid, out, np.nan)


def pooled_error(
    values: np.ndarray, valid: np.ndarray, source: np.ndarray, source_valid: np.ndarray, scale: int
) -> float:
    """Largest |block mean - source| over fully valid blocks (0 when there are none)."""
    s = int(scale)
    held = _held(valid, source_valid, s)
    if not held.any():
        return 0.0
    pooled = average_pool(np.where(valid, values, 0.0), s)
    return float(np.abs(pooled - source)[held].max())


def _held(valid: np.ndarray, source_valid: np.ndarray, s: int) -> np.ndarray:
    """Source pixels held to their value: valid, and every output pixel of the block too."""
    h, w = source_valid.shape
    return source_valid & valid.reshape(h, s, w, s).all(axis=(1, 3))


def _upsample(values: np.ndarray, s: int) -> np.ndarray:
    """Bilinear, pixel centres aligned (edges repeated), float64."""
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    return F.interpolate(tensor, scale_factor=s, mode="bilinear", align_corners=False)[0, 0].numpy()
