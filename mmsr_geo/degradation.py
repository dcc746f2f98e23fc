"""The paper's degradation and its baseline: average pooling by the scale, and bicubic.

The paper makes the LR source by average pooling ("we adopt pooling to generate LR depth and
DEM"), which is also exactly what the fit's cycle loss assumes; bicubic upsampling is the
baseline a guided method must beat. Both live here, below the evaluation protocol and the
strategy selection (which scores candidates one scale down with the same two operations), so
that neither borrows them from the other.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError


def check_scale(scale: object) -> int:
    """``scale`` as an int; anything but an integer >= 2 is an :class:`InputError`."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"scale must be an integer >= 2, got {scale!r}")
    return int(scale)


def crop_to_multiple(array: np.ndarray, scale: int) -> np.ndarray:
    """``array`` (..., H, W) cut at the bottom and right to a multiple of ``scale``.

    Cropping (not padding) keeps every evaluated pixel a real one; the lost strip is at most
    scale-1 pixels wide.
    """
    check_scale(scale)
    h, w = array.shape[-2:]
    return array[..., : h - h % scale, : w - w % scale]


def centre_crop(
    reference: np.ndarray, guide: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size`` x ``size`` window of an (H, W) reference and its (C, H, W) guide
    (benchmarks crop the 320x320 Middlebury pairs to fit a CPU's time)."""
    top, left = (reference.shape[0] - size) // 2, (reference.shape[1] - size) // 2
    window = (slice(top, top + size), slice(left, left + size))
    return reference[window], guide[(slice(None), *window)]


def check_blocks(values: np.ndarray, valid: np.ndarray, source: np.ndarray, scale: int) -> int:
    """``scale`` as an int if the (H, W) ``values`` and ``valid`` are the (h, w) ``source``
    times it (what the output-side steps take), else a ValueError (a caller's bug)."""
    s = int(scale)
    h, w = source.shape
    if values.shape != (h * s, w * s) or valid.shape != values.shape:
        raise ValueError(f"output {values.shape} is not source {source.shape} x {s}")
    return s


def average_pool(array: np.ndarray, scale: int) -> np.ndarray:
    """Mean over scale x scale blocks of (..., H, W) whose H and W are multiples of the scale
    (NaN in a block makes its mean NaN: use it to mark nodata)."""
    *lead, h, w = array.shape
    return array.reshape(*lead, h // scale, scale, w // scale, scale).mean(axis=(-3, -1))


def pool(reference: np.ndarray, scale: int) -> np.ndarray:
    """LR source from an (H, W) HR reference by average pooling over scale x scale blocks.

    The LR pixel is the mean of the HR pixels it covers, so any error measured afterwards
    comes from the super-resolution and not from a degradation mismatch. A reference whose
    size is not a multiple of the scale is cropped at the bottom/right first (with a warning
    saying so). NaN in a block makes that LR pixel NaN (use it to mark nodata).
    """
    check_scale(scale)
    reference = np.asarray(reference)
    if reference.ndim != 2:
        raise InputError(f"reference must be a 2-D (H, W) array, got shape {reference.shape}")
    h, w = reference.shape
    if h < scale or w < scale:
        raise InputError(f"reference of {h}x{w} is smaller than one x{scale} block")
    if h % scale or w % scale:
        warnings.warn(
            f"reference of {h}x{w} is not a multiple of x{scale}: cropped to "
            f"{h - h % scale}x{w - w % scale} (bottom/right) before pooling",
            stacklevel=2,
        )
    return average_pool(crop_to_multiple(reference, scale).astype(np.float64), scale)


def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """(h, w) -> (scale*h, scale*w) with torch's bicubic interpolation, align_corners=False.

    Pixel-area aligned, as average pooling is, so a perfect method and bicubic are compared on
    the same grid. Not clamped: overshoot at edges is part of what bicubic does. NaN spreads
    to the neighbours it touches; fill invalid pixels first.
    """
    check_scale(scale)
    lr = np.asarray(lr, dtype=np.float64)
    if lr.ndim != 2:
        raise InputError(f"lr must be a 2-D (h, w) array, got shape {lr.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(lr))[None, None]
    up = F.interpolate(tensor, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[0, 0].numpy()
