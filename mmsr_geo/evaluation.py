"""The paper's evaluation protocol as a library (Dong et al., ECCV 2022, sections 4.1-4.4).

Protocol: the HR reference (depth map, DEM) is average-pooled by the scale factor to make the
LR source (the paper follows [35, 36] and "adopt[s] pooling to generate LR depth and DEM"), a
fresh network is fitted to that LR source and the HR guide, and the prediction is compared with
the HR reference over the *full* image (RMSE, the paper's only metric; MAE and, for DEMs, slope
RMSE in addition). Bicubic upsampling of the same LR source is reported beside it, because a
guided method that does not beat bicubic has learned nothing from the guide.

Everything here is a plain function of arrays: the degradation and bicubic come from
:mod:`mmsr_geo.degradation`, the metrics from :mod:`mmsr_geo.metrics`, the files from
:mod:`mmsr_geo.loaders`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .consistency import DEFAULT_CONSISTENCY, check_consistency, project_consistent
from .degradation import bicubic_upsample, check_scale, crop_to_multiple, pool
from .errors import InputError
from .fit import ProgressCallback, fit
from .fit_config import FitConfig
from .metrics import PixelSize, mae, pixel_sizes, rmse, slope_rmse
from .normalisation import fill_invalid
from .raster_fit import default_budget, fit_raster
from .registration import NO_REGISTRATION, REGISTER_MODES, Registration, register_guide
from .selection import choose_auto
from .strategies import Schedule

# --------------------------------------------------------------------------------------------
# One pair, and summaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairScores:
    """Scores of MMSR and of bicubic upsampling on one image, in the reference's units."""

    name: str
    rmse: float
    mae: float
    bicubic_rmse: float
    bicubic_mae: float
    slope_rmse: float | None = None
    """Degrees; only when a pixel size was given (DEMs)."""
    bicubic_slope_rmse: float | None = None
    seconds: float = 0.0
    """Wall time of the fit (for the mean row: the mean over images)."""
    device: str = ""
    pixels: int = 0
    """Reference pixels scored (for the mean row: the mean over images)."""
    strategy: str = ""
    """The fitting strategy used (``custom`` for a FitConfig used as given)."""
    iterations_used: float = 0
    """Iterations of the fit (for the mean row: the mean over images)."""
    selection: dict[str, float] | None = None
    """With the ``auto`` schedule: each candidate's RMSE one scale down (and bicubic's)."""
    fit_mode: str = "tile"
    """``tile`` (a fit of the whole image), ``raster`` or ``hybrid`` (see
    :func:`evaluate_pair`)."""
    registration: dict[str, float | bool | str] | None = None
    """The guide's offset found from the data (``register="auto"``), in output pixels (and
    metres when a pixel size was given), and whether it was corrected
    (:class:`mmsr_geo.registration.Registration`)."""

    def as_dict(self) -> dict[str, float | str | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ProtocolRun:
    """The arrays of one run of the paper's protocol (for figures; scores come from them)."""

    reference: np.ndarray
    """(H, W) reference, cropped to a multiple of the scale."""
    valid: np.ndarray
    """(H, W) pixels scored."""
    lr: np.ndarray
    """(h, w) LR source: the average-pooled reference (invalid pixels filled)."""
    prediction: np.ndarray
    """(H, W) MMSR's super-resolution of ``lr``."""
    bicubic: np.ndarray
    """(H, W) bicubic upsampling of ``lr``."""
    strategy: str
    selection: dict[str, float] | None
    seconds: float
    device: str
    iterations: int
    registration: Registration = NO_REGISTRATION


def run_protocol(
    reference: np.ndarray,
    guide: np.ndarray,
    scale: int,
    config: FitConfig | None = None,
    *,
    mask: np.ndarray | None = None,
    name: str = "",
    progress: ProgressCallback | None = None,
    schedule: str | None = None,
    iterations: int | None = None,
    fit_mode: str = "tile",
    register: str = "auto",
    consistency: str = DEFAULT_CONSISTENCY,
    level_sigma: float = 0.0,
) -> ProtocolRun:
    """Pool the reference by ``scale`` and super-resolve it back, with MMSR and bicubic.

    The reference (and guide, mask) are cropped to a multiple of the scale; an LR pixel is
    valid only when its whole block is. With the ``auto`` schedule the strategy is chosen one
    scale down from the LR source alone: the reference is never seen. Arguments as for
    :func:`evaluate_pair`.
    """
    check_scale(scale)
    reference = np.asarray(reference, dtype=np.float64)
    guide = np.asarray(guide)
    if guide.ndim == 2:
        guide = guide[None]
    if reference.ndim != 2:
        raise InputError(f"reference must be a 2-D (H, W) array, got shape {reference.shape}")
    if guide.ndim != 3 or guide.shape[1:] != reference.shape:
        raise InputError(
            f"guide {guide.shape} must be (C, H, W) on the reference's {reference.shape} grid"
        )
    valid = np.isfinite(reference)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != reference.shape:
            raise InputError(f"mask {mask.shape} does not match the reference {reference.shape}")
        valid &= mask
    h, w = reference.shape
    if h < scale or w < scale:
        raise InputError(
            f"{name or 'the reference'} is {w}x{h} pixels, smaller than one x{scale} block: "
            "nothing to pool and evaluate"
        )
    if h % scale or w % scale:
        warnings.warn(
            f"{name or 'reference'}: {h}x{w} is not a multiple of x{scale}: evaluated on the "
            f"top-left {h - h % scale}x{w - w % scale}",
            stacklevel=3,
        )
    reference = crop_to_multiple(reference, scale)
    guide = crop_to_multiple(guide, scale)
    valid = crop_to_multiple(valid, scale)
    if not valid.any():
        raise InputError(f"{name or 'reference'}: no valid pixel to evaluate")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # already cropped
        lr = pool(np.where(valid, reference, np.nan), scale)
    lr_valid = np.isfinite(lr)
    if not lr_valid.any():
        raise InputError(
            f"{name or 'reference'}: no {scale}x{scale} block is free of nodata, "
            "so there is no LR pixel to learn from"
        )
    lr_filled = fill_invalid(np.where(lr_valid, lr, 0.0), lr_valid)
    lr_mask = None if lr_valid.all() else lr_valid
    guide, registration = register_guide(lr_filled, guide, scale, register, valid=lr_valid)
    plan = Schedule.resolve(config, schedule, iterations)
    chosen, selection = plan.name, None
    if plan.is_auto:
        choice = choose_auto(lr_filled, guide, scale, plan, mask=lr_mask)
        chosen, selection = choice.strategy, choice.scores or None
    config = plan.config(chosen)
    if fit_mode == "tile":
        result = fit(lr_filled, guide, scale, config, mask=lr_mask, progress=progress)
    else:
        result = fit_raster(
            lr_filled, guide, scale, config, mask=lr_mask, progress=progress,
            budget=default_budget(config.iterations, scale, level_sigma=level_sigma),
            finetune=max(1, config.iterations // 10) if fit_mode == "hybrid" else 0,
        )
    prediction = result.prediction.astype(np.float64)
    if consistency == "exact":
        prediction = project_consistent(
            prediction, np.ones(prediction.shape, dtype=bool), lr_filled, lr_valid, scale
        )
    return ProtocolRun(
        reference=reference,
        valid=valid,
        lr=lr_filled,
        prediction=prediction,
        bicubic=bicubic_upsample(lr_filled, scale),
        strategy=chosen,
        selection=selection,
        seconds=result.seconds,
        device=result.device,
        iterations=result.iterations,
        registration=registration,
    )


def evaluate_pair(
    reference: np.ndarray,
    guide: np.ndarray,
    scale: int,
    config: FitConfig | None = None,
    *,
    pixel_size: PixelSize | None = None,
    mask: np.ndarray | None = None,
    name: str = "",
    progress: ProgressCallback | None = None,
    schedule: str | None = None,
    iterations: int | None = None,
    fit_mode: str = "tile",
    register: str = "auto",
    consistency: str = DEFAULT_CONSISTENCY,
    level_sigma: float = 0.0,
) -> PairScores:
    """Run the paper's protocol on one (H, W) reference and its (C, H, W) guide.

    The reference is average-pooled to the LR source, MMSR and bicubic upsample it back, and
    both are scored against the reference over every valid HR pixel (:func:`run_protocol`).

    Args:
        reference: (H, W) ground truth, e.g. a depth map or DEM.
        guide: (C, H, W) (or (H, W)) HR guide on the reference's grid.
        scale: integer factor >= 2.
        config: the fit's settings (kernels, seed, device; iterations with no schedule).
        pixel_size: ground size of a pixel in height units; adds the slope RMSE (for DEMs).
        mask: (H, W) bool, True where the reference is valid (nodata excluded). An LR pixel is
            valid only when its whole block is, so that no LR value is a partial average.
        name: label carried into the scores.
        progress: forwarded to :func:`mmsr_geo.fit.fit`.
        schedule, iterations: how the fit spends its iterations, as for ``upscale``
            (:meth:`mmsr_geo.strategies.Schedule.resolve`).
        fit_mode: ``tile`` (the paper's fit of the whole image), ``raster`` (one network
            trained on crops of it, :func:`mmsr_geo.raster_fit.fit_raster`, then applied to
            it) or ``hybrid`` (that network fine-tuned on the image for a tenth of the
            iterations), as ``upscale --fit`` fits tiles.
        register: ``auto`` (find the guide's offset from the LR source and the guide and
            move it back when the estimate is trusted, :mod:`mmsr_geo.registration`) or
            ``off``.
        consistency: ``exact`` (the prediction projected so that every valid block averages
            to its LR pixel, :mod:`mmsr_geo.consistency`) or ``off``.
        level_sigma: with ``raster`` or ``hybrid``, > 0 makes the network work around the
            source's local level (``upscale --level-sigma``, :mod:`mmsr_geo.levels`).
    """
    if register not in REGISTER_MODES:
        raise InputError(f"register must be one of {', '.join(REGISTER_MODES)}, not {register!r}")
    check_consistency(consistency)
    if level_sigma and fit_mode == "tile":
        raise InputError("a level sigma is for --fit raster or hybrid")
    run = run_protocol(
        reference,
        guide,
        scale,
        config,
        mask=mask,
        name=name,
        progress=progress,
        schedule=schedule,
        iterations=iterations,
        fit_mode=fit_mode,
        register=register,
        consistency=consistency,
        level_sigma=level_sigma,
    )
    valid = run.valid
    slope_scores: dict[str, float] = {}
    if pixel_size is not None:
        slope_scores = {
            "slope_rmse": slope_rmse(run.prediction, run.reference, pixel_size, valid),
            "bicubic_slope_rmse": slope_rmse(run.bicubic, run.reference, pixel_size, valid),
        }
    return PairScores(
        name=name,
        rmse=rmse(run.prediction, run.reference, valid),
        mae=mae(run.prediction, run.reference, valid),
        bicubic_rmse=rmse(run.bicubic, run.reference, valid),
        bicubic_mae=mae(run.bicubic, run.reference, valid),
        seconds=run.seconds,
        device=run.device,
        pixels=int(valid.sum()),
        strategy=run.strategy,
        iterations_used=run.iterations,
        selection=run.selection,
        fit_mode=fit_mode,
        registration=(
            None if register == "off"
            else run.registration.as_dict(
                None if pixel_size is None else pixel_sizes(pixel_size)[::-1]
            )
        ),
        **slope_scores,
    )


def summarise(scores: Sequence[PairScores], name: str = "mean") -> PairScores:
    """Mean of every score over images, as the paper reports ("average RMSE").

    The mean of per-image RMSEs, not the RMSE over all pixels pooled: each image weighs the
    same whatever its size. Slope scores are averaged only when every image has them.
    """
    if not scores:
        raise InputError("nothing to summarise: no scores")

    def mean(attr: str) -> float | None:
        values = [getattr(s, attr) for s in scores]
        if any(v is None for v in values):
            return None
        return float(np.mean(values))

    devices = sorted({s.device for s in scores})
    return PairScores(
        name=name,
        rmse=mean("rmse"),
        mae=mean("mae"),
        bicubic_rmse=mean("bicubic_rmse"),
        bicubic_mae=mean("bicubic_mae"),
        slope_rmse=mean("slope_rmse"),
        bicubic_slope_rmse=mean("bicubic_slope_rmse"),
        seconds=mean("seconds"),
        device=",".join(devices),
        pixels=int(round(mean("pixels") or 0)),
        strategy=",".join(dict.fromkeys(s.strategy for s in scores)),
        iterations_used=mean("iterations_used") or 0,
        fit_mode=",".join(dict.fromkeys(s.fit_mode for s in scores)),
    )
