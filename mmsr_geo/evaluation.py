"""The paper's evaluation protocol as a library (Dong et al., ECCV 2022, sections 4.1-4.4).

Protocol: the HR reference (depth map, DEM) is average-pooled by the scale factor to make the
LR source (the paper follows [35, 36] and "adopt[s] pooling to generate LR depth and DEM"), a
fresh network is fitted to that LR source and the HR guide, and the prediction is compared with
the HR reference over the *full* image (RMSE, the paper's only metric; MAE and, for DEMs, slope
RMSE in addition). Bicubic upsampling of the same LR source is reported beside it, because a
guided method that does not beat bicubic has learned nothing from the guide.

Everything here is a plain function of arrays except the two loaders, which read files and
raise :class:`~mmsr_geo.errors.InputError` with a message for the user when something is off.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError
from .fit import FitConfig, ProgressCallback, fit
from .normalisation import fill_invalid
from .strategies import AUTO, auto_budget, resolve_schedule, strategy

PixelSize = float | tuple[float, float]
"""Ground size of one pixel: one number for square pixels, else (x size, y size)."""


# --------------------------------------------------------------------------------------------
# Degradation and baseline
# --------------------------------------------------------------------------------------------


def _check_scale(scale: int) -> None:
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 2:
        raise InputError(f"scale must be an integer >= 2, got {scale!r}")


def crop_to_multiple(array: np.ndarray, scale: int) -> np.ndarray:
    """``array`` (..., H, W) cut at the bottom and right to a multiple of ``scale``.

    Cropping (not padding) keeps every evaluated pixel a real one; the lost strip is at most
    scale-1 pixels wide.
    """
    _check_scale(scale)
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


def pool(reference: np.ndarray, scale: int) -> np.ndarray:
    """LR source from an (H, W) HR reference by average pooling over scale x scale blocks.

    This is the degradation of the paper's protocol: the LR pixel is the mean of the HR pixels
    it covers, which is also exactly what the fit's cycle loss assumes, so any error measured
    afterwards comes from the super-resolution and not from a degradation mismatch. A reference
    whose size is not a multiple of the scale is cropped at the bottom/right first (with a
    warning saying so). NaN in a block makes that LR pixel NaN (use it to mark nodata).
    """
    _check_scale(scale)
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
    cropped = crop_to_multiple(reference, scale).astype(np.float64)
    hh, ww = cropped.shape
    return cropped.reshape(hh // scale, scale, ww // scale, scale).mean(axis=(1, 3))


def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """(h, w) -> (scale*h, scale*w) with torch's bicubic interpolation, align_corners=False.

    The usual baseline of guided super-resolution papers (pixel-area aligned, as average pooling
    is, so a perfect method and bicubic are compared on the same grid). Not clamped: overshoot
    at edges is part of what bicubic does. NaN spreads to the neighbours it touches; fill
    invalid pixels first.
    """
    _check_scale(scale)
    lr = np.asarray(lr, dtype=np.float64)
    if lr.ndim != 2:
        raise InputError(f"lr must be a 2-D (h, w) array, got shape {lr.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(lr))[None, None]
    up = F.interpolate(tensor, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[0, 0].numpy()


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


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


def _pixel_sizes(pixel_size: PixelSize) -> tuple[float, float]:
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
    dx, dy = _pixel_sizes(pixel_size)
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
) -> ProtocolRun:
    """Pool the reference by ``scale`` and super-resolve it back, with MMSR and bicubic.

    The reference (and guide, mask) are cropped to a multiple of the scale; an LR pixel is
    valid only when its whole block is. With the ``auto`` schedule the strategy is chosen one
    scale down from the LR source alone: the reference is never seen. Arguments as for
    :func:`evaluate_pair`.
    """
    _check_scale(scale)
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
    if reference.shape[0] % scale or reference.shape[1] % scale:
        h, w = reference.shape
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
    chosen, config = resolve_schedule(config, schedule, iterations)
    selection = None
    if chosen == AUTO:
        from .selection import choose_auto  # selection scores with this module's bicubic

        choice = choose_auto(lr_filled, guide, scale, config, mask=lr_mask, iterations=iterations)
        chosen, selection = choice.strategy, choice.scores or None
        config = strategy(chosen).config(config, auto_budget(config, iterations))
    result = fit(lr_filled, guide, scale, config, mask=lr_mask, progress=progress)
    return ProtocolRun(
        reference=reference,
        valid=valid,
        lr=lr_filled,
        prediction=result.prediction.astype(np.float64),
        bicubic=bicubic_upsample(lr_filled, scale),
        strategy=chosen,
        selection=selection,
        seconds=result.seconds,
        device=result.device,
        iterations=result.iterations,
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
            (:func:`mmsr_geo.strategies.resolve_schedule`).
    """
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
    )


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def is_middlebury_dir(path: str | Path) -> bool:
    """True for a folder with ``guide/`` and ``target/`` subfolders (the layout we read)."""
    path = Path(path)
    return (path / "guide").is_dir() and (path / "target").is_dir()


def middlebury_names(path: str | Path) -> list[str]:
    """Sorted names (file stems) that have both ``guide/NAME.png`` and ``target/NAME.png``.

    A file present on one side only is reported with a warning rather than silently dropped.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such directory")
    if not is_middlebury_dir(path):
        raise InputError(
            f"{path}: not an evaluation directory: expected guide/NAME.png and "
            "target/NAME.png subfolders"
        )
    guides = {p.stem for p in (path / "guide").glob("*.png")}
    targets = {p.stem for p in (path / "target").glob("*.png")}
    lonely = sorted(guides ^ targets)
    if lonely:
        warnings.warn(
            f"{path}: skipping {len(lonely)} image(s) without both guide and target: "
            + ", ".join(lonely[:5])
            + (" ..." if len(lonely) > 5 else ""),
            stacklevel=2,
        )
    names = sorted(guides & targets)
    if not names:
        raise InputError(f"{path}: no NAME.png found in both guide/ and target/")
    return names


def _read_png(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return image


def _target_array(path: Path) -> np.ndarray:
    """One-channel depth from a PNG, in the file's own values (0-255 for 8-bit).

    Grey (L, I, I;16, F) is taken as is; LA drops the alpha; RGB(A) and palette images whose
    colour channels are equal (grey saved as colour) take one channel. A truly coloured depth
    map is a colour-mapped picture whose depth cannot be recovered exactly: it is converted to
    luminance with a warning.
    """
    image = _read_png(path)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return np.asarray(image, dtype=np.float64)
    array = np.asarray(image)
    if image.mode == "LA":
        return array[..., 0].astype(np.float64)
    if image.mode in ("RGB", "RGBA"):
        rgb = array[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            return rgb[..., 0].astype(np.float64)
        warnings.warn(
            f"{path}: target is a colour image; using its luminance as depth", stacklevel=3
        )
        return np.asarray(image.convert("RGB").convert("L"), dtype=np.float64)
    raise InputError(f"{path}: unsupported PNG mode {image.mode!r} for a depth target")


def _guide_array(path: Path) -> np.ndarray:
    """(C, H, W) float32 guide: RGB (alpha and palette resolved), or one band for grey."""
    image = _read_png(path)
    if image.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F", "1"):
        return np.asarray(image, dtype=np.float32)[None]
    if image.mode == "LA":
        return np.asarray(image, dtype=np.float32)[None, ..., 0]
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_middlebury_dir(
    path: str | Path, names: Sequence[str] | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(name, reference (H, W) float64, guide (C, H, W) float32)`` per image, by name.

    The layout is the one of the MMSR sample data: ``guide/NAME.png`` (RGB) and
    ``target/NAME.png`` (depth, 0-255). Images are read lazily, one at a time, so that a long
    evaluation does not hold every image in memory. ``names`` picks images (in that order);
    an unknown name is an error before anything is read.
    """
    path = Path(path)
    available = middlebury_names(path)
    if names is None:
        names = available
    else:
        unknown = [n for n in names if n not in set(available)]
        if unknown:
            raise InputError(
                f"{path}: no image named {', '.join(unknown)} (have: {', '.join(available)})"
            )
    for name in names:
        reference = _target_array(path / "target" / f"{name}.png")
        guide = _guide_array(path / "guide" / f"{name}.png")
        if guide.shape[1:] != reference.shape:
            raise InputError(
                f"{name}: guide is {guide.shape[2]}x{guide.shape[1]} but target is "
                f"{reference.shape[1]}x{reference.shape[0]} pixels: they must match"
            )
        yield name, reference, guide


@dataclass(frozen=True)
class GeoPair:
    """A reference raster and its guide on one grid, ready for :func:`evaluate_pair`."""

    name: str
    reference: np.ndarray
    """(H, W) float64, the reference band in physical units (scale and offset applied)."""
    guide: np.ndarray
    """(C, H, W) float32 guide on the reference's grid, holes filled."""
    mask: np.ndarray
    """(H, W) bool: reference valid (not nodata, finite) and covered by the guide (isolated
    guide holes count as covered, as in ``upscale``)."""
    pixel_size: tuple[float, float] | None
    """(x, y) ground size in CRS units (metres at the centre latitude for a geographic CRS);
    None for a rotated transform."""
    guide_resampling: str = "none"
    """How the guide was brought onto the reference's grid ("none", "average", "bilinear")."""


def load_geotiff_pair(
    reference_path: str | Path,
    guide_path: str | Path,
    *,
    scale: int = 2,
    band: int = 1,
    guide_bands: Sequence[int] | None = None,
) -> GeoPair:
    """Read a reference raster (e.g. a DEM) and a guide, the guide brought onto the
    reference's grid.

    A guide on another grid or CRS is warped onto the reference's grid exactly as ``upscale``
    warps it onto the output grid (averaged when finer, bilinear when coarser, one GDAL
    ``WarpedVRT``); a pixel-only pair (no CRS) must have one size. Isolated guide holes
    (nodata, alpha 0, NaN; see :func:`mmsr_geo.guide.guide_holes`, sized for ``scale``) are
    filled and evaluated, larger gaps are left out of the mask, as is the reference's
    nodata. The pixel size comes from the transform, for the slope RMSE (degrees converted to
    metres at the centre latitude); a rotated transform gets none.
    """
    from affine import Affine
    from rasterio.windows import Window

    from .grid import OutputGrid
    from .guide import AlignedGuide, check_overlap, fill_guide, guide_holes, max_hole_pixels
    from .raster_io import open_raster, read_band, select_band, select_guide_bands

    reference_path, guide_path = Path(reference_path), Path(guide_path)
    for p in (reference_path, guide_path):
        if not p.exists():
            raise InputError(f"{p}: no such file")
    with open_raster(reference_path, "reference") as src, open_raster(guide_path, "guide") as gds:
        band = select_band(src, band, "reference")
        bands = select_guide_bands(gds, guide_bands)
        georeferenced = src.crs is not None and not src.transform.is_identity
        grid = OutputGrid(
            scale=1,
            crs=src.crs if georeferenced else None,
            lr_transform=src.transform if georeferenced else Affine.identity(),
            lr_width=src.width,
            lr_height=src.height,
            georeferenced=georeferenced,
        )
        check_overlap(gds, grid)
        window = Window(0, 0, src.width, src.height)
        values, valid = read_band(src, band, window)
        with AlignedGuide(gds, bands, grid) as aligned:
            guide, guide_valid = aligned.read(window)
            resampling = "none" if aligned.mode != "warped" else aligned.resampling.name
        crs, transform, height = src.crs, src.transform, src.height
    if not guide_valid.any():
        raise InputError(f"{guide_path.name} has no valid pixel over {reference_path.name}")
    usable = guide_valid | guide_holes(guide_valid, max_hole_pixels(scale))

    pixel_size: tuple[float, float] | None = (abs(transform.a), abs(transform.e))
    if crs is not None and crs.is_geographic:
        # degrees to metres at the centre latitude (spherical, 111.32 km per degree): good to
        # a few per cent over a DEM a degree tall, enough to compare slopes
        latitude = transform.f + transform.e * height / 2
        metres = 111_320.0
        pixel_size = (
            abs(transform.a) * metres * math.cos(math.radians(latitude)),
            abs(transform.e) * metres,
        )
    elif transform.b != 0 or transform.d != 0:
        warnings.warn(
            f"{reference_path.name} has a rotated geotransform: no slope RMSE", stacklevel=2
        )
        pixel_size = None
    return GeoPair(
        name=reference_path.stem,
        reference=np.where(valid, values, np.nan),
        guide=fill_guide(guide, guide_valid),
        mask=valid & usable,
        pixel_size=pixel_size,
        guide_resampling=resampling,
    )


__all__ = [
    "GeoPair",
    "PairScores",
    "ProtocolRun",
    "bicubic_upsample",
    "centre_crop",
    "crop_to_multiple",
    "evaluate_pair",
    "is_middlebury_dir",
    "load_geotiff_pair",
    "load_middlebury_dir",
    "mae",
    "middlebury_names",
    "pool",
    "rmse",
    "run_protocol",
    "slope",
    "slope_mask",
    "slope_rmse",
    "summarise",
]
