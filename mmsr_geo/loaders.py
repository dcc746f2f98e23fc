"""Reading evaluation data: folders of PNG pairs (the Middlebury layout) and GeoTIFF pairs.

The two loaders turn files into the arrays the protocol (:mod:`mmsr_geo.evaluation`) takes,
and raise :class:`~mmsr_geo.errors.InputError` with a message for the user when something is
off. Images are read one at a time, so a long evaluation holds one pair in memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .metrics import geographic_pixel_metres


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
    # rasterio here, not at the top: the PNG loader runs where GDAL is not installed (the
    # GPU machine's image), so this module must import without it
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
        # degrees to metres at the centre latitude
        latitude = transform.f + transform.e * height / 2
        pixel_size = geographic_pixel_metres(transform.a, transform.e, latitude)
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
