"""A quick-look figure (guide, LR source, SR output and their hillshades) from decimated reads.

Everything is read at a few hundred pixels across, so a preview costs little even for a huge
output; the guide is warped onto a decimated output grid so the panels line up.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from matplotlib.figure import Figure
from PIL import Image
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from .atomic import atomic_file
from .grid import OutputGrid, ground_pixel_size
from .guide import pixel_aligned
from .raster_io import decimated_shape, read_decimated

PREVIEW_PIXELS = 512 * 512


def hillshade(
    elevation: np.ndarray,
    pixel_size: float | tuple[float, float],
    azimuth: float = 315.0,
    altitude: float = 45.0,
) -> np.ndarray:
    """Lambertian hillshade in [0, 1] (NaN stays NaN); ``pixel_size`` is (y, x) or one number,
    in the elevation's unit (metres)."""
    py, px = pixel_size if isinstance(pixel_size, tuple) else (pixel_size, pixel_size)
    dy, dx = np.gradient(elevation, py, px)
    slope = np.arctan(np.hypot(dx, dy))
    aspect = np.arctan2(-dx, dy)
    az, alt = np.radians(360.0 - azimuth + 90.0), np.radians(altitude)
    shaded = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shaded, 0.0, 1.0)


def _stretch(image: np.ndarray) -> np.ndarray:
    """2-98 percentile stretch of a (C, h, w) image to [0, 1], channels last."""
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
    scaled = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.moveaxis(np.nan_to_num(scaled), 0, -1)


def _guide_quicklook(
    guide: DatasetReader, bands: Sequence[int], grid: OutputGrid, shape: tuple[int, int]
) -> np.ndarray:
    rgb = list(bands[:3]) if len(bands) >= 3 else [bands[0]]
    if pixel_aligned(guide, grid):
        return guide.read(rgb, out_shape=(len(rgb), *shape)).astype(np.float64)
    transform = grid.transform @ Affine.scale(grid.width / shape[1], grid.height / shape[0])
    with WarpedVRT(
        guide,
        crs=grid.crs,
        transform=transform,
        width=shape[1],
        height=shape[0],
        resampling=Resampling.average,
    ) as vrt:
        return vrt.read(rgb).astype(np.float64)


def write_preview(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    source: DatasetReader,
    band: int,
    guide: DatasetReader,
    guide_bands: Sequence[int],
    grid: OutputGrid,
    *,
    overwrite: bool,
) -> None:
    """Write ``path``: a PNG of the guide's RGB, the LR ``source`` band, the SR ``output``
    and hillshades of LR and SR (in place atomically; an existing file only with
    ``overwrite``)."""
    shape = decimated_shape(grid.height, grid.width, PREVIEW_PIXELS)
    lr, lr_valid = read_decimated(source, [band], max_pixels=PREVIEW_PIXELS, role="source")
    lr = np.where(lr_valid, lr[0], np.nan)
    with rasterio.open(output) as ds:
        sr = ds.read(1, out_shape=shape, masked=True, resampling=Resampling.average)
    sr = sr.astype(np.float64).filled(np.nan)
    rgb = _stretch(_guide_quicklook(guide, guide_bands, grid, shape))
    lr_pixel = ground_pixel_size(grid, lr.shape)
    sr_pixel = ground_pixel_size(grid, sr.shape)
    finite = np.concatenate([lr[np.isfinite(lr)], sr[np.isfinite(sr)]])
    vmin, vmax = np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0)
    panels = [
        ("guide", rgb, {}),
        ("LR source", lr, {"cmap": "terrain", "vmin": vmin, "vmax": vmax}),
        (f"SR x{grid.scale}", sr, {"cmap": "terrain", "vmin": vmin, "vmax": vmax}),
        ("LR hillshade", hillshade(lr, lr_pixel), {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("SR hillshade", hillshade(sr, sr_pixel), {"cmap": "gray", "vmin": 0, "vmax": 1}),
    ]
    figure = Figure(figsize=(3.4 * len(panels), 3.8))  # no pyplot: no backend to choose
    axes = figure.subplots(1, len(panels))
    for ax, (title, image, style) in zip(axes, panels, strict=True):
        ax.imshow(
            image if image.ndim == 2 or image.shape[-1] == 3 else image[..., 0],
            interpolation="nearest",
            **style,
        )
        ax.set_title(title)
        ax.set_axis_off()
    figure.suptitle(os.path.basename(output))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=90, format="png")
    # 256 adaptive colours: a third of the size, no visible difference for a quick-look
    with atomic_file(Path(path), overwrite=overwrite) as tmp:
        Image.open(buffer).convert("RGB").quantize(256).save(tmp, format="PNG", optimize=True)
