"""Z-score statistics of source and guide, and filling of invalid source pixels.

Statistics are a value object so that every tile of one raster can be normalised with the
whole raster's statistics (otherwise neighbouring tiles disagree and seams appear).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

_TINY = 1e-12


@dataclass(frozen=True)
class Normalisation:
    """Mean and standard deviation of the source and of each guide band."""

    source_mean: float
    source_std: float
    guide_mean: tuple[float, ...]
    guide_std: tuple[float, ...]

    def guide_mean_array(self) -> np.ndarray:
        return np.asarray(self.guide_mean, dtype=np.float32)

    def guide_std_array(self) -> np.ndarray:
        return np.asarray(self.guide_std, dtype=np.float32)


def normalisation_stats(
    source: np.ndarray, guide: np.ndarray, valid: np.ndarray | None = None
) -> Normalisation:
    """Z-score statistics over the valid source pixels and every guide pixel.

    A constant source, or a guide whose bands are all constant, has nothing to learn from and
    is an error; a single constant guide band gets std 1 (it becomes zeros, harmlessly).
    """
    values = source[valid] if valid is not None else source.ravel()
    source_std = float(values.std())
    if source_std < _TINY:
        raise InputError("the source is constant over its valid pixels: nothing to super-resolve")
    guide = guide if guide.ndim == 3 else guide[None]
    bands = guide.reshape(guide.shape[0], -1).astype(np.float64)
    guide_std = bands.std(axis=1)
    if (guide_std < _TINY).all():
        raise InputError("the guide is constant: it carries no structure to transfer")
    guide_std = np.where(guide_std < _TINY, 1.0, guide_std)
    return Normalisation(
        source_mean=float(values.mean()),
        source_std=source_std,
        guide_mean=tuple(float(m) for m in bands.mean(axis=1)),
        guide_std=tuple(float(s) for s in guide_std),
    )


def fill_invalid(source: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy of ``source`` with invalid pixels filled by inverse-distance weighting (GDAL).

    Pixels farther than the whole image from any valid one cannot occur; the mean of the valid
    pixels is the last resort for anything GDAL leaves unfilled. GDAL is imported only when
    there is something to fill, so fits of complete arrays run where only torch and numpy are
    installed (a GPU machine's image).
    """
    if valid.all():
        return source.astype(np.float64)
    from rasterio.fill import fillnodata

    filled = np.where(valid, source, 0.0).astype(np.float32)
    filled = fillnodata(
        filled, mask=valid.astype(np.uint8), max_search_distance=float(max(source.shape) * 2)
    )
    filled = filled.astype(np.float64)
    leftover = ~np.isfinite(filled)
    if leftover.any():
        filled[leftover] = source[valid].mean()
    return filled
