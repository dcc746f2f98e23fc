"""Blending overlapping tile predictions into seamless output blocks.

Each tile's prediction is weighted by a separable window that stays near zero on the tile's
outermost pixels and then rises as a raised cosine to one across the overlap, so neighbouring
tiles cross-fade and no tile edge shows (as in MONAI's sliding-window inference). The weights
never reach zero, so pixels at the raster's edge, covered by a single tile, are still defined;
the blend divides by the summed weights, so a constant prediction blends to that constant.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from rasterio.windows import Window

WEIGHT_FLOOR = 1e-3


def _ramp(length: int, ramp: int) -> np.ndarray:
    """1-D window: floor, raised cosine, one; mirrored at the far end.

    The outer quarter of the ramp stays at the floor: a tile's border pixels are its worst
    (zero padding in the convolutions and filters), and even a few percent of weight there
    leaves a faint line in a hillshade (measured by ``benchmarks/seams.py``). The cosine runs
    over the middle half, symmetric about the ramp's centre, so two neighbours' weights sum to
    one across an overlap of exactly ``ramp`` pixels.
    """
    weights = np.ones(length, dtype=np.float64)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        margin = ramp // 4
        rising = np.ones(ramp, dtype=np.float64)
        rising[:margin] = 0.0
        span = ramp - 2 * margin
        rising[margin : ramp - margin] = 0.5 - 0.5 * np.cos(np.pi * (np.arange(span) + 0.5) / span)
        weights[:ramp] = rising
        weights[length - ramp :] = rising[::-1]
    return np.maximum(weights, WEIGHT_FLOOR)


def weight_window(height: int, width: int, ramp: int) -> np.ndarray:
    """(height, width) blending weights of one tile, ramped over ``ramp`` HR pixels."""
    return np.outer(_ramp(height, ramp), _ramp(width, ramp))


def blend_block(
    block: Window,
    contributions: Iterable[tuple[Window, np.ndarray]],
    ramp: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of the tile predictions over an HR ``block``.

    Args:
        block: the HR window to produce.
        contributions: (tile HR window, tile prediction) pairs; NaN marks nodata in a prediction.
        ramp: width of the weight ramp in HR pixels (the overlap x scale).

    Returns:
        (values float64, valid bool) of the block's shape; valid is False where no tile has a
        finite value.
    """
    h, w = int(block.height), int(block.width)
    total = np.zeros((h, w), dtype=np.float64)
    weight_sum = np.zeros((h, w), dtype=np.float64)
    for window, prediction in contributions:
        r0 = max(int(window.row_off), int(block.row_off))
        c0 = max(int(window.col_off), int(block.col_off))
        r1 = min(int(window.row_off + window.height), int(block.row_off + block.height))
        c1 = min(int(window.col_off + window.width), int(block.col_off + block.width))
        if r1 <= r0 or c1 <= c0:
            continue
        weights = weight_window(int(window.height), int(window.width), ramp)
        src = (
            slice(r0 - int(window.row_off), r1 - int(window.row_off)),
            slice(c0 - int(window.col_off), c1 - int(window.col_off)),
        )
        dst = (
            slice(r0 - int(block.row_off), r1 - int(block.row_off)),
            slice(c0 - int(block.col_off), c1 - int(block.col_off)),
        )
        values = prediction[src].astype(np.float64)
        finite = np.isfinite(values)
        wts = np.where(finite, weights[src], 0.0)
        total[dst] += np.where(finite, values, 0.0) * wts
        weight_sum[dst] += wts
    valid = weight_sum > 0
    values = np.divide(total, weight_sum, out=np.zeros_like(total), where=valid)
    return values, valid


def blend_windows(
    shape: tuple[int, int],
    parts: Iterable[tuple[tuple[int, int], np.ndarray]],
    ramp: int,
) -> np.ndarray:
    """Blend predictions placed at (row, col) origins into one (H, W) float32 array, NaN where
    none has a value: the parts of a tile that had to be split to fit the device."""
    block = Window(0, 0, shape[1], shape[0])
    contributions = [
        (Window(col, row, part.shape[1], part.shape[0]), part) for (row, col), part in parts
    ]
    values, valid = blend_block(block, contributions, ramp)
    return np.where(valid, values, np.nan).astype(np.float32)
