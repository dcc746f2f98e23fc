"""Bringing the guide onto the output grid, one window at a time.

A guide already on the output grid (same CRS and pixel size, aligned) is read by plain windows;
any other guide is warped through a GDAL ``WarpedVRT`` whose grid *is* the output grid, so a
window read warps only that window and the guide is never resampled whole. Footprint checks
(no overlap, partial overlap, coarser guide) run before any work, with shapely.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import ColorInterp, Resampling
from rasterio.features import sieve
from rasterio.fill import fillnodata
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from .errors import InputError, OverlapError
from .footprints import dataset_footprint, grid_footprint, reprojected
from .grid import OutputGrid
from .raster_io import pixel_validity

log = logging.getLogger(__name__)

_ALIGN_TOLERANCE = 1e-6
"""Relative tolerance (in pixels) for calling a guide 'on the output grid'."""


def source_footprint(grid: OutputGrid) -> BaseGeometry:
    """The source's true footprint in its own CRS (pixel units for pixel-only pairs)."""
    return grid_footprint(grid.lr_transform, grid.lr_width, grid.lr_height)


def pixel_aligned(guide: DatasetReader, grid: OutputGrid) -> bool:
    """Whether the pair must be aligned by pixels alone: source or guide has no CRS."""
    return not grid.georeferenced or guide.crs is None or guide.transform.is_identity


def guide_footprint(guide: DatasetReader, grid: OutputGrid) -> BaseGeometry:
    """The guide's true footprint in the output CRS, its edges densified so that a
    reprojection bends them as it bends the raster. A pixel-aligned guide (no CRS) covers the
    output grid's pixels from the top-left corner, as many as it has."""
    if pixel_aligned(guide, grid):
        return grid_footprint(grid.transform, guide.width, guide.height)
    return reprojected(dataset_footprint(guide), guide.crs, grid.crs)


def check_overlap(guide: DatasetReader, grid: OutputGrid) -> BaseGeometry:
    """The area where source and guide both exist, in the output CRS.

    No overlap is an :class:`OverlapError`; partial overlap and a guide coarser than the output
    are warnings (the output is nodata outside the guide; a coarse guide adds no detail).
    """
    src = source_footprint(grid)
    gde = guide_footprint(guide, grid)
    common = src.intersection(gde)
    if common.is_empty or common.area <= 0:
        raise OverlapError(
            f"the guide {guide.name} does not overlap the source: nothing to super-resolve"
        )
    covered = common.area / src.area
    if covered < 1 - 1e-6:
        log.warning(
            "the guide covers only %.1f%% of the source: the output is nodata elsewhere",
            100 * covered,
        )
    guide_pixel = math.sqrt(gde.area / (guide.width * guide.height))
    if guide_pixel > grid.pixel_size * 1.05:
        log.warning(
            "the guide's pixels (%.4g) are coarser than the output's (%.4g): no detail finer "
            "than the guide can be gained",
            guide_pixel,
            grid.pixel_size,
        )
    return common


def alpha_band(dataset: DatasetReader) -> int | None:
    """The 1-based index of the dataset's alpha band, if it has one."""
    for index, interpretation in enumerate(dataset.colorinterp, start=1):
        if interpretation == ColorInterp.alpha:
            return index
    return None


def max_hole_pixels(scale: int) -> int:
    """Largest guide hole (output pixels) that is filled rather than left as output nodata:
    the area of 16 source pixels, at least 64 output pixels."""
    return max(64, 16 * scale * scale)


def guide_holes(valid: np.ndarray, max_pixels: int) -> np.ndarray:
    """Invalid guide pixels in 8-connected groups of at most ``max_pixels``: isolated holes.

    An RGB guide with nodata 255 marks pure-white snow or roofs as nodata, an orthophoto has
    the odd NaN or alpha-0 pixel. The source has data there, so the output should too: such
    holes are filled for the network and the output stays valid. Larger invalid areas (the
    guide's edge, a missing strip of a mosaic) carry no guidance and become output nodata.
    """
    if valid.all():
        return np.zeros(valid.shape, dtype=bool)
    kept = sieve(valid.astype(np.uint8), size=max_pixels + 1, connectivity=8)
    return ~valid & (kept == 1)


def fill_guide(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C, H, W) float32 guide with every invalid pixel filled from the valid ones nearby
    (inverse-distance, GDAL's fillnodata), so that neither holes nor the area beyond the
    guide's edge put artificial edges into the network's input."""
    if valid.all():
        return values.astype(np.float32)
    if not valid.any():
        raise InputError("the guide has no valid pixel in this tile")
    mask = valid.astype(np.uint8)
    distance = float(max(valid.shape))
    filled = np.empty(values.shape, dtype=np.float32)
    for band in range(values.shape[0]):
        data = np.where(valid, values[band], np.nan).astype(np.float32)
        data = fillnodata(data, mask=mask, max_search_distance=distance)
        data[~np.isfinite(data)] = values[band][valid].mean()
        filled[band] = data
    return filled


class AlignedGuide:
    """Reads guide bands on the output grid by HR windows, with their validity.

    Three modes: ``"pixel"`` (pixel-only pairs, the guide is exactly scale x the source),
    ``"on-grid"`` (same CRS and pixel size, integer offset: plain windowed reads) and
    ``"warped"`` (anything else: a WarpedVRT onto the output grid).

    ``shift`` (whole output pixels, along columns and rows) is how far the guide's content
    is displaced from the source's (:mod:`mmsr_geo.registration`): every read moves it back
    (a warped guide is warped onto the output grid moved by it, a guide read by plain windows
    is read that many pixels further), so the guide is never resampled for it.
    """

    def __init__(
        self,
        dataset: DatasetReader,
        bands: Sequence[int],
        grid: OutputGrid,
        shift: tuple[int, int] = (0, 0),
    ) -> None:
        self.dataset = dataset
        self.bands = tuple(bands)
        self.grid = grid
        self.shift = (int(shift[0]), int(shift[1]))
        self._vrt: WarpedVRT | None = None
        self._alpha = 0
        self._offset = (0, 0)
        self.resampling = Resampling.nearest
        """How the guide is resampled onto the output grid (nearest: it is not resampled)."""
        if pixel_aligned(dataset, grid):
            if (dataset.height, dataset.width) != (grid.height, grid.width):
                raise InputError(
                    f"without georeferencing the guide must be exactly {grid.scale} x the source "
                    f"({grid.height}x{grid.width} pixels), but {dataset.name} is "
                    f"{dataset.height}x{dataset.width}"
                )
            self.mode = "pixel"
            self._offset = self.shift
        elif (offset := self._grid_offset()) is not None:
            self.mode = "on-grid"
            self._offset = (offset[0] + self.shift[0], offset[1] + self.shift[1])
        else:
            self.mode = "warped"
            self._vrt = self._warped_vrt()

    def _grid_offset(self) -> tuple[int, int] | None:
        """(col, row) of the output grid's origin in the guide, if the guide is on that grid."""
        g, t = self.dataset.transform, self.grid.transform
        if self.dataset.crs != self.grid.crs:
            return None
        if not all(
            math.isclose(a, b, rel_tol=_ALIGN_TOLERANCE, abs_tol=1e-12)
            for a, b in zip((g.a, g.b, g.d, g.e), (t.a, t.b, t.d, t.e), strict=True)
        ):
            return None
        col, row = ~g @ (t.c, t.f)
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            return None
        return round(col), round(row)

    def _warped_vrt(self) -> WarpedVRT:
        """A VRT with the output grid; average when the guide is finer, else bilinear.

        Its alpha band is what says where the warped guide has data: the guide's own alpha
        band (an RGBA orthophoto), else one GDAL adds from the guide's footprint, nodata and
        mask band. GDAL's per-band masks of such a VRT report every pixel valid outside the
        footprint of a guide without a nodata value, so the alpha band is read, not them."""
        footprint = guide_footprint(self.dataset, self.grid)
        guide_pixel = math.sqrt(footprint.area / (self.dataset.width * self.dataset.height))
        finer = guide_pixel < self.grid.pixel_size * 0.95
        self.resampling = Resampling.average if finer else Resampling.bilinear
        own_alpha = alpha_band(self.dataset)
        vrt = WarpedVRT(
            self.dataset,
            crs=self.grid.crs,
            transform=self.grid.transform @ Affine.translation(*self.shift),
            width=self.grid.width,
            height=self.grid.height,
            resampling=self.resampling,
            add_alpha=own_alpha is None,
            dtype="float32",  # averaged 8-bit values keep their fractions
        )
        self._alpha = own_alpha or vrt.count
        return vrt

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(C, h, w) float32 guide values on the HR ``window`` and an (h, w) validity mask
        (False outside the guide's footprint, at its nodata, alpha 0 or mask, and at
        non-finite values)."""
        if self._vrt is not None:
            data = self._vrt.read(list(self.bands), window=window).astype(np.float32)
            masks = self._vrt.read_masks(list(self.bands), window=window)
            alpha = self._vrt.read(self._alpha, window=window) > 0
            return data, pixel_validity(masks, data) & alpha
        return self._read_clipped(window)

    def _read_clipped(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Read the part of ``window`` (output grid) that lies inside the guide; the rest is
        invalid."""
        h, w = int(window.height), int(window.width)
        data = np.zeros((len(self.bands), h, w), dtype=np.float32)
        valid = np.zeros((h, w), dtype=bool)
        col0 = int(window.col_off) + self._offset[0]
        row0 = int(window.row_off) + self._offset[1]
        c0, r0 = max(col0, 0), max(row0, 0)
        c1 = min(col0 + w, self.dataset.width)
        r1 = min(row0 + h, self.dataset.height)
        if c1 <= c0 or r1 <= r0:
            return data, valid
        inner = Window(c0, r0, c1 - c0, r1 - r0)
        dst = (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))
        part = self.dataset.read(list(self.bands), window=inner).astype(np.float32)
        masks = self.dataset.read_masks(list(self.bands), window=inner)
        data[:, dst[0], dst[1]] = part
        valid[dst] = pixel_validity(masks, part)
        return data, valid

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
            self._vrt = None

    def __enter__(self) -> AlignedGuide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
