"""Error measures: RMSE (the paper's metric), MAE, and slope RMSE for DEMs.

Plain functions of arrays, shared by the evaluation protocol, the strategy selection one scale
down and the benchmarks, so that every figure is measured the same way.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError

PixelSize = float | tuple[float, float]
"""Ground size of one pixel: one number for square pixels, else (x size, y size)."""

METRES_PER_DEGREE = 111_320.0
"""Length of a degree of latitude (spherical Earth): good to a few per cent over a raster a
degree tall, enough for slopes and hillshades."""


def geographic_pixel_metres(
    x_degrees: float, y_degrees: float, latitude: float
) -> tuple[float, float]:
    """(x, y) ground size in metres of a pixel of ``x_degrees`` x ``y_degrees`` at
    ``latitude``: a degree of longitude shrinks with the cosine of the latitude."""
    return (
        abs(x_degrees) * METRES_PER_DEGREE * math.cos(math.radians(latitude)),
        abs(y_degrees) * METRES_PER_DEGREE,
    )


def _errors(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    prediction = np.asarray(prediction, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if prediction.shape != reference.shape:
        raise InputError(
            f"prediction {prediction.shape} and reference {reference.shape} differ in shape"
        )
    diff = prediction - reference
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != diff.shape:
            raise InputError(f"mask {mask.shape} does not match the images {diff.shape}")
        diff = diff[mask]
    diff = np.ravel(diff)
    if diff.size == 0:
        raise InputError("no pixel to compare (empty image or empty mask)")
    return diff


def rmse(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error over all pixels (or those where ``mask`` is True).

    The paper's metric: in the reference's units (0-255 for the Middlebury depth maps, metres
    for DEMs), dominated by the large errors at depth edges where guidance matters most.
    """
    return float(np.sqrt(np.mean(_errors(prediction, reference, mask) ** 2)))


def mae(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error: the typical error, less swayed by a few edge pixels than RMSE."""
    return float(np.mean(np.abs(_errors(prediction, reference, mask))))


def pixel_sizes(pixel_size: PixelSize) -> tuple[float, float]:
    """(x, y) ground size of a pixel given as one number or (x, y), checked."""
    if isinstance(pixel_size, (tuple, list)):
        if len(pixel_size) != 2:
            raise InputError(f"pixel_size must be a number or (x, y), got {pixel_size!r}")
        dx, dy = (abs(float(v)) for v in pixel_size)
    else:
        dx = dy = abs(float(pixel_size))
    if not (math.isfinite(dx) and math.isfinite(dy)) or dx == 0 or dy == 0:
        raise InputError(f"pixel_size must be finite and non-zero, got {pixel_size!r}")
    return dx, dy


def slope(dem: np.ndarray, pixel_size: PixelSize) -> np.ndarray:
    """Slope in degrees, ``atan(|grad z|)``, with central differences (one-sided at borders).

    ``pixel_size`` must be in the DEM's height units (metres for a projected DEM in metres):
    with degrees of latitude/longitude the slopes would be meaningless.
    """
    dx, dy = pixel_sizes(pixel_size)
    dz_dy, dz_dx = np.gradient(np.asarray(dem, dtype=np.float64), dy, dx)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))


def slope_mask(mask: np.ndarray) -> np.ndarray:
    """Pixels whose slope uses only valid pixels: the pixel and its 4 neighbours are valid.

    np.gradient reads the neighbours above/below and left/right, so a slope next to nodata
    would measure the fill, not the terrain.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def slope_rmse(
    prediction: np.ndarray,
    reference: np.ndarray,
    pixel_size: PixelSize,
    mask: np.ndarray | None = None,
) -> float:
    """RMSE of the slope (degrees) of two DEMs: do derived terrain products survive?

    Height RMSE can look good while the surface is full of small steps or ripples (which wreck
    slope, aspect and hydrology derived from it); slope RMSE exposes them. ``mask`` marks valid
    DEM pixels; slopes touching an invalid pixel are left out.
    """
    valid = None if mask is None else slope_mask(mask)
    return rmse(slope(prediction, pixel_size), slope(reference, pixel_size), valid)
