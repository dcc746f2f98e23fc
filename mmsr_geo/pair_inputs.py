"""One (source, guide) pair checked and z-scored, ready for the device.

Every fit and every prediction takes its inputs through :func:`normalised_pair`: the same
checks (shapes, scale, finite values, a mask with valid pixels) and the same normalisation
(the raster's statistics when given, so neighbouring tiles agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .degradation import check_scale
from .errors import InputError
from .normalisation import Normalisation, fill_invalid, normalisation_stats


def check_pair(
    source: np.ndarray, guide: np.ndarray, scale: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    check_scale(scale)
    source = np.asarray(source)
    guide = np.asarray(guide)
    if source.ndim != 2:
        raise InputError(f"source must be a 2-D (h, w) array, got shape {source.shape}")
    if guide.ndim == 2:
        guide = guide[None]
    if guide.ndim != 3:
        raise InputError(f"guide must be a (C, H, W) or (H, W) array, got shape {guide.shape}")
    h, w = source.shape
    if guide.shape[1:] != (scale * h, scale * w):
        raise InputError(
            f"guide is {guide.shape[1]}x{guide.shape[2]} but a x{scale} source of {h}x{w} "
            f"needs a {scale * h}x{scale * w} guide"
        )
    if mask is None:
        valid = np.ones((h, w), dtype=bool)
    else:
        valid = np.asarray(mask, dtype=bool)
        if valid.shape != (h, w):
            raise InputError(f"mask must have the source's shape {(h, w)}, got {valid.shape}")
    if not valid.any():
        raise InputError("the mask leaves no valid source pixel")
    if not np.isfinite(source[valid]).all():
        raise InputError(
            "source has NaN or infinite values at valid pixels: pass a mask that excludes them"
        )
    if not np.isfinite(guide).all():
        raise InputError("guide has NaN or infinite values: fill or mask them first")
    return source.astype(np.float64), guide.astype(np.float32), valid


@dataclass(frozen=True)
class NormalisedPair:
    """One pair, checked and z-scored, as float32 arrays ready for the device."""

    source: np.ndarray
    valid: np.ndarray
    stats: Normalisation
    lr: np.ndarray
    guide: np.ndarray


def normalised_pair(
    source: np.ndarray,
    guide: np.ndarray,
    scale: int,
    mask: np.ndarray | None,
    stats: Normalisation | None,
) -> NormalisedPair:
    source, guide, valid = check_pair(source, guide, scale, mask)
    if stats is None:
        stats = normalisation_stats(source, guide, valid)
    elif len(stats.guide_mean) != guide.shape[0]:
        raise InputError(
            f"stats describe {len(stats.guide_mean)} guide bands, the guide has {guide.shape[0]}"
        )
    lr = (fill_invalid(source, valid) - stats.source_mean) / stats.source_std
    mean = stats.guide_mean_array()[:, None, None]
    std = stats.guide_std_array()[:, None, None]
    guide_z = ((guide - mean) / std).astype(np.float32)
    return NormalisedPair(source, valid, stats, lr.astype(np.float32), guide_z)
