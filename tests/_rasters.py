"""Small real GeoTIFFs for the raster tests (written with rasterio, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

UTM = "EPSG:32633"
ORIGIN = (500_000.0, 4_000_000.0)
LR_PIXEL = 10.0


def terrain(h: int, w: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR DEM (h, w), HR guide (3, h*scale, w*scale)) with shared structure."""
    yy, xx = np.mgrid[0 : h * scale, 0 : w * scale].astype(np.float64)
    hr = 10 * np.sin(xx / 5) + yy / 3 + 5 * np.cos((xx + yy) / 9)
    guide = np.stack([np.sin(xx / 5), np.cos((xx + yy) / 9), yy / yy.max()]).astype(np.float32)
    lr = hr.reshape(h, scale, w, scale).mean((1, 3)).astype(np.float32)
    return lr, guide


def write(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM,
    transform=None,
    pixel: float = LR_PIXEL,
    origin: tuple[float, float] = ORIGIN,
    nodata: float | None = None,
    driver: str = "GTiff",
) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = {
        "driver": driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform or from_origin(*origin, pixel, pixel))
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def pair(
    tmp: Path, h: int = 24, w: int = 24, scale: int = 2, nodata: float | None = -1.0
) -> tuple[Path, Path, np.ndarray]:
    """dem.tif (LR, nodata in its top-left 4x4 corner when ``nodata`` is set) and rgb.tif (HR,
    same CRS, on the output grid). Returns the paths and the LR array."""
    lr, guide = terrain(h, w, scale)
    if nodata is not None:
        lr[:4, :4] = nodata
    source = write(tmp / "dem.tif", lr, nodata=nodata)
    guide_path = write(tmp / "rgb.tif", guide, pixel=LR_PIXEL / scale)
    return source, guide_path, lr
